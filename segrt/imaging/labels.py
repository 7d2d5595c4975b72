"""Colour-coded labels: a dataset's table of class colours, and masks read by colour (RGB PNGs, and
palette PNGs by their palette's colours). numpy + Pillow.

Tables come as ``R G B Name`` lines (CamVid's label_colors.txt), ``#RRGGBB Name`` lines, or a CSV
with a header naming ``name, r, g, b`` (Semantic-Segmentation-Suite's class_dict.csv); which one is
read from the file. A void colour (``--void``; by default a class named void/unlabelled/ignore)
becomes the ignore label 255: out of the loss, the metrics and the gates.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segrt.errors import SegrtError

__all__ = ["IGNORE", "VOID_NAMES", "LabelTable", "read_label_table", "is_colour_mask", "palette_of", "colour_mask"]

IGNORE = 255
VOID_NAMES = ("void", "unlabelled", "unlabeled", "ignore", "ignored")
_HEX = re.compile(r"^#([0-9a-fA-F]{6})\s+(.+)$")
_RGB = re.compile(r"^(\d{1,3})[\s,]+(\d{1,3})[\s,]+(\d{1,3})\s+(.+)$")


@dataclass
class LabelTable:
    """Class names and their RGB colours, and which of them are void (read as the ignore label)."""

    names: list[str]
    colours: list[tuple[int, int, int]]
    void: set[int] = field(default_factory=set)  # indices into names/colours
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what reading it had to say (a colour listed twice)

    @property
    def classes(self) -> list[str]:
        """The classes a model learns: every name but the void ones, in table order."""
        return [n for i, n in enumerate(self.names) if i not in self.void]

    @property
    def class_colours(self) -> list[list[int]]:
        return [list(c) for i, c in enumerate(self.colours) if i not in self.void]

    def lut(self) -> dict[int, int]:
        """Packed RGB (r << 16 | g << 8 | b) -> class id (IGNORE for void)."""
        ids, out = iter(range(len(self.classes))), {}
        for i, (r, g, b) in enumerate(self.colours):
            cls = IGNORE if i in self.void else next(ids)
            out.setdefault((r << 16) | (g << 8) | b, cls)  # a colour listed twice: its first class
        return out

    def choose_void(self, given: list[str], log) -> None:
        """``--void COLOR|NAME`` (repeatable); none given: a class named like void, said in one line."""
        for item in given:
            colour = _parse_colour(item)
            hits = [i for i, (n, c) in enumerate(zip(self.names, self.colours))
                    if (colour is not None and c == colour) or n.lower() == item.lower()]
            if not hits and colour is None:
                raise SegrtError(f"--void {item}: no such class name in {self.source} (or give a colour: R,G,B or "
                                 "#RRGGBB)")
            if not hits:  # a void colour the table does not list (it is no class)
                self.names.append(f"void {colour}")
                self.colours.append(colour)
                hits = [len(self.names) - 1]
                log(f"--void {item}: {colour} is not in {self.source}; pixels of it are void")
            self.void.update(hits)
        if not given:
            self.void = {i for i, n in enumerate(self.names) if n.lower() in VOID_NAMES}
            for i in sorted(self.void):
                log(f"{self.source}: class {self.names[i]!r} {self.colours[i]} is void (the ignore label; --void to "
                    "choose another)")


def _parse_colour(text: str) -> tuple[int, int, int] | None:
    text = text.strip()
    if re.fullmatch(r"#[0-9a-fA-F]{6}", text):
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
    parts = re.split(r"[\s,]+", text)
    if len(parts) == 3 and all(p.isdigit() and int(p) < 256 for p in parts):
        return tuple(int(p) for p in parts)
    return None


def read_label_table(path: str | Path) -> LabelTable:
    """``R G B Name`` lines, ``#RRGGBB Name`` lines, or a CSV with a name,r,g,b header."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SegrtError(f"--label-colors {path}: unreadable ({exc})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("//")]
    header = [h.strip().lower() for h in next(csv.reader(io.StringIO(lines[0])))] if lines else []
    if {"r", "g", "b"} <= set(header):
        name = next((h for h in header if h in ("name", "class", "label", "class_name")), header[0])
        rows = list(csv.DictReader(io.StringIO("\n".join(lines)), fieldnames=header))[1:]
        entries = [(r[name].strip(), (int(r["r"]), int(r["g"]), int(r["b"]))) for r in rows]
    else:
        entries = []
        for ln in lines:
            hit = _HEX.match(ln) or _RGB.match(ln)
            if not hit:
                raise SegrtError(f"--label-colors {path}: cannot read {ln[:60]!r} (expected 'R G B Name', "
                                 "'#RRGGBB Name' or a CSV with a name,r,g,b header)")
            if hit.re is _HEX:
                entries.append((hit.group(2).strip(), tuple(int(hit.group(1)[i:i + 2], 16) for i in (0, 2, 4))))
            else:
                entries.append((hit.group(4).strip(), tuple(int(hit.group(i)) for i in (1, 2, 3))))
    if not entries or any(max(c) > 255 for _, c in entries):
        raise SegrtError(f"--label-colors {path}: no classes with colours 0..255 found")
    colours, first, notes = [c for _, c in entries], {}, []
    for name, colour in entries:
        if colour in first:
            notes.append(f"--label-colors {path}: {colour} is listed for {first[colour]!r} and {name!r}: pixels of "
                         f"it are read as {first[colour]!r} ({name!r} never appears)")
        first.setdefault(colour, name)
    return LabelTable([n for n, _ in entries], colours, source=str(path), notes=notes)


