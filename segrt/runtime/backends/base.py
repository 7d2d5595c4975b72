"""Runtimes behind one small protocol; each module is imported only when its artifact is used
(the ONNX path never loads torch or OpenVINO).

    backend = open_backend(path, artifact, provider, options, manifest)
    backend.run(x)        # NCHW float32 normalized -> NCHW float32 logits
    backend.submit(x)     # -> a Future of run(x) (done(), result(), span = (start, end) once done);
                          #    up to backend.in_flight outstanding at once
    backend.provider      # what runs it: cpu | cuda | tensorrt | openvino
    backend.note          # what 'auto' chose and why, or None
    backend.describe()    # one line
"""

from __future__ import annotations

import importlib
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrt.errors import SegrtError, first_line

__all__ = ["PROVIDERS", "SessionOptions", "Backend", "run_failed", "finished", "open_backend"]

PROVIDERS = ("cpu", "cuda", "tensorrt", "openvino")
_MODULE_BY_KIND = {"onnx": "ort", "openvino": "openvino", "torchscript": "torch", "pt2": "torch"}


@dataclass
class SessionOptions:
    """threads: inference threads (0: all usable cores); graph_opt: ORT level; arena: ORT's CPU
    memory arena; spin: let idle ORT threads busy-wait (fastest alone; off yields the CPU to other
    work); throughput: keep several requests in flight where the runtime can (OpenVINO streams);
    device: the GPU for cuda/tensorrt; trt_fp16 / trt_workspace_gb: TensorRT engine options.
    gate_here: re-check a reduced-precision variant gated on another CPU on the export's gate sample
    before running it (None: when segrt chose it, by auto or --precision; True: also when named);
    allow_below_gate: run a variant that fails that check (said) instead of refusing it;
    measure: auto times its candidates where the export has no speeds from this CPU."""

    threads: int = 0
    graph_opt: str = "all"
    arena: bool = True
    spin: bool = True
    throughput: bool = False
    device: int = 0
    trt_fp16: bool = False
    trt_workspace_gb: float = 4.0
    gate_here: bool | None = None
    allow_below_gate: bool = False
    measure: bool = True


class Backend:
    """The protocol, with the defaults: ``submit`` runs at once and returns a finished Future."""

    provider: str = "cpu"
    note: str | None = None
    in_flight: int = 1
    open_s: float = 0.0  # time to load/compile the artifact
    fixed_batch: int | None = None  # a model whose batch dimension is fixed (Session chunks for it)
    input_dtype: str = "float32"  # uint8: a variant that takes pixels (segrt.quantize.uint8)

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_masks(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 -> NHW uint8 per-pixel classes (first wins ties); on the host by default."""
        from segrt.imaging.masks import argmax

        return np.stack([argmax(logits) for logits in self.run(x)])

    def submit(self, x: np.ndarray) -> Future:
        return finished(self.run, x)

    def submit_masks(self, x: np.ndarray) -> Future:
        return finished(self.run_masks, x)

    def describe(self) -> str:
        return self.provider


def run_failed(path: Path, runtime: str, x: np.ndarray, exc: BaseException) -> SegrtError:
    """The one-line error for a model that failed on an input (the runtime's own exception types vary)."""
    return SegrtError(f"{path}: {runtime} failed on an input of shape {list(x.shape)} ({first_line(exc)})")


def finished(fn, x: np.ndarray) -> Future:
    """``fn(x)`` run now, as a finished Future (with the ``span`` predict reads)."""
    fut: Future = Future()
    start = time.perf_counter()
    try:
        fut.set_result(fn(x))
    except Exception as exc:
        fut.set_exception(exc)
    fut.span = (start, time.perf_counter())
    return fut


def _backend_module(kind: str, provider: str) -> str:
    """Which module runs an artifact: by its kind; an ONNX file on provider 'openvino' runs on
    native OpenVINO (it reads ONNX), not through an ONNX Runtime execution provider."""
    if kind == "onnx" and provider == "openvino":
        return "openvino"
    if kind not in _MODULE_BY_KIND:
        raise SegrtError(f"cannot run an artifact of kind {kind!r}")
    return _MODULE_BY_KIND[kind]


def open_backend(path: Path, artifact, provider: str, options: SessionOptions, manifest) -> Backend:
    module = importlib.import_module(f"segrt.runtime.backends.{_backend_module(artifact.kind, provider)}")
    return module.open_artifact(path, artifact, provider, options, manifest)
