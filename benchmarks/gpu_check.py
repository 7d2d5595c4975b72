"""`make gpu-check`: everything segrt does on a GPU, run once and recorded, on any machine that has
one. Without CUDA it says so in one line and exits 0.

On a GPU it installs onnxruntime-gpu in place of onnxruntime (and TensorRT's libraries if the
registry has them), exports the bundled pets model again with every format and an fp16 variant,
then runs, each step with its own time limit, continuing past failures:
  predict on cuda and tensorrt (fp32 and fp16), parity on both for every artifact (TorchScript and
  pt2 on cuda), bench on both (batch 1..64, 256 and 512, GPU memory), eager fp32 and AMP beside them,
  one training epoch with AMP and one with DDP over NCCL (torchrun, one process), and predict end to
  end on 3,000 images vs the bare session.
It writes benchmarks/results/gpu-<date>-<gpu>.json and .md, with the targets of issue 16: ORT-CUDA
fp16 or TensorRT fp16 >= 5x eager fp32 and >= 1.5x eager AMP at batch 32, 256x256; predict end to end
>= 0.8x the bare session.

    make gpu-check            # or: python benchmarks/gpu_check.py [--skip-install]
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

from common import save

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SEGRT = [PY, "-m", "segrt.cli"]
BATCHES, SIZES = "1,8,32,64", "256,512"


@dataclass
class Step:
    name: str
    cmd: list[str]
    timeout: int = 300
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


def install_steps() -> list[Step]:
    pip = [PY, "-m", "pip", "install", "-q"]
    return [Step("uninstall onnxruntime", [PY, "-m", "pip", "uninstall", "-y", "-q", "onnxruntime"], 120),
            Step("install onnxruntime-gpu", [*pip, "onnxruntime-gpu"], 300),
            Step("install tensorrt", [*pip, "tensorrt"], 300, optional=True)]


def plan(work: Path, images: Path, many: Path) -> list[Step]:
    """The check after the install, as command lines (run in order, each with a time limit)."""
    exp, js = work / "pets", lambda name: str(work / f"{name}.json")
    steps = [Step("export (onnx, torchscript, pt2, fp16)", [
        *SEGRT, "export", str(ROOT / "exported/pets/checkpoint.pt"), "--out", str(exp), "--formats",
        "onnx,torchscript,pt2", "--quantize", "fp16", "--val-images", str(images)], 600)]
    for provider in ("cuda", "tensorrt"):
        for precision in ("fp32", "fp16"):
            fp16 = ["--precision", "fp16"] if provider == "cuda" and precision == "fp16" else \
                ["--trt-fp16"] if precision == "fp16" else ["--precision", "fp32"]
            steps.append(Step(f"predict {provider} {precision}", [
                *SEGRT, "predict", str(images), "--model", str(exp), "--provider", provider, *fp16, "--out",
                str(work / f"pred-{provider}-{precision}"), "--json"], 600))
        steps.append(Step(f"parity {provider}", [*SEGRT, "parity", str(exp), "--images", str(images),
                                                 "--provider", provider, "--json", js(f"parity-{provider}")], 600))
        for fp16 in ([], ["--trt-fp16"]) if provider == "tensorrt" else ([],):
            tag = f"bench {provider}{' fp16' if fp16 else ''}"
            steps.append(Step(tag, [*SEGRT, "bench", str(exp), "--provider", provider, *fp16, "--batch-sizes", BATCHES,
                                    "--sizes", SIZES, "--runs", "10", "--json", js(tag.replace(" ", "-"))], 600))
    steps.append(Step("eager fp32 and AMP", [PY, __file__, "--eager", str(exp), "--json", js("eager")], 300))
    train = ["--layout", "pets", "--data", str(ROOT / "tests/data/pets"), "--size", "128", "--base-channels", "16",
             "--epochs", "1", "--batch-size", "8", "--workers", "2", "--quiet"]
    steps.append(Step("train 1 epoch, AMP", [PY, "-m", "segrt.training", *train, "--out", str(work / "train")], 300))
    steps.append(Step("train 1 epoch, DDP over NCCL", [PY, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m",
                                                       "segrt.training", *train, "--out", str(work / "ddp")], 300))
    steps.append(Step("predict end to end vs bare session", [
        PY, str(ROOT / "benchmarks/predict_throughput.py"), "--model", str(exp), "--images", str(many), "--count",
        "3000", "--provider", "cuda", "--batch-size", "32", "--threads", "0", "--rounds", "3", "--skip-rss",
        "--out-root", str(work), "--json", js("e2e")], 600))
    return steps


def run(step: Step) -> None:
    t0 = time.perf_counter()
    try:
        res = subprocess.run(step.cmd, capture_output=True, text=True, timeout=step.timeout, cwd=ROOT)
        rc, out, err = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, exc.stdout or "", f"timed out after {step.timeout} s"
    step.result = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "stderr_tail": str(err)[-1500:]}
    for path in [a for a in step.cmd if a.endswith(".json")]:
        if Path(path).is_file():
            step.result["json"] = json.loads(Path(path).read_text())
    if "--json" in step.cmd and step.cmd[-1] == "--json" and out.strip().startswith("{"):
        step.result["json"] = json.loads(out)


def eager_times(export: Path, out: Path) -> None:
    """ms per batch of eager fp32 and AMP (fp16 autocast) on cuda: batch 1..64, 256 and 512."""
    import torch

    from segrt.manifest import Manifest
    from segrt.parity import eager_model

    model = eager_model(export / "checkpoint.pt", Manifest.load(export)).cuda()
    rows = []
    for size in map(int, SIZES.split(",")):
        for batch in map(int, BATCHES.split(",")):
            x = torch.randn(batch, 3, size, size, device="cuda")
            for amp in (False, True):
                torch.cuda.reset_peak_memory_stats()
                with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=amp):
                    for _ in range(3):
                        model(x)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(10):
                        model(x)
                    torch.cuda.synchronize()
                ms = (time.perf_counter() - t0) * 100
                rows.append({"backend": "eager AMP" if amp else "eager fp32", "batch_size": batch, "size": size,
                             "ms": ms, "images_per_s": batch * 1000 / ms,
                             "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20})
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1) + "\n")


def targets(steps: list[Step]) -> list[str]:
    """The issue's measures from the recorded steps (batch 32, 256x256)."""
    by = {s.name: s.result.get("json", {}) for s in steps}
    eager = {r["backend"]: r["images_per_s"] for r in by.get("eager fp32 and AMP", {}).get("rows", [])
             if r["batch_size"] == 32 and r["size"] == 256}
    lines = []
    for name, want in (("bench cuda", "fp16"), ("bench tensorrt fp16", "fp32")):
        rows = [r for r in by.get(name, {}).get("rows", []) if r["batch_size"] == 32 and r["height"] == 256
                and r["precision"] == want]
        if rows and eager:
            ips = rows[0]["images_per_s"]
            lines.append(f"{name} ({rows[0]['artifact']}): {ips:.0f} img/s at batch 32, 256x256 = "
                         f"{ips / eager['eager fp32']:.2f}x eager fp32 (target 5x), "
                         f"{ips / eager['eager AMP']:.2f}x eager AMP (target 1.5x)")
    e2e = by.get("predict end to end vs bare session", {})
    if "ratio" in e2e:
        lines.append(f"predict end to end: {e2e['predict_img_s']:.0f} img/s = {e2e['ratio']:.2f}x the bare session "
                     f"(target 0.8x)")
    return lines or ["no target could be computed (see the failed steps)"]


