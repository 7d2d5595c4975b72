"""Your own model, deployed: a tutorial-style U-Net (tests/data/own/tutorial_unet.py) trained with a
plain PyTorch loop on the pets train split, then deployed the ways its user would pick, each scored
against that user's own eager pipeline on the held-out val split:

    by-hand fp32        torch.onnx.export (defaults) + an ONNX Runtime loop: PIL decode, bilinear resize,
                        normalize, run, logits upsampled (bilinear) to the photo, argmax, PNG
    by-hand int8        the same ONNX quantized with onnxruntime.quantization.quantize_static, its defaults
                        (QDQ, MinMax, per-tensor), 100 calibration photos
    by-hand int8 (pc)   the same with per_channel=True, as ONNX Runtime's docs advise for CNNs
    segrt               `segrt export model.pt --arch tutorial_unet.py:UNet --quantize int8` (its gate on
                        held-out photos, its fallback), then predict with --provider auto

Agreement: mask IoU (segrt's definition: per class over all pixels, mean over classes) with the eager
fp32 masks at each photo's own size. Speed: photos/s, session creation to the last PNG (for segrt: run_predict with its own threads), in this
process, median over alternating rounds. The trained state_dict is cached in --work.

    python benchmarks/own_model.py --data ../shared/data/oxford_iiit_pet_subset --minutes 10 --tag zen5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "own"))
from benchmarks.common import save  # noqa: E402
from tutorial_unet import UNet  # noqa: E402

from segrt.cpuinfo import cpu_info, describe_cpu  # noqa: E402
from segrt.imaging.metrics import ConfusionMatrix, agreement  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
CLASSES = "pet,background,border"  # the trimap's 1, 2, 3, minus 1 as tutorials do


def preprocess(img: Image.Image, size: int) -> np.ndarray:
    x = np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)[None].copy()


def to_mask(logits, wh) -> np.ndarray:
    """Logits upsampled (bilinear, per class) to the photo's size, then argmax: the same for every path,
    so that agreement measures the model's numbers alone."""
    up = [np.asarray(Image.fromarray(c).resize(wh, Image.BILINEAR)) for c in np.asarray(logits, np.float32)[0]]
    return np.stack(up).argmax(0).astype(np.uint8)


def train(data: Path, stems: list[str], size: int, base: int, minutes: float, out: Path) -> None:
    """A tutorial's loop: everything resized to size x size in memory, random flips, Adam, cross-entropy."""
    torch.manual_seed(0)
    xs, ys = [], []
    for s in stems:
        img = Image.open(next((data / "images").glob(f"{s}.*"))).convert("RGB")
        xs.append(preprocess(img, size)[0])
        ys.append(np.asarray(Image.open(data / "masks" / f"{s}.png").resize((size, size), Image.NEAREST), np.int64) - 1)
    x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
    model, epochs, t0 = UNet(base=base), 0, time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    while time.perf_counter() - t0 < minutes * 60:
        model.train()
        for idx in torch.randperm(len(x)).split(8):
            xb, yb = x[idx], y[idx]
            if torch.rand(()) < 0.5:
                xb, yb = xb.flip(-1), yb.flip(-1)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
        print(f"epoch {epochs}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    torch.save(model.state_dict(), out)


def run_loop(run, photos: list[Path], out: Path, size: int) -> dict[str, np.ndarray]:
    out.mkdir(parents=True, exist_ok=True)
    masks = {}
    for p in photos:
        img = Image.open(p).convert("RGB")
        masks[p.stem] = to_mask(run(preprocess(img, size)), img.size)
        Image.fromarray(masks[p.stem]).save(out / f"{p.stem}.png")
    return masks


def by_hand(onnx_path: Path):
    def go(photos, out, size):
        import onnxruntime as ort

        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return run_loop(lambda x: sess.run(None, {name: x})[0], photos, out, size)
    return go


def segrt_path(export: Path):
    def go(photos, out, size):
        from segrt.predict.options import PredictOptions
        from segrt.predict.run import run_predict

        shutil.rmtree(out, ignore_errors=True)
        run_predict([str(p) for p in photos], export, opts=PredictOptions(out=out, color=False, progress=False),
                    log=lambda m: None)
        return {p.stem: np.asarray(Image.open(out / f"{p.stem}.png")) for p in photos}
    return go


def quantize_by_hand(fp32: Path, calib: list[Path], size: int, per_channel: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": preprocess(Image.open(p).convert("RGB"), size)} for p in calib])

        def get_next(self):
            return next(self.items, None)

    dst = fp32.with_name(f"model.int8{'.pc' if per_channel else ''}.onnx")
    quantize_static(str(fp32), str(dst), Reader(), per_channel=per_channel)
    return dst


def segrt_export(state: Path, base: int, size: int, calib: Path, gate: Path, out: Path) -> tuple[Path, str]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "segrt.cli", "export", str(state), "--arch", f"{ROOT}/tests/data/own/tutorial_unet.py:UNet",
           "--arch-args", json.dumps({"base": base}), "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)),
           "--size", str(size), "--classes", CLASSES, "--formats", "onnx,openvino", "--quantize", "int8",
           "--calib-images", str(calib), "--val-images", str(gate), "--out", str(out)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:  # a cold export: no cached compilation or speeds
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "SEGRT_CACHE_DIR": cache})
    print(res.stderr[-3000:])
    if res.returncode and not (out / "manifest.json").exists():  # exit 1 with the folder: a variant failed its gate
        raise SystemExit(f"segrt export failed ({res.returncode})")
    return out, f"{time.perf_counter() - t0:.0f} s"


