"""`segrt predict`: check the options and the model, gather the inputs, stream them through the
pipeline (segrt.predict.pipeline) and write summary.json (no torch)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from segrt.imaging import decode
from segrt.errors import SegrtError
from segrt.fsutil import remove_stale_temps_under, write_bytes_atomic
from segrt.predict.inputs import check_no_overwrite, check_out_folder, gather_inputs, select_shard
from segrt.runtime.memory import check_batch_memory
from segrt.predict.pipeline import Predictor, Stats
from segrt.runtime.session import Session
from segrt.runtime.tiling import TileSpec, tile_spec

SUMMARY = "summary.json"
SUMMARY_FORMAT = "segrt-predictions/1"
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
    max_pixels: int | None = decode.DEFAULT_MAX_PIXELS
    progress: bool = True
    tile: TileSpec | None = None  # sliding-window inference at native resolution (segrt.runtime.tiling)
    shard: tuple[int, int] | None = None  # (I, N): only the inputs whose stable hash falls in shard I
    writers: int = 0  # output threads (mask resize, PNG, files); 0: a quarter of the cores, at least 1
    device_masks: bool | None = None  # native size: argmax where the model runs (None: on cuda/tensorrt)
    per_page: bool = False  # stacks: also each page's colour mask (and overlay), beside the label TIFF


def run_predict(inputs: list[str], model: str | os.PathLike, *, provider: str = "auto", precision: str | None = None,
                kind: str | None = None, threads: int = 0, opts: PredictOptions | None = None, log=None,
                session_options=None, tile: str | int | None = None, overlap: float = 0.25, blend: str = "gaussian",
                **model_overrides) -> dict:
    """Open the model (errors before any image is read), stream all inputs, write summary.json.
    ``tile`` (pixels or 'auto'), ``overlap``, ``blend``: sliding-window inference (segrt.runtime.tiling)."""
    from threadpoolctl import threadpool_limits

    from segrt.runtime.backends import SessionOptions

    opts = opts or PredictOptions()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    opts.out = Path(opts.out)
    # no busy-waiting: idle inference threads hand the cores to decoding and writing; several
    # batches in flight where the runtime has streams (OpenVINO)
    session = Session(model, provider=provider, precision=precision, kind=kind,
                      options=session_options or SessionOptions(threads=threads, spin=False, throughput=True),
                      **model_overrides)
    check_options(opts, session, model, tile, overlap, blend, log)
    unread: list[tuple[Path, str]] = []
    pairs = gather_inputs(inputs, opts.out, unread)
    stacks = find_stacks(pairs, opts)
    check_no_overwrite(pairs, opts.out, opts, stacks)
    check_out_folder(opts.out, summary_name(opts.shard))
    for stale in remove_stale_temps_under(opts.out):
        log(f"removed {stale}, left by an earlier run that was killed")
    pairs = select_shard(pairs, opts.shard)
    if opts.tile:  # a batch is any tiles, of one image or several
        check_batch_memory(session.manifest, opts.batch_size, opts.batch_size, (opts.tile.tile,) * 2)
    elif not opts.native:
        check_batch_memory(session.manifest, min(opts.batch_size, len(pairs)), opts.batch_size,
                           session.manifest.input_size)
    t0 = time.perf_counter()
    stats = Stats(failures=[{"file": str(path), "reason": why} for path, why in unread])
    for _, why in unread:
        log(f"error: {why}")
    with threadpool_limits(1, "blas"), terminate_as_interrupt() as stopped:  # BLAS threads would fight inference's
        Predictor(session, opts, log, stacks).run(pairs, stats)
    stats.stopped_by = stopped.get("signal") or ("SIGINT" if stats.interrupted else None)
    summary = make_summary(model, session, opts, len(pairs), stats, time.perf_counter() - t0)
    if stacks:
        summary["stacks"] = {"files": len(stacks), "pages": sum(stacks.values())}
    try:
        write_bytes_atomic(opts.out / summary_name(opts.shard), (json.dumps(summary, indent=2) + "\n").encode())
    except OSError as exc:
        summary["summary_error"] = f"{opts.out / summary_name(opts.shard)}: not written ({exc.strerror or exc})"
        log(f"error: {summary['summary_error']}")
    return summary


def find_stacks(pairs, opts: PredictOptions) -> dict[Path, int]:
    """Multi-page TIFF inputs -> their page counts (headers only); they are predicted page by page."""
    stacks = {p: n for p, _ in pairs if (n := decode.page_count(p)) > 1}
    if stacks:
        from segrt.imaging.stacks import require_tifffile

        require_tifffile()
        if opts.save_probs:
            raise SegrtError(f"--save-probs cannot be used with multi-page TIFF inputs ({next(iter(stacks))})")
    return stacks


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (Slurm, Kubernetes, `kill`) stops predict like Ctrl-C: what is written stays, the
    summary says so. Yields a dict that gets {"signal": "SIGTERM"} when it came."""
    got: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def stop(signum, frame):
        got["signal"] = "SIGTERM"
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, old)


def check_options(opts: PredictOptions, session: Session, model, tile, overlap: float, blend: str, log) -> None:
    """The options against the model, once, before any image is read (one-line errors)."""
    if opts.batch_size < 1:
        raise SegrtError("--batch-size must be at least 1")
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


def make_summary(model, session: Session, opts: PredictOptions, inputs: int, stats: Stats, wall: float) -> dict:
    summary = {
        "format": SUMMARY_FORMAT, "model": str(model), "artifact": session.artifact.name, "kind": session.kind,
        "precision": session.artifact.precision, "provider": session.provider, "runtime": session.describe(),
        "auto_choice": session.auto_note,
        "inputs": inputs, "written": stats.ok, "skipped_existing": stats.skipped, "interrupted": stats.interrupted,
        "stopped_by": stats.stopped_by,
        "failed": len(stats.failures), "failures": stats.failures, "notes": stats.notes,
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
        line += f"; {s['failed']} FAILED" + ("" if s.get("summary_error") else f" (see {s['out']}/{name})")
    if s["interrupted"]:
        by = " by SIGTERM" if s.get("stopped_by") == "SIGTERM" else ""
        line = f"INTERRUPTED{by}: " + line + f"; rerun with --out {s['out']} --skip-existing to finish"
    where = s["summary_error"] if s.get("summary_error") else f"in {s['out']}/{name}"
    names = "NAME.png = class ids" + ("; a stack's NAME.tif: a page of class ids per page" if s.get("stacks") else "")
    return line + f"\noutputs in {s['out']}/ ({names}), summary {where}"
