"""Finding image files: a folder walked recursively, sorted, hidden files and folders left out (no torch)."""

from __future__ import annotations

import os
from pathlib import Path

from segrt.errors import ImageError
from segrt.imaging.decode import IMAGE_EXTENSIONS

__all__ = ["list_images"]


def list_images(root: str | os.PathLike, problems: list | None = None) -> list[Path]:
    """Image files under a folder, recursively, sorted; hidden ones skipped; linked folders followed (each
    real folder once). An unreadable folder is appended to ``problems`` as (path, reason), else ImageError."""
    root = Path(root)
    found, seen = [], set()

    def unreadable(exc: OSError) -> None:
        reason = f"{exc.filename}: cannot read this folder ({exc.strerror or exc}); its images were not read"
        if problems is None:
            raise ImageError(reason)
        problems.append((Path(exc.filename), reason))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        seen.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in seen)
        found += [Path(dirpath) / f for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)
