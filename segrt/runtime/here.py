"""Trust that travels: a reduced-precision variant is re-checked on the CPU it is about to run on,
and the speeds ``auto`` compares are measured there.

A gate holds for the ISA class and runtime version it was measured on (OpenVINO's INT8 kernels
without VNNI agree less with fp32 than with it). An export carries a gate sample (up to 16 held-out
inputs at its working size, as lossless WebP, with the fp32 graph's masks: ``gate_sample.npz``,
listed in the manifest with its hash). Before a variant runs for the first time on another ISA class or
runtime version, it runs on that sample (seconds) and is held to its gate again. Verdicts and
speeds are cached per (artifact sha256, CPU, runtime version) under $SEGRT_CACHE_DIR (else the
platform cache folder), never in the export, which may be read-only (an installed wheel).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segrt.cpuinfo import cpu_info, isa_class, module_available, usable_cores
from segrt.errors import SegrtError
from segrt.imaging.prepare import normalize, prepare
from segrt.imaging.metrics import ConfusionMatrix, agreement, agreement_problems
from segrt.manifest import Artifact, Manifest, member, sha256_file

__all__ = ["SAMPLE_FILE", "SAMPLE_MAX", "signature", "same_signature", "Verdict", "load_sample", "sample_inputs",
           "sample_verdict", "open_variant", "check_here", "time_variants", "measure_here"]

SAMPLE_FILE = "gate_sample.npz"
SAMPLE_MAX = 16


@functools.lru_cache(maxsize=1)
def _runtime_versions() -> dict:
    """The installed ONNX Runtime and OpenVINO versions (read once: they do not change in a process)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("onnxruntime", "openvino"):
        if module_available(name):
            try:
                found[name] = version(name)
            except PackageNotFoundError:  # e.g. onnxruntime-gpu, named differently
                found[name] = __import__(name).__version__
    return found


def signature() -> dict:
    """The CPU and runtimes a gate is measured on: {"cpu", "isa_class", "onnxruntime", "openvino"}."""
    return {"cpu": cpu_info()["model"], "isa_class": isa_class(), **_runtime_versions()}


def _runtime_of(art: Artifact) -> str:
    return "openvino" if art.kind == "openvino" else "onnxruntime"


def same_signature(recorded: dict | None, art: Artifact) -> bool:
    """Was a gate measured on this ISA class with the runtime version that runs ``art`` here?"""
    here, rt = signature(), _runtime_of(art)
    return bool(recorded) and recorded.get("isa_class") == here["isa_class"] and recorded.get(rt) == here.get(rt)


@dataclass
class Verdict:
    """A variant on this CPU's gate sample: its agreement with the fp32 masks there (``mask_iou``)
    and whether it holds its gate. The sample is small, so the gated number is an estimate of the
    whole gate set's agreement here: the recorded one, moved by how far the sample's agreement moved
    from when it was made (``then``, recorded in the manifest); without ``then``, the sample's own."""

    artifact: str
    gate: float
    mask_iou: float
    pixel_agreement: float
    problems: list[str]
    images: int
    seconds: float
    estimate: float = 0.0
    then: float | None = None
    key: dict = field(default_factory=dict)
    cached: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if not self.images:
            return f"{self.artifact} {'; '.join(self.problems)}"
        basis = f"; {self.then:.4f} when the sample was made, so ~{self.estimate:.4f} on the gate set" \
            if self.then is not None else ""
        verb, tail = ("agrees", f">= gate {self.gate}") if self.passed else \
            ("agrees only", f"< gate {self.gate} ({'; '.join(self.problems)})")
        return (f"{self.artifact} {verb} {self.mask_iou:.4f} with fp32 on this CPU's gate sample ({self.images} "
                f"images{basis}) {tail}")


def load_sample(folder: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray] | None:
    """The export's gate sample: (NCHW uint8 pixels, NHW uint8 fp32 masks), or None when it has none.
    Refused (one line) when the file is not the one the manifest lists."""
    info = manifest.gate_sample
    if not info:
        return None
    path = member(folder, info["file"])
    if not path.is_file():
        return None
    if sha256_file(path) != info.get("sha256"):
        raise SegrtError(f"{path}: sha256 does not match manifest.json (modified after export?)")
    with np.load(path, allow_pickle=False) as data:
        blob, ends, masks = data["webp"], data["ends"], data["masks"]
    return np.stack([_decode_webp(blob[a:b], manifest.channels) for a, b in zip([0, *ends[:-1]], ends)]), masks