def report(gpu: str, steps: list[Step]) -> tuple[dict, str]:
    result = {"date": dt.date.today().isoformat(), "gpu": gpu,
              "steps": [{"name": s.name, "cmd": s.cmd, **s.result} for s in steps], "targets": targets(steps)}
    lines = [f"### gpu-check on {gpu} ({result['date']})", "", "| step | rc | seconds |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.result.get('rc', '-')}{' (optional)' if s.optional else ''} | "
              f"{s.result.get('seconds', '-')} |" for s in steps]
    lines += [""] + [f"- {t}" for t in result["targets"]]
    return result, "\n".join(lines) + "\n"


def repeat_images(src: Path, dst: Path, count: int) -> Path:
    """``count`` links cycling through the example photos (end-to-end throughput input)."""
    dst.mkdir(parents=True, exist_ok=True)
    photos = sorted(src.glob("*.jpg"))
    for i in range(count):
        os.symlink(photos[i % len(photos)].resolve(), dst / f"img_{i:05d}.jpg")
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--skip-install", action="store_true")
    p.add_argument("--eager", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.eager:
        eager_times(args.eager, args.json)
        return 0
    gpu = gpu_name()
    if gpu is None:
        print("gpu-check: no CUDA GPU on this machine (nvidia-smi finds none); nothing to check")
        return 0
    images = ROOT / "examples" / "images"
    with tempfile.TemporaryDirectory(prefix="segrt-gpu-check-") as tmp:
        work = Path(tmp)
        steps = ([] if args.skip_install else install_steps()) + plan(work, images, repeat_images(images, work / "many", 3000))
        for step in steps:
            print(f"gpu-check: {step.name} ...", flush=True)
            run(step)
            print(f"  rc {step.result['rc']} in {step.result['seconds']} s", flush=True)
    result, md = report(gpu, steps)
    save(result, md, f"gpu-{result['date']}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}")
    return 0 if all(s.result.get("rc") == 0 or s.optional for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
