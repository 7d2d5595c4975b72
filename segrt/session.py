"""Session: open an exported artifact and run NCHW float32 batches through it.

ONNX runs on ONNX Runtime with strictly resolved providers (never a silent CPU fallback);
TorchScript (.ts) and torch.export (.pt2) run through torch, imported only for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segrt.errors import ProviderError, SegrtError
from segrt.manifest import DEFAULT_MEAN, DEFAULT_MULTIPLE, DEFAULT_STD, Artifact, Manifest

ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
AUTO_ORDER = ("cuda", "cpu")  # TensorRT/OpenVINO only when asked for: engine builds, precision hints
GRAPH_OPT = ("disable", "basic", "extended", "all")
KIND_BY_SUFFIX = {".onnx": "onnx", ".ts": "torchscript", ".pt2": "pt2"}


@dataclass
class SessionOptions:
    """threads: intra-op threads (0: all cores); graph_opt: ORT level; arena: CPU memory arena;
    spin: let idle ORT threads busy-wait (fastest alone; off yields the CPU to other work)."""

    threads: int = 0
    graph_opt: str = "all"
    arena: bool = True
    spin: bool = True


def load_model_info(path: str | os.PathLike, *, classes: list[str] | None = None,
                    mean: list[float] | None = None, std: list[float] | None = None,
                    size_multiple: int | None = None) -> tuple[Manifest, Path | None]:
    """-> (manifest, export folder or None). A bare .onnx uses its metadata_props, else defaults."""
    path = Path(path)
    if path.is_dir():
        return Manifest.load(path), path
    if not path.is_file():
        raise SegrtError(f"{path}: no such model file or export folder")
    if path.suffix != ".onnx":
        if (path.parent / "manifest.json").is_file():
            return Manifest.load(path.parent), path.parent
        raise SegrtError(f"{path}: a {path.suffix} file needs the manifest.json of its export folder beside it")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SegrtError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:120]})") from None
    props = {p.key: p.value for p in model.metadata_props}
    manifest = Manifest.from_metadata_props(props, path.stem)
    if manifest is None:
        manifest = _manifest_from_graph(model, path)
    for attr, value in (("classes", classes), ("mean", mean), ("std", std), ("size_multiple", size_multiple)):
        if value is not None:
            setattr(manifest, attr, value)
    manifest.artifacts = [Artifact(file=path.name, kind="onnx")]
    return manifest, None


def _manifest_from_graph(model, path: Path) -> Manifest:
    """Documented defaults for a foreign ONNX file: see segrt.manifest.DEFAULT_*."""
    inp, out = model.graph.input[0], model.graph.output[0]
    dims = lambda v: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    in_dims, out_dims = dims(inp), dims(out)
    if len(in_dims) != 4 or len(out_dims) != 4:
        raise SegrtError(f"{path}: expected NCHW image input and NCHW logits output, got input {in_dims} "
                         f"and output {out_dims}: not a segmentation model")
    channels, n_cls = in_dims[1] or 3, out_dims[1]
    if not n_cls:
        raise SegrtError(f"{path}: output {out.name!r} has no fixed class dimension; not a segmentation model")
    gray = channels == 1
    return Manifest(name=path.stem, classes=[f"class{i}" for i in range(n_cls)],
                    mean=[0.5] if gray else list(DEFAULT_MEAN), std=[0.25] if gray else list(DEFAULT_STD),
                    channels=channels, size_multiple=DEFAULT_MULTIPLE, input_size=None,
                    input_name=inp.name, output_name=out.name)


class Session:
    """Runs one artifact. ``run(x)``: NCHW float32 normalized -> NCHW float32 logits."""

    def __init__(self, model: str | os.PathLike, *, provider: str = "auto", precision: str = "fp32",
                 kind: str | None = None, artifact: str | None = None, options: SessionOptions | None = None,
                 **overrides):
        self.manifest, self.folder = load_model_info(model, **overrides)
        self.options = options or SessionOptions()
        path = Path(model)
        if artifact:
            self.artifact = next((a for a in self.manifest.artifacts if a.file == artifact), None)
            if self.artifact is None:
                raise SegrtError(f"{model}: the manifest lists no artifact {artifact!r}")
        elif self.folder is None and path.suffix != ".onnx":
            self.artifact = self.manifest.artifact(KIND_BY_SUFFIX.get(path.suffix, "?"), precision)
        else:
            self.artifact = self.manifest.artifact(kind or "onnx", precision)
        self.path = (self.folder / self.artifact.file) if self.folder else path
        self.kind = self.artifact.kind
        if provider not in (*ORT_PROVIDERS, "auto"):
            raise ProviderError(f"unknown provider {provider!r}; choose from {', '.join([*ORT_PROVIDERS, 'auto'])}")
        if self.kind == "onnx":
            self._backend = _OrtBackend(self.path, provider, self.options, self.manifest)
        elif self.kind in ("torchscript", "pt2"):
            self._backend = _TorchBackend(self.path, self.kind, provider, self.options)
        else:
            raise SegrtError(f"{self.path}: cannot run an artifact of kind {self.kind!r}")
        self.provider = self._backend.provider
        self.auto_note = self._backend.auto_note

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._backend.run(np.ascontiguousarray(x, dtype=np.float32))

    def describe(self) -> str:
        return f"{self.path.name} ({self.kind} {self.artifact.precision}) on {self.provider}"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_available() -> bool:
    """Is torch installed (and not blocked)? Checked without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ValueError, ImportError):  # e.g. sys.modules["torch"] = None
        return False


