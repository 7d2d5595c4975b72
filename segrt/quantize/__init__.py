"""Reduced-precision variants, each gated before it is written: a registry keyed by backend and
precision. ONNX Runtime: INT8 (QDQ) and FP16 (segrt.quantize.ort); OpenVINO: INT8 (NNCF) and bf16
(segrt.quantize.openvino); uint8-input copies of gated variants (segrt.quantize.uint8). Each
quantizer is imported only when it runs."""

from __future__ import annotations

import importlib

from segrt.errors import SegrtError
from segrt.fsutil import check_apart, check_writable
from segrt.manifest import Artifact
from segrt.options import QuantizeOptions

__all__ = ["VARIANTS", "NAMES", "run_quantize"]

# (backend, precision) -> (module in segrt.quantize, function(folder, opts, log) -> Artifact)
VARIANTS = {
    ("onnxruntime", "int8"): ("ort", "quantize_int8"),
    ("onnxruntime", "fp16"): ("ort", "quantize_fp16"),
    ("openvino", "int8"): ("openvino", "quantize_int8"),
    ("openvino", "bf16"): ("openvino", "gate_bf16"),
}
# the name each variant is listed under (a failed one's measurements are recorded under it)
NAMES = {("onnxruntime", "int8"): "model.int8.onnx", ("onnxruntime", "fp16"): "model.fp16.onnx",
         ("openvino", "int8"): "model.int8.xml", ("openvino", "bf16"): "model.xml@bf16"}


def run_quantize(folder, precision: str, opts: QuantizeOptions, log=print,
                 backend: str = "onnxruntime") -> Artifact | None:
    """Add one gated variant: (onnxruntime, int8|fp16) or (openvino, int8|bf16); None when this CPU
    cannot run it (bf16 without bf16: said in one line)."""
    if (backend, precision) not in VARIANTS:
        made = ", ".join(f"{b} {p}" for b, p in sorted(VARIANTS))
        raise SegrtError(f"no {precision} variant for backend {backend!r}; available: {made}")
    check_writable(folder, f"the {precision} variant is written into it")
    check_apart(folder, {"calibration images": opts.calib_images, "gate images": opts.val_images,
                         "gate masks": opts.val_masks}, "the export folder")
    module, function = VARIANTS[(backend, precision)]
    return getattr(importlib.import_module(f"segrt.quantize.{module}"), function)(folder, opts, log)
