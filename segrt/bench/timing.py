"""Timing a call and the process's peak memory (no torch; quantize and bench share it)."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

__all__ = ["timed", "reset_peak_rss", "peak_rss_mb"]


def timed(fn, x, runs: int, warmup: int = 0) -> list[float]:
    """Seconds per call of ``fn(x)``, ``runs`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn(x)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def reset_peak_rss() -> bool:
    """Linux: reset VmHWM so the next reading is this row's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
