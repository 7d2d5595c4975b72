"""The streaming pipeline behind `segrt predict` (no torch): decode in a thread pool with a bounded
window -> batch -> Session.submit (several batches in flight where the runtime has streams) ->
outputs in writer threads, in input order. An image is one model input, or its tiles one by one
(--tile); at native size on a GPU the model hands back masks instead of logits. Per-file problems
are collected (one line each) and the rest of the batch completes; Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import collections
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segrt.cpuinfo import usable_cores
from segrt.errors import ImageError
from segrt.fsutil import atomic_path, write_bytes_atomic
from segrt.imaging import decode, masks, prepare
from segrt.imaging.stacks import StackWriter, page_paths
from segrt.predict.accounting import OFF, Ledger
from segrt.predict.outputs import mask_files, output_paths, outputs_exist, value_table
from segrt.predict.summary import Stats
from segrt.progress import progress
from segrt.runtime.memory import batch_bytes, check_tiled_memory, gb, memory_budget
from segrt.runtime.session import Session
from segrt.runtime.tiling import TiledImage

__all__ = ["Predictor"]

if TYPE_CHECKING:
    from segrt.predict.options import PredictOptions


@dataclass
class _Job:
    path: Path
    rel: Path  # output path stem relative to out, e.g. sub/Abyssinian_1
    x: np.ndarray | None = None
    geometry: prepare.Geometry | None = None
    decode_s: float = 0.0
    tiler: TiledImage | None = None  # tiled mode: the image's tiles and its band of logits
    notes: list[str] = field(default_factory=list)  # what decoding had to say (e.g. the page it read)
    page: int | None = None  # a page of a stack (segrt.imaging.stacks)
    stack: StackWriter | None = None  # the stack's label TIFF, shared by its pages


class Predictor:
    """Holds an open Session; ``run(inputs)`` streams images through it."""

    def __init__(self, session: Session, opts: PredictOptions, log=None, stacks: dict[Path, int] | None = None,
                 ledger: Ledger | None = None):
        self.session, self.opts, self.stacks, self.ledger = session, opts, stacks or {}, ledger or OFF
        self.clock, self.manifest = self.ledger.stage, session.manifest  # clock: CPU time by stage (accounting)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.said: set[str] = set()  # kinds of note already logged
        self.values = value_table(self.manifest) if opts.write_values else None  # class id -> label value
        self.skip_class = 0 if self.manifest.classes and self.manifest.classes[0].lower() in ("background", "bg") else None
        # at native size on a GPU, the argmax runs there and only uint8 masks come back; resized
        # masks need the logits (they are resized on the host, in the writer threads)
        gpu = session.provider in ("cuda", "tensorrt")
        self.masks_from_model = (opts.device_masks if opts.device_masks is not None else gpu) and not opts.tile \
            and (opts.native or not self.manifest.input_size) and not opts.save_probs

    # -- stages ----------------------------------------------------------------------------
    def decode(self, job: _Job) -> _Job:
        t0 = time.perf_counter()
        if self.opts.tile:  # uint8 at full size; tiles are cut and normalized one at a time
            fits = lambda h, w: check_tiled_memory(self.manifest, job.path, h, w, self.opts.tile.tile)  # noqa: E731
            image = decode.decode_image(job.path, self.manifest.channels, self.opts.max_pixels, check=fits,
                                            notes=job.notes, page=job.page)[0]
            job.tiler = TiledImage(image, self.opts.tile, self.manifest.mean, self.manifest.std, self.manifest.size_multiple,
                                   self.manifest.num_classes)
        else:
            job.x, job.geometry = self.model_input(job.path, job.notes, job.page)
        job.decode_s = time.perf_counter() - t0
        return job

    def model_input(self, path: Path, notes: list[str] | None = None, page: int | None = None,
                    data: bytes | None = None) -> tuple[np.ndarray, prepare.Geometry]:
        """A file (or its encoded ``data``, as segrt serve gets it) -> (CHW model input: float32 normalized, or
        uint8 for a uint8-input variant; its Geometry). Accounted, a file is read apart from its decoding."""
        if data is None and page is None and self.ledger.active:
            with self.clock("read"):
                data = decode.read_file(Path(path))
        return decode.read_model_input(path, self.manifest, self.opts.native, self.opts.max_pixels, notes, page,
                                       pixels=self.session.takes_uint8, decode=self.opts.decode, data=data,
                                       clock=self.clock)

    def write(self, job: _Job, logits: np.ndarray) -> float:
        with self.clock("to_mask"):
            mask = masks.to_mask(logits, job.geometry)
        return self.write_mask(job, mask, logits)

    def write_mask(self, job: _Job, mask: np.ndarray, logits: np.ndarray | None = None) -> float:
        """Every output of one image from its HW uint8 mask (and, for --save-probs, its logits); a
        page of a stack goes into its label TIFF (and, with --per-page, its own colour/overlay)."""
        t0 = time.perf_counter()
        paths = output_paths(self.opts.out, job.rel, self.opts)
        if job.stack is not None:
            job.stack.add(job.page, mask)
            paths = page_paths(self.opts.out / job.rel, job.page, self.opts) if self.opts.per_page else {}
        if not paths:
            return time.perf_counter() - t0
        paths[next(iter(paths))].parent.mkdir(parents=True, exist_ok=True)
        with self.clock("encode"):
            files = mask_files(mask, paths, self.manifest.colors)
            if self.values is not None and "mask" in paths:
                files[paths["mask"]] = masks.encode_mask_pngs(self.values[mask])[0]
        with self.clock("write"):
            for path, data in files.items():
                write_bytes_atomic(path, data)
        if "overlay" in paths:  # full-resolution photo, decoded again only for this
            with self.clock("overlay"):
                image = decode.load_image(job.path, 3, self.opts.max_pixels, job.page)
                write_bytes_atomic(paths["overlay"], masks.overlay_jpeg(image, mask, self.skip_class,
                                                                        self.manifest.colors))
        if "probs" in paths:
            with atomic_path(paths["probs"], opened=True) as f:
                np.save(f, masks.softmax(masks.restore_logits(logits, job.geometry)).astype(np.float16))
        return time.perf_counter() - t0

    def run(self, pairs: list[tuple[Path, Path]], stats: Stats | None = None) -> Stats:
        """Decode (thread pool, bounded window) -> batch -> Session.submit (up to its in_flight
        batches at once) -> write (writer threads), in input order. Counts go into ``stats``."""
        return _Run(self, pairs, stats or Stats()).stream()


class _Run:
    """One run's state, all of it made here: the counts, the jobs, the progress bar, the batch being
    filled, the batches in flight, the writes, the thread pools and the stacks still open."""

    def __init__(self, predictor: Predictor, pairs: list[tuple[Path, Path]], stats: Stats):
        self.p, self.opts, self.stats = predictor, predictor.opts, stats
        self.open_stacks: list[StackWriter] = []
        self.jobs = self._jobs(pairs)
        # tiled: the bar counts tiles (known once each image is decoded), and at most two images are
        # decoded at a time (one being tiled, the next): a decoded image can be gigabytes
        tiled = self.opts.tile is not None
        self.bar = progress(total=0 if tiled else len(self.jobs), desc="predict", unit="tile" if tiled else "img",
                            enabled=self.opts.progress)
        workers = self.opts.workers or max(1, usable_cores() // 2)
        self.window = 2 if tiled else max(2 * self.opts.batch_size, workers * 2)  # bounded memory
        self.batch: list[tuple[_Job, np.ndarray]] = []  # (image, one model input)
        self.inflight: collections.deque[tuple[list[_Job], Future]] = collections.deque()
        self.writes: collections.deque[tuple[_Job, Future]] = collections.deque()
        self.decoders = ThreadPoolExecutor(workers, "segrt-decode")
        self.writers = ThreadPoolExecutor(self.opts.writers or max(1, usable_cores() // 4), "segrt-write")

    def stream(self) -> Stats:
        jobs, opts = self.jobs, self.opts
        self.p.ledger.start()
        try:
            pending: collections.deque[tuple[_Job, Future]] = collections.deque()
            while jobs or pending:
                while jobs and len(pending) < self.window:
                    job = jobs.popleft()
                    pending.append((job, self.decoders.submit(self.p.decode, job)))
                job, fut = pending.popleft()
                if not self._decoded(job, fut):
                    continue
                for x in self._model_inputs(job):
                    if self.batch and x.shape != self.batch[0][1].shape:
                        self._submit()  # native resolution, tiles of small images: same sizes only
                    self.batch.append((job, x))
                    if len(self.batch) == opts.batch_size:
                        self._submit()
            self._submit()
            self._collect(keep=0)
            self._drain_writes(limit=0)
            if self.p.ledger.active:  # before the pools end: their threads' counters go with them
                self.stats.cpu = self.p.ledger.finish(self.stats.ok)
        except KeyboardInterrupt:  # stop: what is written stays written, nothing half-written
            self.stats.interrupted = True
            self.decoders.shutdown(cancel_futures=True)
            self.writers.shutdown(cancel_futures=True)  # running writes finish (atomically)
            self._drain_writes(limit=0, finished_only=True)
        finally:
            self.decoders.shutdown()
            self.writers.shutdown()
            self.bar.close()
            for stack in self.open_stacks:  # interrupted: no half-written label TIFF stays
                if stack.next < stack.pages:
                    stack.abort()
        return self.stats

    def _jobs(self, pairs: list[tuple[Path, Path]]) -> collections.deque[_Job]:
        """One job per image, one per page of a stack (its pages share one StackWriter)."""
        jobs = collections.deque()
        for path, rel in pairs:
            pages = self.p.stacks.get(path, 1)
            if self.opts.skip_existing and outputs_exist(self.opts.out, rel, self.opts, pages):
                self.stats.skipped += 1
            elif pages == 1:
                jobs.append(_Job(path, rel))
            else:
                stack = StackWriter(output_paths(self.opts.out, rel, self.opts, pages)["mask"], pages)
                self.open_stacks.append(stack)
                jobs.extend(_Job(path, rel, page=i, stack=stack) for i in range(pages))
        return jobs

    def _done(self, job: _Job) -> bool:
        """Did this write finish a file? An image, or the last page of a stack that did not fail."""
        return job.stack is None or (job.page == job.stack.pages - 1 and not job.stack.failed)

    def _fail(self, job: _Job, reason: str) -> None:
        if job.stack is not None:  # a page failed: the stack's label TIFF is dropped
            reason = f"page {job.page} of {job.stack.pages}: {reason}"
            job.stack.abort()
        self.stats.failures.append({"file": str(job.path), "reason": reason})
        self.p.log(f"error: {reason}")
        if not self.opts.tile:
            self.bar.update(1)

    def _model_inputs(self, job: _Job):
        """The CHW float32 inputs of one image: the image itself, or its tiles one by one."""
        if job.tiler is None:
            x, job.x = job.x, None
            yield x
            return
        self.bar.total += job.tiler.count
        self.bar.refresh()
        yield from job.tiler.tiles()

    def _decoded(self, job: _Job, fut: Future) -> bool:
        t0 = time.perf_counter()
        try:
            fut.result()
        except ImageError as exc:
            self._fail(job, str(exc))
            return False
        except Exception as exc:  # an unexpected decoder failure still names the file
            self._fail(job, f"{job.path}: {type(exc).__name__}: {exc}")
            return False
        finally:
            self.stats.wait_decode_s += time.perf_counter() - t0
        self.stats.decode_s += job.decode_s
        for note in job.notes:  # each kind said once (summary.json keeps every one)
            self.stats.notes.append(note)
            kind = note.split(": ", 1)[-1]
            if kind not in self.p.said:
                self.p.said.add(kind)
                self.p.log(f"note: {note}" + (" (said once; summary.json lists every file)" if
                                            "converted" in note else ""))
        return True

    def _submit(self) -> None:
        """Run the collected batch; at native resolution a batch too large for the memory available
        is split, and an image too large on its own fails with the reason."""
        items, self.batch = self.batch, []
        if not items:
            return
        h, w = items[0][1].shape[1:]
        budget, one = memory_budget(), batch_bytes(self.p.manifest, 1, h, w)
        fit = len(items) if budget is None else budget // one
        if fit == 0:  # only at native size: tiles and resized inputs were checked up front
            for job, _ in items:
                self._fail(job, f"{job.path}: needs ~{gb(one)} at its native {w}x{h}, {gb(budget)} available; "
                                "use --tile auto, or drop --native to resize it to the model's size")
            return
        for i in range(0, len(items), fit):
            part = items[i:i + fit]
            with self.p.clock("batch"):
                x = np.stack([item[1] for item in part])
            submit = self.p.session.submit_masks if self.p.masks_from_model else self.p.session.submit
            with self.p.clock("inference"):  # ONNX Runtime computes in this thread too
                self.inflight.append(([job for job, _ in part], submit(x)))
            self._collect(keep=self.p.session.in_flight - 1)

    def _collect(self, keep: int) -> None:
        """Hand finished batches (in order) to the writer; wait while more than ``keep`` are out."""
        while self.inflight and (len(self.inflight) > keep or self.inflight[0][1].done()):
            jobs, fut = self.inflight.popleft()
            t0 = time.perf_counter()
            with self.p.clock("inference"):
                logits = fut.result()
            self.stats.wait_inference_s += time.perf_counter() - t0
            self.stats.spans.append(fut.span)
            for j, out in zip(jobs, logits):
                self._deliver(j, out)
        self._drain_writes(limit=2 * self.opts.batch_size)

    def _deliver(self, job: _Job, logits: np.ndarray) -> None:
        """One model output: write the image's outputs, or add a tile to its image's band (and
        write the mask once the last tile is in)."""
        if self.p.masks_from_model:  # a padded mask: crop it to the image
            h, w = job.geometry.original_hw
            self.writes.append((job, self.writers.submit(self.p.write_mask, job, logits[:h, :w])))
            return
        if job.tiler is None:
            self.writes.append((job, self.writers.submit(self.p.write, job, logits)))
            return
        job.tiler.add(logits)
        self.bar.update(1)
        if job.tiler.done:
            mask, job.tiler = job.tiler.mask, None
            self.writes.append((job, self.writers.submit(self.p.write_mask, job, mask)))

    def _drain_writes(self, limit: int, finished_only: bool = False) -> None:
        while len(self.writes) > limit:
            job, fut = self.writes.popleft()
            if finished_only and (fut.cancelled() or not fut.done()):
                continue
            try:
                self.stats.write_s += fut.result()
                self.stats.ok += self._done(job)
            except OSError as exc:
                self._fail(job, f"{job.path}: cannot write outputs ({exc.strerror or exc})")
                continue
            except Exception as exc:  # e.g. the overlay's re-decode: this image fails, not the run
                self._fail(job, str(exc) if isinstance(exc, ImageError) else f"{job.path}: {type(exc).__name__}: {exc}")
                continue
            if not self.opts.tile:
                self.bar.update(1)
