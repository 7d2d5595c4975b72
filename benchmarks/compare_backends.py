"""Side-by-side backends in ONE process on the same model and inputs.

What a PyTorch user would try (eager NCHW / channels_last, bf16 autocast + channels_last,
torch.compile, TorchScript), every variant of the export through segrt's Session (ONNX Runtime and
OpenVINO, fp32 / bf16 / INT8, each marked gated or not) and OpenVINO run by hand on the ONNX file
(fp32 and bf16 hints, INT8 with NNCF's defaults calibrated on --calib-images): latency, images/s,
ratio to eager fp32, mask IoU agreement with eager, achieved FLOP/s as a fraction of this machine's
fp32 matmul peak measured in the same run, and the CPU model with its ISA flags.

    python benchmarks/compare_backends.py --export exported/pets --size-override 256 \
        --images /tmp/pets-sets/eval --calib-images /tmp/pets-sets/calib     # benchmarks/pets_sets.py makes these
    python benchmarks/compare_backends.py --classic --images ...   # the 31M-parameter U-Net, random weights

Writes benchmarks/results/<date>-<machine>-<model>.json/.md and a PNG plot.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import save

from segrt.bench.timing import timed
from segrt.cpuinfo import cpu_info, describe_cpu
from segrt.errors import first_line
from segrt.imaging.decode import read_model_input
from segrt.imaging.files import list_images
from segrt.imaging.metrics import ConfusionMatrix
from segrt.manifest import IMAGENET_MEAN, IMAGENET_STD, Manifest
from segrt.model.checkpoint import save_checkpoint
from segrt.model.unet import UNet, UNetConfig
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.session import Session
from segrt.verify.reference import eager_model, export_checkpoint


def matmul_peak_gflops(sizes=(1024, 2048, 3072, 4096), reps: int = 3) -> float:
    """Best fp32 matmul rate over a few sizes (torch/oneDNN): this run's reference peak."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def model_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / 1e9


def reestimate_bn(model: UNet, inputs: torch.Tensor) -> None:
    """Random weights: re-estimate BatchNorm statistics so activations stay in a sane range."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(inputs), 4):
            model(inputs[i:i + 4])
    model.eval()


def build_backends(model: UNet, export_dir: Path, example: torch.Tensor, calib: list[np.ndarray], threads: int,
                   log) -> tuple[dict, set]:
    """-> (name -> callable(np.ndarray NCHW) -> np.ndarray logits, names of segrt's gated variants).
    Skips what cannot run here (logged)."""
    backends = {}

    def eager(m, channels_last=False, bf16=False):
        def run(x):
            t = torch.from_numpy(x)
            if channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return m(t).float().numpy()
        return run

    backends["eager fp32"] = eager(model)
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    backends["eager fp32 channels_last"] = eager(cl_model, True)
    backends["eager bf16 autocast + channels_last"] = eager(cl_model, True, True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = torch.compile(model, dynamic=False)
            with torch.inference_mode():
                compiled(example)
        backends["torch.compile (inductor)"] = eager(compiled)
    except Exception as exc:  # no compiler, unsupported platform, ...
        log(f"skip torch.compile: {type(exc).__name__}: {first_line(exc, 120)}")
    manifest, gated = Manifest.load(export_dir), set()
    runtime = {"torchscript": "TorchScript", "onnx": "segrt ORT", "openvino": "segrt OpenVINO"}
    for art in manifest.artifacts:
        if art.kind in runtime:
            label = runtime[art.kind] + ("" if art.kind == "torchscript" else f" {art.precision}")
            provider = "openvino" if art.kind == "openvino" else "cpu"
            backends[label] = Session(export_dir, artifact=art.name, provider=provider,
                                      options=SessionOptions(threads=threads)).run
            if art.kind != "torchscript" and manifest.passed(art.name):
                gated.add(label)
    backends.update(openvino_by_hand(export_dir / manifest.artifact("onnx", "fp32").file, calib, threads, log))
    return backends, gated


def openvino_by_hand(onnx_path: Path, calib: list[np.ndarray], threads: int, log) -> dict:
    """OpenVINO as a user runs it on the ONNX file: fp32 and bf16 hints, and INT8 with NNCF's defaults
    (compiled with OpenVINO's default precision for its float parts)."""
    try:
        import openvino as ov
    except ImportError:
        log("skip OpenVINO by hand: not installed")
        return {}
    core, out = ov.Core(), {}
    threads_cfg = {"INFERENCE_NUM_THREADS": threads}
    for hint in ("f32", "bf16"):
        c = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": hint, **threads_cfg})
        out[f"OpenVINO {hint} by hand"] = (lambda c: lambda x: c(x)[0])(c)
    if not calib:
        log("skip OpenVINO INT8 NNCF defaults: pass --calib-images")
        return out
    import nncf

    q = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(calib, lambda x: x[None]), subset_size=len(calib))
    c = core.compile_model(q, "CPU", threads_cfg)
    out["OpenVINO INT8, NNCF defaults"] = lambda x: c(x)[0]
    return out


def prepare_model(args, log) -> tuple[UNet, Path, Manifest, list[np.ndarray], str]:
    """The model under test, an export folder for it, and real preprocessed inputs."""
    if args.classic:
        name, size = "classic-unet64", args.size
        torch.manual_seed(0)
        model = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=64, depth=4)).eval()
        tmp = Path(tempfile.mkdtemp(prefix="segrt-bench-"))
        ckpt = tmp / "classic.pt"
        norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        manifest = Manifest(name="classic", classes=["background", "pet", "border"], mean=norm["mean"], std=norm["std"],
                            channels=3, size_multiple=16, input_size=[size, size])
        inputs = [read_model_input(p, manifest)[0] for p in list_images(args.images)[: args.count]]
        reestimate_bn(model, torch.from_numpy(np.stack(inputs[:16])))
        save_checkpoint(ckpt, model=model, classes=manifest.classes, normalization=norm, input_size=(size, size),
                        mask_values={2: 0, 1: 1, 3: 2})
        from segrt.export.run import run_export
        from segrt.options import QuantizeOptions

        log("exporting the classic U-Net (onnx, torchscript) and quantizing it ...")
        quant = ("int8",) if args.int8 else ()
        run_export(ckpt, tmp / "export", formats=("onnx", "torchscript"), progress=log, quantize=quant,
                   quantize_options=QuantizeOptions(calib_images=args.calib_images or args.images, calib_count=args.calib_count,
                                                    val_images=args.val_images, gate=args.int8_gate))
        manifest = Manifest.load(tmp / "export")
        if "model.int8.onnx" in manifest.parity:
            log(f"classic INT8 gate: {json.dumps({k: v for k, v in manifest.parity['model.int8.onnx'].to_json().items() if k != 'worst'})}")
        return model, tmp / "export", manifest, inputs, name
    export_dir = Path(args.export)
    manifest = Manifest.load(export_dir)
    model = eager_model(export_checkpoint(export_dir, manifest, log)[0], manifest)
    if args.size_override:
        manifest.input_size = [args.size_override, args.size_override]
    inputs = [read_model_input(p, manifest)[0] for p in list_images(args.images)[: args.count]]
    return model, export_dir, manifest, inputs, export_dir.name


