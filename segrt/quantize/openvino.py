"""OpenVINO variants of an export, behind the shared accuracy gate (segrt.verify.gate).

IR: model.xml + model.bin converted from the exported ONNX with fp32 weights (ov.save_model
compresses to fp16 unless told not to).

INT8: NNCF post-training quantization with its defaults, calibrated through segrt's own image
reader (the same images and preprocessing as the ONNX Runtime INT8 path), of the graph OpenVINO
reads from model.onnx: on the converted IR, where BatchNorm is already folded into the
convolutions, NNCF's fast bias correction cost the bundled model 0.9885 -> 0.920 agreement.
Gated like every variant (segrt.verify.gate); when it misses, nncf.quantize_with_accuracy_control with
segrt's metric keeps the quantizer groups that cost the most agreement in float (see
accuracy_control for why not segrt's node-by-node search). The float layers run in f32, or in bf16
where the CPU has it and that is faster and still inside the gate.

bf16: the fp32 IR run with the bf16 precision hint, gated on held-out photos and recorded with the
CPU it ran on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import numpy as np

from segrt.bench.timing import timed
from segrt.cpuinfo import cpu_info, describe_cpu, has_bf16
from segrt.errors import SegrtError
from segrt.imaging.metrics import gate_score
from segrt.manifest import Artifact, Manifest
from segrt.options import QuantizeOptions
from segrt.quantize.memory import check_calibration_memory
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.backends.openvino import (IR_FILE, OpenVinoBackend, cpu_capabilities, import_openvino, ir_artifact,
                                             save_ir, write_ir)
from segrt.verify.compare import Batch, compare
from segrt.verify.gate import GateResult, evaluate, require, save_variant
from segrt.verify.imagesets import gate_batches, split_images
from segrt.verify.reference import reference_logits
from segrt.verify.thresholds import DEFAULT_IOU_GATES, FP32_MASK_IOU, FP32_MAX_LOGIT_DIFF

__all__ = ["QUANTIZABLE_OPS", "quantize_int8", "gate_bf16"]

QUANTIZABLE_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def _ensure_ir(folder: Path, manifest: Manifest, batches: list[Batch], reference, ref_name: str, log) -> Artifact:
    """The export's fp32 IR; converted from model.onnx and gated at fp32 parity when missing."""
    have = next((a for a in manifest.artifacts if a.kind == "openvino" and a.precision == "fp32"), None)
    if have:
        return have
    log(f"no OpenVINO IR in {folder}: converting {manifest.artifact('onnx', 'fp32').file} ...")
    art = write_ir(folder / manifest.artifact("onnx", "fp32").file, folder)
    r = evaluate(OpenVinoBackend(folder / IR_FILE, "f32", SessionOptions()).run, reference, batches,
                 manifest.num_classes)
    diff = r.summary["max_abs_logit_diff"]
    if r.mask_iou < FP32_MASK_IOU or diff > FP32_MAX_LOGIT_DIFF:
        for f in (IR_FILE, Path(IR_FILE).with_suffix(".bin").name):
            (folder / f).unlink(missing_ok=True)
        raise SegrtError(f"{folder / IR_FILE}: OpenVINO fp32 disagrees with {ref_name} (mask IoU {r.mask_iou:.5f}, "
                         f"max |logit diff| {diff:.3g}); not added")
    save_variant(folder, art, r.record(FP32_MASK_IOU, ref_name, FP32_MAX_LOGIT_DIFF))
    return art


def _median_ms(run, x: np.ndarray, runs: int = 5) -> float:
    return float(np.median(timed(run, x, runs, warmup=1))) * 1000


def _setup(folder, opts: QuantizeOptions, precision: str) -> tuple[Path, Manifest, float]:
    folder = Path(folder)
    manifest = Manifest.load(folder)
    gate = opts.gate if opts.gate is not None else DEFAULT_IOU_GATES[precision]
    return folder, manifest, gate


