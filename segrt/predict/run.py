"""`segrt predict`: check the options and the model, gather the inputs, stream them through the
pipeline (segrt.predict.pipeline) and write summary.json (no torch)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

from segrt.errors import SegrtError
from segrt.fsutil import remove_stale_temps_under, write_bytes_atomic
from segrt.imaging import decode
from segrt.predict.accounting import Ledger
from segrt.predict.inputs import check_no_overwrite, check_out_folder, gather_inputs, select_shard
from segrt.predict.options import PredictOptions, decode_note
from segrt.predict.pipeline import Predictor
from segrt.predict.summary import Stats, make_summary, summary_bytes, summary_name
from segrt.runtime.memory import check_batch_memory
from segrt.runtime.session import Session
from segrt.runtime.tiling import tile_spec

__all__ = ["run_predict"]


def run_predict(inputs: list[str], model: str | os.PathLike, *, provider: str = "auto", precision: str | None = None,
                kind: str | None = None, threads: int = 0, opts: PredictOptions | None = None, log=None,
                session_options=None, tile: str | int | None = None, overlap: float = 0.25, blend: str = "gaussian",
                **model_overrides) -> dict:
    """Open the model (errors before any image is read), stream all inputs, write summary.json.
    ``tile`` (pixels or 'auto'), ``overlap``, ``blend``: sliding-window inference (segrt.runtime.tiling)."""
    from threadpoolctl import threadpool_limits

    from segrt.runtime.backends.base import SessionOptions

    opts, started = opts or PredictOptions(), time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    # no busy-waiting: idle inference threads hand the cores to decoding and writing; several
    # batches in flight where the runtime has streams (OpenVINO)
    session = Session(model, provider=provider, precision=precision, kind=kind,
                      options=session_options or SessionOptions(threads=threads, spin=False, throughput=True),
                      **model_overrides)
    if tile is not None:
        opts = dataclasses.replace(opts, tile=tile_spec(tile, overlap, blend, session.manifest))
    _check_options(opts, session, model, log)
    unread: list[tuple[Path, str]] = []
    pairs = gather_inputs(inputs, opts.out, unread)
    stacks = _find_stacks(pairs, opts)
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
    stats = Stats(failures=[{"file": str(path), "reason": why} for path, why in unread], startup_s=t0 - started)
    for _, why in unread:
        log(f"error: {why}")
    with threadpool_limits(1, "blas"), _terminate_as_interrupt() as stopped:  # BLAS threads would fight inference's
        Predictor(session, opts, log, stacks, ledger=Ledger()).run(pairs, stats)
    stats.stopped_by = stopped.get("signal") or ("SIGINT" if stats.interrupted else None)
    summary = make_summary(model, session, opts, len(pairs), stats, time.perf_counter() - t0)
    if stacks:
        summary["stacks"] = {"files": len(stacks), "pages": sum(stacks.values())}
    try:
        write_bytes_atomic(opts.out / summary_name(opts.shard), summary_bytes(summary))
    except OSError as exc:
        summary["summary_error"] = f"{opts.out / summary_name(opts.shard)}: not written ({exc.strerror or exc})"
        log(f"error: {summary['summary_error']}")
    return summary


def _find_stacks(pairs, opts: PredictOptions) -> dict[Path, int]:
    """Multi-page TIFF inputs -> their page counts (headers only); they are predicted page by page."""
    stacks = {p: n for p, _ in pairs if (n := decode.page_count(p)) > 1}
    if stacks:
        from segrt.imaging.stacks import require_tifffile

        require_tifffile()
        if opts.save_probs:
            raise SegrtError(f"--save-probs cannot be used with multi-page TIFF inputs ({next(iter(stacks))})")
    return stacks


@contextlib.contextmanager
def _terminate_as_interrupt():
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


def _check_options(opts: PredictOptions, session: Session, model, log) -> None:
    """The options against the model, once, before any image is read (one-line errors)."""
    if opts.batch_size < 1:
        raise SegrtError("--batch-size must be at least 1")
    if opts.tile and opts.save_probs:
        raise SegrtError("--save-probs cannot be used with --tile: tiling never holds the full-size logits")
    if opts.native and session.manifest.fixed_size:
        raise SegrtError(f"{model}: the model takes a fixed {'x'.join(map(str, session.manifest.fixed_size))} input, "
                         "so --native cannot apply; drop --native (images are resized to that size)")
    if session.auto_note:
        log(session.auto_note)
    if decode_note(opts, session.manifest):
        log(decode_note(opts, session.manifest))
    if session.artifact.precision == "int8" and session.provider == "cuda":
        log("warning: INT8 (QDQ) models are not accelerated by ONNX Runtime's CUDA provider; use fp16 on "
            "cuda, or tensorrt for INT8")