def mask_agreement(backends: dict, inputs: list[np.ndarray], bs: int, num_classes: int) -> dict:
    """Mask IoU agreement with eager fp32 over all inputs (each backend sees the same batches)."""
    batches = [np.stack(inputs[i:i + bs]) for i in range(0, len(inputs), bs)]
    reference = [backends["eager fp32"](b).argmax(1) for b in batches]
    out = {}
    for label, fn in backends.items():
        cm = ConfusionMatrix(num_classes)
        for b, ref in zip(batches, reference):
            cm.update(fn(b).argmax(1), ref)
        out[label] = cm.miou()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--export", type=Path, default=Path("exported/pets"))
    p.add_argument("--classic", action="store_true", help="the classic base-64 U-Net (random weights)")
    p.add_argument("--images", type=Path, required=True, help="real images (inputs and calibration)")
    p.add_argument("--val-images", type=Path, help="held-out images for the INT8 gate (classic)")
    p.add_argument("--size", type=int, default=256, help="working size for --classic")
    p.add_argument("--size-override", type=int, help="run an export at this square size instead of its own")
    p.add_argument("--calib-images", type=Path,
                   help="calibration images: NNCF defaults baseline, and --classic INT8 (default --images)")
    p.add_argument("--count", type=int, default=100, help="images used as inputs (agreement over all of them)")
    p.add_argument("--calib-count", type=int, default=100)
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--int8-gate", type=float, default=0.98)
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--runs", type=int, default=3, help="timed runs per block")
    p.add_argument("--rounds", type=int, default=2, help="times the sequence of blocks is repeated")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tag", default=platform.node() or "machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)

    model, export_dir, manifest, inputs, name = prepare_model(args, log)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    peak = matmul_peak_gflops()
    log(f"fp32 matmul peak: {peak:.0f} GFLOP/s on {args.threads} threads")
    x1 = torch.from_numpy(inputs[0][None])
    gflop = model_gflops(model, x1)
    calib = [read_model_input(p, manifest)[0] for p in list_images(args.calib_images)[: args.calib_count]] \
        if args.calib_images else []
    backends, gated = build_backends(model, export_dir, torch.from_numpy(np.stack(inputs[: batch_sizes[0]])), calib,
                                     args.threads, log)
    agreement = mask_agreement(backends, inputs, max(batch_sizes), manifest.num_classes)
    rows = []
    for bs in batch_sizes:
        batches = [np.stack([inputs[(i + j) % len(inputs)] for j in range(bs)]) for i in range(0, len(inputs), bs)]
        lat = {k: [] for k in backends}
        # blocks of consecutive runs per backend (after a warm-up: the previous backend's threads may
        # still be spinning), and the sequence of blocks repeated so machine noise hits all alike
        for rnd in range(args.rounds):
            for label, fn in backends.items():
                for _ in range(args.warmup):
                    fn(batches[0])
                for r in range(args.runs):
                    lat[label] += timed(fn, batches[(rnd * args.runs + r) % len(batches)], 1, 0)
        for label in backends:
            ms = statistics.median(lat[label]) * 1000
            rows.append({"backend": label, "gated": label in gated, "batch_size": bs, "ms_per_batch": ms,
                         "ms_per_image": ms / bs,
                         "images_per_s": 1000 * bs / ms, "mask_iou_vs_eager": agreement[label],
                         "gflops_achieved": gflop * bs / (ms / 1000),
                         "fraction_of_fp32_peak": gflop * bs / (ms / 1000) / peak})
        eager_ms = next(r["ms_per_image"] for r in rows if r["backend"] == "eager fp32" and r["batch_size"] == bs)
        for r in rows:
            if r["batch_size"] == bs:
                r["speedup_vs_eager_fp32"] = eager_ms / r["ms_per_image"]
    h, w = inputs[0].shape[1:]
    result = {"model": name, "input": [h, w], "gflop_per_image": gflop, "fp32_matmul_peak_gflops": peak,
              "threads": args.threads, "cores": os.cpu_count(), "cpu": cpu_info(), "torch": torch.__version__,
              "date": dt.date.today().isoformat(), "runs": args.runs, "rounds": args.rounds, "rows": rows,
              "targets": targets(rows, batch_sizes)}
    write_results(result, args.tag)


