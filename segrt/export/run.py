"""Checkpoint -> ONNX / TorchScript / torch.export artifacts + manifest, gated on parity.

Everything is written into a temp folder that becomes the export folder only after the checks
and the parity gate pass, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from segrt import __version__
from segrt.errors import SegrtError
from segrt.export.checks import (DEFAULT_FORMATS, check_formats, check_opset, check_usage, output_folder, quantize_jobs,
                                 resize_policy, working_size)
from segrt.export.torch_export import CannotCarry, ExportGraph, export_onnx, export_pt2, export_torchscript
from segrt.fsutil import atomic_dir
from segrt.imaging.splits import SPLIT_FILE, split_beside
from segrt.manifest import Artifact, Manifest
from segrt.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from segrt.model.unet import TTA_MODES, with_tta
from segrt.records import GateRecord
from segrt.verify.thresholds import FP32_MASK_IOU, FP32_MAX_LOGIT_DIFF

__all__ = ["TORCHSCRIPT_NOTE", "ExportResult", "versions", "run_export", "add_variants", "describe_export"]

_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.ts", "pt2": "model.pt2"}
_DEFAULT_OPSET = 20
TORCHSCRIPT_NOTE = ("note: torch.jit (TorchScript) is deprecated upstream; model.ts is written for LibTorch "
                    "deployments, model.pt2 (torch.export) is the forward-compatible format")
_INT8_NOTE = ("note: INT8 (QDQ) is for CPUs with VNNI and for TensorRT; ONNX Runtime's CUDA provider does not "
             "accelerate QDQ convolutions (on cuda use fp16: --quantize fp16 adds model.fp16.onnx)")


@dataclass
class ExportResult:
    folder: Path
    manifest: Manifest
    report: dict
    notes: list[str] = field(default_factory=list)


def _export_openvino(path: Path) -> Artifact:
    from segrt.runtime.backends.openvino import write_ir

    return write_ir(path.with_name(_FILES["onnx"]), path.parent)


def versions() -> dict:
    import datetime as dt

    import onnx
    import onnxruntime

    from segrt.cpuinfo import module_available

    found = {"exported": dt.date.today().isoformat(), "segrt": __version__, "torch": torch.__version__,
             "onnx": onnx.__version__,
             "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    if module_available("openvino"):
        from importlib.metadata import version

        found["openvino"] = version("openvino")
    return found


def _read_source(checkpoint: Path, progress) -> tuple[dict, dict, str | None]:
    """-> (checkpoint dict, the training split, where the split came from). ``checkpoint``: a .pt
    file, or an export folder to export again (its checkpoint.pt, or where that is not in the copy,
    the U-Net rebuilt from its fp32 ONNX; its manifest's split)."""
    if not checkpoint.is_dir():
        return (load_checkpoint(checkpoint), *split_beside(checkpoint))
    from segrt.verify.reference import export_checkpoint

    manifest = Manifest.load(checkpoint)
    ckpt, what = export_checkpoint(checkpoint, manifest, progress)
    ckpt = load_checkpoint(ckpt) if isinstance(ckpt, Path) else ckpt
    return ckpt, manifest.split, (str(checkpoint / "manifest.json") if manifest.split else None)


def _manifest_from_checkpoint(ckpt: dict, name: str) -> Manifest:
    cfg = ckpt["model_config"]
    return Manifest(name=name, classes=list(ckpt["classes"]), mean=list(ckpt["normalization"]["mean"]),
                    std=list(ckpt["normalization"]["std"]), channels=int(cfg["in_channels"]),
                    size_multiple=2 ** int(cfg["depth"]),
                    input_size=list(ckpt["input_size"]) if ckpt["input_size"] else None,
                    crop_size=list(ckpt["crop_size"]) if ckpt.get("crop_size") else None,
                    mask_values={str(k): int(v) for k, v in (ckpt.get("mask_values") or {}).items()},
                    colors=ckpt.get("colors"),
                    model_config=dict(cfg), versions=versions())


def run_export(checkpoint, out: str | os.PathLike | None = None, *,
               formats: tuple[str, ...] = DEFAULT_FORMATS, opset: int = _DEFAULT_OPSET, force: bool = False,
               gate_iou: float = FP32_MASK_IOU, gate_logit: float = FP32_MAX_LOGIT_DIFF, progress=print,
               quantize: tuple[str, ...] = (), quantize_options=None, tta: str | None = None,
               size: list[int] | None = None, uint8_input: bool = False, full_decode: bool = False,
               resize: str | None = None, resize_filter: str | None = None, upsample: str | None = None,
               **model_options) -> ExportResult:
    """Export, check and gate, in a temp folder that becomes ``out`` only when everything passed.
    ``checkpoint``: a segrt checkpoint or export folder, or your own model (an nn.Module, a state_dict
    with ``arch``, a .pt2 program, an smp folder: segrt.model.foreign), described by ``model_options``
    (classes, mean, std, size_multiple, arch, arch_args, output_key, trust_pickle: export.user).
    ``tta='hflip'`` folds flip test-time augmentation into every artifact (and into the eager
    reference the gates compare with). ``size`` (side, [side] or [h, w]) is the working size predict
    resizes to (default: the training size). JPEGs are read at reduced scale only where the held-out
    images show it keeps the fp32 gate (verify.decoding), never with ``full_decode``. ``resize`` ('size',
    'scale:F', 'native'), ``resize_filter``, ``upsample`` ('logits', 'mask'): the pipeline's recorded
    policy (export.checks.resize_policy). Raises SegrtError (bad input) or ParityFailed (gate)."""
    from segrt.options import QuantizeOptions

    formats = check_formats(tuple(formats.split(",")) if isinstance(formats, str) else formats)
    size = [size] if isinstance(size, int) else size  # the API's size=256, as the CLI's --size 256
    check_opset(opset)
    if tta is not None and tta not in TTA_MODES:
        raise SegrtError(f"--tta {tta}: choose from {', '.join(TTA_MODES)}")
    quant_jobs = quantize_jobs(quantize, formats)
    check_usage(formats, quant_jobs, quantize_options)
    opts = quantize_options or QuantizeOptions()
    ckpt, model, manifest, out = _source(checkpoint, out, opts, force, size, progress, model_options)
    resize_policy(manifest, resize, resize_filter, upsample, progress)
    if ckpt is None:  # your model's reference: its torch.export program (a TorchScript archive's own format)
        from segrt.export.user import reference_format

        formats += (reference_format(manifest),) if reference_format(manifest) not in formats else ()
    manifest.tta = tta
    try:
        with atomic_dir(out, force=force) as tmp:
            _write_artifacts(tmp, ckpt, model, manifest, formats, opset, progress)
            notes = [TORCHSCRIPT_NOTE] if any(a.kind == "torchscript" for a in manifest.artifacts) else []
            report = _gate_parity(tmp, manifest, with_tta(model, tta), gate_iou, gate_logit, progress)
            _choose_decode(tmp, manifest, with_tta(model, tta), opts, gate_iou, full_decode, progress)
            failed = add_variants(tmp, quant_jobs, opts, progress, final=out, uint8=uint8_input)[1]
            notes += [_INT8_NOTE] if ("onnxruntime", "int8") in quant_jobs else []
            notes += [f"note: asked for opset {opset}; the exporter wrote opset {a.opset}" for a in manifest.artifacts
                      if a.kind == "onnx" and a.opset not in (None, opset)]
            manifest = Manifest.load(tmp)
    except OSError as exc:
        from segrt.fsutil import disk_full, disk_full_error

        if disk_full(out.parent, exc):
            raise disk_full_error(exc.filename or out) from None
        raise SegrtError(f"{out}: cannot write the export ({exc.strerror or exc}); nothing was written") from None
    if failed:
        from segrt.errors import GateFailed

        raise GateFailed(f"{'; '.join(failed.values())}; {out} was written without {', '.join(failed)} (its "
                         "measurements are in manifest.json and parity.html)")
    return ExportResult(out, manifest, report, notes)


def _source(checkpoint, out, opts, force: bool, size, progress, model_options: dict):
    """-> (segrt checkpoint dict or None, the model to export, its manifest, the output folder)."""
    from segrt.model.foreign import is_segrt_source

    user_options = bool(model_options.get("arch") or model_options.get("trust_pickle"))
    if isinstance(checkpoint, nn.Module) or not is_segrt_source(Path(checkpoint), user_options):
        from segrt.export.user import user_manifest
        from segrt.model.foreign import load_user_model

        multiple = int(model_options.pop("size_multiple", None) or 32)
        described = {k: model_options.pop(k, None) for k in ("classes", "mean", "std")}
        user = load_user_model(checkpoint, multiple=multiple, **model_options)
        if not out and isinstance(checkpoint, nn.Module):
            raise SegrtError("exporting an nn.Module needs out= (the export folder)")
        out = output_folder(out, None if isinstance(checkpoint, nn.Module) else Path(checkpoint), opts, force, progress)
        progress(f"your model: {user.route}")
        manifest = user_manifest(user, out.name, size=size, multiple=multiple, versions=versions(), log=progress,
                                 **described)
        progress("its training images are unknown to segrt: pass held-out images to the gates (--val-images)")
        return None, user.graph, manifest, out
    unused = [k for k, v in model_options.items() if v not in (None, False)]
    if unused:
        raise SegrtError(f"{checkpoint} is a segrt checkpoint or export, which says its own "
                         f"{', '.join(k.replace('_', '-') for k in unused)}: leave those options out")
    checkpoint = Path(checkpoint)
    ckpt, split, source = _read_source(checkpoint, progress)
    out = output_folder(out, checkpoint, opts, force, progress)
    manifest = _manifest_from_checkpoint(ckpt, out.name)
    if size:
        manifest.input_size = working_size(size, manifest.size_multiple)
    manifest.split = split
    progress(f"training split: {source} ({len(split['train'])} train, {len(split['val'])} val images): no gate "
             f"uses a training image" if source else f"no {SPLIT_FILE} beside {checkpoint}: which images trained it "
             "is unknown, so gates cannot exclude them")
    return ckpt, model_from_checkpoint(ckpt), manifest, out


def _write_artifacts(folder: Path, ckpt: dict | None, model: nn.Module, manifest: Manifest, formats: tuple[str, ...],
                    opset: int, progress) -> None:
    """The weights-only checkpoint (the eager reference for parity, and for re-export; your own model's
    reference is its torch.export program, model.pt2), then each format."""
    if ckpt is not None:
        save_checkpoint(folder / "checkpoint.pt", model=model, classes=ckpt["classes"],
                        normalization=ckpt["normalization"], input_size=ckpt["input_size"],
                        crop_size=ckpt.get("crop_size"), epoch=ckpt.get("epoch", 0), metrics=ckpt.get("metrics", {}),
                        ignore_index=ckpt.get("ignore_index"), mask_values=ckpt.get("mask_values"),
                        colors=ckpt.get("colors"))
        manifest.add_artifact(folder, Artifact(file="checkpoint.pt", kind="checkpoint"))
    graph = with_tta(ExportGraph(model) if ckpt is not None else model, manifest.tta).eval()
    writers = {"onnx": lambda p: export_onnx(graph, p, manifest, opset), "openvino": _export_openvino,
               "torchscript": lambda p: export_torchscript(graph, p, manifest),
               "pt2": lambda p: export_pt2(graph, p, manifest)}
    for fmt in formats:
        progress(f"exporting {fmt} ...")
        try:
            manifest.add_artifact(folder, writers[fmt](folder / _FILES[fmt]))
        except CannotCarry as exc:
            if fmt != "torchscript" or len(formats) == 1:
                raise
            progress(f"note: {fmt} skipped: {exc}; the other formats carry it")
    manifest.save(folder)  # the runtime reads it; rewritten by the gate with the parity results


def _gate_parity(folder: Path, manifest: Manifest, model: nn.Module, gate_iou: float, gate_logit: float, progress) -> dict:
    """Every artifact against eager PyTorch on random inputs; the results go into the manifest."""
    from segrt.verify.parity import ParityFailed, random_inputs, run_parity_on

    progress("checking parity against eager PyTorch ...")
    report, _ = run_parity_on(folder, manifest, model, random_inputs(manifest), gate_iou, gate_logit)
    manifest.parity = {a: GateRecord.from_json(r["summary"]) for a, r in report["artifacts"].items()}
    if not report["passed"]:
        raise ParityFailed(report)
    manifest.save(folder)
    return report


def _choose_decode(folder: Path, manifest: Manifest, model: nn.Module, opts, gate_iou: float, full: bool,
                   progress) -> None:
    from segrt.verify.decoding import choose_decode
    from segrt.verify.imagesets import held_out_paths

    choose_decode(manifest, model, held_out_paths(opts, manifest), gate_iou, progress, full)
    manifest.save(folder)


def add_variants(folder: Path, jobs: list[tuple[str, str]], opts, progress, final: Path | None = None,
                 uint8: bool | list[str] = False) -> tuple[list[Artifact], dict[str, str]]:
    """--quantize: each gated variant; --uint8-input: uint8-input copies of the gated variants (or of
    the ones named); then the CPU speeds of all, and parity.html for the gates. A variant that fails
    its gate is not written, and the others are: its measurements and the reason go into the
    manifest (parity[NAME], passed false) and the report. -> (the new variants, {name: why failed})."""
    from segrt.bench.speeds import record_speeds
    from segrt.errors import GateFailed
    from segrt.quantize import NAMES, run_quantize
    from segrt.quantize.uint8 import add_uint8_variants
    from segrt.verify.gate import write_gate_report

    made, failed = [], {}
    for backend, precision in jobs:
        try:
            art = run_quantize(folder, precision, opts, progress, backend)
        except GateFailed as exc:
            kept = _record_failure(folder, NAMES[(backend, precision)], exc, opts, precision)
            failed[NAMES[(backend, precision)]] = f"{exc}; {kept}" if kept else str(exc)
            progress(f"error: {exc}; {kept or 'the rest of the export is kept'}")
            continue
        made += [art] if art else []
    if uint8:
        made += add_uint8_variants(folder, opts, progress, uint8 if isinstance(uint8, list) else None)
    record_speeds(folder, progress, images=opts.val_images or opts.calib_images)
    if made or failed:
        write_gate_report(folder, opts, progress, final)
    _add_gate_sample(folder, opts, progress)
    return made, failed


def _record_failure(folder: Path, name: str, exc, opts, precision: str) -> str | None:
    """parity[NAME] for a variant that failed its gate: its best measurement, the reason, the search.
    Where an earlier NAME passed and is in the export, a failed retry leaves it and its record: -> that line."""
    from segrt.records import Gates
    from segrt.runtime.here import signature
    from segrt.verify.thresholds import DEFAULT_IOU_GATES

    manifest = Manifest.load(folder)
    earlier = manifest.parity.get(name)
    if earlier is not None and earlier.passed and manifest.find(name) is not None:
        return f"the earlier {name}, which passed its gate at {earlier.mask_iou:.4f}, is kept as it was"
    best = exc.report.get("best", {})
    gate = exc.report.get("gate") or (opts.gate if opts.gate is not None else DEFAULT_IOU_GATES[precision])
    manifest.parity[name] = GateRecord(passed=False, mask_iou=float(best.get("mask_iou", 0.0)), gates=Gates(gate),
                                       measured_on=signature(), measures={
                                           "reason": str(exc), "written": False, "excluded": best.get("excluded", []),
                                           "search": exc.report.get("search", []),
                                           **{k: exc.report[k] for k in ("tried", "tried_also") if k in exc.report}})
    manifest.save(folder)


def _add_gate_sample(folder: Path, opts, progress) -> None:
    """The gate sample (runtime.here) from the held-out gate images, when the export has none."""
    from segrt.verify.imagesets import held_out_paths
    from segrt.verify.sample import write_sample

    manifest = Manifest.load(folder)
    if manifest.gate_sample or not (opts.val_images or opts.calib_images):
        return
    write_sample(folder, held_out_paths(opts, manifest), str(opts.val_images or opts.calib_images), progress)


def describe_export(result: ExportResult) -> str:
    lines = [f"exported {result.folder}/"]
    for a in result.manifest.artifacts:
        size = a.size + sum(c["size"] for c in a.companions.values())
        lines.append(f"  {a.name:<18} {size / 1e6:8.2f} MB  {a.kind} {a.precision}"
                     + (f"  opset {a.opset}" if a.opset else "") + (f"  [{a.exporter}]" if a.exporter else ""))
    lines.append("  manifest.json")
    lines += result.notes
    f = result.folder
    lines += ["next:", f"  segrt predict IMAGES --model {f} --provider auto --out predictions/",
              f"  segrt parity {f} --images IMAGES [--masks MASKS]", f"  segrt bench {f}"]
    return "\n".join(lines)
