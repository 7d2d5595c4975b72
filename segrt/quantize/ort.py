"""ONNX Runtime variants of an exported model, behind the shared accuracy gate (segrt.verify.gate).

INT8: onnxruntime.quantization with quant_pre_process first, calibration images read through the
same preprocessing as predict, per-channel S8 weights and U8 activations (the fast pair on x86
VNNI); when the gate fails, segrt.verify.gate's fallback keeps the most sensitive nodes fp32
(nodes_to_exclude). FP16: float16 weights/activations with fp32 I/O, gated the same way.
OpenVINO variants (IR, NNCF INT8, bf16) are in segrt.quantize.openvino.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from segrt.errors import GateFailed, SegrtError
from segrt.fsutil import atomic_path
from segrt.manifest import Artifact, Manifest
from segrt.options import QuantizeOptions
from segrt.quantize.memory import check_calibration_memory
from segrt.progress import progress
from segrt.quantize.onnx_rewrites import convtranspose_to_pixel_shuffle, head_to_matmul
from segrt.quantize.search import fallback_search
from segrt.runtime.backends.base import SessionOptions
from segrt.verify.gate import GateResult, evaluate, require, run_batches, save_variant
from segrt.verify.imagesets import gate_batches, split_images
from segrt.verify.reference import reference_logits
from segrt.verify.thresholds import DEFAULT_IOU_GATES

__all__ = ["QUANTIZABLE_OPS", "entropy_ranges", "quantize_int8", "quantize_fp16"]

_CALIB_METHODS = ("minmax", "entropy", "percentile")
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_ENTROPY_BINS = 2048  # histogram bins for entropy calibration (TensorRT's choice), 128 quantized bins
# (backend, precision) -> what makes it; the OpenVINO ones live in segrt.quantize.openvino


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
                                   calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": _ENTROPY_BINS})
    calibrator.collect_data(_Reader(calib, input_name))
    save_tensors_data(calibrator.compute_data(), cache)


def _ort_run(path: Path):
    """The CPU ONNX Runtime backend's run() for a candidate file (segrt.runtime.backends.ort)."""
    from segrt.runtime.backends.ort import OrtBackend

    return OrtBackend(path, "cpu", SessionOptions()).run