def quantize_int8(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact:
    """Add model.int8.xml/.bin: NNCF INT8 with its defaults, gated; below the gate, NNCF's accuracy
    control keeps the quantizer groups that cost the most agreement in float."""
    nncf = _import_nncf()
    ov = import_openvino()
    folder, manifest, gate = _setup(folder, opts, "int8")
    if opts.calib_method not in (None, "minmax"):
        log(f"note: --calib-method {opts.calib_method} is for ONNX Runtime INT8; NNCF calibrates with its own "
            "defaults (min-max)")
    check_calibration_memory(folder, manifest, opts, "openvino")
    calib, batches = split_images(opts, manifest, log)
    reference, ref_name = reference_logits(folder, manifest, batches)
    source = manifest.artifact("onnx", "fp32").file
    core = ov.Core()
    read = lambda: core.read_model(str(folder / source))  # noqa: E731 - nncf consumes its model
    dataset = nncf.Dataset(calib, lambda x: x[None])
    score = lambda model: evaluate(OpenVinoBackend(model, "f32", SessionOptions(), label="NNCF candidate").run,  # noqa: E731
                                   reference, batches, manifest.num_classes)
    log(f"quantizing with NNCF ({len(calib)} calibration images) and gating at mask IoU >= {gate} vs {ref_name} ...")
    with contextlib.redirect_stdout(sys.stderr):
        model = nncf.quantize(read(), dataset, subset_size=len(calib))
    best = score(model)
    search = [{"method": "nncf.quantize defaults", "excluded": [], "mask_iou": best.mask_iou,
               "ms_per_image": best.ms_per_image}]
    log(f"  NNCF defaults: mask IoU {best.mask_iou:.5f}")
    if not best.passes(gate):
        budget = max(1, int(len(_float_ops(read())) * opts.max_fp32_nodes))
        with contextlib.redirect_stdout(sys.stderr):
            model = _accuracy_control(read, dataset, batches, reference, manifest.num_classes, gate, budget, log)
        best = score(model)
        best.excluded = _float_ops(model)
        search.append({"method": "nncf.quantize_with_accuracy_control", "excluded": best.excluded,
                       "mask_iou": best.mask_iou, "ms_per_image": best.ms_per_image})
        log(f"  accuracy control: {len(best.excluded)} node(s) left in float: mask IoU {best.mask_iou:.5f}")
    require(best, gate, "OpenVINO INT8", search, "try more/other calibration images or a lower --quant-gate",
            names=manifest.classes)
    hint, ms = _float_precision(model, best, gate, reference, batches, manifest, log)
    save_ir(model, folder, "model.int8.xml")
    art = ir_artifact("model.int8.xml", "int8", inference_precision=hint, measured_on=cpu_info(), source=source,
                      calibration={"method": "nncf defaults (min-max, preset performance)", "count": len(calib)},
                      excluded_nodes=best.excluded, quantizable_nodes=len(_float_ops(read())), search=search,
                      ms_per_image=ms)
    save_variant(folder, art, best.record(gate, ref_name))
    log(f"model.int8.xml: mask IoU {best.mask_iou:.5f} (gate {gate}), {len(best.excluded)} node(s) in float "
        f"running in {hint}, {ms[hint]:.1f} ms/img at batch 1")
    return art


def _accuracy_control(read, dataset, batches: list[Batch], reference, num_classes: int, gate: float, budget: int,
                     log):
    """nncf.quantize_with_accuracy_control with segrt's metric: mask IoU agreement with the same
    reference on the same held-out batches, allowed to drop from the fp32 IR's agreement to the gate.
    NNCF reverts whole quantizer groups (scales shared across a Concat, an op's input quantizer with
    its weights), which a node-by-node IgnoredScope search cannot: on the bundled model, ignoring
    the first convolution by name left agreement at 0.9885, while reverting its group gave 0.9919.
    At most ``budget`` groups are reverted (as the ONNX Runtime fallback's --max-fp32-nodes share)."""
    nncf = _import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    def agreement(compiled, items) -> float:  # the gate score: >= the gate exactly when the gate passes
        items = list(items)
        outs = [compiled(b.x)[0] for b, _ in items]
        return gate_score(compare([r for _, r in items], outs, [b for b, _ in items], num_classes)["summary"])

    pairs = list(zip(batches, reference))
    initial = agreement(OpenVinoBackend(read(), "f32", SessionOptions()).compiled, pairs)
    log(f"  below the gate: NNCF accuracy control (fp32 agreement {initial:.5f}, may drop to {gate}; "
        f"at most {budget} layer group(s) back to float)")
    return nncf.quantize_with_accuracy_control(
        read(), dataset, nncf.Dataset(pairs), validation_fn=agreement, max_drop=max(initial - gate, 0.0),
        drop_type=nncf.DropType.ABSOLUTE, subset_size=dataset.get_length() or 300,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=budget))


