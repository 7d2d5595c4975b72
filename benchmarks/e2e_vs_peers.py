"""Photos folder -> masks on disk, whole process, against the peers a user would pick instead:

    segrt       `segrt predict PHOTOS --model EXPORT --out OUT` (auto: the fastest gated variant)
    ov-plain    OpenVINO by hand: NNCF defaults INT8 (100 calibration photos), a plain loop: decode,
                resize, normalize, infer, argmax, resize back, save
    ov-async    the same with the THROUGHPUT hint and AsyncInferQueue (an expert's loop)
    torch-bf16  eager PyTorch, bf16 autocast + channels-last, the same loop

Each path runs as its own process over the same photos (a folder of links cycling through held-out
photos), interleaved over rounds, timed from process start to exit; images/s is photos / wall time
(median over rounds). Agreement: mask IoU of each path's masks with eager fp32's (segrt's definition:
logits resized to the photo, then argmax) over the distinct photos, at their original size.

    python benchmarks/pets_sets.py --data ../shared/data/oxford_iiit_pet_subset --out /tmp/pets-sets
    python benchmarks/e2e_vs_peers.py --images /tmp/pets-sets/val/images --calib-images /tmp/pets-sets/calib
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("segrt", "ov-plain", "ov-async", "torch-bf16")


# -- the peers, written plainly, as a user would --------------------------------------------------
def preprocess(path: Path, size: tuple[int, int], mean, std) -> tuple[np.ndarray, tuple[int, int]]:
    img = Image.open(path).convert("RGB")
    x = np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), np.float32) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32), img.size


def save_mask(logits: np.ndarray, wh: tuple[int, int], path: Path) -> None:
    Image.fromarray(logits[0].argmax(0).astype(np.uint8)).resize(wh, Image.NEAREST).save(path)


def ov_plain(model: Path, photos: list[Path], out: Path, size, mean, std) -> None:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU")
    for p in photos:
        x, wh = preprocess(p, size, mean, std)
        save_mask(compiled(x)[0], wh, out / f"{p.stem}.png")


def ov_async(model: Path, photos: list[Path], out: Path, size, mean, std) -> None:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    queue = ov.AsyncInferQueue(compiled)
    queue.set_callback(lambda request, job: save_mask(request.get_output_tensor(0).data, job[0], job[1]))
    for p in photos:
        x, wh = preprocess(p, size, mean, std)
        queue.start_async(x, (wh, out / f"{p.stem}.png"))
    queue.wait_all()


def torch_bf16(export: Path, photos: list[Path], out: Path, size, mean, std) -> None:
    import torch

    from segrt.manifest import Manifest
    from segrt.verify.reference import eager_model, export_checkpoint

    manifest = Manifest.load(export)
    model = eager_model(export_checkpoint(export, manifest)[0], manifest).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        for p in photos:
            x, wh = preprocess(p, size, mean, std)
            logits = model(torch.from_numpy(x).to(memory_format=torch.channels_last)).float().numpy()
            save_mask(logits, wh, out / f"{p.stem}.png")


# -- the harness -------------------------------------------------------------------------------------
def links(src: Path, dst: Path, count: int) -> Path:
    from segrt.imaging.files import list_images

    photos = list_images(src)
    dst.mkdir(parents=True)
    for i in range(count):
        os.symlink(photos[i % len(photos)].resolve(), dst / f"{i:05d}_{photos[i % len(photos)].name}")
    return dst


def nncf_defaults(export: Path, calib: Path, count: int, out: Path) -> Path:
    """What the by-hand peers run: model.onnx quantized with nncf.quantize's defaults, saved as IR."""
    import nncf
    import openvino as ov

    from segrt.imaging.decode import read_model_input
    from segrt.imaging.files import list_images
    from segrt.manifest import Manifest

    manifest = Manifest.load(export)
    data = [read_model_input(p, manifest)[0][None] for p in list_images(calib)[:count]]
    model = nncf.quantize(ov.Core().read_model(str(export / "model.onnx")), nncf.Dataset(data))
    ov.save_model(model, str(out))
    return out


def reference_masks(export: Path, photos: list[Path]) -> dict[str, np.ndarray]:
    """Eager fp32 masks at each photo's size (segrt.imaging.masks.to_mask: resize the logits, then argmax)."""
    import torch

    from segrt.imaging.decode import read_model_input
    from segrt.imaging.masks import to_mask
    from segrt.manifest import Manifest
    from segrt.verify.reference import eager_model, export_checkpoint

    manifest = Manifest.load(export)
    model = eager_model(export_checkpoint(export, manifest)[0], manifest).eval()
    masks = {}
    with torch.inference_mode():
        for p in photos:
            x, geo = read_model_input(p, manifest)
            masks[p.stem] = to_mask(model(torch.from_numpy(x[None])).numpy()[0], geo)
    return masks