def _write_metadata(path: Path, manifest: Manifest) -> None:
    import onnx

    model = onnx.load(str(path))
    manifest.set_onnx_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def quantize_int8(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact:
    """Add model.int8.onnx to an export folder: prepare the graph, calibrate, search exclusions until
    the gate passes (the fallback keeps sensitive nodes fp32), record. With no --calib-method, a
    minmax search that misses the gate is followed by a percentile one where memory allows (said)."""
    from segrt.runtime.session import Session

    folder = Path(folder)
    manifest = Manifest.load(folder)
    Session(folder, provider="cpu", kind="onnx")  # the fp32 model opens and matches its manifest (channels, NCHW)
    if opts.calib_method not in (None, *_CALIB_METHODS):
        raise SegrtError(f"--calib-method must be one of {', '.join(_CALIB_METHODS)}")
    fp32 = folder / manifest.artifact("onnx", "fp32").file
    gate = opts.gate if opts.gate is not None else DEFAULT_IOU_GATES["int8"]
    check_calibration_memory(folder, manifest, opts, "onnxruntime")
    calib, batches = split_images(opts, manifest, log)
    reference, ref_name = reference_logits(folder, manifest, batches)
    with tempfile.TemporaryDirectory(prefix="segrt-int8-") as tmp:
        prepared = _prepare_graph(fp32, Path(tmp))
        search = lambda method: _search(method, prepared, calib, manifest, (reference, ref_name), batches, opts,  # noqa: E731
                                        gate, log)
        method = opts.calib_method or "minmax"
        best, trail, build = search(method)
        second, other = _second_method(folder, manifest, opts, best, gate, log), None
        if second:  # the better of the two searches is the result; the other is kept for a rerun
            alt = search(second)
            if alt[0].passes(gate) or alt[0].score > best.score:
                other, (best, trail, build), method = build, alt, second
            else:
                other = alt[2]
        fp32_ms = run_batches(_ort_run(fp32), batches)[1]
        others = [m for m in ("percentile", "entropy", "minmax") if m not in (opts.calib_method or "minmax", second)]
        try:
            hint = others[0] + (f" (or {others[1]})" if len(others) > 1 else "")
            require(best, gate, "INT8", trail, f"try --calib-method {hint}, more or other calibration images, or a "
                    "lower --quant-gate", names=manifest.classes)
        except GateFailed as exc:
            exc.report["tried"] = build.record()
            if other is not None:  # both searches are kept for a rerun (_memo)
                exc.report["tried_also"] = [other.record()]
            raise
        build.file(best.excluded)  # a result read from an earlier run's record is built now, once
        target = folder / "model.int8.onnx"
        with atomic_path(target) as t:
            os.replace(build.files[tuple(best.excluded)], t)
            _write_metadata(t, manifest)
    art = Artifact(file=target.name, kind="onnx", precision="int8", exporter="onnxruntime.quantization (QDQ)",
                   opset=_fp32_opset(fp32), extra={
                       "calibration": {"method": method, "count": len(calib)},
                       "activations": "uint8", "weights": "int8 per-channel",
                       "rewrites": {"ConvTranspose -> Conv 1x1 + pixel shuffle": prepared["n_rewritten"],
                                    "1x1 Conv head -> MatMul, float logits": int(bool(prepared["float_tail"]))},
                       "excluded_nodes": best.excluded, "quantizable_nodes": len(prepared["candidates"]),
                       "search": trail, "ms_per_image": {"fp32": fp32_ms, "int8_all_nodes": trail[0]["ms_per_image"],
                                                          "int8": best.ms_per_image}})
    save_variant(folder, art, best.record(gate, ref_name))
    log(f"model.int8.onnx: mask IoU {best.mask_iou:.5f} (gate {gate}), {len(best.excluded)} node(s) fp32, "
        f"{best.ms_per_image:.1f} ms/img vs fp32 {fp32_ms:.1f} ms/img on the CPU provider")
    return art


def _prepare_graph(fp32: Path, tmp: Path) -> dict:
    """The fp32 graph rewritten for ORT's INT8 kernels (segrt.quantize.onnx_rewrites), then quant_pre_process'ed.
    -> {pre: path, candidates: quantizable node names, float_tail, n_rewritten, tmp}."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    model, n_rewritten = convtranspose_to_pixel_shuffle(onnx.load(str(fp32)))
    model, float_tail = head_to_matmul(model)
    onnx.save(model, str(tmp / "rewritten.onnx"))
    quant_pre_process(str(tmp / "rewritten.onnx"), str(tmp / "pre.onnx"), auto_merge=True)  # dynamic H/W: auto_merge
    candidates = [n.name for n in onnx.load(str(tmp / "pre.onnx")).graph.node if n.op_type in QUANTIZABLE_OPS]
    return {"pre": tmp / "pre.onnx", "candidates": candidates, "float_tail": float_tail, "n_rewritten": n_rewritten,
            "tmp": tmp}


def _search(method: str, prepared: dict, calib, manifest: Manifest, reference, batches, opts, gate: float, log):
    """One calibration method's fallback search. -> (best result, its search, the candidates)."""
    key = _search_key(manifest, opts, batches, method)
    build = _Candidates(prepared, calib, method, manifest, reference[0], batches, key, _memo(manifest, key, log))
    log(f"quantizing ({method} calibration) and gating at mask IoU >= {gate} vs {reference[1]} ...")
    best, trail = fallback_search(build, prepared["candidates"], gate, opts.max_fp32_nodes, log)
    return best, trail, build


def _second_method(folder: Path, manifest: Manifest, opts, best: GateResult, gate: float, log) -> str | None:
    """"percentile" after a default (minmax) search that missed the gate, where its histograms fit in memory."""
    import dataclasses

    if opts.calib_method is not None or best.passes(gate):
        return None
    try:
        check_calibration_memory(folder, manifest, dataclasses.replace(opts, calib_method="percentile"), "onnxruntime")
    except SegrtError as exc:
        log(f"  minmax calibration misses the gate; percentile calibration not tried: {exc}")
        return None
    log(f"  minmax calibration misses the gate (best mask IoU {best.mask_iou:.5f}): trying percentile calibration")
    return "percentile"


def _search_key(manifest: Manifest, opts: QuantizeOptions, batches, method: str) -> dict:
    """What an INT8 search's results depend on (the gate is not one of them)."""
    import hashlib

    from segrt.verify.imagesets import split_paths

    calib = split_paths(opts, manifest.split.get("train"))[0][: opts.calib_count or None]
    digest = lambda names: hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]  # noqa: E731
    return {"fp32": manifest.artifact("onnx", "fp32").sha256, "method": method, "decode": manifest.decode,
            "calibration_images": digest([p.name for p in calib]), "gate_images": digest([n for b in batches for n in b.names])}


