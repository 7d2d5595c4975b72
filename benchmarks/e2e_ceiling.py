"""How close `segrt predict` runs to the model's own speed, and where the rest of the CPU goes. In one run,
on the same photos and the same model file (the variant `auto` picks here):

    model alone   the engine's own throughput on inputs prepared beforehand (OpenVINO: THROUGHPUT hint and
                  an AsyncInferQueue, as benchmark_app runs it; ONNX Runtime: batches of 4)
    segrt         `segrt predict PHOTOS --json` (images/s as its summary reports them, start-up apart), with
                  its CPU accounting: core-ms per photo by stage (segrt.predict.accounting)
    expert loop   the same file by hand, as an expert writes it: decode, resize, feed, AsyncInferQueue (or
                  ORT batches), argmax, nearest resize, PNG

    python benchmarks/e2e_ceiling.py --images ../shared/data/oxford_iiit_pet_subset/images --count 300 --tag zen5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import heading, save  # noqa: E402
from e2e_vs_peers import agreement, links, reference_masks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def picked(export: Path):
    from segrt.runtime.session import Session

    session = Session(export, provider="auto")
    return session, session.path


def model_alone(session, model: Path, inputs: list[np.ndarray]) -> float:
    """Images/s of the engine alone on prepared inputs (no decoding, no outputs)."""
    t0 = time.perf_counter()
    if model.suffix == ".xml":
        import openvino as ov

        compiled = ov.Core().compile_model(str(model), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
        queue = ov.AsyncInferQueue(compiled)
        t0 = time.perf_counter()
        for x in inputs:
            queue.start_async({0: x[None]})
        queue.wait_all()
    else:
        for i in range(0, len(inputs), 4):
            session.run(np.stack(inputs[i:i + 4]))
    return len(inputs) / (time.perf_counter() - t0)


def expert(model: Path, photos: list[Path], out: Path, manifest, uint8: bool) -> float:
    """The same file by hand; -> images/s from the first decode to the last PNG."""
    h, w = manifest.input_size
    mean = np.asarray(manifest.mean, np.float32)[:, None, None]
    std = np.asarray(manifest.std, np.float32)[:, None, None]
    out.mkdir(parents=True)

    def prep(p: Path):
        img = Image.open(p).convert("RGB")
        x = np.asarray(img.resize((w, h), Image.BILINEAR)).transpose(2, 0, 1)
        return (np.ascontiguousarray(x) if uint8 else ((x / np.float32(255) - mean) / std).astype(np.float32)), img.size

    def save_mask(logits: np.ndarray, wh, path: Path) -> None:
        Image.fromarray(logits.argmax(0).astype(np.uint8)).resize(wh, Image.NEAREST).save(path)

    t0 = time.perf_counter()
    if model.suffix == ".xml":
        import openvino as ov

        compiled = ov.Core().compile_model(str(model), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
        queue = ov.AsyncInferQueue(compiled)
        queue.set_callback(lambda r, job: save_mask(r.get_output_tensor(0).data[0], *job))
        t0 = time.perf_counter()
        for p in photos:
            x, wh = prep(p)
            queue.start_async({0: x[None]}, (wh, out / f"{p.stem}.png"))
        queue.wait_all()
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        t0 = time.perf_counter()
        for i in range(0, len(photos), 4):
            batch = [prep(p) for p in photos[i:i + 4]]
            logits = sess.run(None, {name: np.stack([x for x, _ in batch])})[0]
            for (_, wh), lg, p in zip(batch, logits, photos[i:i + 4]):
                save_mask(lg, wh, out / f"{p.stem}.png")
    return len(photos) / (time.perf_counter() - t0)


def run(args) -> dict:
    from segrt.cpuinfo import cpu_info
    from segrt.imaging.decode import read_model_input

    work = Path(tempfile.mkdtemp(prefix="e2e-ceiling-"))
    photos_dir = links(args.images, work / "photos", args.count)
    photos = sorted(photos_dir.iterdir())
    session, model = picked(args.export)
    manifest = session.manifest
    print(f"auto picks {model.name}; preparing {len(photos)} inputs ...", flush=True)
    inputs = [read_model_input(p, manifest, pixels=session.takes_uint8)[0] for p in photos]
    rows = {"model alone": [], "segrt predict": [], "expert loop": []}
    accounting, startup = [], []  # startup: the process's wall time outside its images (imports, open, exit)
    for rnd in range(args.rounds):
        rows["model alone"].append(model_alone(session, model, inputs))
        started = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", str(photos_dir), "--model",
                              str(args.export), "--out", str(work / f"segrt-{rnd}"), "--quiet", "--json",
                              "--no-color"], capture_output=True, text=True, cwd=ROOT, check=True)
        summary = json.loads(res.stdout)
        rows["segrt predict"].append(summary["images_per_s"])
        startup.append(time.perf_counter() - started - summary["timings_s"]["wall"])
        accounting.append(summary["cpu"])
        rows["expert loop"].append(expert(model, photos, work / f"expert-{rnd}", manifest, session.takes_uint8))
        print({k: round(v[-1], 1) for k, v in rows.items()}, flush=True)
    best = {k: float(np.median(v)) for k, v in rows.items()}
    print("eager fp32 reference masks ...", flush=True)
    from segrt.imaging.files import list_images

    reference = reference_masks(args.export, list_images(args.images)[:args.count])
    agree = {"segrt predict": agreement(work / "segrt-0", reference, manifest.num_classes),
             "expert loop": agreement(work / "expert-0", reference, manifest.num_classes)}
    cpu = min(accounting, key=lambda a: a["process_s"])
    per = cpu["core_ms_per_image"]
    host = per["total"] - per["inference"]
    return {"date": dt.date.today().isoformat(), "cpu": cpu_info(), "cores": os.cpu_count(),
            "model": str(args.export.relative_to(ROOT) if args.export.is_relative_to(ROOT) else args.export), "file": model.name, "photos": len(photos), "rounds": args.rounds,
            "images_per_s": best, "runs": rows, "miou_agreement_vs_eager_fp32": agree,
            "ratios": {"segrt_vs_model_alone": round(best["segrt predict"] / best["model alone"], 3),
                       "segrt_vs_expert": round(best["segrt predict"] / best["expert loop"], 3)},
            "core_ms_per_photo": per, "host_core_ms_per_photo": round(host, 2),
            "model_alone_core_ms_per_photo": round(1000 * (os.cpu_count() or 1) / best["model alone"], 2),
            "threads_s": cpu["threads_s"], "process_s": cpu["process_s"], "floor": floor(per, best),
            "startup_s": round(float(np.median(startup)), 2)}


def floor(per: dict, best: dict) -> dict:
    """What 1.1x the expert loop would allow per photo (core-ms, all cores busy), against what inference and
    the two stages that make the model's input (decode, resize) take in segrt's own accounting."""
    allowed = 1000 * (os.cpu_count() or 1) / (1.1 * best["expert loop"])
    return {"allowed_at_1_1x_expert": round(allowed, 2), "inference": per["inference"],
            "host_allowed": round(allowed - per["inference"], 2), "decode_and_resize": round(per["decode"] + per["resize"], 2)}


def markdown(r: dict) -> str:
    lines = [heading(r, f"End to end against the model alone: {r['file']} of {r['model']}, {r['photos']} photos"), "",
             "| path | images/s (median of rounds) |", "|---|---|"]
    agree = r.get("miou_agreement_vs_eager_fp32", {})
    lines[-2:] = ["| path | images/s (median of rounds) | masks vs eager fp32 (mIoU of agreement) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {agree[k]:.4f} |" if k in agree else f"| {k} | {v:.1f} | - |"
              for k, v in r["images_per_s"].items()]
    lines += ["", f"segrt / model alone: {r['ratios']['segrt_vs_model_alone']:.2f}x; segrt / expert loop: "
              f"{r['ratios']['segrt_vs_expert']:.2f}x", "",
              "segrt's CPU per photo (core-ms; the run with the least CPU):", "",
              "| " + " | ".join(r["core_ms_per_photo"]) + " |", "|" + "---|" * len(r["core_ms_per_photo"]),
              "| " + " | ".join(f"{v:.2f}" for v in r["core_ms_per_photo"].values()) + " |", "",
              f"host work (everything but inference): {r['host_core_ms_per_photo']:.2f} core-ms per photo; the model "
              f"alone costs {r['model_alone_core_ms_per_photo']:.2f} core-ms per photo at its own throughput; "
              f"threads' own counters {r['threads_s']:.2f} s vs the process {r['process_s']:.2f} s", ""]
    if "startup_s" in r:
        lines += [f"segrt's start-up (the process's wall time outside its images: imports, the model opened from the "
                  f"compile cache, the summary, exit): {r['startup_s']:.2f} s, median of rounds", ""]
    if "floor" in r:
        f = r["floor"]
        lines += [f"1.1x the expert loop allows {f['allowed_at_1_1x_expert']:.2f} core-ms per photo; inference alone takes "
                  f"{f['inference']:.2f}, leaving {f['host_allowed']:.2f} for all host work, while decoding and resizing "
                  f"alone take {f['decode_and_resize']:.2f}", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, default=ROOT / "exported" / "pets")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tag", default="machine")
    args = parser.parse_args(argv)
    result = run(args)
    save(result, markdown(result), f"{result['date']}-{args.tag}-e2e-ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