def agreement(out: Path, reference: dict[str, np.ndarray], num_classes: int) -> float:
    from segrt.imaging.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes)
    for stem, ref in reference.items():
        first = sorted(out.glob(f"*_{stem}.png"))[0]
        cm.update(np.asarray(Image.open(first)), ref)
    return cm.miou()


def child_command(name: str, args, work: Path, photos: Path, out: Path) -> list[str]:
    if name == "segrt":
        return [sys.executable, "-m", "segrt.cli", "predict", str(photos), "--model", str(args.segrt_model or args.export), "--out",
                str(out), "--quiet", "--no-color"] + list(args.segrt_args)
    model = args.export if name == "torch-bf16" else work / "nncf.xml"
    return [sys.executable, __file__, "--child", name, "--model", str(model), "--export", str(args.export),
            "--photos", str(photos), "--out", str(out)]


def measure(args, work: Path) -> dict:
    from segrt.cpuinfo import cpu_info
    from segrt.imaging.files import list_images
    from segrt.manifest import Manifest

    manifest = Manifest.load(args.export)
    photos = links(args.images, work / "photos", args.count)
    print(f"NNCF defaults on {args.calib_count} calibration photos ...", flush=True)
    nncf_defaults(args.export, args.calib_images, args.calib_count, work / "nncf.xml")
    unique = list_images(args.images)
    print(f"eager fp32 reference masks for {len(unique)} held-out photos ...", flush=True)
    reference = reference_masks(args.export, unique)
    walls: dict[str, list[float]] = {n: [] for n in args.paths}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for rnd in range(args.rounds):
        for name in args.paths:
            out = work / f"out-{name}-{rnd}"
            t0 = time.perf_counter()
            subprocess.run(child_command(name, args, work, photos, out), check=True, env=env, cwd=ROOT)
            walls[name].append(time.perf_counter() - t0)
            print(f"round {rnd}: {name} {args.count / walls[name][-1]:.1f} img/s", flush=True)
    rows = []
    for name in args.paths:
        wall = statistics.median(walls[name])
        rows.append({"path": name, "images_per_s": args.count / wall, "wall_s": wall, "walls": walls[name],
                     "mask_iou_vs_eager_fp32": agreement(work / f"out-{name}-0", reference, manifest.num_classes)})
    base = next((r["images_per_s"] for r in rows if r["path"] == "ov-async"), None)
    for r in rows:
        r["vs_ov_async"] = r["images_per_s"] / base if base else None
    return {"date": dt.date.today().isoformat(), "cpu": cpu_info(), "cores": os.cpu_count(), "model": str(args.export),
            "photos": args.count, "distinct_photos": len(unique), "rounds": args.rounds,
            "calibration_photos": args.calib_count, "segrt_model": str(args.segrt_model or args.export),
            "segrt_args": list(args.segrt_args), "rows": rows}


def markdown(result: dict) -> str:
    cpu = result["cpu"]
    lines = [f"### Photos -> masks on disk, whole process: {result['photos']} photos ({result['distinct_photos']} "
             f"distinct, held out), {cpu['model']} [{' '.join(cpu['isa'])}], {result['date']}", "",
             "| path | images/s | vs ov-async | mask IoU vs eager fp32 |", "|---|---|---|---|"]
    for r in result["rows"]:
        vs = f"{r['vs_ov_async']:.2f}x" if r["vs_ov_async"] else "-"
        lines.append(f"| {r['path']} | {r['images_per_s']:.1f} | {vs} | {r['mask_iou_vs_eager_fp32']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--export", type=Path, default=ROOT / "exported" / "pets")
    p.add_argument("--images", type=Path, help="held-out photos (never trained on nor calibrated with)")
    p.add_argument("--calib-images", type=Path, help="calibration photos for the peers' NNCF defaults")
    p.add_argument("--calib-count", type=int, default=100)
    p.add_argument("--count", type=int, default=600, help="photos per run (links cycling through --images)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--segrt-model", type=Path, help="what segrt predict runs (default: --export, auto's choice)")
    p.add_argument("--segrt-args", nargs=argparse.REMAINDER, default=[], help="extra `segrt predict` options")
    p.add_argument("--tag", default="machine", help="names the results file")
    p.add_argument("--child", choices=PATHS[1:], help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--photos", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        from segrt.manifest import Manifest

        m = Manifest.load(args.export)
        args.out.mkdir(parents=True)
        run = {"ov-plain": ov_plain, "ov-async": ov_async, "torch-bf16": torch_bf16}[args.child]
        run(args.model, sorted(args.photos.iterdir()), args.out, tuple(m.input_size), np.float32(m.mean),
            np.float32(m.std))
        return 0
    if not (args.images and args.calib_images):
        p.error("--images and --calib-images are required")
    with tempfile.TemporaryDirectory(prefix="segrt-e2e-") as tmp:
        result = measure(args, Path(tmp))
    sys.path.insert(0, str(Path(__file__).parent))
    from common import save

    save(result, markdown(result), f"{result['date']}-{args.tag}-e2e-vs-peers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
