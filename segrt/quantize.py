"""INT8 (static, QDQ) and FP16 variants of an exported ONNX model, behind an accuracy gate.

INT8: onnxruntime.quantization with quant_pre_process first, calibration images read through the
same preprocessing as predict, per-channel S8 weights and U8 activations (the fast pair on x86
VNNI). When the gate fails, a per-node sensitivity scan ranks the quantizable nodes and the
worst ones are kept in fp32 (nodes_to_exclude), greedily, until the gate passes.
FP16: float16 weights/activations with fp32 I/O, gated the same way.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segrt.errors import GateFailed, ImageError, SegrtError
from segrt.fsutil import atomic_path
from segrt.graph import convtranspose_to_pixel_shuffle, head_to_matmul
from segrt.manifest import Artifact, Manifest
from segrt.parity import DEFAULT_IOU_GATES, Batch, compare
from segrt.processing import list_images, read_model_input

CALIB_METHODS = ("minmax", "entropy", "percentile")
MIN_CALIB_WARN = 100
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ENTROPY_BINS = 2048  # histogram bins for entropy calibration (TensorRT's choice), 128 quantized bins


@dataclass
class QuantizeOptions:
    calib_images: Path | None = None
    calib_count: int | None = None
    calib_method: str = "minmax"
    val_images: Path | None = None
    val_masks: Path | None = None
    val_fraction: float = 0.2
    gate: float | None = None  # mask IoU agreement; default by precision
    max_fp32_nodes: float = 0.34  # fraction of quantizable nodes the fallback may keep in fp32
    batch_size: int = 4
    seed: int = 0


@dataclass
class GateResult:
    mask_iou: float
    summary: dict
    excluded: list[str] = field(default_factory=list)
    ms_per_image: float = 0.0


def _read_set(paths: list[Path], manifest: Manifest, what: str) -> list[np.ndarray]:
    arrays = []
    for p in paths:
        try:
            arrays.append(read_model_input(p, manifest)[0])
        except ImageError as exc:
            raise SegrtError(f"{what} image unusable: {exc}") from None
    return arrays


def _batches(paths: list[Path], manifest: Manifest, batch_size: int) -> list[Batch]:
    """Validation images read like predict, in batches of ``batch_size``."""
    arrays = _read_set(paths, manifest, "validation")
    return [Batch(f"val {i}", np.stack(arrays[i:i + batch_size]), [p.name for p in paths[i:i + batch_size]])
            for i in range(0, len(arrays), batch_size)]


def split_images(opts: QuantizeOptions, manifest: Manifest, log) -> tuple[list[np.ndarray], list[Batch]]:
    """-> (calibration inputs, held-out validation batches); validation never overlaps calibration."""
    folder = opts.calib_images
    if folder is None:
        raise SegrtError("INT8 needs calibration images: pass --calib-images DIR")
    if not Path(folder).is_dir():
        raise SegrtError(f"{folder}: calibration folder not found")
    paths = list_images(folder)
    if not paths:
        raise SegrtError(f"{folder}: no images found for calibration")
    if opts.val_images:
        val_paths = list_images(opts.val_images)
        calib_paths = [p for p in paths if p.stem not in {v.stem for v in val_paths}]
    else:
        if len(paths) < 2:
            raise SegrtError(f"{folder}: need at least 2 images (calibration + held-out), or pass --val-images")
        shuffled = sorted(paths)
        random.Random(opts.seed).shuffle(shuffled)
        n_val = max(1, round(len(shuffled) * opts.val_fraction))
        val_paths, calib_paths = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
    if opts.calib_count:
        calib_paths = calib_paths[: opts.calib_count]
    if not calib_paths or not val_paths:
        raise SegrtError(f"{folder}: no images left for calibration or validation")
    if len(calib_paths) < MIN_CALIB_WARN:
        log(f"warning: only {len(calib_paths)} calibration images; ~{MIN_CALIB_WARN}+ give more reliable ranges")
    calib = _read_set(calib_paths, manifest, "calibration")
    if opts.val_masks:
        from segrt.parity import image_inputs

        batches = []
        for p in val_paths:
            batches += image_inputs(manifest, p, opts.val_masks, opts.batch_size)
    else:
        batches = _batches(val_paths, manifest, opts.batch_size)
    log(f"calibration: {len(calib)} images, held-out validation: {len(val_paths)} images")
    return calib, batches


class _Reader:
    """CalibrationDataReader over preprocessed arrays (batch 1)."""

    def __init__(self, arrays: list[np.ndarray], input_name: str):
        self.items, self.name = iter(arrays), input_name

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


def _run(path: Path, batches: list[Batch]) -> tuple[list[np.ndarray], float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: batches[0].x[:1]})  # warm-up
    t0, outs = time.perf_counter(), []
    for b in batches:
        outs.append(sess.run(None, {name: b.x})[0])
    n = sum(len(b.x) for b in batches)
    return outs, (time.perf_counter() - t0) * 1000 / n


def evaluate(path: Path, reference: list[np.ndarray], batches: list[Batch], num_classes: int) -> GateResult:
    outs, ms = _run(path, batches)
    res = compare(reference, outs, batches, num_classes)
    return GateResult(res["summary"]["mask_iou"], {**res["summary"], "worst": res["worst"]}, ms_per_image=ms)


def reference_logits(folder: Path, manifest: Manifest, batches: list[Batch]) -> tuple[list[np.ndarray], str]:
    """Eager PyTorch from the export's checkpoint when torch is here, else the fp32 ONNX (which
    passed parity with eager at export)."""
    from segrt.session import torch_available

    ckpt = next((a for a in manifest.artifacts if a.kind == "checkpoint"), None)
    if ckpt is not None and torch_available():
        from segrt.checkpoint import load_checkpoint, model_from_checkpoint
        from segrt.parity import eager_logits

        return eager_logits(model_from_checkpoint(load_checkpoint(folder / ckpt.file)), batches), "eager"
    return _run(folder / manifest.artifact("onnx").file, batches)[0], "onnx fp32"


def _write_metadata(path: Path, manifest: Manifest) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in manifest.metadata_props().items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def quantize_int8(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact:
    """Add model.int8.onnx to an export folder (gated; fallback keeps sensitive nodes fp32)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from segrt.session import Session

    folder = Path(folder)
    manifest = Manifest.load(folder)
    Session(folder, provider="cpu")  # the fp32 model opens and matches its manifest (channels, NCHW)
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

        def build(excluded: list[str], name: str) -> GateResult:
            out = tmp / name
            quantize_static(str(pre), str(out), _Reader(calib, manifest.input_name) if not cache.exists() else None,
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            nodes_to_exclude=excluded + float_tail, calibration_cache_path=str(cache),
                            extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]} if float_tail else {})
            r = evaluate(out, reference, batches, manifest.num_classes)
            r.excluded = list(excluded)
            return r

        log(f"quantizing ({opts.calib_method} calibration) and gating at mask IoU >= {gate} vs {ref_name} ...")
        full = build([], "full.onnx")
        best, best_file = full, "full.onnx"
        search = [{"excluded": [], "mask_iou": full.mask_iou}]
        log(f"  all nodes int8: mask IoU {full.mask_iou:.5f}")
        if full.mask_iou < gate:
            budget = max(1, int(len(candidates) * opts.max_fp32_nodes))
            log(f"  below the gate: scanning {len(candidates)} nodes for sensitivity (fallback may keep {budget} fp32)")
            scores = [(build([n], "one.onnx").mask_iou, n) for n in candidates]
            order = [n for _, n in sorted(scores, key=lambda s: -s[0])]
            excluded = []
            for n in order[:budget]:
                excluded.append(n)
                r = build(excluded, f"try{len(excluded)}.onnx")
                log(f"  fp32: {len(excluded)} node(s) (+{n}): mask IoU {r.mask_iou:.5f}")
                search.append({"excluded": list(excluded), "mask_iou": r.mask_iou})
                if r.mask_iou > best.mask_iou:
                    best, best_file = r, f"try{len(excluded)}.onnx"
                if r.mask_iou >= gate:
                    break
        fp32_ms = _run(fp32, batches)[1]
        if best.mask_iou < gate:
            raise GateFailed(
                f"INT8 gate failed: best mask IoU agreement {best.mask_iou:.5f} < {gate} "
                f"(with {len(best.excluded)} node(s) kept fp32: {', '.join(best.excluded) or 'none'}); "
                "try more/other calibration images, --calib-method entropy|percentile, or a lower --gate",
                {"best": {"mask_iou": best.mask_iou, "excluded": best.excluded}, "search": search, "gate": gate})
        target = folder / "model.int8.onnx"
        with atomic_path(target) as t:
            os.replace(tmp / best_file, t)
            _write_metadata(t, manifest)
    gate_info = {"mask_iou_min": gate, "reference": ref_name, **{k: v for k, v in best.summary.items() if k != "worst"},
                 "passed": True, "worst": best.summary["worst"]}
    art = Artifact(file=target.name, kind="onnx", precision="int8", exporter="onnxruntime.quantization (QDQ)",
                   opset=fp32_opset(fp32), extra={
                       "calibration": {"method": opts.calib_method, "count": len(calib)},
                       "activations": "uint8", "weights": "int8 per-channel",
                       "rewrites": {"ConvTranspose -> Conv 1x1 + pixel shuffle": n_rewritten,
                                    "1x1 Conv head -> MatMul, float logits": int(bool(float_tail))},
                       "excluded_nodes": best.excluded, "quantizable_nodes": len(candidates), "search": search,
                       "ms_per_image": {"fp32": fp32_ms, "int8_all_nodes": full.ms_per_image,
                                        "int8": best.ms_per_image}})
    manifest = Manifest.load(folder)
    manifest.add_artifact(folder, art)
    manifest.parity[art.file] = gate_info
    manifest.save(folder)
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
    if opts.val_images or opts.calib_images:
        paths = list_images(opts.val_images or opts.calib_images)
        if not paths:
            raise SegrtError(f"{opts.val_images or opts.calib_images}: no images found")
        batches = _batches(paths, manifest, opts.batch_size)
    else:
        from segrt.parity import random_inputs

        batches = random_inputs(manifest)
    reference, ref_name = reference_logits(folder, manifest, batches)
    target = folder / "model.fp16.onnx"
    with atomic_path(target) as t:
        from onnxruntime.transformers.onnx_model import OnnxModel

        converted = OnnxModel(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True))
        converted.topological_sort()  # the converter appends its I/O casts at the end
        onnx.save(converted.model, str(t))
        _write_metadata(t, manifest)
        r = evaluate(t, reference, batches, manifest.num_classes)
        if r.mask_iou < gate:
            raise GateFailed(f"FP16 gate failed: mask IoU agreement {r.mask_iou:.5f} < {gate} vs {ref_name}")
    art = Artifact(file=target.name, kind="onnx", precision="fp16", exporter="onnxruntime float16 converter",
                   opset=fp32_opset(fp32), extra={"io": "float32", "intended_provider": "cuda/tensorrt"})
    manifest = Manifest.load(folder)
    manifest.add_artifact(folder, art)
    manifest.parity[art.file] = {"mask_iou_min": gate, "reference": ref_name, "passed": True,
                                 **{k: v for k, v in r.summary.items() if k != "worst"}}
    manifest.save(folder)
    log(f"model.fp16.onnx: mask IoU {r.mask_iou:.5f} (gate {gate}); note: the CPU provider runs fp16 by casting "
        "back to fp32 (no speed-up on CPU); use it on cuda/tensorrt")
    return art


def fp32_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def run_quantize(folder, precision: str, opts: QuantizeOptions, log=print) -> Artifact:
    if precision == "int8":
        return quantize_int8(folder, opts, log)
    if precision == "fp16":
        return quantize_fp16(folder, opts, log)
    raise SegrtError(f"unknown precision {precision!r}; choose int8 or fp16")
