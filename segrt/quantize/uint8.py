"""Variants that take what a decoder gives: uint8 NCHW pixels in [0, 255], the normalization in the
graph (no float normalization on the host, a quarter of the bytes into the runtime). ONNX: a graph
edit (segrt.quantize.onnx_rewrites.uint8_input: Cast, Sub 255*mean, the 1/(255*std) folded into the first conv where
exact). OpenVINO: PrePostProcessor (u8 tensor, convert, mean, scale; OpenVINO folds them). Each
copy is gated like its base variant, against the same reference on held-out images, and listed as
NAME.u8 with ``extra.input_dtype = "uint8"``; Session feeds it uint8 (converting a float input back).
"""

from __future__ import annotations

import os
from pathlib import Path

from segrt.errors import SegrtError
from segrt.manifest import Artifact, Manifest

__all__ = ["SUFFIX", "u8_name", "add_uint8_variants"]

SUFFIX = ".u8"


def u8_name(file: str) -> str:
    """model.int8.xml -> model.u8.int8.xml (the variant's file: the same stem, marked)."""
    stem, _, rest = file.partition(".")
    return f"{stem}{SUFFIX}.{rest}"


def _write_onnx(folder: Path, base: Artifact, manifest: Manifest) -> Artifact:
    import onnx

    from segrt.quantize.onnx_rewrites import uint8_input

    model = uint8_input(onnx.load(str(folder / base.file)), manifest.mean, manifest.std)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / u8_name(base.file)))
    return Artifact(file=u8_name(base.file), kind="onnx", precision=base.precision, opset=base.opset,
                    extra={"input_dtype": "uint8", "base": base.name})


def _write_openvino(folder: Path, base: Artifact, manifest: Manifest) -> Artifact:
    from segrt.runtime.backends.openvino import import_openvino, save_ir

    ov = import_openvino()
    model = ov.Core().read_model(str(folder / base.file))
    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([255.0 * v for v in manifest.mean]) \
        .scale([255.0 * v for v in manifest.std])
    xml = u8_name(base.file)
    save_ir(ppp.build(), folder, xml)
    return Artifact(file=xml, kind="openvino", precision=base.precision, companions={xml[:-4] + ".bin": {}},
                    extra={"input_dtype": "uint8", "base": base.name,
                           **{k: v for k, v in base.extra.items() if k == "inference_precision"}})


def add_uint8_variants(folder: str | os.PathLike, opts, log=print, bases: list[str] | None = None) -> list[Artifact]:
    """A uint8-input copy of each gated ONNX / OpenVINO variant (or of ``bases``), gated at its
    base's gate on held-out images against the export's reference."""
    from segrt.runtime.session import Session
    from segrt.verify.gate import evaluate, require, save_variant
    from segrt.verify.imagesets import gate_batches
    from segrt.verify.reference import reference_logits
    from segrt.verify.thresholds import DEFAULT_IOU_GATES

    folder = Path(folder)
    manifest = Manifest.load(folder)
    chosen = [a for a in manifest.artifacts if a.kind in ("onnx", "openvino") and not a.extra.get("input_dtype")
              and "@" not in a.name and manifest.passed(a.name) and manifest.in_copy(folder, a)
              and (bases is None or a.name in bases)]
    if not chosen:
        raise SegrtError(f"{folder}: no gated ONNX or OpenVINO variant to give a uint8 input"
                         + (f" among {', '.join(bases)}" if bases else ""))
    batches = gate_batches(opts, manifest)
    reference, ref_name = reference_logits(folder, manifest, batches)
    made = []
    for base in chosen:
        art = (_write_openvino if base.kind == "openvino" else _write_onnx)(folder, base, manifest)
        manifest.add_artifact(folder, art)
        manifest.save(folder)
        gate = manifest.parity[base.name].gates.mask_iou_min or DEFAULT_IOU_GATES[base.precision]
        session = Session(folder, artifact=art.name, provider="openvino" if art.kind == "openvino" else "cpu")
        r = evaluate(session.run, reference, batches, manifest.num_classes)
        log(f"{art.name}: uint8 input, mask IoU {r.mask_iou:.5f} (gate {gate}, as {base.name}), "
            f"{r.ms_per_image:.1f} ms/img")
        require(r, gate, f"{art.name} (uint8 input)", names=manifest.classes)
        save_variant(folder, art, r.record(gate, ref_name))
        manifest = Manifest.load(folder)
        made.append(art)
    return made
