"""OpenVINO, the native runtime on its CPU device: IR (.xml + .bin) or ONNX files, fp32 / bf16 /
INT8 (NNCF). The inference precision is always stated (OpenVINO silently runs bf16 on CPUs that
have it otherwise); compiled models are cached on disk so the second start is fast; ``submit``
starts one of several infer requests (THROUGHPUT hint: one per stream), so batches overlap. Also
writes IR: an ONNX file converted (export --formats openvino, the quantizers' fp32 source)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from segrt.cpuinfo import usable_cores
from segrt.errors import ProviderError, SegrtError, first_line
from segrt.manifest import Artifact
from segrt.runtime.backends.base import Backend, SessionOptions

__all__ = ["import_openvino", "reason", "cpu_capabilities", "inference_precision", "OpenVinoBackend",
           "open_artifact", "IR_FILE", "save_ir", "ir_artifact", "write_ir"]

_INSTALL = "pip install 'segrt[openvino]'"
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the precision of its non-INT8 layers


def import_openvino():
    from segrt.cpuinfo import cap_kernels

    cap_kernels()  # a simulated CPU (SEGRT_SIMULATE_ISA) computes as that CPU would
    try:
        import openvino
    except ImportError:
        raise SegrtError(f"OpenVINO is not installed; {_INSTALL} (openvino, nncf)") from None
    return openvino


def _cache_dir() -> Path | None:
    """Where compiled models are cached: $SEGRT_CACHE_DIR/openvino, else ~/.cache/segrt/openvino;
    None if it cannot be created (then every start compiles)."""
    from segrt.fsutil import cache_root, writable_dir

    return writable_dir(cache_root() / "openvino", "openvino")


def reason(exc: BaseException) -> str:
    """OpenVINO's errors start with source locations; the last plain line says what went wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    return lines[-1][:200] if lines else first_line(exc)