def gates(export: Path) -> dict:
    """Each reduced-precision variant segrt tried: its agreement with the eager model on the gate photos."""
    from segrt.manifest import Manifest

    m = Manifest.load(export)
    return {name: {"mask_iou": r.mask_iou, "gate": r.gates.mask_iou_min, "passed": r.passed}
            for name, r in m.parity.items() if name not in ("model.onnx", "model.pt2", "model.xml")}


def links(stems: list[str], data: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    for s in stems:
        src = next((data / "images").glob(f"{s}.*"))
        if not (dst / src.name).exists():
            (dst / src.name).symlink_to(src.resolve())
    return sorted(dst.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path, default=ROOT / "segrt" / "training" / "splits" / "pets.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/own-model"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tag", default="machine")
    args = ap.parse_args()
    split, w = json.loads(args.split.read_text()), args.work
    w.mkdir(parents=True, exist_ok=True)
    train_stems, gate_stems = split["train"][:-60], split["train"][-60:]  # the gate's held-out photos: not trained on
    calib = links(split["train"][:100], args.data, w / "calib")
    links(gate_stems, args.data, w / "gate")
    photos = links(split["val"], args.data, w / "val")
    state = w / f"tutorial_unet_b{args.base}_{args.size}_{args.minutes:g}min.pt"
    if not state.exists():
        train(args.data, train_stems, args.size, args.base, args.minutes, state)
    else:
        print(f"using the trained {state}")
    model = UNet(base=args.base).eval()
    model.load_state_dict(torch.load(state, weights_only=True))
    with torch.inference_mode():
        eager = run_loop(lambda x: model(torch.from_numpy(x)), photos, w / "out-eager", args.size)
    fp32 = w / "byhand" / "model.onnx"
    fp32.parent.mkdir(exist_ok=True)
    torch.onnx.export(model, (torch.randn(1, 3, args.size, args.size),), str(fp32), input_names=["input"])
    paths = {"by-hand fp32": by_hand(fp32), "by-hand int8": by_hand(quantize_by_hand(fp32, calib, args.size, False)),
             "by-hand int8 (pc)": by_hand(quantize_by_hand(fp32, calib, args.size, True))}
    export, took = segrt_export(state, args.base, args.size, w / "calib", w / "gate", w / "segrt-export")
    paths["segrt"] = segrt_path(export)
    times, agree = {k: [] for k in paths}, {}
    for r in range(args.rounds):
        for name, go in paths.items():
            t0 = time.perf_counter()
            masks = go(photos, w / f"out-{name.replace(' ', '_')}", args.size)
            times[name].append(len(photos) / (time.perf_counter() - t0))
            if r == 0:
                cm = ConfusionMatrix(3)
                for stem, m in masks.items():
                    cm.update(m, eager[stem])
                agree[name] = agreement(cm)
    truth = ConfusionMatrix(3)  # how good the user's model is: eager fp32 against the trimaps
    for p in photos:
        truth.update(eager[p.stem], np.asarray(Image.open(args.data / "masks" / f"{p.stem}.png"), np.int64) - 1)
    tried = gates(export)
    chosen = json.loads((w / "out-segrt" / "summary.json").read_text()).get("artifact", "?")
    cpu = describe_cpu(cpu_info())
    about = (f"CPU: {cpu}. Model: the tutorial U-Net (base {args.base}), {args.minutes:g} minutes of a plain PyTorch "
             f"loop on {len(train_stems)} pet photos at {args.size}x{args.size} (eager fp32 mIoU {truth.miou():.3f} "
             f"against the trimaps); scored on the {len(photos)} val-split photos at their own size; segrt's gate on "
             f"{len(gate_stems)} other held-out photos; segrt export took {took}; its INT8 variants on those photos: "
             + ", ".join(f"{k} {v['mask_iou']:.4f} ({'passed' if v['passed'] else 'failed'} {v['gate']})"
                         for k, v in tried.items()) + f"; predict ran {chosen}. Median of "
             f"{args.rounds} rounds.")
    lines = [f"# Your own model, deployed ({dt.date.today()})", "", about, "",
             "| path | photos/s | vs by-hand fp32 | mask IoU vs eager fp32 | pixel agreement |",
             "|---|---|---|---|---|"]
    rows = {}
    for name in paths:
        rows[name] = {"photos_per_s": statistics.median(times[name]), **agree[name]}
        rows[name]["vs_by_hand_fp32"] = rows[name]["photos_per_s"] / statistics.median(times["by-hand fp32"])
        lines.append(f"| {name} | {rows[name]['photos_per_s']:.1f} | {rows[name]['vs_by_hand_fp32']:.2f}x | "
                     f"{agree[name]['mask_iou']:.4f} | "
                     f"{agree[name]['pixel_agreement']:.4f} |")
    save({"date": dt.date.today().isoformat(), "cpu": cpu, "size": args.size, "base": args.base,
          "minutes": args.minutes, "eager_miou_vs_truth": truth.miou(), "segrt_artifact": chosen,
          "segrt_export_s": took, "segrt_variants": tried, "rows": rows},
         "\n".join(lines) + "\n", f"{dt.date.today()}-{args.tag}-own-model")


if __name__ == "__main__":
    main()
