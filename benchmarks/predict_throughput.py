"""End-to-end `segrt predict` vs the bare Session on already-decoded tensors, and peak RSS.

Same model, batch size and threads; measured alternately (A B A B) in one run.

    python benchmarks/predict_throughput.py --model exported/pets \
        --images ../shared/data/oxford_iiit_pet_subset/images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segrt.imaging import decode
from segrt.imaging.files import list_images
from segrt.predict.options import PredictOptions
from segrt.predict.run import run_predict
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.session import Session

RSS_CHILD = """
import resource, sys
from segrt.predict.run import PredictOptions, run_predict
run_predict([sys.argv[1]], sys.argv[2], provider="cpu", threads=int(sys.argv[4]), log=lambda m: None,
            opts=PredictOptions(out=sys.argv[3], batch_size=int(sys.argv[5]), progress=False))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bare_throughput(session: Session, tensors: list[np.ndarray], batch_size: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        session.run(np.stack(tensors[i:i + batch_size]))
    return len(tensors) / (time.perf_counter() - t0)


def predict_throughput(images: Path, model: Path, batch_size: int, threads: int, workers: int, spin: bool,
                       out_root: Path, provider: str = "cpu", kind: str | None = None) -> float:
    with tempfile.TemporaryDirectory(dir=out_root, prefix=".predict-bench-") as out:
        s = run_predict([str(images)], model, provider=provider, kind=kind, log=lambda m: None,
                        session_options=SessionOptions(threads=threads, spin=spin, throughput=True),
                        opts=PredictOptions(out=Path(out), batch_size=batch_size, workers=workers, progress=False))
    return s["images_per_s"]


def peak_rss_mb(images: list[Path], n: int, model: Path, threads: int, batch_size: int) -> float:
    """Peak RSS of a fresh `segrt predict` process over n images (links cycling through the set)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(n):
            img = images[i % len(images)]
            os.symlink(img.resolve(), src / f"img_{i:05d}{img.suffix}")
        out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(src), str(model), str(Path(tmp) / "out"),
                              str(threads), str(batch_size)], capture_output=True, text=True, check=True)
        return int(out.stdout.strip().splitlines()[-1]) / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=Path("exported/pets"))
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--count", type=int, default=240, help="images for the throughput runs (>= 200)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="decode threads (0: predict's default)")
    p.add_argument("--rounds", type=int, default=5, help="alternating bare/predict rounds (medians reported)")
    p.add_argument("--spin", action=argparse.BooleanOptionalAction, default=False,
                   help="ORT thread spinning in predict's session (the bare session always spins)")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--provider", default="cpu", help="cpu, cuda, tensorrt, openvino (the same for both sides)")
    p.add_argument("--kind", help="artifact kind (onnx, openvino, torchscript, pt2; default: the provider's)")
    p.add_argument("--out-root", type=Path, default=Path("."),
                   help="where predict writes its outputs (a temp folder inside); file creation speed differs "
                        "between file systems (here: 0.76 ms per new file under /tmp, 0.02 ms under /work)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    all_images = [x for x in list_images(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "imgs"
        subset.mkdir()
        for img in all_images[: args.count]:
            os.symlink(img.resolve(), subset / img.name)
        session = Session(args.model, provider=args.provider, kind=args.kind, options=SessionOptions(threads=args.threads))
        m = session.manifest
        tensors = [decode.read_model_input(x, m)[0] for x in sorted(subset.iterdir())]  # as predict decodes
        bare_throughput(session, tensors[:8], args.batch_size)  # warm-up
        bare, e2e = [], []
        for _ in range(args.rounds):
            bare.append(bare_throughput(session, tensors, args.batch_size))
            e2e.append(predict_throughput(subset, args.model, args.batch_size, args.threads, args.workers, args.spin,
                                          args.out_root, args.provider, args.kind))
    res = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "model": str(args.model),
           "provider": session.provider,
           "input_size": m.input_size, "images": len(tensors), "batch_size": args.batch_size,
           "threads": args.threads, "decode_workers": args.workers, "predict_spin": args.spin,
           "out_root": str(args.out_root.resolve()),
           "bare_session_img_s": statistics.median(bare), "predict_img_s": statistics.median(e2e),
           "rounds": {"bare": bare, "predict": e2e}}
    res["ratio"] = res["predict_img_s"] / res["bare_session_img_s"]
    print(f"bare session {res['bare_session_img_s']:.1f} img/s | segrt predict end-to-end "
          f"{res['predict_img_s']:.1f} img/s | ratio {res['ratio']:.3f} (target >= 0.85)")
    if not args.skip_rss:
        small = peak_rss_mb(all_images, 100, args.model, args.threads, args.batch_size)
        large = peak_rss_mb(all_images, 1000, args.model, args.threads, args.batch_size)
        res.update(peak_rss_mb_100=small, peak_rss_mb_1000=large, rss_growth=large / small - 1)
        print(f"peak RSS: 100 images {small:.0f} MB | 1000 images {large:.0f} MB | growth "
              f"{100 * (large / small - 1):+.1f}% (target within 10%)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
