"""Session: choose an exported artifact, open it through its backend and run NCHW float32 batches.

The backend comes from the artifact's kind (segrt/runtime/backends/: ONNX Runtime, OpenVINO, torch), each
imported only when used. Providers are resolved strictly (never a silent CPU fallback); ``auto``
takes CUDA where ONNX Runtime has it, else the fastest CPU variant that passed its gate (segrt.runtime.select).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segrt.cpuinfo import module_available
from segrt.errors import ProviderError, SegrtError
from segrt.manifest import Artifact, Manifest
from segrt.runtime.backends.base import PROVIDERS, Backend, SessionOptions, finished, open_backend
from segrt.runtime.model_info import load_model_info

__all__ = ["Session", "torch_available"]


class Session:
    """Runs one artifact. ``run(x)``: NCHW float32 normalized (or, for a uint8-input variant, uint8
    pixels) -> NCHW float32 logits.

    Which artifact: ``artifact`` (a manifest name or file); else the one of ``kind`` and ``precision``
    (default fp32; kind openvino for provider openvino when the export has it, else onnx); with
    provider ``auto`` and no kind: CUDA if ONNX Runtime has it, else the fastest gated CPU variant
    (of ``precision`` when given).
    """

    def __init__(self, model: str | os.PathLike, *, provider: str = "auto", precision: str | None = None,
                 kind: str | None = None, artifact: str | None = None, options: SessionOptions | None = None,
                 **overrides):
        self.manifest, self.folder = load_model_info(model, **overrides)
        self.options = options or SessionOptions()
        if provider not in (*PROVIDERS, "auto"):
            raise ProviderError(f"unknown provider {provider!r}; choose from {', '.join([*PROVIDERS, 'auto'])}")
        path, note = Path(model), None
        if artifact is None and self.folder is not None and path.is_file():  # a file inside an export
            artifact = path.name
        if artifact:
            self.artifact = self.manifest.find(artifact)
            if self.artifact is None:
                raise SegrtError(f"{model}: the manifest lists no artifact {artifact!r}")
        elif self.folder is None:  # a single file
            self.artifact = self.manifest.artifacts[0]
            if precision and precision != self.artifact.precision:
                raise ProviderError(f"{model}: an {self.artifact.precision} graph, not {precision}; a bare file runs "
                                    "as it is: segrt import it, then segrt quantize makes a gated INT8 variant")
            assumed = self.manifest.source.get("assumed")
            note = f"{model} carries no segrt metadata: assumed {'; '.join(assumed)}" if assumed else None
        elif provider == "auto" and kind is None:
            self.artifact, provider, note = _auto_choice(self.manifest, precision, self.folder, self.options)
        elif provider == "openvino" and kind is None and precision is None and _gated_ir(self.manifest, self.folder):
            from segrt.runtime.select import \
                choose_cpu_variant  # the fastest gated OpenVINO variant (INT8 where it passed)

            self.artifact, note = choose_cpu_variant(self.manifest, None, self.folder, ("openvino",), "openvino",
                                                     check=self.options.gate_here is not False,
                                                     measure=self.options.measure)
        else:
            self.artifact = self.manifest.artifact(kind or _default_kind(self.manifest, provider, precision),
                                                   precision or "fp32")
        if self.folder and (self.options.gate_here or (self.options.gate_here is None and not artifact and not note)):
            note = "; ".join(filter(None, [note, _held_here(self.manifest, self.folder, self.artifact, self.options)]))
        self.path = (self.folder / self.artifact.file) if self.folder else path
        if self.folder:  # the file it runs must be the one the export verified (sha256, once per open)
            runs, moved = self.manifest.runs_from(self.folder, self.artifact)
            self.manifest.verify(self.folder, [runs.name])
            self.path = self.folder / runs.file
            note = "; ".join(filter(None, [note, moved]))
        self.kind = self.artifact.kind
        self._backend = open_backend(self.path, self.artifact, provider, self.options, self.manifest)
        self.provider = self._backend.provider
        # NCHW pixels, normalized in the graph (segrt.quantize.uint8): as the manifest says, or as a bare file's input is
        self.takes_uint8 = self.artifact.extra.get("input_dtype") == "uint8" or self._backend.input_dtype == "uint8"
        self.binary = self.manifest.num_classes == 1  # one sigmoid logit: class 1 where it is > 0
        if self.binary:
            name = self.manifest.classes[0]
            self.manifest.classes = ["background", name]
            note = "; ".join(filter(None, [note, f"{model}: one output channel, read as a sigmoid: {name!r} where "
                                                 "it is above 0.5, else background"]))
        self.auto_note = "; ".join(n for n in (note, self._backend.note) if n) or None
        self.in_flight = self._backend.in_flight
        self.open_s = self._backend.open_s

    def feed(self, x: np.ndarray) -> np.ndarray:
        """What the artifact takes: float32 normalized, or for a uint8-input variant (segrt.quantize.uint8)
        the pixels (a float input is turned back into them)."""
        if not self.takes_uint8:
            return np.ascontiguousarray(x, dtype=np.float32)
        if x.dtype != np.uint8:
            from segrt.imaging.prepare import to_uint8

            x = to_uint8(x, self.manifest.mean, self.manifest.std)
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = self.feed(x)
        n = self._backend.fixed_batch
        if n is None or len(x) == n:
            out = self._backend.run(x)
        else:  # a model with a fixed batch size: run it chunk by chunk, the last one padded with zeros
            out = np.concatenate([
                self._backend.run(np.concatenate([c, np.zeros((n - len(c), *c.shape[1:]), c.dtype)]))[:len(c)]
                for c in (x[i:i + n] for i in range(0, len(x), n))])
        # one sigmoid logit z -> two logits (0, z): the argmax is class 1 exactly where sigmoid(z) > 0.5
        return np.concatenate([np.zeros_like(out), out], axis=1) if self.binary else out

    def run_masks(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 -> NHW uint8 classes; on a GPU the argmax runs there and only masks return."""
        x = self.feed(x)
        if self.binary or (self._backend.fixed_batch is not None and len(x) != self._backend.fixed_batch):
            return Backend.run_masks(self, x)  # through run()'s chunking (Backend's host argmax of self.run)
        return self._backend.run_masks(x)

    def submit(self, x: np.ndarray):
        """Start ``run(x)``; returns a Future of the logits. Up to ``in_flight`` may be outstanding."""
        if self._backend.fixed_batch is not None or self.binary:
            return finished(self.run, x)  # runs at once, through run()'s chunking (and the sigmoid's two logits)
        return self._backend.submit(self.feed(x))

    def submit_masks(self, x: np.ndarray):
        """run_masks(x) as a Future (at once)."""
        return finished(self.run_masks, x)

    def describe(self) -> str:
        return f"{self.artifact.name} ({self.kind} {self.artifact.precision}) on {self._backend.describe()}"


