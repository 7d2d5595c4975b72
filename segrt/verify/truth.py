"""Ground-truth masks as an export's class ids: raw mask values through the export's table, RGB
masks by its class colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segrt.errors import SegrtError
from segrt.imaging.decode import load_mask
from segrt.manifest import Manifest

__all__ = ["truth_lut", "read_truth"]


def truth_lut(manifest: Manifest) -> np.ndarray:
    lut = np.full(256, 255, np.uint8)  # unmapped values are ignored
    mapping = manifest.mask_values or {str(i): i for i in range(manifest.num_classes)}
    for raw, cls in mapping.items():
        lut[int(raw)] = cls
    return lut


def read_truth(path: Path, manifest: Manifest, lut: np.ndarray) -> np.ndarray:
    """A ground-truth mask as class ids: by the export's class colours for an RGB mask (colours not
    among them, such as void, are ignored), else through the mask-value table; an RGB mask for an export
    without colours is refused rather than read as grey levels."""
    from segrt.imaging.labels import LabelTable, colour_mask, is_colour_mask, palette_of

    if palette_of(path) is None and is_colour_mask(path):
        if not manifest.colors:
            raise SegrtError(f"{path}: an RGB mask, and the export records no class colours (labels.colors, from "
                             "training with --label-colors): give masks of class ids")
        return colour_mask(path, LabelTable(manifest.classes, [tuple(c) for c in manifest.colors]), True)
    return lut[load_mask(path)]