def _decode_webp(data: np.ndarray, channels: int) -> np.ndarray:
    """Lossless WebP bytes -> CHW uint8 (a one-channel model's pixels were stored as grey RGB)."""
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, :channels].transpose(2, 0, 1))


def sample_inputs(pixels: np.ndarray, manifest: Manifest, uint8: bool) -> np.ndarray:
    """What a variant takes from the sample: the pixels, or normalized as predict does."""
    if uint8:
        return pixels
    return np.stack([normalize(p.transpose(1, 2, 0), manifest.mean, manifest.std) for p in pixels])


def sample_verdict(run, takes_uint8: bool, sample, manifest: Manifest, art: Artifact, step: int = 4) -> Verdict:
    """``run`` (NCHW batch of ``step`` -> logits) on the sample, against its fp32 masks, held to the
    variant's recorded gate (see Verdict for the estimate)."""
    pixels, masks = sample
    x, cm, t0 = sample_inputs(pixels, manifest, takes_uint8), ConfusionMatrix(manifest.num_classes), time.perf_counter()
    for i in range(0, len(x), step):
        cm.update(run(x[i:i + step]).argmax(1), masks[i:i + step])
    agreed, record = agreement(cm), manifest.parity[art.name]
    then = (manifest.gate_sample or {}).get("agreement", {}).get(art.name)
    estimate = agreed["mask_iou"] if then is None else record.mask_iou + agreed["mask_iou"] - then
    gate = record.gates.mask_iou_min
    return Verdict(art.name, gate, agreed["mask_iou"], agreed["pixel_agreement"],
                   agreement_problems({**agreed, "mask_iou": estimate}, gate, manifest.classes), len(x),
                   time.perf_counter() - t0, estimate, then)


def _cache_file(kind: str, key: dict) -> Path:
    from segrt.fsutil import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / kind / f"{digest}.json"


def _cached(kind: str, key: dict, log) -> dict | None:
    path = _cache_file(kind, key)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("key") != key:
            raise ValueError("another key")
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log(f"note: {path}: unreadable cache file ({exc.__class__.__name__}); measuring again")
        return None


def _store(kind: str, key: dict, data: dict, log) -> None:
    from segrt.fsutil import write_bytes_atomic

    path = _cache_file(kind, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps({**data, "key": key}, indent=1) + "\n").encode())
    except OSError as exc:
        log(f"note: cannot cache in {path.parent} ({exc.strerror or exc}); the next run measures again")


def open_variant(folder: Path, manifest: Manifest, art: Artifact, threads: int = 0):
    from segrt.runtime.backends.base import SessionOptions, open_backend

    runs = manifest.runs_from(folder, art)[0]
    manifest.verify(folder, [runs.name])
    backend = open_backend(folder / runs.file, art, "openvino" if art.kind == "openvino" else "cpu",
                           SessionOptions(threads=threads), manifest)
    return backend, art.extra.get("input_dtype") == "uint8" or backend.input_dtype == "uint8"


def check_here(folder: Path, manifest: Manifest, art: Artifact, log=lambda m: None,
               fresh: bool = False) -> Verdict | None:
    """Re-check a reduced-precision variant on this CPU's gate sample, once per (artifact, CPU,
    runtime version): None when no check is needed (fp32, gated on this ISA class and runtime) or
    possible (no gate sample: the gate is trusted as recorded). ``fresh``: run it even when a
    verdict is cached (segrt verify), and cache the new one."""
    gate = manifest.parity.get(art.name)
    if art.precision == "fp32" or gate is None or same_signature(gate.measured_on, art) or manifest.missing(folder, art):
        return None
    here = signature()
    key = {"artifact": art.sha256, "isa_class": here["isa_class"], "runtime": f"{_runtime_of(art)} "
           f"{here.get(_runtime_of(art))}", "gate": gate.gates.mask_iou_min, "recorded": gate.mask_iou, "sample": (manifest.gate_sample or {}).get("sha256")}
    hit = None if fresh else _cached("verdicts", key, log)
    if hit:
        hit.pop("key", None)
        return Verdict(**{**hit, "cached": True, "key": key})
    sample = load_sample(folder, manifest)
    if sample is None:
        return None
    try:
        backend, uint8 = open_variant(folder, manifest, art)
        verdict = sample_verdict(backend.run, uint8, sample, manifest, art, backend.fixed_batch or 4)
    except SegrtError as exc:  # a runtime that cannot run it here: it fails here (not cached)
        return Verdict(art.name, gate.gates.mask_iou_min, float("nan"), float("nan"), [f"cannot run here: {exc}"],
                       0, 0.0, key=key)
    verdict.key = key
    _store("verdicts", key, {k: v for k, v in asdict(verdict).items() if k not in ("key", "cached")}, log)
    return verdict


