"""Where a predict run's CPU time goes, stage by stage, in core-milliseconds per image (no torch).

Host threads (decoders, writers, the main loop) time their own stages with ``time.thread_time()``:
read, decode, resize, to_tensor, batch (stacking a batch), inference (ONNX Runtime computes in the
calling thread too), to_mask, encode, write. The inference engine's own threads (ONNX Runtime's pool,
OpenVINO's streams) are every other thread of the process, read from ``/proc/self/task/*/schedstat``
(nanoseconds on the CPU, Linux). ``rest`` is what no stage claims: the host threads' time outside
their stages (hand-offs, queues, Python between stages). The stages and the rest add up to the
process's CPU time (``time.process_time()``) by construction; ``threads_s`` sums every thread's own
counter independently, so ``threads_s / process_s`` near 1 shows the split is sound.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from pathlib import Path

__all__ = ["Ledger", "OFF", "STAGES"]

STAGES = ("read", "decode", "resize", "to_tensor", "batch", "inference", "to_mask", "encode", "write")
_TASKS = Path("/proc/self/task")


def _thread_cpu() -> dict[int, float]:
    """{native thread id: seconds on the CPU so far}, from schedstat; {} where it cannot be read."""
    out = {}
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


class Ledger:
    """CPU seconds by stage over one run. ``stage(name)`` times the calling thread; ``host()`` marks it
    as one of segrt's threads (its time outside stages is the rest, not the engine's)."""

    active = True

    def __init__(self):
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self._host: set[int] = set()
        self._start_cpu: dict[int, float] = {}
        self._process0 = 0.0

    def start(self) -> None:
        self.host()
        self._start_cpu, self._process0 = _thread_cpu(), time.process_time()

    def host(self) -> None:
        with self._lock:
            self._host.add(threading.get_native_id())

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time ``name`` in the calling thread (which is then one of segrt's own)."""
        self.host()
        t0 = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - t0
            with self._lock:
                self.seconds[name] += spent

    def finish(self, images: int) -> dict:
        """The accounting: core-ms per image by stage, the engine's threads as part of inference, the
        rest; the process's CPU seconds and the threads' own sum as a check."""
        process = time.process_time() - self._process0
        now = _thread_cpu()
        delta = {tid: cpu - self._start_cpu.get(tid, 0.0) for tid, cpu in now.items()}
        engine = sum(d for tid, d in delta.items() if tid not in self._host) if now else 0.0
        stages = {name: self.seconds.get(name, 0.0) for name in STAGES}
        stages.update({k: v for k, v in self.seconds.items() if k not in stages})  # e.g. overlay
        stages["inference"] += engine
        rest = process - sum(stages.values())
        per = 1000.0 / max(images, 1)
        return {"core_ms_per_image": {**{k: round(v * per, 3) for k, v in stages.items()},
                                      "rest": round(rest * per, 3), "total": round(process * per, 3)},
                "engine_threads_s": round(engine, 4), "process_s": round(process, 4),
                "threads_s": round(sum(delta.values()), 4) if now else None, "images": images}


class _Off:
    """No accounting (segrt serve, library callers): stages cost nothing."""

    active = False

    def stage(self, name: str):
        return contextlib.nullcontext()

    def start(self) -> None:
        return None


OFF = _Off()
