"""Image/mask folders as datasets ship them: under a root, every images folder with a sibling masks
folder (``masks``, ``labels``, ``annot``, ``*annot``, ``*_labels``), at any depth, paired by relative
path (so same-named files in different tiles stay apart); a ``train``/``val``/``valid``/``test``
component of the path, above the folders or below them (``images/train``), is the split. No torch."""

from __future__ import annotations

import os
from pathlib import Path

from segrt.errors import SegrtError

__all__ = ["SPLITS", "discover", "split_of"]

_IMAGE_NAMES = ("images", "image", "imgs", "img", "img_dir", "jpegimages", "leftimg8bit")
_MASK_NAMES = ("masks", "mask", "labels", "label", "annot", "annotations", "gt", "groundtruth", "ann_dir",
               "segmentationclass", "gtfine")
SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
          "testing": "test"}


def _mask_sibling(folder: Path) -> Path | None:
    """The masks folder beside an images folder: masks/labels/annot..., or NAME + annot/_labels/_masks
    (SegNet's CamVid: train/ with trainannot/)."""
    siblings = {p.name.lower(): p for p in sorted(folder.parent.iterdir()) if p.is_dir() and p != folder}
    for name in (*_MASK_NAMES, *(folder.name.lower() + s for s in ("annot", "_annot", "_labels", "_masks", "_gt"))):
        if name in siblings:
            return siblings[name]
    return None


def split_of(rel: Path) -> str | None:
    """The split a relative folder path names (its last train/val/test component), or None."""
    found = [SPLITS[p.lower()] for p in rel.parts if p.lower() in SPLITS]
    return found[-1] if found else None


def discover(root: str | os.PathLike) -> list[tuple[Path, Path, str | None]]:
    """-> [(images folder, masks folder, split or None)] under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise SegrtError(f"--data {root}: no such folder")
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if folder == root:
            continue
        name = folder.name.lower()
        is_images = name in _IMAGE_NAMES or (name in SPLITS and _mask_sibling(folder) is not None)
        masks = _mask_sibling(folder) if is_images else None
        if masks is not None:
            found.append((folder, masks, split_of(folder.relative_to(root))))
            dirnames[:] = []  # its subfolders are its images, paired by relative path
    if not found:
        raise SegrtError(f"--data {root}: no images folder with a masks/labels/annot folder beside it")
    return found