def _open(path: str | Path) -> Image.Image:
    """A label image, refused unless it is a regular file (a FIFO or a device is never opened)."""
    if not Path(path).is_file():
        raise SegrtError(f"{path}: not a regular file (or missing); only regular files are read as masks")
    return Image.open(path)


def is_colour_mask(path: str | Path) -> bool:
    """Is this label image in colour (RGB/RGBA, or a palette whose colours are not grey levels)?"""
    with _open(path) as img:
        if img.mode in ("RGB", "RGBA"):
            return True
        if img.mode == "P":
            pal = np.asarray(img.getpalette() or [], np.uint8).reshape(-1, 3)
            return bool(len(pal)) and not (pal == np.arange(len(pal))[:, None]).all()
    return False


def palette_of(path: str | Path) -> bytes | None:
    """A palette PNG's palette (its RGB triplets), None for any other label image."""
    with _open(path) as img:
        return bytes(img.getpalette() or []) if img.mode == "P" else None


def colour_mask(path: str | Path, table: LabelTable, unknown_as_void: bool = False,
                counted: dict | None = None) -> np.ndarray:
    """An RGB or palette label image -> HW uint8 class ids by the table (IGNORE for void). A colour
    not in the table is an error naming the file, the colour and its share of the pixels, unless
    ``unknown_as_void`` (then counted into ``counted``: colour -> pixels)."""
    with _open(path) as img:
        rgb = np.asarray(img.convert("RGB"), np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    lut = table.lut()
    ids = np.array([lut.get(int(v), -1) for v in values], np.int32)
    if (ids < 0).any():
        bad = values[ids < 0]
        share = {int(v): float((packed == v).mean()) for v in bad}
        if not unknown_as_void:
            v = max(share, key=share.get)
            raise SegrtError(f"{path}: colour {(v >> 16, (v >> 8) & 255, v & 255)} ({share[v]:.2%} of its pixels) is "
                             f"not in {table.source}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                             + "; add it to the table, or pass --unknown-as-void")
        if counted is not None:
            for v in bad:
                key = (int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255)
                counted[key] = counted.get(key, 0) + int((packed == v).sum())
        ids[ids < 0] = IGNORE
    return ids[inverse].reshape(packed.shape).astype(np.uint8)
