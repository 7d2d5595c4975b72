"""End-to-end `segrt predict` on real photos: the path `--provider auto` picks vs ONNX Runtime INT8
(`--provider cpu --precision int8`), alternately (A B A B) in one process, medians reported, with
each run's summary (where the time goes: inference busy, decode, write, waits).

    python benchmarks/pets_sets.py --data ../shared/data/oxford_iiit_pet_subset --out /tmp/pets-sets
    python benchmarks/predict_paths.py --model exported/pets --images ../shared/data/oxford_iiit_pet_subset/images

Writes benchmarks/results/<date>-<tag>-predict-paths.json/.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
from pathlib import Path

from common import link_photos, photo_args, save

from segrt.cpuinfo import cpu_info, describe_cpu
from segrt.predict.options import PredictOptions
from segrt.predict.run import run_predict

PATHS = {"auto (fastest gated)": {"provider": "auto"},
         "ONNX Runtime INT8": {"provider": "cpu", "precision": "int8"}}


def predict_once(images: Path, model: Path, batch_size: int, out_root: Path, **path) -> dict:
    with tempfile.TemporaryDirectory(dir=out_root, prefix=".predict-bench-") as out:
        return run_predict([str(images)], model, log=lambda m: None, **path,
                           opts=PredictOptions(out=Path(out), batch_size=batch_size, progress=False))


def main():
    p = photo_args(argparse.ArgumentParser(), rounds=5)
    p.add_argument("--out-root", type=Path, default=Path("."), help="where outputs are written (a temp folder)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        subset = link_photos(args.images, args.count, Path(tmp) / "imgs")
        runs = {name: [] for name in PATHS}
        for name, path in PATHS.items():  # warm-up (and the compile cache)
            predict_once(subset, args.model, args.batch_size, args.out_root, **path)
        for _ in range(args.rounds):
            for name, path in PATHS.items():
                runs[name].append(predict_once(subset, args.model, args.batch_size, args.out_root, **path))
    result = {"date": dt.date.today().isoformat(), "cpu": cpu_info(), "model": str(args.model),
              "images": args.count, "batch_size": args.batch_size, "rounds": args.rounds, "paths": {}}
    for name, summaries in runs.items():
        median = sorted(summaries, key=lambda s: s["images_per_s"])[len(summaries) // 2]
        result["paths"][name] = {"images_per_s": statistics.median(s["images_per_s"] for s in summaries),
                                 "rounds": [s["images_per_s"] for s in summaries], "artifact": median["artifact"],
                                 "runtime": median["runtime"], "timings_s": median["timings_s"]}
    a, b = (result["paths"][n]["images_per_s"] for n in PATHS)
    result["ratio"] = a / b
    write(result, args.tag)


def write(result: dict, tag: str) -> None:
    lines = [f"### segrt predict, {result['images']} photos, batch {result['batch_size']}, median of "
             f"{result['rounds']} alternating rounds ({result['date']})", "",
             f"CPU: {describe_cpu(result['cpu'])}, {result['cpu']['cores']} cores", "",
             "| path | runtime | images/s | wall s | inference busy s | decode s | write s | waited for decode s | "
             "waited for inference s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["paths"].items():
        t = r["timings_s"]
        lines.append(f"| {name} | {r['runtime']} | {r['images_per_s']:.1f} | {t['wall']:.2f} | {t['inference']:.2f} | "
                     f"{t['decode']:.2f} | {t['write']:.2f} | {t['wait_decode']:.2f} | {t['wait_inference']:.2f} |")
    lines += ["", f"auto / ONNX Runtime INT8: **{result['ratio']:.2f}x** images/s"]
    save(result, "\n".join(lines) + "\n", f"{result['date']}-{tag}-predict-paths")


if __name__ == "__main__":
    main()
