"""`segrt predict`: stream images through a Session and write masks (no torch).

list inputs -> decode + preprocess in a thread pool (bounded window) -> batch -> Session.run
-> restore to original size + encode + atomic write in a writer pool -> summary.json.
Per-file problems are collected (one line each); the rest of the batch completes.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from segrt import masks
from segrt import processing
from segrt.errors import ImageError, SegrtError
from segrt.fsutil import atomic_path, write_bytes_atomic
from segrt.inputs import check_no_overwrite, gather_inputs, output_paths, select_shard
from segrt.memory import batch_bytes, check_batch_memory, check_tiled_memory, gb, memory_budget
from segrt.progress import progress
from segrt.session import Session, usable_cores
from segrt.tiling import TiledImage, TileSpec, tile_spec

SUMMARY = "summary.json"
@dataclass
class PredictOptions:
    out: Path = Path("predictions")
    batch_size: int = 4
    native: bool = False  # pad to the size multiple at native resolution instead of resizing
    color: bool = True
    overlay: bool = False
    save_probs: bool = False
    skip_existing: bool = False
    workers: int = 0  # decode threads; 0: half the cores (more only steal cores from inference)
    max_pixels: int | None = processing.DEFAULT_MAX_PIXELS
    progress: bool = True
    tile: TileSpec | None = None  # sliding-window inference at native resolution (segrt.tiling)
    shard: tuple[int, int] | None = None  # (I, N): only the inputs whose stable hash falls in shard I
    writers: int = 0  # output threads (mask resize, PNG, files); 0: a quarter of the cores, at least 1
    device_masks: bool | None = None  # native size: argmax where the model runs (None: on cuda/tensorrt)


@dataclass
class Job:
    path: Path
    rel: Path  # output path stem relative to out, e.g. sub/Abyssinian_1
    x: np.ndarray | None = None
    geometry: processing.Geometry | None = None
    decode_s: float = 0.0
    tiler: TiledImage | None = None  # tiled mode: the image's tiles and its band of logits


@dataclass
class Stats:
    ok: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    decode_s: float = 0.0  # summed over decode threads
    write_s: float = 0.0  # the writer thread
    wait_decode_s: float = 0.0  # the main thread, waiting for a decoded image
    wait_inference_s: float = 0.0  # the main thread, waiting for logits
    spans: list[tuple[float, float]] = field(default_factory=list)  # (submitted, done) per batch
    interrupted: bool = False  # Ctrl-C: the run stopped early

    def inference_busy_s(self) -> float:
        """Time during which at least one batch was being inferred (union of the spans)."""
        busy, end = 0.0, float("-inf")
        for start, stop in sorted(self.spans):
            busy += max(0.0, stop - max(start, end))
            end = max(end, stop)
        return busy


class Predictor:
    """Holds an open Session; ``run(inputs)`` streams images through it."""

    def __init__(self, session: Session, opts: PredictOptions, log=None):
        self.session, self.opts = session, opts
        self.manifest = session.manifest
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.skip_class = 0 if self.manifest.classes and self.manifest.classes[0].lower() in ("background", "bg") else None
        # at native size on a GPU, the argmax runs there and only uint8 masks come back; resized
        # masks need the logits (they are resized on the host, in the writer threads)
        gpu = session.provider in ("cuda", "tensorrt")
        self.masks_from_model = (opts.device_masks if opts.device_masks is not None else gpu) and not opts.tile \
            and (opts.native or not self.manifest.input_size) and not opts.save_probs

    # -- stages ----------------------------------------------------------------------------
    def decode(self, job: Job) -> Job:
        t0 = time.perf_counter()
        if self.opts.tile:  # uint8 at full size; tiles are cut and normalized one at a time
            fits = lambda h, w: check_tiled_memory(self.manifest, job.path, h, w, self.opts.tile.tile)  # noqa: E731
            image = processing.decode_image(job.path, self.manifest.channels, self.opts.max_pixels, check=fits)[0]
            job.tiler = TiledImage(image, self.opts.tile, self.manifest.mean, self.manifest.std, self.manifest.size_multiple,
                                   self.manifest.num_classes)
        else:
            job.x, job.geometry = processing.read_model_input(job.path, self.manifest, self.opts.native, self.opts.max_pixels)
        job.decode_s = time.perf_counter() - t0
        return job

    def write(self, job: Job, logits: np.ndarray) -> float:
        return self.write_mask(job, masks.to_mask(logits, job.geometry), logits)

    def write_mask(self, job: Job, mask: np.ndarray, logits: np.ndarray | None = None) -> float:
        """Every output of one image from its HW uint8 mask (and, for --save-probs, its logits)."""
        t0 = time.perf_counter()
        paths = output_paths(self.opts.out, job.rel, self.opts)
        paths["mask"].parent.mkdir(parents=True, exist_ok=True)
        grey_png, color_png = masks.encode_mask_pngs(mask)
        write_bytes_atomic(paths["mask"], grey_png)
        if "color" in paths:
            write_bytes_atomic(paths["color"], color_png)
        if "overlay" in paths:  # full-resolution photo, decoded again only for this
            image = processing.load_image(job.path, 3, self.opts.max_pixels)
            with atomic_path(paths["overlay"]) as tmp:
                Image.fromarray(masks.overlay(image, mask, skip_class=self.skip_class)).save(tmp, "JPEG", quality=90)
        if "probs" in paths:
            with atomic_path(paths["probs"]) as tmp, open(tmp, "wb") as f:
                np.save(f, masks.softmax(masks.restore_logits(logits, job.geometry)).astype(np.float16))
        return time.perf_counter() - t0

    # -- pipeline --------------------------------------------------------------------------
    def run(self, pairs: list[tuple[Path, Path]]) -> Stats:
        """Decode (thread pool, bounded window) -> batch -> Session.submit (up to its in_flight
        batches at once) -> write (one thread), in input order."""
        self.stats, opts = Stats(), self.opts
        jobs = collections.deque()
        for path, rel in pairs:
            if opts.skip_existing and all(p.exists() for p in output_paths(opts.out, rel, opts).values()):
                self.stats.skipped += 1
                continue
            jobs.append(Job(path, rel))
        # tiled: the bar counts tiles (known once each image is decoded), and at most two images are
        # decoded at a time (one being tiled, the next): a decoded image can be gigabytes
        self.bar = progress(total=0 if opts.tile else len(jobs), desc="predict", unit="tile" if opts.tile else "img",
                            enabled=opts.progress)
        workers = opts.workers or max(1, usable_cores() // 2)
        window = 2 if opts.tile else max(2 * opts.batch_size, workers * 2)  # bounded memory
        self.batch: list[tuple[Job, np.ndarray]] = []  # (image, one model input)
        self.inflight: collections.deque[tuple[list[Job], Future]] = collections.deque()
        self.writes: collections.deque[tuple[Job, Future]] = collections.deque()
        decoders = ThreadPoolExecutor(workers, "segrt-decode")
        self.writers = ThreadPoolExecutor(opts.writers or max(1, usable_cores() // 4), "segrt-write")
        try:
            pending: collections.deque[tuple[Job, Future]] = collections.deque()
            while jobs or pending:
                while jobs and len(pending) < window:
                    job = jobs.popleft()
                    pending.append((job, decoders.submit(self.decode, job)))
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
        except KeyboardInterrupt:  # stop: what is written stays written, nothing half-written
            self.stats.interrupted = True
            decoders.shutdown(cancel_futures=True)
            self.writers.shutdown(cancel_futures=True)  # running writes finish (atomically)
            self._drain_writes(limit=0, finished_only=True)
        finally:
            decoders.shutdown()
            self.writers.shutdown()
            self.bar.close()
        return self.stats

    def _fail(self, job: Job, reason: str) -> None:
        self.stats.failures.append({"file": str(job.path), "reason": reason})
        self.log(f"error: {reason}")
        if not self.opts.tile:
            self.bar.update(1)

    def _model_inputs(self, job: Job):
        """The CHW float32 inputs of one image: the image itself, or its tiles one by one."""
        if job.tiler is None:
            x, job.x = job.x, None
            yield x
            return
        self.bar.total += job.tiler.count
        self.bar.refresh()
        yield from job.tiler.tiles()

    def _decoded(self, job: Job, fut: Future) -> bool:
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
        return True

    def _submit(self) -> None:
        """Run the collected batch; at native resolution a batch too large for the memory available
        is split, and an image too large on its own fails with the reason."""
        items, self.batch = self.batch, []
        if not items:
            return
        h, w = items[0][1].shape[1:]
        budget, one = memory_budget(), batch_bytes(self.manifest, 1, h, w)
        fit = len(items) if budget is None else budget // one
        if fit == 0:  # only at native size: tiles and resized inputs were checked up front
            for job, _ in items:
                self._fail(job, f"{job.path}: needs ~{gb(one)} at its native {w}x{h}, {gb(budget)} available; "
                                "use --tile auto, or drop --native to resize it to the model's size")
            return
        for i in range(0, len(items), fit):
            part = items[i:i + fit]
            x = np.stack([item[1] for item in part])
            submit = self.session.submit_masks if self.masks_from_model else self.session.submit
            self.inflight.append(([job for job, _ in part], submit(x)))
            self._collect(keep=self.session.in_flight - 1)

    def _collect(self, keep: int) -> None:
        """Hand finished batches (in order) to the writer; wait while more than ``keep`` are out."""
        while self.inflight and (len(self.inflight) > keep or self.inflight[0][1].done()):
            jobs, fut = self.inflight.popleft()
            t0 = time.perf_counter()
            logits = fut.result()
            self.stats.wait_inference_s += time.perf_counter() - t0
            self.stats.spans.append(fut.span)
            for j, out in zip(jobs, logits):
                self._deliver(j, out)
        self._drain_writes(limit=2 * self.opts.batch_size)

    def _deliver(self, job: Job, logits: np.ndarray) -> None:
        """One model output: write the image's outputs, or add a tile to its image's band (and
        write the mask once the last tile is in)."""
        if self.masks_from_model:  # a padded mask: crop it to the image
            h, w = job.geometry.original_hw
            self.writes.append((job, self.writers.submit(self.write_mask, job, logits[:h, :w])))
            return
        if job.tiler is None:
            self.writes.append((job, self.writers.submit(self.write, job, logits)))
            return
        job.tiler.add(logits)
        self.bar.update(1)
        if job.tiler.done:
            mask, job.tiler = job.tiler.mask, None
            self.writes.append((job, self.writers.submit(self.write_mask, job, mask)))

    def _drain_writes(self, limit: int, finished_only: bool = False) -> None:
        while len(self.writes) > limit:
            job, fut = self.writes.popleft()
            if finished_only and (fut.cancelled() or not fut.done()):
                continue
            try:
                self.stats.write_s += fut.result()
                self.stats.ok += 1
            except OSError as exc:
                self._fail(job, f"{job.path}: cannot write outputs ({exc.strerror or exc})")
                continue
            except Exception as exc:  # e.g. the overlay's re-decode: this image fails, not the run
                self._fail(job, str(exc) if isinstance(exc, ImageError) else f"{job.path}: {type(exc).__name__}: {exc}")
                continue
            if not self.opts.tile:
                self.bar.update(1)


def run_predict(inputs: list[str], model: str | os.PathLike, *, provider: str = "auto", precision: str | None = None,
                kind: str | None = None, threads: int = 0, opts: PredictOptions | None = None, log=None,
                session_options=None, tile: str | int | None = None, overlap: float = 0.25, blend: str = "gaussian",
                **model_overrides) -> dict:
    """Open the model (errors before any image is read), stream all inputs, write summary.json.
    ``tile`` (pixels or 'auto'), ``overlap``, ``blend``: sliding-window inference (segrt.tiling)."""
    from segrt.session import SessionOptions

    opts = opts or PredictOptions()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    opts.out = Path(opts.out)
    if opts.batch_size < 1:
        raise SegrtError("--batch-size must be at least 1")
    # no busy-waiting: idle inference threads hand the cores to decoding and writing; several
    # batches in flight where the runtime has streams (OpenVINO)
    session = Session(model, provider=provider, precision=precision, kind=kind,
                      options=session_options or SessionOptions(threads=threads, spin=False, throughput=True),
                      **model_overrides)
    if tile is not None:
        opts.tile = tile_spec(tile, overlap, blend, session.manifest)
    if opts.tile and opts.save_probs:
        raise SegrtError("--save-probs cannot be used with --tile: tiling never holds the full-size logits")
    if opts.native and session.manifest.fixed_size:
        raise SegrtError(f"{model}: the model takes a fixed {'x'.join(map(str, session.manifest.fixed_size))} input, "
                         "so --native cannot apply; drop --native (images are resized to that size)")
    if session.auto_note:
        log(session.auto_note)
    if session.artifact.precision == "int8" and session.provider == "cuda":
        log("warning: INT8 (QDQ) models are not accelerated by ONNX Runtime's CUDA provider; use fp16 on "
            "cuda, or tensorrt for INT8")
    pairs = gather_inputs(inputs, opts.out)
    check_no_overwrite(pairs, opts.out, opts)
    pairs = select_shard(pairs, opts.shard)
    if opts.tile:  # a batch is any tiles, of one image or several
        check_batch_memory(session.manifest, opts.batch_size, opts.batch_size, (opts.tile.tile,) * 2)
    elif not opts.native:
        check_batch_memory(session.manifest, min(opts.batch_size, len(pairs)), opts.batch_size,
                           session.manifest.input_size)
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):  # numpy's BLAS threads would fight the inference threads
        stats = Predictor(session, opts, log).run(pairs)
    wall = time.perf_counter() - t0
    summary = {
        "model": str(model), "artifact": session.artifact.name, "kind": session.kind,
        "precision": session.artifact.precision, "provider": session.provider, "runtime": session.describe(),
        "auto_choice": session.auto_note,
        "inputs": len(pairs), "written": stats.ok, "skipped_existing": stats.skipped, "interrupted": stats.interrupted,
        "failed": len(stats.failures), "failures": stats.failures,
        "batch_size": opts.batch_size, "mode": describe_mode(opts, session.manifest),
        # decode and write: summed over their threads; inference: time with a batch in flight;
        # waits: the main thread stalled on a decoded image or on logits (where the time goes)
        "timings_s": {"wall": wall, "decode": stats.decode_s, "inference": stats.inference_busy_s(),
                      "write": stats.write_s, "wait_decode": stats.wait_decode_s,
                      "wait_inference": stats.wait_inference_s},
        "images_per_s": stats.ok / wall if wall > 0 else 0.0,
        "out": str(opts.out),
    }
    if opts.shard:
        summary["shard"] = list(opts.shard)
    opts.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(opts.out / summary_name(opts.shard), (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def summary_name(shard: tuple[int, int] | None) -> str:
    """summary.json, or summary.shard-I-of-N.json for one shard of a job array."""
    return SUMMARY if shard is None else f"summary.shard-{shard[0]}-of-{shard[1]}.json"


def describe_mode(opts: PredictOptions, manifest) -> str:
    if opts.tile:
        t = opts.tile
        return f"tiled {t.tile}x{t.tile} (overlap {t.overlap:g}, stride {t.stride}, {t.blend} blending)"
    if opts.native or not manifest.input_size:
        return "native+pad"
    return f"resize {manifest.input_size[0]}x{manifest.input_size[1]}"


def format_summary(s: dict) -> str:
    t = s["timings_s"]
    busy = t["inference"] / t["wall"] if t["wall"] > 0 else 0.0
    line = (f"{s['written']} of {s['inputs']} image(s) segmented with {s['runtime']} in {t['wall']:.2f}s "
            f"({s['images_per_s']:.1f} img/s; inference busy {t['inference']:.2f}s = {100 * busy:.0f}% of the time, "
            f"decode {t['decode']:.2f}s, write {t['write']:.2f}s of thread time; waited {t['wait_decode']:.2f}s "
            f"for decoding, {t['wait_inference']:.2f}s for inference)")
    if s["skipped_existing"]:
        line += f"; {s['skipped_existing']} skipped (outputs exist)"
    name = summary_name(tuple(s["shard"]) if s.get("shard") else None)
    if s["failed"]:
        line += f"; {s['failed']} FAILED (see {s['out']}/{name})"
    if s["interrupted"]:
        line = "INTERRUPTED: " + line + "; rerun with --skip-existing to finish"
    return line + f"\noutputs in {s['out']}/ (NAME.png = class ids), summary in {s['out']}/{name}"
