"""What machine this is: the CPU model and the ISA flags that decide which precision runs fast,
and the memory available now (Linux /proc; elsewhere the platform's processor string, no flags,
memory unknown), the usable cores and which optional modules are installed. No torch, no OpenVINO.

``cpu_info()`` is the one capability probe: everything that asks whether this CPU has bf16, VNNI or
AMX asks it. ``SEGRT_SIMULATE_ISA=avx2`` (a comma-separated list of flags to keep, e.g.
``avx2,avx512f``) makes it report a CPU with only those of its flags, so that any machine can run
as an AVX2-only CPU would (tests, CI); it also caps OpenVINO's oneDNN kernels at that ISA
(ONEDNN_MAX_CPU_ISA, see cap_kernels), so OpenVINO computes as such a CPU does. ONNX Runtime's
kernels read the CPU themselves and cannot be capped."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["SIMULATE_ENV", "cpu_info", "cap_kernels", "has_bf16", "isa_class", "same_cpu", "describe_cpu", "available_memory",
           "usable_cores", "module_available"]

SIMULATE_ENV = "SEGRT_SIMULATE_ISA"

# the flags that matter for INT8 / bf16 / fp16 speed (names as Linux prints them)
_ISA_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")


def cpu_info() -> dict:
    """-> {"model": str, "isa": [flags from _ISA_FLAGS], "cores": int}; under $SEGRT_SIMULATE_ISA,
    only the flags it keeps and the model marked "(simulated ...)"."""
    model, flags = _read_cpu()
    isa = [f for f in _ISA_FLAGS if f in flags]
    keep = os.environ.get(SIMULATE_ENV)
    if keep:
        wanted = {f.strip() for f in keep.replace(" ", ",").split(",") if f.strip()}
        isa = [f for f in isa if f in wanted]
        model = f"{model} (simulated {'+'.join(isa) or 'no SIMD flags'})"
    return {"model": model, "isa": isa, "cores": os.cpu_count() or 1}


@functools.lru_cache(maxsize=1)
def _read_cpu() -> tuple[str, frozenset]:
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
    return model or platform.processor() or platform.machine(), frozenset(flags)


_ONEDNN_ISA = (("amx", None), ("avx512-bf16", "AVX512_CORE_BF16"), ("avx512-vnni", "AVX512_CORE_VNNI"),
               ("avx-vnni", "AVX2_VNNI"), ("avx512", "AVX512_CORE"), ("avx2", "AVX2"), ("baseline", "SSE41"))


def cap_kernels() -> None:
    """Under $SEGRT_SIMULATE_ISA: cap oneDNN (OpenVINO's CPU kernels) at the simulated ISA class,
    before the first model is compiled; a cap the user set is kept."""
    if os.environ.get(SIMULATE_ENV):
        cap = dict(_ONEDNN_ISA).get(isa_class())
        if cap:
            os.environ.setdefault("ONEDNN_MAX_CPU_ISA", cap)


def has_bf16(info: dict | None = None) -> bool:
    """Does this CPU compute in bf16 natively (AVX-512 BF16 or AMX)?"""
    return bool({"avx512_bf16", "amx_bf16"} & set((info or cpu_info())["isa"]))


def isa_class(info: dict | None = None) -> str:
    """The ISA level that decides which kernels a runtime picks, and so its INT8/bf16 numerics:
    amx, avx512-bf16, avx512-vnni, avx-vnni, avx512, avx2 or baseline."""
    isa = set((info or cpu_info())["isa"])
    for name, flags in (("amx", {"amx_int8", "amx_bf16"}), ("avx512-bf16", {"avx512_bf16"}),
                        ("avx512-vnni", {"avx512_vnni"}), ("avx-vnni", {"avx_vnni"}), ("avx512", {"avx512f"}),
                        ("avx2", {"avx2"})):
        if isa & flags:
            return name
    return "baseline"


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

