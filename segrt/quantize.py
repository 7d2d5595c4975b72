"""ONNX Runtime variants of an exported model, behind the shared accuracy gate (segrt.gate).

INT8: onnxruntime.quantization with quant_pre_process first, calibration images read through the
same preprocessing as predict, per-channel S8 weights and U8 activations (the fast pair on x86
VNNI); when the gate fails, segrt.gate's fallback keeps the most sensitive nodes fp32
(nodes_to_exclude). FP16: float16 weights/activations with fp32 I/O, gated the same way.
OpenVINO variants (IR, NNCF INT8, bf16) are in segrt.quantize_openvino.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from segrt.backends import SessionOptions
from segrt.errors import SegrtError
from segrt.fsutil import atomic_path
from segrt.gate import (GateResult, QuantizeOptions, evaluate, fallback_search, gate_batches,  # noqa: F401
                        reference_logits, require, run_batches, save_variant, split_images)
from segrt.graph import convtranspose_to_pixel_shuffle, head_to_matmul
from segrt.manifest import Artifact, Manifest
from segrt.parity import DEFAULT_IOU_GATES
from segrt.progress import progress

CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ENTROPY_BINS = 2048  # histogram bins for entropy calibration (TensorRT's choice), 128 quantized bins
# (backend, precision) -> what makes it; the OpenVINO ones live in segrt.quantize_openvino
VARIANTS = {("onnxruntime", "int8"), ("onnxruntime", "fp16"), ("openvino", "int8"), ("openvino", "bf16")}


class _Reader:
    """CalibrationDataReader over preprocessed arrays (batch 1)."""

    def __init__(self, arrays: list[np.ndarray], input_name: str):
        self.items, self.name = iter(progress(arrays, desc="calibration", unit="img")), input_name

    def get_next(self):
        x = next(self.items, None)
        return None if x is None else {self.name: x[None]}


def entropy_ranges(model: Path, calib: list[np.ndarray], input_name: str, cache: Path) -> None:
    """ORT's entropy calibrator defaults to as many histogram bins as quantized bins (128), so it can
    never clip a range and gives minmax's ranges, and quantize_static does not pass num_bins on.
    Calibrate with ENTROPY_BINS here and leave the ranges in the cache quantize_static reads."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(model, augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
                                   calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": ENTROPY_BINS})
    calibrator.collect_data(_Reader(calib, input_name))
    save_tensors_data(calibrator.compute_data(), cache)


def ort_run(path: Path):
    """The CPU ONNX Runtime backend's run() for a candidate file (segrt.backends.ort)."""
    from segrt.backends.ort import OrtBackend

    return OrtBackend(path, "cpu", SessionOptions()).run


