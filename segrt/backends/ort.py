"""ONNX Runtime: .onnx artifacts on cpu / cuda / tensorrt, providers resolved strictly (a provider
that is missing, or that ONNX Runtime silently replaces with the CPU, is an error)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from segrt.backends import Backend, SessionOptions, usable_cores
from segrt.errors import ProviderError, SegrtError, first_line

ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
AUTO_ORDER = ("cuda", "cpu")  # TensorRT only when asked for: engine builds take minutes
GRAPH_OPT = ("disable", "basic", "extended", "all")


def available_ort_providers() -> list[str]:
    import onnxruntime as ort

    names = {v: k for k, v in ORT_PROVIDERS.items()}
    return [names[p] for p in ort.get_available_providers() if p in names]


def session_options(opts: SessionOptions):
    import onnxruntime as ort

    so = ort.SessionOptions()
    # an explicit count: with 0, ORT picks its own count and pins its threads to cores
    so.intra_op_num_threads = opts.threads or usable_cores()
    levels = ort.GraphOptimizationLevel
    so.graph_optimization_level = {"disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
                                   "extended": levels.ORT_ENABLE_EXTENDED, "all": levels.ORT_ENABLE_ALL}[opts.graph_opt]
    so.enable_cpu_mem_arena = opts.arena
    if not opts.spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class OrtBackend(Backend):
    def __init__(self, path: Path, provider: str, opts: SessionOptions, channels: int | None = None):
        import onnxruntime as ort

        self.ort, self.path = ort, path
        available = available_ort_providers()
        if provider == "auto":
            candidates = [p for p in AUTO_ORDER if p in available]
        elif provider not in ORT_PROVIDERS:
            raise ProviderError(f"provider {provider!r} does not run ONNX Runtime artifacts; "
                                f"choose from {', '.join(ORT_PROVIDERS)}")
        elif provider not in available:
            raise ProviderError(
                f"provider {provider!r} ({ORT_PROVIDERS[provider]}) is not available in this onnxruntime "
                f"build; available: {', '.join(available)}"
                + (" (install onnxruntime-gpu and a CUDA driver for cuda)" if provider in ("cuda", "tensorrt") else ""))
        else:
            candidates = [provider]
        so, errors = session_options(opts), []
        t0 = time.perf_counter()
        for name in candidates:
            try:
                sess = ort.InferenceSession(str(path), so, providers=[ORT_PROVIDERS[name]])
            except Exception as exc:  # ORT raises plain RuntimeError/Fail subclasses
                errors.append(f"{name}: {first_line(exc)}")
                continue
            if sess.get_providers()[0] != ORT_PROVIDERS[name]:  # ORT fell back silently
                errors.append(f"{name}: failed to initialise (ONNX Runtime fell back to {sess.get_providers()[0]})")
                continue
            self.sess, self.provider = sess, name
            break
        else:
            if provider == "auto" or len(errors) != 1:
                raise SegrtError(f"{path}: no provider could run it: {'; '.join(errors)}")
            raise ProviderError(f"provider {provider!r} is installed but unusable here: {errors[0]}")
        self.open_s = time.perf_counter() - t0
        if provider == "auto":
            self.note = f"provider auto -> {self.provider}" + (f" ({'; '.join(errors)})" if errors else "")
        self.input_name = self.sess.get_inputs()[0].name
        self.output_name = self.sess.get_outputs()[0].name
        self._check_signature(channels)
        self.use_binding = self.provider in ("cuda", "tensorrt")

    def _check_signature(self, channels: int | None) -> None:
        inp, out = self.sess.get_inputs()[0], self.sess.get_outputs()[0]
        if len(inp.shape) != 4 or len(out.shape) != 4:
            raise SegrtError(f"{self.path}: expected 4-D NCHW input and output, got {inp.shape} -> {out.shape}; "
                             "not a segmentation model")
        if channels is not None and isinstance(inp.shape[1], int) and inp.shape[1] != channels:
            raise SegrtError(f"{self.path}: model takes {inp.shape[1]} input channels but its metadata says "
                             f"{channels}")
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._run(x)
        except Exception as exc:  # ORT's own exception classes: the model failed on this input
            raise SegrtError(f"{self.path}: ONNX Runtime failed on an input of shape {list(x.shape)} "
                             f"({first_line(exc)})") from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if not self.use_binding:
            return self.sess.run([self.output_name], {self.input_name: x})[0]
        # GPU: bind the input once on the device and let ORT allocate the output there
        binding = self.sess.io_binding()
        binding.bind_ortvalue_input(self.input_name, self.ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(self.output_name, "cuda", 0)
        self.sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> str:
        return f"ONNX Runtime {self.ort.__version__} on {self.provider}"


def open_artifact(path: Path, artifact, provider: str, opts: SessionOptions, manifest) -> OrtBackend:
    return OrtBackend(path, provider, opts, manifest.channels)
