"""Parity: eager PyTorch vs every exported artifact on the same preprocessed inputs.

Per artifact: max/mean |logit diff|, pixel agreement and mask IoU agreement of argmax masks,
batch invariance, and (with ground truth) mIoU of eager and of the artifact. Gated per precision.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from segrt.errors import GateFailed, ImageError, ProviderError, SegrtError
from segrt.fsutil import export_path
from segrt.imaging.prepare import round_up
from segrt.imaging.files import list_images
from segrt.imaging.metrics import agreement_problems
from segrt.manifest import Manifest
from segrt.progress import progress
from segrt.records import QualityRecord
from segrt.verify.compare import Batch, compare
from segrt.verify.reference import eager_logits, eager_model, export_checkpoint, reference_runner
from segrt.verify.thresholds import DEFAULT_IOU_GATES, FP32_MAX_LOGIT_DIFF
from segrt.verify.truth import Unmapped, read_truth, truth_lut

__all__ = ["ParityFailed", "random_inputs", "image_inputs", "batch_invariance", "run_parity_on",
           "run_parity", "check_outputs"]

_RANDOM_SIZES = ((1, 1), (64, 64), (96, 160), (256, 192))  # (1, 1) rounds up to one size multiple
_NEEDS_REAL_IMAGES = ("int8", "bf16")  # gated on real photos; random inputs are mostly near-ties for them


class ParityFailed(GateFailed):
    def __init__(self, report: dict):
        super().__init__("parity gate failed: " + "; ".join(report["failures"]), report)


def random_inputs(manifest: Manifest, seed: int = 0, sizes=_RANDOM_SIZES, batches=(1, 3)) -> list[Batch]:
    rng = np.random.default_rng(seed)
    if manifest.fixed_size:  # a model that takes one size (and batch 1)
        sizes, batches = [tuple(manifest.fixed_size)], (1,)
    elif manifest.source:  # your own model's code (or program) may not take a side of one size multiple
        sizes = [s for s in sizes if s != (1, 1)]
    m, c, out = manifest.size_multiple, manifest.channels, []
    for h, w in sizes:
        h, w = round_up(h, m), round_up(w, m)
        for n in batches:
            label = f"random {n}x{c}x{h}x{w}"
            out.append(Batch(label, rng.standard_normal((n, c, h, w)).astype(np.float32),
                             [f"{label}[{i}]" for i in range(n)]))
    return out


def image_inputs(manifest: Manifest, images: str | os.PathLike, masks: str | os.PathLike | None = None,
                 batch_size: int = 4, limit: int | None = None, native: bool = False,
                 decode: str | None = None, mask_map: dict[int, int] | None = None,
                 unmapped: Unmapped | None = None) -> list[Batch]:
    """Real images as `segrt predict` serves them (and, where that differs, as training read them:
    verify.decoding); masks matched by file stem, their values through the export's table and
    ``mask_map`` (values it lacks are said in one line, or counted into ``unmapped`` for the caller to say)."""
    from segrt.verify.decoding import make_batch, read_pair

    paths = list_images(images) if Path(images).is_dir() else [Path(images)]
    if limit:
        paths = paths[:limit]
    if not paths:
        raise SegrtError(f"{images}: no images found")
    mask_by_stem = {p.stem: p for p in list_images(masks)} if masks else {}
    if masks and not mask_by_stem:
        raise SegrtError(f"{masks}: no mask images found")
    lut, say, unmapped = truth_lut(manifest, mask_map), unmapped is None, unmapped or Unmapped(manifest, mask_map)
    items = []
    for p in paths:
        try:
            x, geo, trained = read_pair(p, manifest, native, decode)
        except ImageError as exc:
            raise SegrtError(f"parity needs readable images: {exc}") from None
        truth = None
        if masks:
            if p.stem not in mask_by_stem:
                raise SegrtError(f"{p}: no ground-truth mask named {p.stem}.* in {masks}")
            truth = read_truth(mask_by_stem[p.stem], manifest, lut, unmapped)
            if truth.shape != geo.original_hw:
                raise SegrtError(f"{mask_by_stem[p.stem]}: mask size {truth.shape[::-1]} != image size "
                                 f"{geo.original_hw[::-1]}")
        items.append((p.name, x, geo, truth, trained))
    if say:
        unmapped.say(masks)
    batches = []  # group same-size inputs (all of them when resizing)
    for shape in dict.fromkeys(it[1].shape for it in items):
        same = [it for it in items if it[1].shape == shape]
        batches += [make_batch(f"images {same[i][0]}..", same[i:i + batch_size]) for i in range(0, len(same), batch_size)]
    return batches


def batch_invariance(session, batches: list[Batch]) -> dict:
    """The first image of the first multi-image batch, alone and in its batch: same mask?"""
    b = next((b for b in batches if len(b.x) > 1), None)
    if b is None:
        return {"checked": False}
    together, alone = session.run(b.x)[0], session.run(b.x[:1])[0]
    return {"checked": True, "input": b.names[0], "same_mask": bool((together.argmax(0) == alone.argmax(0)).all()),
            "max_abs_logit_diff": float(np.abs(together - alone).max())}


def run_parity_on(folder: Path, manifest: Manifest, model, batches: list[Batch], gate_iou: float | None = None,
                  gate_logit: float = FP32_MAX_LOGIT_DIFF, provider: str = "cpu", names: list[str] | None = None,
                  options=None, worst: int = 0, decode: str | None = None) -> tuple[dict, dict]:
    """Compare every runnable artifact in ``folder`` with the reference ``model`` (an eager model or
    a runner, verify.reference). Masks agree end to end: the reference on the images as training read
    them, each artifact on them as predict serves them; |logit difference| on the same pixels. ->
    (the report, plain JSON; the worst images: for ``worst`` > 0, that many of each non-fp32 artifact
    on real images, {artifact: [photo and both masks as arrays]}, for the HTML report). ``decode``:
    how the served side read the images, when not as the manifest says."""
    from segrt.runtime.here import same_signature
    from segrt.runtime.session import Session
    from segrt.verify.decoding import decoding_report

    eager, served = eager_logits(model, batches), eager_logits(model, batches, served=True)
    report = {"artifacts": {}, "failures": [], "skipped": {}, "inputs": [b.label for b in batches],
              "classes": manifest.classes, **decoding_report(decode or manifest.decode, batches, eager, served, manifest.num_classes)}
    shown: dict[str, list[dict]] = {}
    real = all(b.geometries is not None for b in batches)
    for art in manifest.artifacts:
        if art.kind == "checkpoint" or (names and art.name not in names):
            continue
        why_not = _skip_reason(art, provider, real) or (None if manifest.in_copy(folder, art) else "not in this copy")
        if why_not:
            report["skipped"][art.name] = why_not
            continue
        try:
            session = Session(folder, artifact=art.name, provider=provider, options=options)
        except ProviderError as exc:  # e.g. OpenVINO cannot compile it on this CPU
            report["skipped"][art.name] = f"not run here: {exc}"
            continue
        try:
            outs = [session.run(b.x) for b in progress(batches, desc=art.name, unit="batch")]
        except SegrtError as exc:  # an input the manifest allows but the artifact cannot run fails its gate
            report["failures"].append(f"{art.name}: {exc}")
            continue
        res = compare(eager, outs, batches, manifest.num_classes, served)
        s = res["summary"]
        s["provider"], s["precision"], s["kind"] = session.provider, art.precision, art.kind
        s["batch_invariance"] = batch_invariance(session, batches)
        record = manifest.parity.get(art.name)  # the gate it was made under
        recorded = record.gates.mask_iou_min if record else None
        min_iou = (gate_iou if gate_iou is not None and art.precision == "fp32"
                   else recorded or DEFAULT_IOU_GATES[art.precision])
        s["gates"] = {"mask_iou_min": min_iou, **({"max_abs_logit_diff_max": gate_logit} if art.precision == "fp32" else {})}
        problems = _gate_problems(s, res, art.precision == "fp32", manifest.classes)
        s["passed"] = not problems
        if problems and art.precision != "fp32" and not same_signature(record.measured_on if record else None, art):
            # gated on another CPU class: on this one auto leaves it out and predict refuses it (runtime.here)
            report.setdefault("below_gate_here", {})[art.name] = "; ".join(problems)
        else:
            report["failures"] += [f"{art.name}: {p}" for p in problems]
        report["artifacts"][art.name] = res
        if worst and real and art.precision != "fp32":
            shown[art.name] = _worst_visuals(res["per_image"][:worst], batches, eager, outs, manifest)
    report["passed"] = not report["failures"]
    return report, shown


def _gate_problems(s: dict, res: dict, fp32: bool, names: list[str]) -> list[str]:
    """What fails in one artifact's summary ``s`` against its gates (empty: it passes)."""
    worst = res["worst"][0] if res["worst"] else {}
    problems = agreement_problems(s, s["gates"]["mask_iou_min"], names)
    if problems:
        problems[0] += f" (worst input: {worst.get('input')}, IoU {worst.get('mask_iou', float('nan')):.4f})"
    gate_logit = s["gates"].get("max_abs_logit_diff_max")
    if fp32 and not s["max_abs_logit_diff"] <= gate_logit:
        top = max(res["worst"] + [worst], key=lambda r: r.get("max_abs_logit_diff") or 0)
        problems.append(f"max |logit diff| {s['max_abs_logit_diff']:.3g} > {gate_logit:g} (on {top.get('input')})")
    if s["batch_invariance"].get("checked") and not s["batch_invariance"]["same_mask"]:
        problems.append(f"mask of {s['batch_invariance']['input']} changes with batch size")
    return problems


