"""`segrt import`: a bare ONNX file (exported elsewhere) into an export folder with a manifest, so that
parity, quantize (gated INT8), `auto`, bench and the report work on it. With ``reference`` (a
torch.export program of the model it came from) the fp32 ONNX is gated against it, as an export is;
without one, the fp32 ONNX is the reference of every later gate (said). torch only for the reference."""

from __future__ import annotations

import shutil
from pathlib import Path

from segrt.errors import SegrtError
from segrt.fsutil import atomic_dir
from segrt.manifest import Artifact, Manifest

__all__ = ["import_onnx"]


def import_onnx(onnx_path, out, *, classes=None, mean=None, std=None, size=None, size_multiple: int | None = None,
                reference=None, force: bool = False, log=print) -> tuple[Path, Manifest]:
    """-> (the new export folder, its manifest). ``size``: [h, w] or [side], the working size predict resizes to."""
    import onnx

    from segrt.export.checks import output_folder, working_size
    from segrt.export.user import NORMALIZATION_HINT
    from segrt.options import QuantizeOptions
    from segrt.runtime.model_info import load_model_info

    onnx_path = Path(onnx_path)
    if mean is None or std is None:
        raise SegrtError(f"{onnx_path}: the file does not say how its inputs were normalized; pass {NORMALIZATION_HINT}")
    manifest, folder = load_model_info(onnx_path, classes=classes, mean=mean, std=std, size_multiple=size_multiple)
    if folder is not None:
        raise SegrtError(f"{onnx_path}: already part of the export {folder}")
    if manifest.artifacts[0].precision != "fp32":
        raise SegrtError(f"{onnx_path}: an {manifest.artifacts[0].precision} graph; import the fp32 model, then "
                         "segrt quantize makes the gated INT8 variant")
    if classes is None:
        log(f"no --classes: named {', '.join(manifest.classes)} (pass --classes NAME,NAME,... to name them)")
    if size and not manifest.fixed_size:
        manifest.input_size = working_size(list(size), manifest.size_multiple)
    elif not manifest.input_size:
        log(f"no --size: images run at native resolution, padded to a multiple of {manifest.size_multiple}")
    out = output_folder(out, onnx_path, QuantizeOptions(), force, log)
    manifest.name, manifest.source = out.name, {"route": f"segrt import {onnx_path}", "imported": onnx_path.name,
                                                "batch": _fixed_batch(onnx_path)}
    with atomic_dir(out, force=force) as tmp:
        model = onnx.load(str(onnx_path))
        manifest.set_onnx_metadata(model)
        onnx.save(model, str(tmp / "model.onnx"))
        manifest.artifacts = []
        manifest.add_artifact(tmp, Artifact(file="model.onnx", kind="onnx", exporter=f"imported ({onnx_path.name})"))
        if reference:
            shutil.copyfile(reference, tmp / "model.pt2")
            manifest.add_artifact(tmp, Artifact(file="model.pt2", kind="pt2", exporter="torch.export (given)"))
            manifest.source["reference"] = "model.pt2"
        manifest.save(tmp)
        _gate(tmp, manifest, log)
    log("reference: model.pt2, the fp32 ONNX gated against it" if reference else
        "no reference: later gates compare with the fp32 ONNX itself")
    return out, Manifest.load(out)


def _fixed_batch(path: Path) -> int | None:
    """The batch size an ONNX file's input is fixed to, or None where it is symbolic."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in weights)
    dim = inp.type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _gate(folder: Path, manifest: Manifest, log) -> None:
    """The fp32 ONNX against the reference program on random inputs; without one, recorded as its own
    reference (agreement 1 by definition, said in the record)."""
    from segrt.records import GateRecord, Gates
    from segrt.verify.parity import ParityFailed, random_inputs, run_parity_on
    from segrt.verify.thresholds import FP32_MASK_IOU

    if not manifest.source.get("reference"):
        manifest.parity["model.onnx"] = GateRecord(passed=True, mask_iou=1.0, gates=Gates(FP32_MASK_IOU),
                                                   reference="itself (no reference given)")
        manifest.save(folder)
        return
    from segrt.verify.reference import eager_model

    report, _ = run_parity_on(folder, manifest, eager_model(folder / "model.pt2", manifest), random_inputs(manifest))
    manifest.parity = {a: GateRecord.from_json(r["summary"]) for a, r in report["artifacts"].items()}
    if not report["passed"]:
        raise ParityFailed(report)
    log("parity against the reference: " + ", ".join(f"{a} mask IoU {r.mask_iou:.4f}" for a, r in
                                                      manifest.parity.items()))
    manifest.save(folder)
