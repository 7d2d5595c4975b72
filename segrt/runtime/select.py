"""`--provider auto` on a CPU: the fastest variant that passed its gate and can run here.

Speeds come from ``manifest.speed``: every gated CPU variant timed together in one process by
``bench.speeds.record_speeds`` (export and quantize run it), with the CPU it ran on. On another CPU, the
default order applies: INT8, then bf16 where the CPU has AMX, then fp32; OpenVINO before ONNX
Runtime at equal precision (faster on x86 in every measurement so far, PERF-NOTES). An ungated
variant is never chosen.
"""

from __future__ import annotations

from pathlib import Path

from segrt.cpuinfo import cpu_info, describe_cpu, module_available, same_cpu
from segrt.errors import SegrtError
from segrt.manifest import Artifact, Manifest
from segrt.records import SpeedRecord

__all__ = ["candidates", "choose_cpu_variant"]

_SERVING_KINDS = ("onnx", "openvino")  # what auto chooses from: no torch needed


def _unusable(art: Artifact, manifest: Manifest, folder: Path | None) -> str | None:
    missing = manifest.missing(folder, art) if folder else []
    if missing:
        return f"not in this copy: {', '.join(missing)} missing"
    if not manifest.passed(art.name):
        return "no passed gate recorded"
    if art.precision == "fp16":
        return "fp16 is for GPUs: no faster than fp32 on a CPU"
    if art.kind == "openvino" and not module_available("openvino"):
        return "OpenVINO is not installed: pip install 'segrt[openvino]'"
    if art.precision == "bf16" and not {"avx512_bf16", "amx_bf16"} & set(cpu_info()["isa"]):
        return "this CPU has no bf16"
    return None


def candidates(manifest: Manifest, precision: str | None = None, folder: Path | None = None,
               kinds: tuple[str, ...] = _SERVING_KINDS) -> tuple[list[Artifact], list[str]]:
    """-> (gated CPU variants that can run here, 'name (why not)' for the others). With ``folder``,
    a variant whose files are not there (e.g. the packaged default model ships a subset) is skipped."""
    ok, skipped = [], []
    for art in manifest.artifacts:
        if art.kind not in kinds or (precision and art.precision != precision):
            continue
        reason = _unusable(art, manifest, folder)
        if reason:
            skipped.append(f"{art.name} ({reason})")
        else:
            ok.append(art)
    return ok, skipped


def _default_rank(art: Artifact) -> tuple[int, int]:
    amx = "amx_bf16" in cpu_info()["isa"]
    order = {"int8": 0, "bf16": 1 if amx else 3, "fp32": 2}
    return order.get(art.precision, 4), 0 if art.kind == "openvino" else 1


def choose_cpu_variant(manifest: Manifest, precision: str | None = None, folder: Path | None = None,
                       kinds: tuple[str, ...] = _SERVING_KINDS, label: str = "auto") -> tuple[Artifact, str]:
    """-> (the artifact, one line saying what was picked and why)."""
    ok, skipped = candidates(manifest, precision, folder, kinds)
    if not ok:
        raise SegrtError(f"export {manifest.name!r} has no gated {precision + ' ' if precision else ''}variant that "
                         f"can run on this CPU: {'; '.join(skipped) or 'none listed'}")
    speed = manifest.speed or SpeedRecord(ms_per_image={})
    ms = speed.ms_per_image
    if same_cpu(speed.cpu) and all(a.name in ms for a in ok):
        ranked = sorted(ok, key=lambda a: ms[a.name])
        shape = "x".join(map(str, speed.input[2:])) + (f" ({speed.size_from})" if speed.size_from else "")
        others = ", ".join(f"{a.name} {ms[a.name]:.1f}" for a in ranked[1:])
        why = (f"the fastest gated variant measured on this CPU, {ms[ranked[0].name]:.1f} ms/image at {shape}"
               + (f" (others: {others})" if others else ""))
    else:
        ranked = sorted(ok, key=_default_rank)
        where = f"measured on {describe_cpu(speed.cpu)}" if speed.cpu else "none recorded"
        why = f"no speeds measured on this CPU ({where}): default order int8 > fp32, OpenVINO first"
    best, gate = ranked[0], manifest.parity[ranked[0].name]
    note = (f"provider {label} -> {best.name} ({best.kind} {best.precision}; gate: mask IoU {gate.mask_iou:.4f} >= "
            f"{gate.gates.mask_iou_min}): {why}")
    return best, note + (f"; not considered: {', '.join(skipped)}" if skipped else "")
