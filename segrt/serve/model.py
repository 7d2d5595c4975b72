"""One served export: its Session (the variant predict would pick) and predict's own stages, run off
the event loop. Decoding and mask-making use predict's Predictor (segrt.predict.pipeline) on threads;
inference runs on one engine thread that keeps up to the runtime's ``in_flight`` batches going, as
predict's stream does. Torch-free."""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segrt.cpuinfo import usable_cores
from segrt.errors import SegrtError
from segrt.imaging import decode, masks, prepare
from segrt.predict.options import PredictOptions
from segrt.predict.pipeline import Predictor
from segrt.runtime.session import Session

__all__ = ["ServedModel", "Decoded", "IMAGE_INPUT"]

IMAGE_INPUT = "image_bytes"  # the encoded-image input (the tensor input keeps the export's own name)
_STOP = object()


@dataclass
class Decoded:
    """One request item ready for the model: its input (CHW) and how it maps back to the image."""

    x: np.ndarray
    geometry: prepare.Geometry | None = None  # None: a tensor the client prepared (logits go back as they are)
    notes: list[str] = field(default_factory=list)


class ServedModel:
    """An export opened for serving. ``decode(name, data)`` and ``mask(logits, geometry)`` are predict's
    stages; ``run(batch)`` runs an NCHW batch on the engine thread and returns its logits."""

    def __init__(self, model: str | Path, *, provider: str = "auto", session_options=None, max_pixels: int | None =
                 decode.DEFAULT_MAX_PIXELS, full_decode: bool = False, name: str | None = None):
        from segrt.runtime.backends.base import SessionOptions

        self.session = Session(model, provider=provider, options=session_options or SessionOptions(
            spin=False, throughput=True, gate_here=True))
        self.manifest = self.session.manifest
        self.name = name or self.manifest.name or Path(model).stem
        self.opts = PredictOptions(max_pixels=max_pixels, full_decode=full_decode, progress=False)
        self.predictor = Predictor(self.session, self.opts, log=lambda msg: None)
        cores = usable_cores()
        self.decoders = ThreadPoolExecutor(max(1, cores // 2), f"serve-decode-{self.name}")
        self.post = ThreadPoolExecutor(max(1, cores // 2), f"serve-post-{self.name}")
        self._jobs: queue.Queue = queue.Queue()
        self._engine = threading.Thread(target=self._engine_loop, name=f"serve-engine-{self.name}", daemon=True)
        self._engine.start()

    # -- predict's stages ----------------------------------------------------------------
    def decode(self, name: str, data: bytes) -> Decoded:
        """Encoded bytes (JPEG, PNG, TIFF, BMP, ...) -> the model input, as predict reads a file. Raises
        ImageError (one line naming ``name``)."""
        notes: list[str] = []
        x, geometry = self.predictor.model_input(Path(name), notes, data=data)
        return Decoded(x, geometry, notes)

    def mask(self, logits: np.ndarray, geometry: prepare.Geometry) -> np.ndarray:
        """CHW logits -> HW uint8 class ids at the image's own size (predict's masks.to_mask)."""
        return masks.to_mask(logits, geometry)

    def tensor_item(self, x: np.ndarray) -> Decoded:
        """A client's own CHW float32 normalized tensor (the Triton repository's input) as an item."""
        c, fixed = self.manifest.channels, self.manifest.fixed_size
        if x.ndim != 3 or x.shape[0] != c:
            raise SegrtError(f"input {self.manifest.input_name!r}: shape [N, {c}, H, W] expected, got "
                             f"[N, {', '.join(map(str, x.shape))}]")
        if fixed and list(x.shape[1:]) != list(fixed):
            raise SegrtError(f"input {self.manifest.input_name!r}: this model takes {fixed[0]}x{fixed[1]}, got "
                             f"{x.shape[1]}x{x.shape[2]}")
        return Decoded(np.ascontiguousarray(x, np.float32))

    @property
    def variant(self) -> str:
        return self.session.describe()

    # -- inference on the engine thread --------------------------------------------------
    def run(self, batch: np.ndarray) -> asyncio.Future:
        """Queue an NCHW batch for the engine; an asyncio Future of its NCHW float32 logits."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._jobs.put((batch, fut, loop))
        return fut

    def _engine_loop(self) -> None:
        """Submit batches as they come, up to the runtime's in_flight at once; hand back results in order."""
        inflight: collections.deque = collections.deque()
        stopping = False
        while not (stopping and not inflight):
            job = None
            if not stopping:
                try:
                    job = self._jobs.get(block=not inflight)
                except queue.Empty:
                    pass
            if job is _STOP:
                stopping = True
                continue
            if job is not None:
                batch, fut, loop = job
                try:
                    inflight.append((self.session.submit(batch), fut, loop))
                except Exception as exc:  # noqa: BLE001 - the engine's failure goes to this batch's requests
                    loop.call_soon_threadsafe(_settle, fut, None, exc)
            while inflight and inflight[0][0].done():
                _deliver(inflight.popleft())
            if inflight and (job is None or len(inflight) >= self.session.in_flight):
                _deliver(inflight.popleft())  # waits for the oldest batch

    def close(self) -> None:
        """Finish what the engine holds, then stop its threads."""
        self._jobs.put(_STOP)
        self._engine.join()
        self.decoders.shutdown()
        self.post.shutdown()


def _deliver(item) -> None:
    pending, fut, loop = item
    try:
        value, exc = pending.result(), None
    except Exception as error:  # noqa: BLE001
        value, exc = None, error
    loop.call_soon_threadsafe(_settle, fut, value, exc)


def _settle(fut: asyncio.Future, value, exc) -> None:
    if fut.done():  # the request went away (client gone, server stopping)
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