def cpu_capabilities(core=None) -> list[str]:
    """OpenVINO's CPU optimization capabilities, e.g. ['BF16', 'FP32', 'INT8', ...]; BF16 only where
    segrt's probe (cpuinfo.has_bf16, which a simulated CPU patches) says this CPU has it."""
    from segrt.cpuinfo import has_bf16

    found = list((core or import_openvino().Core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return [c for c in found if c != "BF16" or has_bf16()]


def inference_precision(artifact) -> str:
    """The precision hint a variant was gated with (recorded at quantize time)."""
    return artifact.extra.get("inference_precision") or _HINTS[artifact.precision]


class OpenVinoBackend(Backend):
    """``model``: an .xml/.onnx path or an in-memory ov.Model (the quantizer's candidates)."""

    provider = "openvino"

    def __init__(self, model, hint: str, opts: SessionOptions, required: bool = True, label: str = ""):
        ov = import_openvino()
        core = ov.Core()
        self.label = label or str(model)
        if hint == "bf16" and "BF16" not in cpu_capabilities(core):
            if required:
                raise ProviderError(f"{self.label}: this CPU has no bf16 support (OpenVINO CPU capabilities: "
                                    f"{', '.join(cpu_capabilities(core))}); use --precision fp32 or int8")
            hint, self.note = "f32", "this CPU has no bf16: the non-INT8 layers run in f32"
        self.hint = hint
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": opts.threads or usable_cores(),
                  "PERFORMANCE_HINT": "THROUGHPUT" if opts.throughput else "LATENCY"}
        self.cache = _cache_dir() if not isinstance(model, ov.Model) else None
        if self.cache:
            config["CACHE_DIR"] = str(self.cache)
        t0 = time.perf_counter()
        try:
            self.compiled = core.compile_model(model if isinstance(model, ov.Model) else str(model), "CPU", config)
        except RuntimeError as exc:  # a ProviderError: the model may compile on another CPU
            raise ProviderError(f"{self.label}: OpenVINO cannot compile it on this CPU ({reason(exc)})") from None
        self.open_s = time.perf_counter() - t0
        self.version = ov.__version__
        shapes = [p.get_partial_shape() for p in (self.compiled.inputs[0], self.compiled.outputs[0])]
        if any(s.rank.is_dynamic or s.rank.get_length() != 4 for s in shapes):
            raise SegrtError(f"{self.label}: expected 4-D NCHW input and output, got {shapes[0]} -> {shapes[1]}; "
                             "not a segmentation model")
        batch = shapes[0][0]
        self.fixed_batch = batch.get_length() if batch.is_static else None
        self.in_flight = self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if opts.throughput else 1
        # plain requests, not an AsyncInferQueue: a failed job there aborts the process
        self._requests = [self.compiled.create_infer_request() for _ in range(self.in_flight)]
        self._pending: list[_Pending | None] = [None] * self.in_flight
        self._next = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._requests[0].infer({0: x}, share_inputs=True)[0]  # outputs are copied out
        except RuntimeError as exc:
            raise SegrtError(f"{self.label}: OpenVINO inference failed ({reason(exc)})") from None

    def submit(self, x: np.ndarray) -> "_Pending":
        i, self._next = self._next, (self._next + 1) % self.in_flight
        if self._pending[i] is not None:
            self._pending[i].done(wait=True)  # its logits are copied out before the request is reused
        self._pending[i] = _Pending(self._requests[i], x, self.label)
        return self._pending[i]

    def describe(self) -> str:
        streams = f", {self.in_flight} requests in flight" if self.in_flight > 1 else ""
        try:  # how it shares the cores (chosen for this CPU by the performance hint)
            n, threads = (int(self.compiled.get_property(k)) for k in ("NUM_STREAMS", "INFERENCE_NUM_THREADS"))
            layout = f", {n} stream{'s' * (n != 1)} x {threads // max(n, 1)} thread{'s' * (threads != n)}"
        except RuntimeError:
            layout = ""
        return f"OpenVINO {self.version.split('-')[0]} CPU, inference precision {self.hint}{streams}{layout}"


class _Pending:
    """A started infer request, used like a Future: ``done()``, ``result()``; ``span`` is (start,
    end) in perf_counter seconds once done (end from the request's own latency)."""

    def __init__(self, request, x: np.ndarray, label: str):
        self.request, self.x, self.label = request, x, label  # x stays alive while the request reads it
        self.span, self._value, self._error = None, None, None
        self.start = time.perf_counter()
        request.start_async({0: x}, share_inputs=True)

    def done(self, wait: bool = False) -> bool:
        if self.span is None:
            try:
                if wait:
                    self.request.wait()
                elif not self.request.wait_for(0):
                    return False
                self._value = self.request.get_output_tensor(0).data.copy()
            except RuntimeError as exc:
                self._error = exc
            self.span, self.x = (self.start, self.start + self.request.latency / 1000), None
        return True

    def result(self) -> np.ndarray:
        self.done(wait=True)
        if self._error is not None:
            raise SegrtError(f"{self.label}: OpenVINO inference failed ({reason(self._error)})")
        return self._value


def open_artifact(path: Path, artifact, provider: str, opts: SessionOptions, manifest) -> OpenVinoBackend:
    if provider not in ("openvino", "cpu", "auto"):
        raise ProviderError(f"provider {provider!r} cannot run {path.name}: OpenVINO artifacts run on provider "
                            "openvino (its CPU device)")
    backend = OpenVinoBackend(path, inference_precision(artifact), opts, required=artifact.precision == "bf16",
                              label=str(path))
    channels = backend.compiled.inputs[0].get_partial_shape()[1]
    if channels.is_static and channels.get_length() != manifest.channels:
        raise SegrtError(f"{path}: model takes {channels.get_length()} input channels but its metadata says "
                         f"{manifest.channels}")
    classes = backend.compiled.outputs[0].get_partial_shape()[1]
    if classes.is_static and classes.get_length() != manifest.num_classes:
        raise SegrtError(f"{path}: model outputs {classes.get_length()} class channels but its metadata lists "
                         f"{manifest.num_classes} classes")
    return backend


IR_FILE = "model.xml"


def save_ir(model, folder: Path, xml_name: str) -> None:
    """Write an ov.Model as folder/xml_name + .bin, fp32 weights kept; both files appear together
    (written in a temp folder beside them, then moved, .bin first)."""
    ov = import_openvino()
    tmp = Path(tempfile.mkdtemp(prefix=".ir-", dir=folder))
    try:
        ov.save_model(model, str(tmp / xml_name), compress_to_fp16=False)
        for name in (Path(xml_name).with_suffix(".bin").name, xml_name):
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ir_artifact(xml_name: str, precision: str = "fp32", **extra) -> Artifact:
    ov = import_openvino()
    name = xml_name if precision != "bf16" else f"{xml_name}@bf16"
    return Artifact(file=xml_name, kind="openvino", precision=precision, name=name,
                    exporter=f"openvino {ov.__version__.split('-')[0]}",
                    companions={Path(xml_name).with_suffix(".bin").name: {}}, extra=extra)


def write_ir(onnx_path: Path, folder: Path) -> Artifact:
    """The OpenVINO IR of an exported ONNX file (export --formats openvino); gated by the caller."""
    ov = import_openvino()
    save_ir(ov.convert_model(str(onnx_path)), folder, IR_FILE)
    return ir_artifact(IR_FILE, source=onnx_path.name, weights="fp32")
