"""`--provider auto` on a CPU: the fastest variant that passed its gate and can run here.

Speeds come from ``manifest.speed``: every gated CPU variant timed together in one process by
``bench.speeds.record_speeds`` (export and quantize run it), with the CPU it ran on. On another CPU,
the candidates are timed here once (runtime.here, cached); with ``measure=False`` the default order
applies: INT8, then bf16 where the CPU has AMX, then fp32; OpenVINO before ONNX Runtime at equal
precision. An ungated variant is never chosen, nor one that fails its gate on this CPU's gate sample
when it was gated on another ISA class or runtime version (runtime.here).
"""

from __future__ import annotations

import time
from pathlib import Path

from segrt.cpuinfo import cpu_info, describe_cpu, has_bf16, module_available, same_cpu
from segrt.errors import SegrtError
from segrt.manifest import Artifact, Manifest
from segrt.records import SpeedRecord

__all__ = ["cannot_run_here", "candidates", "choose_cpu_variant"]

_SERVING_KINDS = ("onnx", "openvino")  # what auto chooses from: no torch needed


def cannot_run_here(art: Artifact) -> str | None:
    """Why this CPU or this install cannot run ``art`` (parity, bench, quantize and auto list it as
    not run here), or None."""
    if art.kind == "openvino" and not module_available("openvino"):
        return "OpenVINO is not installed: pip install 'segrt[openvino]'"
    if art.precision == "bf16" and not has_bf16():
        return f"this CPU has no bf16 ({describe_cpu()})"
    return None


def _unusable(art: Artifact, manifest: Manifest, folder: Path | None) -> str | None:
    missing = manifest.missing(folder, art) if folder else []
    if missing:
        return f"not in this copy: {', '.join(missing)} missing"
    if not manifest.passed(art.name):
        return "no passed gate recorded"
    if art.precision == "fp16":
        return "fp16 is for GPUs: no faster than fp32 on a CPU"
    return cannot_run_here(art)


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


def _checked_here(manifest: Manifest, ok: list[Artifact], folder: Path | None, log) -> tuple[list, list, list]:
    """-> (the candidates that hold their gate on this CPU, 'name (why not)' for those that do not,
    what was re-checked): each reduced-precision variant gated on another ISA class or runtime
    version is re-checked on the export's gate sample (runtime.here)."""
    from segrt.runtime.here import check_here

    kept, rejected, checked = [], [], []
    for art in ok:
        verdict = check_here(folder, manifest, art, log) if folder else None
        if verdict is None or verdict.passed:
            kept.append(art)
        else:
            rejected.append(f"{verdict.line()}: not used")
        if verdict is not None:
            checked.append(verdict)
    return kept, rejected, checked


def _ranked(manifest: Manifest, ok: list[Artifact], folder: Path | None, measure: bool, log) -> tuple[list, str]:
    """-> (the candidates, fastest first, and why in a few words): the export's speeds where they
    were measured on this CPU, else measured here (once, cached), else the default order."""
    speed = manifest.speed or SpeedRecord(ms_per_image={})
    ms, shape = speed.ms_per_image, "x".join(map(str, speed.input[2:])) + (f" ({speed.size_from})" if speed.size_from else "")
    where = "the export's speeds, measured on this CPU"
    if not (same_cpu(speed.cpu) and all(a.name in ms for a in ok)):
        if not (measure and folder and len(ok) > 1):
            recorded = f"measured on {describe_cpu(speed.cpu)}" if speed.cpu else "none recorded"
            return sorted(ok, key=_default_rank), (f"no speeds measured on this CPU ({recorded}): default order int8 > "
                                                   "fp32, OpenVINO first")
        from segrt.runtime.here import measure_here

        t0 = time.perf_counter()
        ms, cached, said = measure_here(folder, manifest, ok, log)
        size = manifest.input_size or manifest.crop_size or [256, 256]
        shape = "x".join(map(str, size))
        where = "timed on this CPU by an earlier run (cached)" if cached else \
            f"timed on this CPU now, once: {time.perf_counter() - t0:.1f} s, cached"
        where += f"; {said}" if said else ""
    ranked = sorted(ok, key=lambda a: ms[a.name])
    others = ", ".join(f"{a.name} {ms[a.name]:.1f}" for a in ranked[1:])
    return ranked, (f"the fastest gated variant, {ms[ranked[0].name]:.1f} ms/image at {shape} ({where})"
                    + (f"; others: {others}" if others else ""))


def choose_cpu_variant(manifest: Manifest, precision: str | None = None, folder: Path | None = None,
                       kinds: tuple[str, ...] = _SERVING_KINDS, label: str = "auto", check: bool = True,
                       measure: bool = True, log=lambda m: None) -> tuple[Artifact, str]:
    """-> (the artifact, one line saying what was picked and why). ``check``: re-check variants gated
    on another CPU on the gate sample; ``measure``: time the candidates where the export has no
    speeds from this CPU (else the default order)."""
    ok, skipped = candidates(manifest, precision, folder, kinds)
    rejected, checked = [], []
    if check:
        ok, rejected, checked = _checked_here(manifest, ok, folder, log)
    if not ok:
        raise SegrtError(f"export {manifest.name!r} has no gated {precision + ' ' if precision else ''}variant that "
                         f"can run on this CPU: {'; '.join(rejected + skipped) or 'none listed'}")
    ranked, why = _ranked(manifest, ok, folder, measure, log)
    best, gate = ranked[0], manifest.parity[ranked[0].name]
    note = (f"provider {label} -> {best.name} ({best.kind} {best.precision}; gate: mask IoU {gate.mask_iou:.4f} >= "
            f"{gate.gates.mask_iou_min}): {why}")
    fresh = [v for v in checked if not v.cached]
    if fresh:
        note += (f"; re-checked {', '.join(v.artifact for v in fresh)} on this CPU's gate sample "
                 f"({sum(v.seconds for v in fresh):.1f} s, cached)")
    return best, note + "".join(f"; {r}" for r in rejected) + (f"; not considered: {', '.join(skipped)}" if skipped else "")