def _worst_visuals(worst: list[dict], batches: list[Batch], eager, outs, manifest: Manifest) -> list[dict]:
    """For the report: each listed image's photo (HWC uint8 at the model's input size, rebuilt from
    the normalized input) and the eager and artifact masks (HW uint8, argmax of the logits)."""
    where = {name: (bi, i) for bi, b in enumerate(batches) for i, name in enumerate(b.names)}
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (manifest.mean, manifest.std))
    found = []
    for row in worst:
        bi, i = where[row["input"]]
        photo = np.clip((batches[bi].x[i] * std + mean) * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        found.append({**row, "photo": np.repeat(photo, 3, axis=2) if photo.shape[2] == 1 else photo,
                      "eager": eager[bi][i].argmax(0).astype(np.uint8), "mask": outs[bi][i].argmax(0).astype(np.uint8)})
    return found


def _skip_reason(art, provider: str, real: bool) -> str | None:
    """Why an artifact is not compared here, or None."""
    from segrt.cpuinfo import module_available
    from segrt.runtime.select import cannot_run_here

    if art.kind in ("torchscript", "pt2") and not module_available("torch"):
        return f"{art.kind} artifacts need torch (pip install 'segrt[torch]')"
    if art.precision in _NEEDS_REAL_IMAGES and not real:
        return f"{art.precision} is gated on real images; random inputs say nothing: pass --images"
    here = cannot_run_here(art)
    if here:
        return f"not run here: {here}"
    if art.kind == "openvino" and provider not in ("cpu", "openvino", "auto"):
        return f"OpenVINO artifacts run on the CPU, not on {provider}"
    if art.kind in ("torchscript", "pt2") and provider not in ("cpu", "cuda", "auto"):
        return f"{art.kind} artifacts run on cpu or cuda (torch), not on {provider}"
    return None


def run_parity(export_dir: str | os.PathLike, *, images=None, masks=None, checkpoint=None, json_path=None,
               gate_iou: float | None = None, gate_logit: float = FP32_MAX_LOGIT_DIFF, batch_size: int = 4,
               limit: int | None = None,
               provider: str = "cpu", options=None, report_path=None, bench_path=None, worst: int = 8,
               record: str | None = None, full_decode: bool = False, mask_map: dict[int, int] | None = None) -> dict:
    """The `segrt parity` command: verify hashes, load eager model, compare, write JSON (and, with
    ``report_path``, the HTML report with the ``worst`` images of each reduced-precision artifact).
    ``full_decode``: serve the images as `predict --full-decode` does. ``mask_map``: raw ground-truth
    value -> class id, over the export's table (--mask-map)."""
    folder = export_path(export_dir)
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    check_outputs(folder, manifest, images, masks, json_path, report_path, record)
    model = None
    if checkpoint is None and manifest.source.get("imported") and not manifest.source.get("reference"):
        checkpoint = "the fp32 ONNX itself (imported without a reference)"
        print(f"reference: {checkpoint}", file=sys.stderr)
    else:
        if checkpoint is None:
            checkpoint, _ = export_checkpoint(folder, manifest, lambda m: print(m, file=sys.stderr))
        model = eager_model(checkpoint, manifest)
    if masks and not images:
        raise SegrtError("--masks needs --images")
    if record and not masks:
        raise SegrtError("--record needs both --images and --masks (it records mIoU against ground truth)")
    decode = "full" if full_decode else None
    batches = image_inputs(manifest, images, masks, batch_size, limit, decode=decode, mask_map=mask_map) if images \
        else random_inputs(manifest)
    bench = _load_bench(bench_path) if bench_path else None
    model = reference_runner(folder, manifest)[0] if model is None else model
    report, shown = run_parity_on(folder, manifest, model, batches, gate_iou, gate_logit, provider, options=options,
                                  worst=worst if report_path else 0, decode=decode)
    report["export"] = str(folder)
    report["checkpoint"] = checkpoint["path"] if isinstance(checkpoint, dict) else str(checkpoint)
    if images:
        from segrt.imaging.splits import describe

        report["images_are"], report["training_images"] = describe(
            [n for b in batches for n in b.names], manifest.split)
    from segrt.fsutil import write_bytes_atomic

    if report_path:
        from segrt.verify.report import render

        write_bytes_atomic(Path(report_path), render(report, manifest, provider, bench, shown).encode())
    if record:
        _record_quality(folder, manifest, report, record)
    if json_path:
        write_bytes_atomic(Path(json_path), (json.dumps(report, indent=2) + "\n").encode())
    return report


def check_outputs(folder: Path, manifest: Manifest, images, masks, json_path, report_path, record) -> None:
    """--json and --report never land on what parity reads; --record needs a writable export."""
    from segrt.fsutil import check_file_output, check_writable

    named = [folder / "manifest.json", *(folder / f for a in manifest.artifacts for f in (a.file, *a.companions)),
             *([folder / manifest.gate_sample["file"]] if manifest.gate_sample else [])]
    for option, target in (("--json", json_path), ("--report", report_path)):
        check_file_output(target, option, {"images folder": images, "masks folder": masks},
                          [*named, *(p for p in (images, masks) if p)])
    if record:
        check_writable(folder, "--record writes the quality into its manifest")


def _record_quality(folder: Path, manifest: Manifest, report: dict, name: str) -> None:
    """--record NAME: each artifact's mIoU and per-class IoU against ground truth (and its agreement
    with eager) into manifest.quality[NAME]."""
    import datetime as dt

    summaries = {a: r["summary"] for a, r in report["artifacts"].items()}
    first = next(iter(summaries.values()), {})
    manifest.quality[name] = QualityRecord(
        images=first.get("inputs"), eager_miou=first.get("miou_eager_vs_ground_truth"),
        date=dt.date.today().isoformat(), classes=manifest.classes,
        artifacts={a: {"miou": s["miou_vs_ground_truth"], "iou": s["iou_vs_ground_truth"],
                       "agreement": s["mask_iou"]} for a, s in summaries.items()})
    manifest.save(folder)


def _load_bench(path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        data["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SegrtError(f"{path}: not a segrt bench JSON file (segrt bench --json)") from None
    return data
