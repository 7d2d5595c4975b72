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

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from segrt.errors import ImageError, SegrtError


def import_ray():
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


class SegmentBatches:
    """Ray Data actor: one Session per worker; ``__call__`` maps a batch of {path, rel} rows to
    status rows {path, ok, reason, decode_s, inference_s, write_s} after writing each image's outputs."""

    def __init__(self, model: str, out: str, provider: str = "auto", precision: str | None = None,
                 color: bool = True, native: bool = False, threads: int = 0, max_pixels: int | None = None):
        from segrt.runtime.backends import SessionOptions
        from segrt.runtime.session import Session

        self.session = Session(model, provider=provider, precision=precision,
                               options=SessionOptions(threads=threads, spin=False))
        self.output, self.color, self.native, self.max_pixels = Output(out), color, native, max_pixels

    def __call__(self, batch: dict) -> dict:
        from segrt.imaging import decode

        rows, ready = [], []
        for path, rel in zip(batch["path"], batch["rel"]):
            row = {"path": str(path), "ok": False, "reason": "", "decode_s": 0.0, "inference_s": 0.0, "write_s": 0.0}
            t0 = time.perf_counter()
            try:
                x, geo = decode.read_model_input(path, self.session.manifest, self.native, self.max_pixels)
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
                grey, color = masks.encode_mask_pngs(masks.to_mask(out, geo))
                self.output.write(f"{rel}.png", grey)
                if self.color:
                    self.output.write(f"{rel}.color.png", color)
                row["ok"] = True
            except OSError as exc:
                row["reason"] = f"{row['path']}: cannot write outputs ({exc.strerror or exc})"
            row["write_s"] = time.perf_counter() - t0


def predict(inputs: list[str], model: str | os.PathLike, out: str, *, provider: str = "auto",
            precision: str | None = None, batch_size: int = 4, num_workers: int = 1, address: str | None = None,
            color: bool = True, native: bool = False, skip_existing: bool = False,
            max_pixels: int | None = None, log=print) -> dict:
    """Segment ``inputs`` (files, folders, path lists, as local predict) on Ray and write the
    outputs and a merged summary.json under ``out`` (a folder or a pyarrow filesystem URI)."""
    from types import SimpleNamespace

    from segrt.predict.inputs import check_no_overwrite, gather_inputs
    from segrt.predict.summary import SUMMARY_FORMAT
    from segrt.cpuinfo import usable_cores
    from segrt.runtime.session import Session

    ray = import_ray()
    model = str(Path(model).resolve())
    probe = Session(model, provider=provider, precision=precision)  # errors before Ray starts
    local = "://" not in str(out)
    pairs = refuse_stacks(gather_inputs(inputs, Path(out) if local else None))
    if local:
        check_no_overwrite(pairs, Path(out), SimpleNamespace(color=color, overlay=False, save_probs=False,
                                                           skip_existing=skip_existing))
    if skip_existing and local:
        pairs = [(p, r) for p, r in pairs if not (Path(out) / f"{r}.png").exists()]
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else usable_cores(), log_to_driver=False,
                 include_dashboard=False, logging_level=logging.ERROR)
    for name in ("ray", "ray.data"):  # segrt reports; Ray's per-operator log lines are noise here
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    cores = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, num_workers))
    gpu = probe.provider in ("cuda", "tensorrt")
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"path": str(p), "rel": r.as_posix()} for p, r in pairs])
    config = {"model": model, "out": str(out), "provider": probe.provider, "precision": probe.artifact.precision,
              "color": color, "native": native, "threads": cores, "max_pixels": max_pixels}
    results = ds.map_batches(
        SegmentBatches, fn_constructor_kwargs=config, batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=1 if gpu else cores, num_gpus=1 if gpu else 0).take_all() if pairs else []
    wall = time.perf_counter() - t0
    failures = [{"file": r["path"], "reason": str(r["reason"])} for r in results if not r["ok"]]
    for f in failures:
        log(f"error: {f['reason']}")
    summary = {"format": SUMMARY_FORMAT, "model": model, "artifact": probe.artifact.name, "kind": probe.kind,
               "precision": probe.artifact.precision, "provider": probe.provider, "engine": "ray",
               "workers": num_workers, "inputs": len(pairs), "written": sum(bool(r["ok"]) for r in results),
               "failed": len(failures), "failures": failures, "batch_size": batch_size,
               "timings_s": {"wall": wall, **{k: float(sum(r[f"{k}_s"] for r in results))
                                              for k in ("decode", "inference", "write")}},
               "images_per_s": len(results) / wall if wall > 0 and results else 0.0, "out": str(out)}
    Output(str(out)).write("summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def refuse_stacks(pairs):
    """Multi-page TIFF stacks are the local engine's (page by page into one label TIFF)."""
    from segrt.imaging.decode import page_count

    stack = next((p for p, _ in pairs if page_count(p) > 1), None)
    if stack:
        raise SegrtError(f"{stack}: multi-page TIFF stacks are predicted by the local engine (drop --engine ray)")
    return pairs


RAY_UNSUPPORTED = {"tile": "--tile", "per_page": "--per-page", "overlay": "--overlay", "save_probs": "--save-probs", "shard": "--shard",
                   "kind": "--kind", "classes": "--classes", "mean": "--mean", "std": "--std"}


def predict_from_cli(inputs, model, out, batch_size, provider, precision, native, color, skip_existing, address,
                     num_workers, max_pixels, given: dict, log=print) -> dict:
    """`segrt predict --engine ray`: refuse the options the Ray path does not have, then predict()."""
    refused = [flag for key, flag in RAY_UNSUPPORTED.items() if given.get(key)]
    if refused:
        raise SegrtError(f"{refused[0]} is not available with --engine ray (use the local engine, or --shard with "
                         "a job array)")
    return predict(list(inputs), model, out, provider=provider, precision=precision, batch_size=batch_size,
                   num_workers=num_workers, address=address, color=color, native=native,
                   skip_existing=skip_existing, max_pixels=max_pixels or None, log=log)