def available_ort_providers() -> list[str]:
    import onnxruntime as ort

    names = {v: k for k, v in ORT_PROVIDERS.items()}
    return [names[p] for p in ort.get_available_providers() if p in names]


class _OrtBackend:
    def __init__(self, path: Path, provider: str, opts: SessionOptions, manifest: Manifest):
        import onnxruntime as ort

        self.ort = ort
        available = available_ort_providers()
        self.auto_note = None
        if provider == "auto":
            candidates = [p for p in AUTO_ORDER if p in available]
        elif provider not in available:
            raise ProviderError(
                f"provider {provider!r} ({ORT_PROVIDERS[provider]}) is not available in this onnxruntime "
                f"build; available: {', '.join(available)}"
                + (" (install onnxruntime-gpu and a CUDA driver for cuda)" if provider in ("cuda", "tensorrt") else ""))
        else:
            candidates = [provider]
        so = ort.SessionOptions()
        # an explicit count: with 0, ORT picks its own count and pins its threads to cores
        so.intra_op_num_threads = opts.threads or usable_cores()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts.graph_opt]
        so.enable_cpu_mem_arena = opts.arena
        if not opts.spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        errors = []
        for name in candidates:
            try:
                sess = ort.InferenceSession(str(path), so, providers=[ORT_PROVIDERS[name]])
            except Exception as exc:  # ORT raises plain RuntimeError/Fail subclasses
                errors.append(f"{name}: {str(exc).splitlines()[0][:200]}")
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
        if provider == "auto":
            self.auto_note = f"provider auto -> {self.provider}" + (f" ({'; '.join(errors)})" if errors else "")
        self.input_name = self.sess.get_inputs()[0].name
        self.output_name = self.sess.get_outputs()[0].name
        self._check_signature(path, manifest)
        self.use_binding = self.provider in ("cuda", "tensorrt")

    def _check_signature(self, path: Path, manifest: Manifest) -> None:
        inp, out = self.sess.get_inputs()[0], self.sess.get_outputs()[0]
        if len(inp.shape) != 4 or len(out.shape) != 4:
            raise SegrtError(f"{path}: expected 4-D NCHW input and output, got {inp.shape} -> {out.shape}; "
                             "not a segmentation model")
        if isinstance(inp.shape[1], int) and inp.shape[1] != manifest.channels:
            raise SegrtError(f"{path}: model takes {inp.shape[1]} input channels but its metadata says "
                             f"{manifest.channels}")

    def run(self, x: np.ndarray) -> np.ndarray:
        if not self.use_binding:
            return self.sess.run([self.output_name], {self.input_name: x})[0]
        # GPU: bind the input once on the device and let ORT allocate the output there
        binding = self.sess.io_binding()
        binding.bind_ortvalue_input(self.input_name, self.ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        binding.bind_output(self.output_name, "cuda", 0)
        self.sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class _TorchBackend:
    def __init__(self, path: Path, kind: str, provider: str, opts: SessionOptions):
        try:
            import torch
        except ImportError:
            raise SegrtError(f"{path}: running {kind} artifacts needs torch (pip install 'segrt[torch]'); "
                             "the .onnx artifact runs without it") from None
        self.torch = torch
        self.auto_note = None
        if provider == "auto":
            self.provider = "cuda" if torch.cuda.is_available() else "cpu"
            self.auto_note = f"provider auto -> {self.provider}"
        elif provider in ("cpu", "cuda"):
            if provider == "cuda" and not torch.cuda.is_available():
                raise ProviderError(f"provider 'cuda' requested for {path.name} but torch sees no CUDA device; "
                                    "available: cpu")
            self.provider = provider
        else:
            raise ProviderError(f"provider {provider!r} is for ONNX artifacts; {kind} runs on cpu or cuda")
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = torch.device(self.provider)
        import warnings

        with warnings.catch_warnings():  # torch.jit deprecation: segrt export says it once
            warnings.simplefilter("ignore")
            if kind == "torchscript":
                self.module = torch.jit.load(str(path), map_location=self.device).eval()
            else:
                self.module = torch.export.load(str(path)).module().to(self.device)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()
