"""Two steps of the GPU check that are Python, not commands: eager PyTorch beside the artifacts
(fp32, AMP fp16 and bf16, fp16 channels-last) and an AOTInductor-compiled pt2 gated like any
variant. They run on cuda where there is one, else on the CPU (tests use that, at tiny sizes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

BATCHES, SIZES = (1, 8, 32, 64), (256, 512)
MODES = {"eager fp32": (None, False), "eager AMP fp16": ("float16", False), "eager AMP bf16": ("bfloat16", False),
         "eager AMP fp16 channels-last": ("float16", True)}


def reference(export: Path):
    """The export's eager U-Net (rebuilt from model.onnx where checkpoint.pt is not in the copy) and manifest."""
    from segrt.manifest import Manifest
    from segrt.verify.reference import eager_model, export_checkpoint

    manifest = Manifest.load(export)
    return eager_model(export_checkpoint(export, manifest)[0], manifest).eval(), manifest


def timed_ms(fn, x, runs: int = 10, warmup: int = 3) -> float:
    import torch

    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(runs):
            fn(x)
        sync()
    return (time.perf_counter() - t0) * 1000 / runs


def eager_times(export: Path, out: Path, batches=BATCHES, sizes=SIZES, runs: int = 10) -> dict:
    """ms per batch and images/s of each eager mode, batch x size, with GPU memory."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, manifest = reference(export)
    model = model.to(device)
    rows = []
    for size in sizes:
        for batch in batches:
            x = torch.randn(batch, manifest.channels, size, size, device=device)
            for name, (dtype, channels_last) in MODES.items():
                net = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                xx = x.to(memory_format=torch.channels_last) if channels_last else x
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                with torch.autocast(device, getattr(torch, dtype or "float32"), enabled=dtype is not None):
                    ms = timed_ms(net, xx, runs)
                rows.append({"backend": name, "batch_size": batch, "size": size, "ms": ms,
                             "images_per_s": batch * 1000 / ms, "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20
                             if device == "cuda" else None})
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "rows": rows}
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def aoti_check(export: Path, images: Path, out: Path, batches=(1, 32), sizes=(256,), runs: int = 10) -> dict:
    """torch.export + AOTInductor (aoti_compile_and_package) of the U-Net; gated against eager fp32 on
    the CPU (mask IoU >= 0.999 on real photos, as every fp32 artifact), then timed."""
    import tempfile

    import numpy as np
    import torch

    from segrt.export.torch_export import ExportGraph, dynamic_shapes, example_input, size_oblivious
    from segrt.verify.compare import compare
    from segrt.verify.parity import image_inputs
    from segrt.verify.reference import eager_logits
    from segrt.verify.thresholds import DEFAULT_IOU_GATES

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, manifest = reference(export)
    graph = ExportGraph(model).eval()
    t0 = time.perf_counter()
    with size_oblivious(), tempfile.TemporaryDirectory() as tmp:
        program = torch.export.export(graph.to(device), (example_input(manifest.size_multiple, manifest.channels)
                                                         .to(device),), dynamic_shapes=dynamic_shapes(manifest.size_multiple))
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(tmp) / "model.aoti.pt2"))
        runner = torch._inductor.aoti_load_package(path)
    compile_s = time.perf_counter() - t0
    batches_in = image_inputs(manifest, images)
    eager = eager_logits(model.cpu(), batches_in)
    with torch.inference_mode():
        outs = [runner(torch.from_numpy(b.x).to(device)).float().cpu().numpy() for b in batches_in]
    summary = compare(eager, outs, batches_in, manifest.num_classes)["summary"]
    gate = DEFAULT_IOU_GATES["fp32"]
    rows = []
    for size in sizes:
        for batch in batches:
            x = torch.randn(batch, manifest.channels, size, size, device=device)
            ms = timed_ms(runner, x, runs)
            rows.append({"backend": "AOTInductor pt2", "batch_size": batch, "size": size, "ms": ms,
                         "images_per_s": batch * 1000 / ms})
    result = {"device": device, "compile_s": compile_s, "gate": {"mask_iou": summary["mask_iou"], "mask_iou_min": gate,
              "max_abs_logit_diff": summary["max_abs_logit_diff"], "passed": bool(summary["mask_iou"] >= gate)},
              "rows": rows, "inputs": int(np.sum([len(b.x) for b in batches_in]))}
    out.write_text(json.dumps(result, indent=1) + "\n")
    if not result["gate"]["passed"]:
        raise SystemExit(f"AOTInductor pt2 failed its gate: mask IoU {summary['mask_iou']:.5f} < {gate}")
    return result
