"""What machine this is: the CPU model and the ISA flags that decide which precision runs fast,
and the memory available now (Linux /proc; elsewhere the platform's processor string, no flags,
memory unknown), the usable cores and which optional modules are installed. No torch, no OpenVINO."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["cpu_info", "same_cpu", "describe_cpu", "available_memory", "usable_cores", "module_available"]

# the flags that matter for INT8 / bf16 / fp16 speed (names as Linux prints them)
_ISA_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """-> {"model": str, "isa": [flags from ISA_FLAGS], "cores": int}."""
    import os

    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(), "isa": [f for f in _ISA_FLAGS if f in flags], "cores": os.cpu_count() or 1}


def same_cpu(record: dict | None) -> bool:
    """Was ``record`` (a cpu_info() dict) measured on a CPU like this one (model and ISA flags)?"""
    here = cpu_info()
    return bool(record) and record.get("model") == here["model"] and list(record.get("isa", [])) == here["isa"]


def describe_cpu(info: dict | None = None) -> str:
    info = info or cpu_info()
    return f"{info['model']} [{' '.join(info['isa']) or 'no AVX-512/AMX'}]"


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def module_available(name: str) -> bool:
    """Is ``name`` installed (and not blocked)? Checked without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ValueError, ImportError):  # e.g. sys.modules["torch"] = None
        return False

