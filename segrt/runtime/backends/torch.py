"""torch: TorchScript (.ts) and torch.export (.pt2) artifacts on cpu or cuda (needs segrt[torch])."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from segrt.errors import ProviderError, SegrtError
from segrt.runtime.backends.base import Backend, SessionOptions, run_failed

__all__ = ["static_batch", "open_artifact"]


class _TorchBackend(Backend):
    def __init__(self, path: Path, kind: str, provider: str, opts: SessionOptions):
        try:
            import torch
        except ImportError:
            raise SegrtError(f"{path}: running {kind} artifacts needs torch (pip install 'segrt[torch]'); "
                             "the .onnx artifact runs without it") from None
        self.torch, self.path = torch, path
        if provider == "auto":
            self.provider = "cuda" if torch.cuda.is_available() else "cpu"
            self.note = f"provider auto -> {self.provider}"
        elif provider in ("cpu", "cuda"):
            if provider == "cuda" and not torch.cuda.is_available():
                raise ProviderError(f"provider 'cuda' requested for {path.name} but torch sees no CUDA device; "
                                    "available: cpu")
            self.provider = provider
        else:
            raise ProviderError(f"provider {provider!r} is for ONNX/OpenVINO artifacts; {kind} runs on cpu or cuda")
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.device = torch.device(f"cuda:{opts.device}" if self.provider == "cuda" else "cpu")
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # torch.jit deprecation: segrt export says it once
            warnings.simplefilter("ignore")
            if kind == "torchscript":
                self.module = torch.jit.load(str(path), map_location=self.device).eval()
            else:
                program = torch.export.load(str(path))
                self.module = program.module().to(self.device)
                self.fixed_batch = static_batch(program)
        self.open_s = time.perf_counter() - t0

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            with self.torch.inference_mode():
                out = self.module(self.torch.from_numpy(x).to(self.device))
        except Exception as exc:  # e.g. a .pt2 guard on an input shape it was not exported for
            raise run_failed(self.path, "torch", x, exc) from None
        return out.float().cpu().numpy()

    def describe(self) -> str:
        return f"torch {self.torch.__version__} on {self.provider}"


def static_batch(program) -> int | None:
    """The batch size a torch.export program was exported for, where it is not dynamic (Session chunks for it)."""
    node = next((n for n in program.graph.nodes if n.op == "placeholder"
                 and n.name in program.graph_signature.user_inputs), None)
    batch = node.meta["val"].shape[0] if node is not None and "val" in node.meta else None
    return batch if isinstance(batch, int) else None


def open_artifact(path: Path, artifact, provider: str, opts: SessionOptions, manifest) -> _TorchBackend:
    return _TorchBackend(path, artifact.kind, provider, opts)