def _memo(manifest: Manifest, key: dict, log) -> dict:
    """An earlier failed search's record (calibration ranges and every result) when it was made
    from the same model, calibration and gate images: a rerun with another --quant-gate decides
    from it in seconds."""
    record = manifest.parity.get("model.int8.onnx")
    found = [record.measures.get("tried"), *record.measures.get("tried_also", [])] \
        if record is not None and not record.passed else []
    tried = next((t for t in found if isinstance(t, dict) and t.get("key") == key), None)
    if tried is None:
        return {}
    log(f"  reusing the last search's {len(tried.get('results', []))} measurement(s) and calibration ranges "
        "(same model, calibration and gate images)")
    return tried


class _Candidates:
    """``build(excluded)``: the prepared graph quantized with those nodes left fp32, evaluated against
    the reference; every candidate file is kept in ``files`` until the search is over. Calibration
    runs once: its ranges are cached (entropy calibration is done here, with ENTROPY_BINS). ``memo``:
    an earlier search's ranges and results (see _memo): a result found there is not built again.
    ``key``: what the results depend on (_search_key), kept with them by ``record()``."""

    def __init__(self, prepared: dict, calib: list[np.ndarray], method: str, manifest: Manifest, reference, batches,
                 key: dict, memo: dict):
        from onnxruntime.quantization import CalibrationMethod

        self.prepared, self.calib, self.manifest, self.key = prepared, calib, manifest, key
        self.reference, self.batches = reference, batches
        self.method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}[method]
        self.cache, self.files, self.name = prepared["tmp"] / f"calibration.{method}.json", {}, method
        self.known = {tuple(r["excluded"]): r for r in memo.get("results", [])}
        self.tried = list(memo.get("results", []))
        if memo.get("calibration"):
            self.cache.write_text(memo["calibration"])
        elif self.method == CalibrationMethod.Entropy:
            entropy_ranges(prepared["pre"], calib, manifest.input_name, self.cache)

    def __call__(self, excluded: list[str]) -> GateResult:
        known = self.known.get(tuple(excluded))
        if known:
            return GateResult(known["mask_iou"], known["summary"], list(excluded), known["ms_per_image"])
        result = evaluate(_ort_run(self.file(excluded)), self.reference, self.batches, self.manifest.num_classes)
        result.excluded = list(excluded)
        self.tried.append({"excluded": list(excluded), "mask_iou": result.mask_iou, "ms_per_image": result.ms_per_image,
                           "summary": {k: v for k, v in result.summary.items() if k != "worst"}})
        return result

    def record(self) -> dict:
        """This search for a failure record: a rerun with another gate reuses it (_memo)."""
        return {"key": self.key, "calibration": self.cache.read_text(), "results": self.tried}

    def file(self, excluded: list[str]) -> Path:
        """The candidate with ``excluded`` left fp32, built once."""
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        if tuple(excluded) in self.files:
            return self.files[tuple(excluded)]
        out = self.files.setdefault(tuple(excluded), self.prepared["tmp"] / f"candidate.{self.name}.{len(self.files)}.onnx")
        tail = self.prepared["float_tail"]
        reader = _Reader(self.calib, self.manifest.input_name) if not self.cache.exists() else None
        quantize_static(str(self.prepared["pre"]), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=self.method,
                        nodes_to_exclude=excluded + tail, calibration_cache_path=str(self.cache),
                        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]} if tail else {})
        return out


def quantize_fp16(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact:
    """Add model.fp16.onnx (fp16 weights/activations, fp32 I/O), gated at DEFAULT_IOU_GATES["fp16"]."""
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
        _write_metadata(t, manifest)
        r = evaluate(_ort_run(t), reference, batches, manifest.num_classes)
        require(r, gate, "FP16", names=manifest.classes)
    art = Artifact(file=target.name, kind="onnx", precision="fp16", exporter="onnxruntime float16 converter",
                   opset=_fp32_opset(fp32), extra={"io": "float32", "intended_provider": "cuda/tensorrt"})
    save_variant(folder, art, r.record(gate, ref_name))
    log(f"model.fp16.onnx: mask IoU {r.mask_iou:.5f} (gate {gate}); note: the CPU provider runs fp16 by casting "
        "back to fp32 (no speed-up on CPU); use it on cuda/tensorrt")
    return art


def _fp32_opset(path: Path) -> int:
    import onnx

    from segrt.quantize.onnx_rewrites import opset_of

    return opset_of(onnx.load(str(path), load_external_data=False))
