"""The images a gate judges on: calibration and held-out gate sets (never a training image in a
gate), read exactly as predict reads them, in batches."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from segrt.errors import ImageError, SegrtError
from segrt.imaging.decode import read_model_input
from segrt.imaging.files import list_images
from segrt.manifest import Manifest
from segrt.options import QuantizeOptions
from segrt.progress import progress
from segrt.verify.compare import Batch

__all__ = ["split_images", "split_paths", "held_out_paths", "validation_batches", "gate_batches"]


def _read_set(paths: list[Path], manifest: Manifest, what: str) -> list[tuple]:
    """[(CHW float32 input, Geometry)] read like predict; an unreadable file is a one-line error."""
    read = []
    for p in progress(paths, desc=f"reading {what} images", unit="img"):
        try:
            read.append(read_model_input(p, manifest))
        except ImageError as exc:
            raise SegrtError(f"{what} image unusable: {exc}") from None
    return read


def _image_batches(paths: list[Path], manifest: Manifest, batch_size: int) -> list[Batch]:
    """Held-out images as predict serves them (and as training read them, where that differs:
    verify.decoding), in batches of ``batch_size`` (same-size inputs only)."""
    from segrt.verify.decoding import make_batch, read_pair

    rows = []
    for p in progress(paths, desc="reading validation images", unit="img"):
        try:
            x, geo, trained = read_pair(p, manifest)
        except ImageError as exc:
            raise SegrtError(f"validation image unusable: {exc}") from None
        rows.append((p.name, x, geo, None, trained))
    return [make_batch(f"val {i}", rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]


def split_images(opts: QuantizeOptions, manifest: Manifest, log) -> tuple[list[np.ndarray], list[Batch]]:
    """-> (calibration inputs, held-out validation batches); validation never overlaps calibration."""
    calib_paths, val_paths = split_paths(opts, manifest.split.get("train"))
    folder = opts.calib_images
    if opts.calib_count:
        calib_paths = calib_paths[: opts.calib_count]
    if not calib_paths or not val_paths:
        raise SegrtError(f"{folder}: no images left for calibration or validation")
    if len(calib_paths) < _MIN_CALIB_WARN:
        log(f"warning: only {len(calib_paths)} calibration images; ~{_MIN_CALIB_WARN}+ give more reliable ranges")
    calib = [x for x, _ in _read_set(calib_paths, manifest, "calibration")]
    log(f"calibration: {len(calib)} images, held-out validation: {len(val_paths)} images")
    return calib, validation_batches(opts, manifest, val_paths)


def split_paths(opts: QuantizeOptions, train: list[str] | None = None) -> tuple[list[Path], list[Path]]:
    """-> (calibration paths, held-out paths): --val-images, else a seeded share of --calib-images.
    ``train``: the model's training images (stems, from its split): calibration may use them, the
    held-out gate images never do."""
    folder, train = opts.calib_images, set(train or ())
    if folder is None:
        raise SegrtError("INT8 needs calibration images: pass --calib-images DIR")
    if not Path(folder).is_dir():
        raise SegrtError(f"{folder}: calibration folder not found")
    paths = list_images(folder)
    if not paths:
        raise SegrtError(f"{folder}: no images found for calibration")
    if opts.val_images:
        val_paths = list_images(opts.val_images)
        seen = [v.name for v in val_paths if v.stem in train]
        if seen:
            raise SegrtError(f"--val-images {opts.val_images}: {len(seen)} of them trained this model (its split), "
                             f"e.g. {', '.join(seen[:3])}; the gate needs held-out images")
        return [p for p in paths if p.stem not in {v.stem for v in val_paths}], val_paths
    held = [p for p in paths if p.stem not in train]
    if not held:
        raise SegrtError(f"{folder}: all {len(paths)} calibration images trained this model (its split); pass "
                         "--val-images with held-out images for the gate")
    if len(held) < len(paths):  # training images calibrate, the others are the gate's
        return [p for p in paths if p.stem in train], held
    if len(paths) < 2:
        raise SegrtError(f"{folder}: need at least 2 images (calibration + held-out), or pass --val-images")
    shuffled = sorted(paths)
    random.Random(opts.seed).shuffle(shuffled)
    n_val = max(1, round(len(shuffled) * opts.val_fraction))
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def held_out_paths(opts: QuantizeOptions, manifest: Manifest) -> list[Path]:
    """The held-out images the gates judge on: the held-out share of --calib-images (or --val-images
    with it), else --val-images less the training images; [] without either."""
    if opts.calib_images:
        return split_paths(opts, manifest.split.get("train"))[1]
    train = set(manifest.split.get("train", []))
    return [p for p in list_images(opts.val_images) if p.stem not in train] if opts.val_images else []


def validation_batches(opts: QuantizeOptions, manifest: Manifest, paths: list[Path]) -> list[Batch]:
    """Held-out images in batches (of its one batch size for a model that takes only one)."""
    size = manifest.source.get("batch") or opts.batch_size
    if not opts.val_masks:
        return _image_batches(paths, manifest, size)
    from segrt.verify.parity import image_inputs
    from segrt.verify.truth import Unmapped

    unmapped = Unmapped(manifest)  # one line for all the masks, not one per image
    batches = [b for p in paths for b in image_inputs(manifest, p, opts.val_masks, size, unmapped=unmapped)]
    unmapped.say(opts.val_masks)
    return batches


def gate_batches(opts: QuantizeOptions, manifest: Manifest) -> list[Batch]:
    """Real images for a gate without calibration (fp16, bf16): --val-images, else --calib-images,
    else random inputs."""
    folder = opts.val_images or opts.calib_images
    if not folder:
        from segrt.verify.parity import random_inputs

        return random_inputs(manifest)
    train = set(manifest.split.get("train", []))
    paths = [p for p in list_images(folder) if p.stem not in train]  # held out only
    if not paths:
        raise SegrtError(f"{folder}: no images found" + (" that did not train the model (its split)" if train else ""))
    return validation_batches(opts, manifest, paths)


_MIN_CALIB_WARN = 100