def targets(rows: list[dict], batch_sizes: list[int]) -> list[str]:
    """The issue's measures, per batch size: segrt's fastest gated path vs OpenVINO INT8 with NNCF's
    defaults, and the bf16 variant beside eager bf16 autocast."""
    lines = []
    for bs in batch_sizes:
        at = {r["backend"]: r for r in rows if r["batch_size"] == bs}
        gated = [r for r in at.values() if r["gated"]]
        if not gated:
            continue
        best = min(gated, key=lambda r: r["ms_per_image"])
        line = f"batch {bs}: fastest gated segrt path {best['backend']} {best['ms_per_image']:.2f} ms/image " \
               f"(agreement {best['mask_iou_vs_eager']:.4f})"
        nncf = at.get("OpenVINO INT8, NNCF defaults")
        if nncf:
            line += (f"; OpenVINO INT8 NNCF defaults {nncf['ms_per_image']:.2f} ms/image (agreement "
                     f"{nncf['mask_iou_vs_eager']:.4f}): segrt is {nncf['ms_per_image'] / best['ms_per_image']:.2f}x as fast")
        bf16, autocast = at.get("segrt OpenVINO bf16"), at.get("eager bf16 autocast + channels_last")
        if bf16 and autocast:
            line += (f"; segrt OpenVINO bf16 {bf16['ms_per_image']:.2f} ms/image (agreement "
                     f"{bf16['mask_iou_vs_eager']:.4f}) vs eager bf16 autocast {autocast['ms_per_image']:.2f}")
        lines.append(line)
    return lines


def to_markdown(result: dict) -> str:
    lines = [f"### {result['model']} at {result['input'][0]}x{result['input'][1]} "
             f"({result['gflop_per_image']:.1f} GFLOP/image; fp32 matmul peak {result['fp32_matmul_peak_gflops']:.0f} "
             f"GFLOP/s on {result['threads']} threads; torch {result['torch']}; {result['date']})", "",
             f"CPU: {describe_cpu(result['cpu'])}, {result['cores']} cores", "",
             "| backend | gated | batch | ms/image | images/s | vs eager fp32 | mask IoU vs eager | % of fp32 peak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['backend']} | {'yes' if r['gated'] else ''} | {r['batch_size']} | {r['ms_per_image']:.1f} | "
                     f"{r['images_per_s']:.2f} | {r['speedup_vs_eager_fp32']:.2f}x | {r['mask_iou_vs_eager']:.4f} | "
                     f"{100 * r['fraction_of_fp32_peak']:.0f}% |")
    lines += [""] + [f"- {t}" for t in result.get("targets", [])]
    return "\n".join(lines) + "\n"


def write_results(result: dict, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = save(result, to_markdown(result), f"{result['date']}-{tag}-{result['model']}")
    backends = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    sizes = sorted({r["batch_size"] for r in result["rows"]})
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(sizes)
    for i, bs in enumerate(sizes):
        vals = [next((r["images_per_s"] for r in result["rows"] if r["backend"] == b and r["batch_size"] == bs), 0)
                for b in backends]
        ax.barh(np.arange(len(backends)) + i * width, vals, width, label=f"batch {bs}")
    ax.set_yticks(np.arange(len(backends)) + width * (len(sizes) - 1) / 2, backends)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (higher is better)")
    ax.set_title(f"{result['model']} {result['input'][0]}x{result['input'][1]}, {result['threads']} CPU threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    print(f"wrote {stem}.png")


if __name__ == "__main__":
    main()
