"""The GPU check, sized for one call to the lent GPU machine: no network there, the machine's own
packages (torch with CUDA, a CPU onnxruntime; no install), one call of at most 10 minutes, results
only from $OUT. Without CUDA it says so in one line and exits 0.

    python benchmarks/gpu_check.py --plan      # what a device call needs, as JSON (anywhere)
    PYTHONPATH=. python3 benchmarks/gpu_check.py   # on the GPU machine: every step, offline, <= 540 s

On a GPU it exports the bundled pets model again (TorchScript, pt2; the eager reference is the U-Net
rebuilt from model.onnx's weights), runs parity of those torch artifacts on cuda, predict and
bench on cuda (batch 1..64 at 256 and 512, GPU memory), eager fp32 / AMP fp16 and bf16 /
channels-last beside them, an AOTInductor-compiled pt2 gated like any variant, one AMP and one
DDP/NCCL training epoch, and predict end to end vs the bare session. Each step has its own time
limit and the run goes on past failures; the JSON and Markdown results go to $OUT when it is set,
else benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SEGRT = [PY, "-m", "segrt.cli"]
BATCHES, SIZES = "1,8,32,64", "256,512"
BUDGET_S = 540  # one device call may run 600 s; the rest is the interpreter's start and the transfers
NOT_RUN = [{"name": "ONNX Runtime CUDA and TensorRT",
            "why": "the lent machine's onnxruntime is a CPU build; onnxruntime-gpu (a 255 MB wheel) cannot travel in "
                   "a 64 MiB call and TensorRT is not installed there. Covered by the CPU tests and mocks "
                   "(tests/test_gpu_check.py, tests/test_predict.py)"}]


@dataclass
class Step:
    name: str
    cmd: list[str]
    timeout: int = 60
    optional: bool = False  # a failure is recorded but is not a failure of the check
    result: dict = field(default_factory=dict)


def gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None where there is no CUDA GPU."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return names[0] if out.returncode == 0 and names else None


def plan(work: Path, images: Path, many: Path) -> list[Step]:
    """The check as command lines, run in order, each with a time limit; all of them offline."""
    exp, js = work / "pets", lambda name: str(work / f"{name}.json")
    torch_arts = ["--artifact", "model.ts", "--artifact", "model.pt2"]
    train = ["--layout", "pets", "--data", str(ROOT / "tests/data/pets"), "--size", "128", "--base-channels", "16",
             "--epochs", "1", "--batch-size", "8", "--workers", "2", "--quiet"]
    return [
        Step("export (torchscript, pt2), gated", [*SEGRT, "export", str(ROOT / "exported/pets"), "--out", str(exp),
                                                   "--formats", "torchscript,pt2"], 120),
        Step("parity on cuda", [*SEGRT, "parity", str(exp), "--images", str(images), "--provider", "cuda", "--json",
                                js("parity-cuda")], 50),
        Step("predict cuda pt2", [*SEGRT, "predict", str(images), "--model", str(exp), "--provider", "cuda", "--kind",
                                  "pt2", "--out", str(work / "pred-pt2"), "--json"], 40),
        Step("bench cuda (torchscript, pt2)", [*SEGRT, "bench", str(exp), "--provider", "cuda", *torch_arts,
                                               "--batch-sizes", BATCHES, "--sizes", SIZES, "--runs", "10", "--json",
                                               js("bench-cuda")], 90),
        Step("eager fp32, AMP fp16 and bf16, channels-last", [PY, __file__, "--eager", str(exp), "--json",
                                                              js("eager")], 50),
        Step("AOTInductor pt2, gated", [PY, __file__, "--aoti", str(exp), "--images", str(images), "--json",
                                        js("aoti")], 80, optional=True),
        Step("train 1 epoch, AMP", [PY, "-m", "segrt.training", *train, "--out", str(work / "train")], 35),
        Step("train 1 epoch, DDP over NCCL", [PY, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m",
                                              "segrt.training", *train, "--out", str(work / "ddp")], 35),
        Step("predict end to end vs bare session", [
            PY, str(ROOT / "benchmarks/predict_throughput.py"), "--model", str(exp), "--images", str(many), "--count",
            "2000", "--provider", "cuda", "--kind", "pt2", "--batch-size", "32", "--threads", "0", "--rounds", "1",
            "--skip-rss", "--out-root", str(work), "--json", js("e2e")], 40),
    ]


def tree_mib() -> float:
    """What a device call sends: the files git tracks (or, without git, every file below the root)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, check=True,
                               timeout=30).stdout.decode().split("\0")
        files = [ROOT / n for n in names if n]
    except (OSError, subprocess.SubprocessError):
        files = [p for p in ROOT.rglob("*") if ".git" not in p.parts]
    return sum(p.stat().st_size for p in files if p.is_file()) / 2**20