def _gated_ir(manifest: Manifest, folder: Path) -> bool:
    from segrt.runtime.select import candidates

    return bool(candidates(manifest, folder=folder, kinds=("openvino",))[0])


def _default_kind(manifest: Manifest, provider: str, precision: str | None) -> str:
    """provider openvino: its IR when the export has one (an fp32 ONNX file runs on it too)."""
    if provider == "openvino" and (precision not in (None, "fp32") or
                                   any(a.kind == "openvino" for a in manifest.artifacts)):
        return "openvino"
    return "onnx"


def _held_here(manifest: Manifest, folder: Path, art: Artifact, options: SessionOptions) -> str | None:
    """A variant segrt did not pick itself, re-checked on this CPU (runtime.here): refused when it
    fails its gate here, unless ``options.allow_below_gate``. -> a note, or None."""
    from segrt.runtime.here import check_here

    verdict = check_here(folder, manifest, art)
    if verdict is None:
        return None
    if not verdict.passed and not options.allow_below_gate:
        raise SegrtError(f"{verdict.line()}: refused; use --precision fp32 (or --provider auto, which picks a variant "
                         "that holds its gate here), or --allow-below-gate to run it anyway")
    said = "" if verdict.passed else ": running it anyway (--allow-below-gate)"
    return None if verdict.cached and verdict.passed else verdict.line() + said


def _auto_choice(manifest: Manifest, precision: str | None, folder: Path | None,
                 options: SessionOptions) -> tuple[Artifact, str, str | None]:
    """-> (artifact, provider, note): the ONNX model where ONNX Runtime has CUDA (its backend says
    whether CUDA worked), else segrt.runtime.select's pick among the gated CPU variants."""
    from segrt.runtime.backends.ort import available_ort_providers
    from segrt.runtime.select import choose_cpu_variant

    if "cuda" in available_ort_providers():
        return manifest.artifact("onnx", precision or "fp32"), "auto", None
    art, why = choose_cpu_variant(manifest, precision, folder, check=options.gate_here is not False,
                                  measure=options.measure)
    return art, "openvino" if art.kind == "openvino" else "cpu", why


def torch_available() -> bool:
    """Is torch installed (and not blocked)? Checked without importing it."""
    return module_available("torch")
