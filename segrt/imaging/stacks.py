"""Microscopy stacks (multi-page TIFF, OME-TIFF): predicted page by page, one page in memory at a
time, and written as one multi-page label TIFF per input (page i = the mask of page i), plus
per-page colour masks and overlays only when asked (--per-page). Writing needs tifffile
(`pip install 'segrt[tiff]'`); reading is Pillow's."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np

from segrt.errors import SegrtError
from segrt.fsutil import temp_beside

__all__ = ["SUFFIX", "require_tifffile", "page_paths", "stack_paths", "StackWriter"]

SUFFIX = ".tif"  # the label stack: NAME.tif beside NAME.png-style outputs of single images


def require_tifffile() -> None:
    from segrt.cpuinfo import module_available

    if not module_available("tifffile"):
        raise SegrtError("multi-page TIFF inputs are written as label stacks with tifffile: pip install 'segrt[tiff]'")


def page_paths(base: Path, page: int, opts) -> dict[str, Path]:
    """A page's own colour mask and overlay (with --per-page): NAME.p0003.color.png, ..."""
    stem = f"{base.name}.p{page:04d}"
    paths = {}
    if opts.color:
        paths["color"] = base.with_name(stem + ".color.png")
    if opts.overlay:
        paths["overlay"] = base.with_name(stem + ".overlay.jpg")
    return paths


def stack_paths(base: Path, pages: int, opts) -> dict[str, Path]:
    """Every output of a stack: NAME.tif, and each page's colour mask / overlay with --per-page."""
    paths = {"mask": base.with_name(base.name + SUFFIX)}
    for page in range(pages) if opts.per_page else ():
        paths.update({f"{k}{page}": v for k, v in page_paths(base, page, opts).items()})
    return paths


class StackWriter:
    """One input's label TIFF, page by page in page order (writer threads may finish out of order;
    pages that arrive early wait, as small uint8 masks), into a temp file renamed at the last page.
    After a failure the stack is dropped: its temp file goes and later pages are ignored."""

    def __init__(self, path: Path, pages: int):
        self.path, self.pages = path, pages
        self.lock = threading.Lock()
        self.waiting: dict[int, np.ndarray] = {}
        self.next, self.failed, self.tiff, self.tmp = 0, False, None, None

    def add(self, page: int, mask: np.ndarray) -> bool:
        """Queue one page's HW uint8 mask; True when it completed the stack (the file is in place)."""
        with self.lock:
            if self.failed:
                return False
            try:
                self.waiting[page] = mask
                while self.next in self.waiting:
                    self._append(self.waiting.pop(self.next))
                    self.next += 1
                if self.next < self.pages:
                    return False
                self.tiff.close()
                os.replace(self.tmp, self.path)
                return True
            except BaseException:
                self.abort()
                raise

    def _append(self, mask: np.ndarray) -> None:
        if self.tiff is None:
            import tifffile

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_beside(self.path)
            self.tiff = tifffile.TiffWriter(self.tmp)
        self.tiff.write(mask, compression="zlib", photometric="minisblack")

    def abort(self) -> None:
        self.failed, self.waiting = True, {}
        if self.tiff is not None:
            with contextlib.suppress(Exception):
                self.tiff.close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