def plan_json() -> dict:
    steps = plan(Path("WORK"), Path("examples/images"), Path("WORK/many"))
    return {"tree_mib": round(tree_mib(), 1), "carry_mib": 0.0, "carry": [], "budget_s": BUDGET_S,
            "total_timeout_s": sum(s.timeout for s in steps), "out": "$OUT (else benchmarks/results/)",
            "command": "PYTHONPATH=. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py",
            "steps": [{"name": s.name, "timeout_s": s.timeout, "offline": True, "optional": s.optional}
                      for s in steps], "not_run": NOT_RUN}


def run(step: Step, env: dict) -> None:
    t0 = time.perf_counter()
    try:
        res = subprocess.run(step.cmd, capture_output=True, text=True, timeout=step.timeout, cwd=ROOT, env=env)
        rc, out, err = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or "", \
            f"timed out after {step.timeout} s"
    step.result = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "stderr_tail": str(err)[-1500:]}
    for path in [a for a in step.cmd if a.endswith(".json")]:
        if Path(path).is_file():
            step.result["json"] = json.loads(Path(path).read_text())
    if step.cmd[-1] == "--json" and out.strip().startswith("{"):
        step.result["json"] = json.loads(out)


def targets(steps: list[Step]) -> list[str]:
    """The headline measures from the recorded steps (batch 32, 256x256)."""
    by = {s.name: s.result.get("json", {}) for s in steps}
    eager = {r["backend"]: r["images_per_s"] for r in by.get("eager fp32, AMP fp16 and bf16, channels-last", {})
             .get("rows", []) if r["batch_size"] == 32 and r["size"] == 256}
    lines = []
    rows = {r["artifact"]: r for r in by.get("bench cuda (torchscript, pt2)", {}).get("rows", [])
            if r["batch_size"] == 32 and r["height"] == 256}
    rows.update({"AOTInductor pt2": r for r in by.get("AOTInductor pt2, gated", {}).get("rows", [])
                 if r["batch_size"] == 32 and r["size"] == 256})
    for name, r in rows.items():
        if eager.get("eager fp32") and eager.get("eager AMP fp16"):
            ips = r["images_per_s"]
            lines.append(f"{name}: {ips:.0f} img/s at batch 32, 256x256 = {ips / eager['eager fp32']:.2f}x eager fp32, "
                         f"{ips / eager['eager AMP fp16']:.2f}x eager AMP fp16")
    e2e = by.get("predict end to end vs bare session", {})
    if "ratio" in e2e:
        lines.append(f"predict end to end: {e2e['predict_img_s']:.0f} img/s = {e2e['ratio']:.2f}x the bare session")
    return lines or ["no target could be computed (see the failed steps)"]


def report(gpu: str, steps: list[Step]) -> tuple[dict, str]:
    result = {"date": dt.date.today().isoformat(), "gpu": gpu,
              "steps": [{"name": s.name, "cmd": s.cmd, **s.result} for s in steps], "targets": targets(steps),
              "not_run": NOT_RUN}
    lines = [f"### gpu-check on {gpu} ({result['date']})", "", "| step | rc | seconds |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.result.get('rc', '-')}{' (optional)' if s.optional else ''} | "
              f"{s.result.get('seconds', '-')} |" for s in steps]
    lines += [""] + [f"- {t}" for t in result["targets"]] + [f"- not run: {n['name']}: {n['why']}" for n in NOT_RUN]
    return result, "\n".join(lines) + "\n"


def save_results(result: dict, md: str, name: str) -> Path:
    """NAME.json and NAME.md into $OUT (what comes back from a device call), else benchmarks/results/."""
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{name}.md").write_text(md)
    print(md + f"wrote {folder / name}.json/.md")
    return folder / name


def repeat_images(src: Path, dst: Path, count: int) -> Path:
    """``count`` links cycling through the example photos (end-to-end throughput input)."""
    dst.mkdir(parents=True, exist_ok=True)
    photos = sorted(src.glob("*.jpg"))
    for i in range(count):
        os.symlink(photos[i % len(photos)].resolve(), dst / f"img_{i:05d}.jpg")
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--plan", action="store_true", help="print what a device call needs, as JSON, and exit")
    p.add_argument("--eager", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--aoti", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.plan:
        print(json.dumps(plan_json(), indent=1))
        return 0
    if args.eager or args.aoti:
        from gpu_steps import aoti_check, eager_times

        eager_times(args.eager, args.json) if args.eager else aoti_check(args.aoti, args.images, args.json)
        return 0
    gpu = gpu_name()
    if gpu is None:
        print("gpu-check: no CUDA GPU on this machine (nvidia-smi finds none); nothing to check")
        return 0
    images = ROOT / "examples" / "images"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="segrt-gpu-check-") as tmp:
        work = Path(tmp)
        steps = plan(work, images, repeat_images(images, work / "many", 2000))
        for step in steps:
            print(f"gpu-check: {step.name} ...", flush=True)
            run(step, env)
            print(f"  rc {step.result['rc']} in {step.result['seconds']} s", flush=True)
    result, md = report(gpu, steps)
    save_results(result, md, f"gpu-{result['date']}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}")
    return 0 if all(s.result.get("rc") == 0 or s.optional for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