def _import_nncf():
    """nncf, quiet: its INFO log off, and torch's CUDA-probe warning (nncf imports torch when it is
    installed) silenced."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise SegrtError("NNCF is not installed; pip install 'segrt[openvino]' (openvino, nncf)") from None
    nncf.set_log_level(logging.ERROR)
    return nncf


def _float_ops(model) -> list[str]:
    """Quantizable ops (convolutions, matmuls) whose weights are still a float constant (an INT8
    op reads them through a dequantizing Multiply)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANTIZABLE_OPS
            and op.input_value(1).get_node().get_type_name() == "Constant"]


def _float_precision(model, best: GateResult, gate: float, reference, batches: list[Batch], manifest: Manifest,
                     log) -> tuple[str, dict]:
    """The precision of the INT8 model's other layers: bf16 only where the CPU has it, it is
    faster here and the gate still passes; else f32. -> (hint, {hint: ms/image at batch 1})."""
    x = batches[0].x[:1]
    f32 = OpenVinoBackend(model, "f32", SessionOptions(), label="model.int8.xml")
    ms = {"f32": _median_ms(f32.run, x)}
    if best.excluded and "BF16" in cpu_capabilities():
        bf16 = OpenVinoBackend(model, "bf16", SessionOptions(), label="model.int8.xml")
        ms["bf16"], ms["f32"] = _median_ms(bf16.run, x), min(ms["f32"], _median_ms(f32.run, x))
        if ms["bf16"] < ms["f32"]:
            r = evaluate(bf16.run, reference, batches, manifest.num_classes)
            if r.passes(gate):
                log(f"  layers kept out of INT8 run in bf16: {ms['bf16']:.1f} vs f32 {ms['f32']:.1f} ms/img, "
                    f"mask IoU {r.mask_iou:.5f}")
                best.summary, best.mask_iou = r.summary, r.mask_iou
                return "bf16", ms
    return "f32", ms


def gate_bf16(folder: str | os.PathLike, opts: QuantizeOptions, log=print) -> Artifact | None:
    """Record the fp32 IR run in bf16 as a variant (model.xml@bf16), gated on held-out photos. On a
    CPU without bf16: not run here, said in one line, None."""
    if not has_bf16():
        log(f"not run here: bf16 (this CPU has no bf16: {describe_cpu()}); no bf16 variant added")
        return None
    folder, manifest, gate = _setup(folder, opts, "bf16")
    if not (opts.val_images or opts.calib_images):
        raise SegrtError("bf16 is gated on real photos: pass --val-images DIR (held-out images)")
    batches = gate_batches(opts, manifest)
    reference, ref_name = reference_logits(folder, manifest, batches)
    ir = _ensure_ir(folder, manifest, batches, reference, ref_name, log)
    bf16 = OpenVinoBackend(folder / ir.file, "bf16", SessionOptions(), label=str(folder / ir.file))
    r = evaluate(bf16.run, reference, batches, manifest.num_classes)
    x = batches[0].x[:1]
    ms = {"f32": _median_ms(OpenVinoBackend(folder / ir.file, "f32", SessionOptions()).run, x),
          "bf16": _median_ms(bf16.run, x)}
    log(f"bf16: mask IoU {r.mask_iou:.5f} (gate {gate}), {ms['bf16']:.1f} vs f32 {ms['f32']:.1f} ms/img at batch 1")
    require(r, gate, "bf16", names=manifest.classes)
    art = ir_artifact(ir.file, "bf16", inference_precision="bf16", measured_on=cpu_info(), ms_per_image=ms)
    save_variant(folder, art, r.record(gate, ref_name))
    return art
