"""What trust that travels costs on a CPU the export has not seen: the one-time re-check of its
reduced-precision variants on the gate sample and the speed measurement `--provider auto` makes
(empty cache), the same open with the cache warm, and `segrt predict`'s speed after it; on this CPU
and on it simulated as AVX2-only (SEGRT_SIMULATE_ISA=avx2: no VNNI, no bf16 for segrt's choices,
OpenVINO's kernels capped at AVX2); and how far auto's masks agree with an fp32 run's.

    python benchmarks/trust_here.py --images /tmp/pets-sets/val/images --tag zen5
"""

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import link_photos, photo_args, save  # noqa: E402

from segrt.cpuinfo import cpu_info, describe_cpu  # noqa: E402
from segrt.manifest import Manifest  # noqa: E402

_OPEN = """import json, sys, time
t0 = time.perf_counter()
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.session import Session
s = Session(sys.argv[1], provider="auto", options=SessionOptions(gate_here=True, throughput=True, spin=False))
print(json.dumps({"open_s": time.perf_counter() - t0, "artifact": s.artifact.name, "note": s.auto_note}))
"""


def _open(model: Path, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", _OPEN, str(model)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _predict(model: Path, photos: Path, env: dict, out: Path, *extra: str) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "segrt.cli", "predict", str(photos), "--model", str(model), "--out", str(out),
                    "--quiet", "--batch-size", "4", *extra], env=env, check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": time.perf_counter() - t0, "images_per_s": summary["images_per_s"],
            "artifact": summary.get("artifact") or summary.get("model")}


def _agreement(a: Path, b: Path, classes: int) -> float:
    """Mask IoU agreement of two predict runs' class masks, summed over the photos (as the gates count)."""
    import numpy as np
    from PIL import Image

    from segrt.imaging.metrics import ConfusionMatrix, agreement

    cm = ConfusionMatrix(classes)
    for mask in sorted(b.glob("*.png")):
        if not mask.name.endswith(".color.png"):
            cm.update(np.asarray(Image.open(a / mask.name)), np.asarray(Image.open(mask)))
    return agreement(cm)["mask_iou"]


def main():
    args = photo_args(argparse.ArgumentParser(description=__doc__), rounds=1).parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photos = link_photos(args.images, args.count, Path(tmp) / "photos")
        for label, simulate in (("this CPU", None), ("simulated AVX2-only", "avx2")):
            env = {**os.environ, "SEGRT_CACHE_DIR": str(Path(tmp) / f"cache-{simulate}")}
            env.pop("SEGRT_SIMULATE_ISA", None)
            if simulate:
                env["SEGRT_SIMULATE_ISA"] = simulate
            cold, warm = _open(args.model, env), _open(args.model, env)
            run = _predict(args.model, photos, env, Path(tmp) / f"pred-{simulate}")
            _predict(args.model, photos, env, Path(tmp) / f"fp32-{simulate}", "--provider", "cpu", "--precision", "fp32")
            run["agreement_with_fp32"] = _agreement(Path(tmp) / f"pred-{simulate}", Path(tmp) / f"fp32-{simulate}",
                                                    Manifest.load(args.model).num_classes)
            rows.append({"cpu": label, "cold_open_s": cold["open_s"], "warm_open_s": warm["open_s"],
                         "one_time_s": cold["open_s"] - warm["open_s"], "picked": cold["artifact"],
                         "note": cold["note"], "predict": run})
    info = cpu_info()
    result = {"date": dt.date.today().isoformat(), "cpu": info, "model": str(args.model), "images": args.count,
              "rows": rows}
    lines = [f"# Trust that travels: one-time cost on {args.model} ({result['date']})", "",
             f"CPU: {describe_cpu(info)}, {info['cores']} cores; {args.count} photos from {args.images}", "",
             "| CPU as seen | open, empty cache s | open, warm cache s | one-time cost s | auto picks | "
             "predict img/s | predict wall s | masks vs fp32 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cpu']} | {r['cold_open_s']:.2f} | {r['warm_open_s']:.2f} | {r['one_time_s']:.2f} | "
                     f"{r['picked']} | {r['predict']['images_per_s']:.1f} | {r['predict']['wall_s']:.1f} | "
                     f"{r['predict']['agreement_with_fp32']:.4f} |")
    lines += [""] + [f"- {r['cpu']}, first open: {r['note']}" for r in rows]
    save(result, "\n".join(lines) + "\n", f"{result['date']}-{args.tag}-trust-here")


if __name__ == "__main__":
    main()
