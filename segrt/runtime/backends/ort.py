"""ONNX Runtime: .onnx artifacts on cpu / cuda / tensorrt, providers resolved strictly (a provider
that is missing, or that ONNX Runtime silently replaces with the CPU, is an error)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from segrt.cpuinfo import usable_cores
from segrt.errors import ProviderError, SegrtError, first_line
from segrt.runtime.backends.base import Backend, SessionOptions, run_failed

__all__ = ["available_ort_providers", "session_options", "provider_list", "OrtBackend", "open_artifact",
           "append_argmax"]

_ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
_AUTO_ORDER = ("cuda", "cpu")  # TensorRT only when asked for: engine builds take minutes
_GRAPH_OPT = ("disable", "basic", "extended", "all")


def available_ort_providers() -> list[str]:
    import onnxruntime as ort

    names = {v: k for k, v in _ORT_PROVIDERS.items()}
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


_TRT_MAX_BATCH, _TRT_MAX_SIDE = 64, 2048  # the largest input a TensorRT engine profile accepts (native/tiles)


def _tensorrt_options(manifest, path: Path, opts: SessionOptions) -> dict:
    """ONNX Runtime's TensorRT provider options: engine and timing caches beside the export (the
    second start loads the engine instead of building it), fp16, workspace, and the dynamic-shape
    profile (min/opt/max) from the manifest's input rules: any multiple of the size multiple from one
    block up to _TRT_MAX_SIDE, optimized for batch 8 at the working size."""
    from segrt.fsutil import writable_dir

    name, c, m = manifest.input_name, manifest.channels, manifest.size_multiple
    if manifest.fixed_size:
        h, w = manifest.fixed_size
        low = high = (h, w)
    else:
        h, w = manifest.input_size or manifest.crop_size or (512, 512)
        low, high = (m, m), (max(_TRT_MAX_SIDE // m * m, h), max(_TRT_MAX_SIDE // m * m, w))
    cache = writable_dir(path.parent / ".trt-cache", "tensorrt")
    shape = lambda n, hw: f"{name}:{n}x{c}x{hw[0]}x{hw[1]}"  # noqa: E731
    options = {"device_id": opts.device, "trt_fp16_enable": opts.trt_fp16,
               "trt_max_workspace_size": int(opts.trt_workspace_gb * 2**30),
               "trt_profile_min_shapes": shape(1, low), "trt_profile_opt_shapes": shape(8, (h, w)),
               "trt_profile_max_shapes": shape(_TRT_MAX_BATCH, high)}
    if cache:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache),
                       trt_timing_cache_enable=True, trt_timing_cache_path=str(cache))
    return options


def provider_list(name: str, opts: SessionOptions, manifest, path: Path) -> list:
    """What to give ONNX Runtime for a provider: CUDA and TensorRT on --device N; TensorRT with CUDA
    behind it for the nodes TensorRT does not take."""
    if name == "cpu":
        return [_ORT_PROVIDERS["cpu"]]
    cuda = (_ORT_PROVIDERS["cuda"], {"device_id": opts.device})
    if name == "cuda":
        return [cuda]
    return [(_ORT_PROVIDERS["tensorrt"], _tensorrt_options(manifest, path, opts)), cuda]


class OrtBackend(Backend):
    def __init__(self, path: Path, provider: str, opts: SessionOptions, channels: int | None = None, manifest=None):
        import onnxruntime as ort

        self.ort, self.path = ort, path
        available = available_ort_providers()
        if provider == "auto":
            candidates = [p for p in _AUTO_ORDER if p in available]
        elif provider not in _ORT_PROVIDERS:
            raise ProviderError(f"provider {provider!r} does not run ONNX Runtime artifacts; "
                                f"choose from {', '.join(_ORT_PROVIDERS)}")
        elif provider not in available:
            raise ProviderError(
                f"provider {provider!r} ({_ORT_PROVIDERS[provider]}) is not available in this onnxruntime "
                f"build; available: {', '.join(available)}"
                + (" (install onnxruntime-gpu and a CUDA driver for cuda)" if provider in ("cuda", "tensorrt") else ""))
        else:
            candidates = [provider]
        so, errors = session_options(opts), []
        self.threads = so.intra_op_num_threads
        self._so, self._mask_sess, self.masks_in_graph = so, None, False
        t0 = time.perf_counter()
        for name in candidates:
            try:
                sess = ort.InferenceSession(str(path), so, providers=provider_list(name, opts, manifest, path)
                                            if manifest is not None else [_ORT_PROVIDERS[name]])
            except Exception as exc:  # ORT raises plain RuntimeError/Fail subclasses
                errors.append(f"{name}: {first_line(exc)}")
                continue
            if sess.get_providers()[0] != _ORT_PROVIDERS[name]:  # ORT fell back silently
                errors.append(f"{name}: failed to initialise (ONNX Runtime fell back to {sess.get_providers()[0]})")
                continue
            self.sess, self.provider = sess, name
            self._providers = provider_list(name, opts, manifest, path) if manifest is not None else [_ORT_PROVIDERS[name]]
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
        self._check_signature(channels, manifest.num_classes if manifest is not None else None)
        self.use_binding, self.device = self.provider in ("cuda", "tensorrt"), opts.device

    def _check_signature(self, channels: int | None, classes: int | None) -> None:
        inp, out = self.sess.get_inputs()[0], self.sess.get_outputs()[0]
        if len(inp.shape) != 4 or len(out.shape) != 4:
            raise SegrtError(f"{self.path}: expected 4-D NCHW input and output, got {inp.shape} -> {out.shape}; "
                             "not a segmentation model")
        if channels is not None and isinstance(inp.shape[1], int) and inp.shape[1] != channels:
            raise SegrtError(f"{self.path}: model takes {inp.shape[1]} input channels but its metadata says "
                             f"{channels}")
        if classes is not None and isinstance(out.shape[1], int) and out.shape[1] != classes:
            raise SegrtError(f"{self.path}: model outputs {out.shape[1]} class channels but its metadata lists "
                             f"{classes} classes")
        self.input_dtype = "uint8" if inp.type == "tensor(uint8)" else "float32"
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._run(x)
        except Exception as exc:  # ORT's own exception classes: the model failed on this input
            raise run_failed(self.path, "ONNX Runtime", x, exc) from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        if not self.use_binding:
            return self.sess.run([self.output_name], {self.input_name: x})[0]
        # GPU: bind the input once on the device and let ORT allocate the output there
        binding = self.sess.io_binding()
        binding.bind_ortvalue_input(self.input_name, self.ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device))
        binding.bind_output(self.output_name, "cuda", self.device)
        self.sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def run_masks(self, x: np.ndarray) -> np.ndarray:
        """On cuda/tensorrt the argmax runs on the GPU, inside the graph (segrt.quantize.onnx_rewrites.append_argmax),
        so only uint8 masks cross to the host; elsewhere it is the host argmax."""
        if not self.use_binding and not self.masks_in_graph:
            return super().run_masks(x)
        if self._mask_sess is None:
            import onnx

            from segrt.runtime.backends.ort import append_argmax

            model = append_argmax(onnx.load(str(self.path)), self.output_name)
            self._mask_sess = self.ort.InferenceSession(model.SerializeToString(), self._so, providers=self._providers)
        try:
            return self._mask_sess.run(["mask"], {self.input_name: x})[0]
        except Exception as exc:
            raise run_failed(self.path, "ONNX Runtime", x, exc) from None

    def describe(self) -> str:
        threads = f", {self.threads} threads" if self.provider == "cpu" else ""
        return f"ONNX Runtime {self.ort.__version__} on {self.provider}{threads}"


def open_artifact(path: Path, artifact, provider: str, opts: SessionOptions, manifest) -> OrtBackend:
    return OrtBackend(path, provider, opts, manifest.channels, manifest)


def append_argmax(model, logits: str, name: str = "mask"):
    """A copy of ``model`` with one more output: the per-pixel class (ArgMax over the channel axis,
    first index on ties, as segrt.imaging.masks) as uint8 NHW, so a GPU hands back masks, not logits."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend([
        helper.make_node("ArgMax", [logits], [f"{name}_int64"], axis=1, keepdims=0, select_last_index=0),
        helper.make_node("Cast", [f"{name}_int64"], [name], to=TensorProto.UINT8)])
    out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.UINT8, ["batch", "height", "width"]))
    return out
