"""How the two sides of a gate read photos. The reference reads them as training did (every pixel,
then the working-size resize); the served side as predict does: a JPEG at least twice the working
size may be decoded at a reduced DCT scale (1/2, 1/4, 1/8), which is faster and nearly the same
picture. Their difference counts toward every gate. An export keeps reduced-scale decoding only where
it measured, on held-out photos, that the reference's masks still pass the fp32 gate with it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np

from segrt.errors import ImageError, SegrtError
from segrt.imaging.decode import read_model_input
from segrt.imaging.prepare import Geometry
from segrt.imaging.metrics import agreement_problems
from segrt.manifest import Manifest
from segrt.progress import progress
from segrt.verify.compare import Batch, compare

__all__ = ["TRAINED", "SERVED", "read_pair", "make_batch", "decoding_report", "describe", "choose_decode"]

TRAINED = "full decoding and the working-size resize, as training read them"
SERVED = {"full": "full decoding, as predict reads them for this export",
          "reduced": "reduced-scale JPEG decoding where it still covers the working size, as predict reads them"}


def read_pair(path: str | os.PathLike, manifest: Manifest, native: bool = False,
              decode: str | None = None) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
    """-> (the input as predict serves it, its Geometry, the input as training read it where that
    differs, else None). ``decode`` overrides the manifest's choice."""
    x, geo = read_model_input(path, manifest, native, decode=decode)
    if (decode or manifest.decode) == "full" or native or not manifest.input_size:
        return x, geo, None
    trained, _ = read_model_input(path, manifest, native, decode="full")
    return x, geo, None if np.array_equal(trained, x) else trained


def make_batch(label: str, rows: list[tuple]) -> Batch:
    """A Batch from rows (name, served x, Geometry, truth or None, trained x or None)."""
    differs = [r[4] is not None for r in rows]
    trained = np.stack([r[4] if r[4] is not None else r[1] for r in rows]) if any(differs) else None
    truths = [r[3] for r in rows] if any(r[3] is not None for r in rows) else None
    return Batch(label, np.stack([r[1] for r in rows]), [r[0] for r in rows], [r[2] for r in rows], truths,
                 trained, differs if any(differs) else None)


def decoding_report(decode: str, batches: list[Batch], eager: list[np.ndarray],
                    served: list[np.ndarray | None], num_classes: int) -> dict:
    """{"decoding": what each side read with, how many images differ, and how far decoding alone
    moves the reference's masks}; {} for random inputs."""
    if not batches or batches[0].geometries is None:
        return {}
    out = {"reference": TRAINED, "served": SERVED[decode], "inputs": sum(len(b.names) for b in batches),
           "decoded_differently": sum(sum(b.differs or []) for b in batches)}
    if out["decoded_differently"]:
        alone = compare(eager, [s if s is not None else e for s, e in zip(served, eager)], batches, num_classes)
        out["reference_agreement"] = {k: alone["summary"][k] for k in ("mask_iou", "pixel_agreement")}
    return {"decoding": out}


def describe(d: dict) -> str:
    """One line: what each side of the comparison read its images with."""
    moved, head = d.get("reference_agreement"), f"reference: {d['reference']}; served: {d['served']}; "
    if not d["decoded_differently"]:
        return head + f"both sides read all {d['inputs']} image(s) alike"
    return (head + f"{d['decoded_differently']} of {d['inputs']} image(s) read differently by the two sides, counted "
            f"toward every gate (decoding alone: the reference's masks agree {moved['mask_iou']:.4f})")


def choose_decode(manifest: Manifest, run, paths: list[Path], gate: float, log, full: bool = False) -> None:
    """Set ``manifest.decode`` (and ``decode_check``): "reduced" only where, on the held-out ``paths``
    that reduced-scale decoding changes, the reference ``run``'s masks on them pass the fp32 ``gate``
    against its masks on fully decoded ones; "full" otherwise, or with ``full`` (--full-decode). Said
    in one line."""
    manifest.decode, check = "full", {"date": dt.date.today().isoformat(), "gate": gate, "images": len(paths)}
    if full:
        manifest.decode_check = {**check, "reason": "--full-decode"}
        return log("JPEGs are decoded in full (--full-decode)")
    if not manifest.input_size or not paths:
        why = "no held-out images to measure reduced-scale decoding on (--val-images)" if manifest.input_size \
            else "the model runs at native resolution"
        manifest.decode_check = {**check, "reason": why}
        return log(f"JPEGs are decoded in full: {why}")
    rows = []  # only the photos it changes: a set of mostly small photos must not hide what it does to large ones
    for p in progress(paths, desc="decoding check", unit="img"):
        try:
            x, geo, trained = read_pair(p, manifest, decode="reduced")
        except ImageError as exc:
            raise SegrtError(f"held-out image unusable: {exc}") from None
        rows += [(p.name, x, geo, None, trained)] if trained is not None else []
    if not rows:
        manifest.decode_check = {**check, "decoded_differently": 0,
                                 "reason": "no held-out photo is a JPEG twice the working size"}
        return log(f"JPEGs are decoded in full: none of the {len(paths)} photos is a JPEG twice the working "
                   "size, so reduced-scale decoding could not be measured")
    from segrt.verify.reference import eager_logits

    n = manifest.source.get("batch") or 4
    batches = [make_batch(f"reduced {i}", rows[i:i + n]) for i in range(0, len(rows), n)]
    summary = compare(eager_logits(run, batches), eager_logits(run, batches, served=True), batches,
                      manifest.num_classes)["summary"]
    problems = agreement_problems(summary, gate, manifest.classes)
    manifest.decode = "full" if problems else "reduced"
    manifest.decode_check = {**check, "decoded_differently": len(rows), "mask_iou": summary["mask_iou"],
                             "pixel_agreement": summary["pixel_agreement"], "passed": not problems}
    agree = f"on the {len(rows)} of {len(paths)} photos it changes, masks agree {summary['mask_iou']:.4f} with full " \
            f"decoding (gate {gate})"
    log(f"JPEGs are decoded in full: reduced-scale decoding fails the gate ({'; '.join(problems)}; {agree})"
        if problems else f"JPEGs twice the working size are decoded at reduced scale: {agree}; --full-decode turns "
        "it off")


def measure_decode(folder: str | os.PathLike, images: str | os.PathLike, log=print) -> Manifest:
    """`segrt verify --decode-images`: choose_decode for an export made before it was measured, on
    held-out ``images`` (training images left out), with the export's reference and its fp32 gate; saved."""
    from segrt.verify.thresholds import FP32_MASK_IOU

    from segrt.fsutil import check_writable
    from segrt.imaging.files import list_images
    from segrt.verify.reference import reference_runner

    folder = Path(folder)
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    check_writable(folder, "--decode-images records the choice in its manifest")
    train = set(manifest.split.get("train", []))
    if not train:
        log(f"{folder} records no training split: every image given is measured")
    paths = [p for p in (list_images(images) if Path(images).is_dir() else [Path(images)]) if p.stem not in train]
    run, name = reference_runner(folder, manifest)
    log(f"reference: {name}")
    record = manifest.parity.get(manifest.artifact("onnx", "fp32").name)
    choose_decode(manifest, run, paths, record.gates.mask_iou_min if record else FP32_MASK_IOU, log)
    manifest.save(folder)
    return manifest
