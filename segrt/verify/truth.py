"""Ground-truth masks as an export's class ids: raw mask values through the export's table, RGB
masks by its class colours."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from segrt.errors import SegrtError
from segrt.imaging.decode import load_mask
from segrt.manifest import Manifest

__all__ = ["truth_lut", "Unmapped", "read_truth"]

VOID = 255  # the ignore label: never a class, never reported
_SAID: set[str] = set()


def _mapping(manifest: Manifest, mask_map: dict[int, int] | None) -> dict[int, int]:
    """Raw mask value -> class id: the export's table (identity without one), then ``mask_map``."""
    table = manifest.mask_values or {str(i): i for i in range(manifest.num_classes)}
    out = {int(raw): int(cls) for raw, cls in table.items()}
    for raw, cls in (mask_map or {}).items():
        if cls != VOID and not 0 <= cls < manifest.num_classes:
            raise SegrtError(f"--mask-map: class {cls} (for value {raw}) does not exist; the export has "
                             f"{manifest.num_classes} classes (0..{manifest.num_classes - 1})")
        out[int(raw)] = int(cls)
    return out


def truth_lut(manifest: Manifest, mask_map: dict[int, int] | None = None) -> np.ndarray:
    """A 256-entry table from raw mask values to class ids; unmapped values become VOID (ignored)."""
    lut = np.full(256, VOID, np.uint8)
    for raw, cls in _mapping(manifest, mask_map).items():
        lut[raw] = cls
    return lut


class Unmapped:
    """Ground-truth values that are no class of the export (and not VOID): counted over a set of
    masks, so that scoring against masks of another labelling is said, not silently ignored."""

    def __init__(self, manifest: Manifest, mask_map: dict[int, int] | None = None):
        self.known = np.zeros(256, bool)
        self.known[[*_mapping(manifest, mask_map), VOID]] = True
        self.values, self.files, self.masks, self.pixels, self.total = set(), 0, 0, 0, 0

    def add(self, raw: np.ndarray) -> None:
        odd = ~self.known[raw]
        self.masks, self.total = self.masks + 1, self.total + raw.size
        if odd.any():
            self.files, self.pixels = self.files + 1, self.pixels + int(odd.sum())
            self.values |= set(np.unique(raw[odd]).tolist())

    def say(self, where) -> None:
        """The note on stderr, once a process: a command that reads the same masks twice (the gate,
        then its report) says it once."""
        note = self.note(where)
        if note and note not in _SAID:
            _SAID.add(note)
            print(note, file=sys.stderr)

    def note(self, where) -> str | None:
        """One line when any mask held such values, else None."""
        if not self.files:
            return None
        vals = sorted(self.values)
        return (f"{where}: mask value{'s' if len(vals) > 1 else ''} {', '.join(map(str, vals))} "
                f"{'are' if len(vals) > 1 else 'is'} no class id of this export (in "
                f"{self.files} of {self.masks} masks, {self.pixels / self.total:.1%} of their pixels), so mIoU vs "
                "ground truth leaves them out; --mask-map VALUE:CLASS,... maps them (e.g. 1:0,2:1,3:2)")


def read_truth(path: Path, manifest: Manifest, lut: np.ndarray, unmapped: Unmapped | None = None) -> np.ndarray:
    """A ground-truth mask as class ids: by the export's class colours for an RGB mask (colours not
    among them, such as void, are ignored), else through the mask-value table; an RGB mask for an export
    without colours is refused rather than read as grey levels. ``unmapped`` counts raw values the
    table does not know."""
    from segrt.imaging.labels import LabelTable, colour_mask, is_colour_mask, palette_of

    if palette_of(path) is None and is_colour_mask(path):
        if not manifest.colors:
            raise SegrtError(f"{path}: an RGB mask, and the export records no class colours (labels.colors, from "
                             "training with --label-colors): give masks of class ids")
        return colour_mask(path, LabelTable(manifest.classes, [tuple(c) for c in manifest.colors]), True)
    raw = load_mask(path)
    if unmapped is not None:
        unmapped.add(raw)
    return lut[raw]
