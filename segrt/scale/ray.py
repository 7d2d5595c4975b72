"""`segrt predict --engine ray`: the same predictions on a Ray cluster, through Ray Data.

Ray Data spreads the inputs (gathered by the same rules as local predict) over a pool of actors
(``map_batches`` with an actor class, Ray's batch-inference pattern); each actor holds one Session
for its whole life, decodes its images with segrt's own reader, runs them, and writes the same
outputs as local predict (a local folder, or any pyarrow filesystem URI such as s3://bucket/out).
A bad image fails alone. The rows that come back are merged into one summary.json. No scheduling
of segrt's own: Ray places the actors (``num_gpus=1`` each for provider cuda).

Needs ``pip install 'segrt[ray]'``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from segrt.errors import ImageError, SegrtError
from segrt.predict.options import PredictOptions, decode_note
from segrt.predict.outputs import mask_files, output_paths, outputs_exist
from segrt.predict.summary import SUMMARY, Stats, make_summary, summary_bytes

__all__ = ["Output", "predict", "refuse_options"]


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SegrtError("--engine ray needs Ray Data: pip install 'segrt[ray]'") from None
    return ray


class Output:
    """Where outputs go: a local folder (atomic writes, umask modes) or a pyarrow filesystem URI
    (written to a temp name, then moved)."""

    def __init__(self, out: str):
        self.out, self.local = out, "://" not in out
        if not self.local:
            import pyarrow.fs

            self.fs, self.root = pyarrow.fs.FileSystem.from_uri(out)

    def write(self, rel: str, data: bytes) -> None:
        if self.local:
            from segrt.fsutil import write_bytes_atomic

            write_bytes_atomic(Path(self.out) / rel, data)
            return
        final = f"{self.root}/{rel}"
        tmp = f"{final}.{os.getpid()}.tmp"
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)


class _SegmentBatches:
    """Ray Data actor: one Session per worker; ``__call__`` maps a batch of {path, rel} rows to
    status rows {path, ok, reason, decode_s, inference_s, write_s} after writing each image's outputs
    (the files local predict writes, through segrt.predict.outputs)."""

    def __init__(self, model: str, out: str, opts: PredictOptions, provider: str = "auto",
                 precision: str | None = None, threads: int = 0):
        from segrt.runtime.backends.base import SessionOptions
        from segrt.runtime.session import Session

        self.session = Session(model, provider=provider, precision=precision,
                               options=SessionOptions(threads=threads, spin=False))
        self.output, self.opts = Output(out), opts

    def __call__(self, batch: dict) -> dict:
        from segrt.imaging import decode

        rows, ready = [], []
        for path, rel in zip(batch["path"], batch["rel"]):
            row = {"path": str(path), "ok": False, "reason": "", "decode_s": 0.0, "inference_s": 0.0, "write_s": 0.0}
            t0 = time.perf_counter()
            try:
                x, geo = decode.read_model_input(path, self.session.manifest, self.opts.native, self.opts.max_pixels,
                                                 decode=self.opts.decode)
                ready.append((row, str(rel), x, geo))
            except ImageError as exc:
                row["reason"] = str(exc)
            row["decode_s"] = time.perf_counter() - t0
            rows.append(row)
        for shape in dict.fromkeys(item[2].shape for item in ready):  # same-size inputs share a run
            self._run([item for item in ready if item[2].shape == shape])
        return {k: np.array([r[k] for r in rows]) for k in rows[0]} if rows else {}

    def _run(self, items: list) -> None:
        from segrt.imaging import masks

        t0 = time.perf_counter()
        logits = self.session.run(np.stack([x for _, _, x, _ in items]))
        share = (time.perf_counter() - t0) / len(items)
        for (row, rel, _, geo), out in zip(items, logits):
            row["inference_s"] = share
            t0 = time.perf_counter()
            try:
                paths = output_paths(Path(), Path(rel), self.opts)
                for path, data in mask_files(masks.to_mask(out, geo), paths, self.session.manifest.colors).items():
                    self.output.write(path.as_posix(), data)
                row["ok"] = True
            except OSError as exc:
                row["reason"] = f"{row['path']}: cannot write outputs ({exc.strerror or exc})"
            row["write_s"] = time.perf_counter() - t0


def predict(inputs: list[str], model: str | os.PathLike, out: str, opts: PredictOptions | None = None, *,
            provider: str = "auto", precision: str | None = None, num_workers: int = 1, address: str | None = None,
            log=print) -> dict:
    """Segment ``inputs`` (files, folders, path lists, as local predict) on Ray and write the
    outputs and summary.json under ``out`` (a folder or a pyarrow filesystem URI), as local predict
    does: the same files, the same --skip-existing rule, the same summary (plus engine and workers)."""
    from segrt.cpuinfo import usable_cores
    from segrt.predict.inputs import check_no_overwrite, gather_inputs
    from segrt.runtime.session import Session

    ray, started = _import_ray(), time.perf_counter()
    model, local = str(Path(model).resolve()), "://" not in str(out)
    opts = opts or PredictOptions(out=Path(out) if local else Path("predictions"))
    probe = Session(model, provider=provider, precision=precision)  # errors before Ray starts
    if decode_note(opts, probe.manifest):
        log(decode_note(opts, probe.manifest))
    pairs = _refuse_stacks(gather_inputs(inputs, Path(out) if local else None))
    if local:
        check_no_overwrite(pairs, Path(out), opts)
    todo = [(p, r) for p, r in pairs if not (opts.skip_existing and local and outputs_exist(Path(out), r, opts))]
    _start(ray, address, usable_cores())
    cores = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, num_workers))
    gpu = probe.provider in ("cuda", "tensorrt")
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"path": str(p), "rel": r.as_posix()} for p, r in todo])
    config = {"model": model, "out": str(out), "opts": opts, "provider": probe.provider,
              "precision": probe.artifact.precision, "threads": cores}
    results = ds.map_batches(
        _SegmentBatches, fn_constructor_kwargs=config, batch_size=opts.batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=1 if gpu else cores, num_gpus=1 if gpu else 0).take_all() if todo else []
    stats = Stats(ok=sum(bool(r["ok"]) for r in results), skipped=len(pairs) - len(todo),
                  failures=[{"file": r["path"], "reason": str(r["reason"])} for r in results if not r["ok"]],
                  decode_s=sum(r["decode_s"] for r in results), write_s=sum(r["write_s"] for r in results),
                  spans=[(0.0, float(sum(r["inference_s"] for r in results)))],  # summed over the workers
                  startup_s=t0 - started)  # the probe opened, inputs listed, Ray joined (the actors start within wall)
    for f in stats.failures:
        log(f"error: {f['reason']}")
    summary = {**make_summary(model, probe, opts, len(pairs), stats, time.perf_counter() - t0),
               "engine": "ray", "workers": num_workers, "out": str(out)}
    Output(str(out)).write(SUMMARY, summary_bytes(summary))
    return summary


def _start(ray, address: str | None, cores: int) -> None:
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else cores, log_to_driver=False,
                 include_dashboard=False, logging_level=logging.ERROR)
    for name in ("ray", "ray.data"):  # segrt reports; Ray's per-operator log lines are noise here
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False


def _refuse_stacks(pairs):
    """Multi-page TIFF stacks are the local engine's (page by page into one label TIFF)."""
    from segrt.imaging.decode import page_count

    stack = next((p for p, _ in pairs if page_count(p) > 1), None)
    if stack:
        raise SegrtError(f"{stack}: multi-page TIFF stacks are predicted by the local engine (drop --engine ray)")
    return pairs


_RAY_UNSUPPORTED = ("--tile", "--per-page", "--overlay", "--save-probs", "--shard", "--kind", "--classes", "--mean",
                   "--std")


def refuse_options(given: dict) -> None:
    """`segrt predict --engine ray`: refuse the options the Ray path does not have ({flag: value})."""
    refused = [flag for flag in _RAY_UNSUPPORTED if given.get(flag)]
    if refused:
        raise SegrtError(f"{refused[0]} is not available with --engine ray (use the local engine, or --shard with "
                         "a job array)")
