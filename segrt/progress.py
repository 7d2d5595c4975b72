"""Progress bars for long work: tqdm on a terminal (stderr), silent otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys

__all__ = ["progress"]


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True):
    """A tqdm bar over ``iterable`` (or a manual one of ``total`` steps), shown only on a TTY."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False,
                disable=not enabled or not sys.stderr.isatty())