def time_variants(folder: Path, manifest: Manifest, arts: list[Artifact], hw, rounds: int = 3,
                  runs: int = 3, spread: dict | None = None) -> dict[str, float]:
    """Batch-1 ms/image of each variant at ``hw`` from decoded pixels (the host's normalization counts
    for a float variant, as in predict), rounds alternating between variants, one warm-up run before
    each variant's runs in a round; the fastest run is kept (the least disturbed by other load). What
    auto's measurement and the export's speed record share. ``spread``: gets each variant's median/min."""
    pixels = np.random.default_rng(0).integers(0, 256, (*hw, manifest.channels), dtype=np.uint8)
    runners = {}
    for a in arts:
        backend, uint8 = open_variant(folder, manifest, a)
        runners[a.name] = lambda b=backend, u=uint8: b.run(prepare(pixels, manifest.mean, manifest.std, None, 1,
                                                                   pixels=u)[0][None])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            run()  # warm-up after the other variants ran
            for _ in range(runs):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    if spread is not None:
        spread.update({name: float(np.median(t) / min(t)) for name, t in times.items()})
    return {name: float(min(t)) * 1000 for name, t in times.items()}


def measure_here(folder: Path, manifest: Manifest, arts: list[Artifact], log=lambda m: None,
                 rounds: int = 3, runs: int = 3) -> tuple[dict[str, float], bool, str]:
    """Batch-1 ms/image of ``arts`` on this CPU at the working size (the sample's size, else the
    training crop), rounds alternating between them, the fastest run kept; where the two fastest are
    within the runs' own noise they are timed again, twice as long, and a tie that stays is said. The
    load average is recorded. Cached per (artifacts, CPU, threads, runtimes).
    -> (ms per artifact name, whether it came from the cache, a note on load and ties or '')."""
    size = manifest.input_size or manifest.crop_size or [256, 256]
    here = signature()
    key = {"artifacts": sorted(a.sha256 + (":u8" if a.extra.get("input_dtype") else "") + ("@" + a.precision)
                               for a in arts), "cpu": here, "isa": cpu_info()["isa"], "threads": usable_cores(),
           "size": list(size)}
    hit = _cached("speeds", key, log)
    if hit and all(a.name in hit.get("ms_per_image", {}) for a in arts):
        return hit["ms_per_image"], True, hit.get("note", "")
    load, spread = os.getloadavg()[0] if hasattr(os, "getloadavg") else None, {}
    ms = time_variants(folder, manifest, arts, size, rounds, runs, spread)
    note = _close_call(folder, manifest, arts, size, rounds, runs, ms, spread)
    if load is not None and load > 0.5:
        note = "; ".join(filter(None, [f"timed under load (load average {load:.1f} on {usable_cores()} cores: "
                                       "the fastest run of each is kept)", note]))
    _store("speeds", key, {"ms_per_image": ms, "size": list(size), "loadavg": load, "note": note}, log)
    return ms, False, note


def _close_call(folder, manifest, arts, size, rounds, runs, ms: dict, spread: dict) -> str:
    """Re-time the two fastest where their margin is within the runs' own noise (at least 3%); -> a
    note when they stay within it ('' when the ranking is clear)."""
    if len(ms) < 2:
        return ""
    first, second = sorted(ms, key=ms.get)[:2]
    noise = max(0.03, spread[first] - 1, spread[second] - 1)
    if ms[second] / ms[first] - 1 > noise:
        return ""
    pair = [a for a in arts if a.name in (first, second)]
    again = time_variants(folder, manifest, pair, size, 2 * rounds, runs, spread)
    ms.update({name: min(ms[name], t) for name, t in again.items()})
    first, second = sorted((first, second), key=ms.get)
    if ms[second] / ms[first] - 1 > max(0.03, spread[first] - 1):
        return ""
    return f"{first} and {second} are within the noise of each other ({ms[first]:.1f} vs {ms[second]:.1f} ms)"