def write_metadata(path: Path, manifest: Manifest) -> None:
    import onnx

    model = onnx.load(str(path))
    manifest.set_onnx_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def quantize_int8(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact:
    """Add model.int8.onnx to an export folder (gated; fallback keeps sensitive nodes fp32)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from segrt.session import Session

    folder = Path(folder)
    manifest = Manifest.load(folder)
    Session(folder, provider="cpu", kind="onnx")  # the fp32 model opens and matches its manifest (channels, NCHW)
    if opts.calib_method not in CALIB_METHODS:
        raise SegrtError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}")
    fp32 = folder / manifest.artifact("onnx", "fp32").file
    gate = opts.gate if opts.gate is not None else DEFAULT_IOU_GATES["int8"]
    calib, batches = split_images(opts, manifest, log)
    reference, ref_name = reference_logits(folder, manifest, batches)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.calib_method]
    with tempfile.TemporaryDirectory(prefix="segrt-int8-") as tmp:
        tmp = Path(tmp)
        pre, cache, rewritten = tmp / "pre.onnx", tmp / "calibration.json", tmp / "rewritten.onnx"
        model, n_rewritten = convtranspose_to_pixel_shuffle(onnx.load(str(fp32)))
        model, float_tail = head_to_matmul(model)
        onnx.save(model, str(rewritten))
        quant_pre_process(str(rewritten), str(pre), auto_merge=True)  # dynamic H/W needs auto_merge
        candidates = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZABLE_OPS]
        if method == CalibrationMethod.Entropy:
            entropy_ranges(pre, calib, manifest.input_name, cache)
        files = {}

        def build(excluded: list[str]) -> GateResult:
            out = files.setdefault(tuple(excluded), tmp / f"candidate{len(files)}.onnx")
            quantize_static(str(pre), str(out), _Reader(calib, manifest.input_name) if not cache.exists() else None,
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=excluded + float_tail, calibration_cache_path=str(cache),
                            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]} if float_tail else {})
            r = evaluate(ort_run(out), reference, batches, manifest.num_classes)
            r.excluded = list(excluded)
            return r

        log(f"quantizing ({opts.calib_method} calibration) and gating at mask IoU >= {gate} vs {ref_name} ...")
        best, search = fallback_search(build, candidates, gate, opts.max_fp32_nodes, log)
        fp32_ms = run_batches(ort_run(fp32), batches)[1]
        require(best, gate, "INT8", search)
        target = folder / "model.int8.onnx"
        with atomic_path(target) as t:
            os.replace(files[tuple(best.excluded)], t)
            write_metadata(t, manifest)
    art = Artifact(file=target.name, kind="onnx", precision="int8", exporter="onnxruntime.quantization (QDQ)",
                   opset=fp32_opset(fp32), extra={
                       "calibration": {"method": opts.calib_method, "count": len(calib)},
                       "activations": "uint8", "weights": "int8 per-channel",
                       "rewrites": {"ConvTranspose -> Conv 1x1 + pixel shuffle": n_rewritten,
                                    "1x1 Conv head -> MatMul, float logits": int(bool(float_tail))},
                       "excluded_nodes": best.excluded, "quantizable_nodes": len(candidates), "search": search,
                       "ms_per_image": {"fp32": fp32_ms, "int8_all_nodes": search[0]["ms_per_image"], "int8": best.ms_per_image}})
    save_variant(folder, art, best.record(gate, ref_name))
    log(f"model.int8.onnx: mask IoU {best.mask_iou:.5f} (gate {gate}), {len(best.excluded)} node(s) fp32, "
        f"{best.ms_per_image:.1f} ms/img vs fp32 {fp32_ms:.1f} ms/img on the CPU provider")
    return art


def quantize_fp16(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact:
    """Add model.fp16.onnx (fp16 weights/activations, fp32 I/O), gated at mask IoU >= 0.995."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    folder = Path(folder)
    manifest = Manifest.load(folder)
    fp32 = folder / manifest.artifact("onnx", "fp32").file
    gate = opts.gate if opts.gate is not None else DEFAULT_IOU_GATES["fp16"]
    batches = gate_batches(opts, manifest)
    reference, ref_name = reference_logits(folder, manifest, batches)
    target = folder / "model.fp16.onnx"
    with atomic_path(target) as t:
        from onnxruntime.transformers.onnx_model import OnnxModel

        converted = OnnxModel(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True))
        converted.topological_sort()  # the converter appends its I/O casts at the end
        onnx.save(converted.model, str(t))
        write_metadata(t, manifest)
        r = evaluate(ort_run(t), reference, batches, manifest.num_classes)
        require(r, gate, "FP16")
    art = Artifact(file=target.name, kind="onnx", precision="fp16", exporter="onnxruntime float16 converter",
                   opset=fp32_opset(fp32), extra={"io": "float32", "intended_provider": "cuda/tensorrt"})
    save_variant(folder, art, r.record(gate, ref_name))
    log(f"model.fp16.onnx: mask IoU {r.mask_iou:.5f} (gate {gate}); note: the CPU provider runs fp16 by casting "
        "back to fp32 (no speed-up on CPU); use it on cuda/tensorrt")
    return art


def fp32_opset(path: Path) -> int:
    import onnx

    from segrt.graph import opset_of

    return opset_of(onnx.load(str(path), load_external_data=False))


def run_quantize(folder, precision: str, opts: QuantizeOptions, log=print, backend: str = "onnxruntime") -> Artifact:
    """Add one gated variant: (onnxruntime, int8|fp16) or (openvino, int8|bf16)."""
    if (backend, precision) not in VARIANTS:
        made = ", ".join(f"{b} {p}" for b, p in sorted(VARIANTS))
        raise SegrtError(f"no {precision} variant for backend {backend!r}; available: {made}")
    if backend == "openvino":
        from segrt import quantize_openvino

        return {"int8": quantize_openvino.quantize_int8, "bf16": quantize_openvino.gate_bf16}[precision](folder, opts, log)
    return {"int8": quantize_int8, "fp16": quantize_fp16}[precision](folder, opts, log)
