"""`segrt bench`: latency percentiles, throughput, first-run time and peak memory per artifact
variant, batch size and input size (no torch unless a torch artifact is benchmarked)."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from segrt.bench.speeds import speed_size
from segrt.bench.timing import peak_rss_mb, reset_peak_rss
from segrt.cpuinfo import cpu_info, module_available, usable_cores
from segrt.errors import ProviderError, SegrtError
from segrt.imaging.prepare import round_up
from segrt.progress import progress
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.memory import check_bench_memory
from segrt.runtime.session import Session, torch_available

__all__ = ["SCHEMA", "ROW_KEYS", "run_bench", "format_table"]


SCHEMA = "segrt-bench/1"
ROW_KEYS = ("artifact", "kind", "precision", "provider", "batch_size", "height", "width", "open_ms", "first_run_ms",
            "p50_ms", "p90_ms", "p99_ms", "mean_ms", "images_per_s", "peak_rss_mb", "gpu_peak_mb")


def _runnable_artifacts(manifest, provider: str, folder) -> tuple[list, dict]:
    """-> (every artifact that can run here, {name: why not} for the others): ONNX always, OpenVINO
    and torch ones when installed, none the CPU cannot run (bf16 without bf16) or the copy lacks;
    with provider openvino, its own artifacts (the fp32 ONNX when the export has none)."""
    from segrt.runtime.select import cannot_run_here

    kinds = {"onnx", "openvino"} | ({"torchscript", "pt2"} if torch_available() else set())
    found, skipped = [], {}
    for a in manifest.artifacts:
        if a.kind not in kinds or (provider == "openvino" and a.kind != "openvino"):
            continue
        why = cannot_run_here(a) or (None if manifest.in_copy(folder, a) else "not in this copy")
        if why:
            skipped[a.name] = why
        else:
            found.append(a)
    if provider == "openvino" and not found:
        found = [manifest.artifact("onnx", "fp32")]
    return found, skipped


def _time_variant(session: Session, batch: int, h: int, w: int, warmup: int, runs: int, buffers: int = 3) -> dict:
    rng = np.random.default_rng(0)
    inputs = [session.feed(rng.standard_normal((batch, session.manifest.channels, h, w)).astype(np.float32))
              for _ in range(buffers)]  # what the artifact takes: a uint8-input variant's pixels are not converted here
    gpu = session.kind != "onnx" and session.provider == "cuda"
    if gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
    sync = (lambda: __import__("torch").cuda.synchronize()) if gpu else (lambda: None)
    reset_peak_rss()
    t0 = time.perf_counter()
    session.run(inputs[0])
    sync()
    first = time.perf_counter() - t0
    for i in range(warmup):
        session.run(inputs[i % buffers])
    sync()
    lat = []
    for i in range(runs):
        x = inputs[i % buffers]  # rotate buffers: no cache-hot single input
        t0 = time.perf_counter()
        session.run(x)
        sync()
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000
    row = {"first_run_ms": first * 1000, "p50_ms": float(np.percentile(lat_ms, 50)),
           "p90_ms": float(np.percentile(lat_ms, 90)), "p99_ms": float(np.percentile(lat_ms, 99)),
           "mean_ms": float(lat_ms.mean()), "images_per_s": batch * runs / float(np.sum(lat)),
           "peak_rss_mb": peak_rss_mb(), "gpu_peak_mb": None}
    if gpu:
        import torch

        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def run_bench(model: str | os.PathLike, *, provider: str = "auto", device: int = 0, trt_fp16: bool = False,
              batch_sizes=(1, 8), sizes=None,
              warmup: int = 3, runs: int = 20, threads: int = 0, artifacts: list[str] | None = None,
              log=None) -> dict:
    """Benchmark every runnable artifact variant of an export (or a single .onnx)."""
    if runs < 1 or warmup < 0 or min(batch_sizes, default=0) < 1 or (sizes is not None and min(sizes, default=0) < 1):
        raise SegrtError("--runs, --batch-sizes and --sizes must be >= 1 and --warmup >= 0")
    log = log or (lambda m: None)
    options = SessionOptions(threads=threads, device=device, trt_fp16=trt_fp16)
    probe = Session(model, provider=provider, options=options)
    manifest, m = probe.manifest, probe.manifest.size_multiple
    if not sizes:  # the size the export's speeds were recorded at (what auto compares), else speed_size's
        speed = manifest.speed
        (h, w), basis = (tuple(speed.input[2:]), speed.size_from or "the size the export's speeds were timed at") \
            if speed and speed.input else speed_size(manifest)
        sizes = [max(h, w)]
        log(f"bench at {sizes[0]}x{sizes[0]} ({basis}; --sizes to choose)")
    pick = probe.artifact.name if probe.auto_note and probe.folder else None
    if pick:
        log(f"{probe.auto_note}; bench times every runnable artifact, * marks that one")
    check_bench_memory(manifest, max(batch_sizes), [round_up(int(size), m) for size in sizes])
    variants, skipped = _runnable_artifacts(manifest, provider, probe.folder) if probe.folder else ([probe.artifact], {})
    for name, why in skipped.items():
        log(f"not run here: {name} ({why})")
    if artifacts:
        unknown = [n for n in artifacts if not any(n in (a.name, a.file) for a in variants)]
        if unknown:
            raise SegrtError(f"--artifact {unknown[0]}: not a runnable artifact of {model}; choose from "
                             f"{', '.join(a.name for a in variants)}")
        variants = [a for a in variants if a.name in artifacts or a.file in artifacts]
    rows, bar = [], progress(total=len(variants) * len(sizes) * len(batch_sizes), desc="bench", unit="row")
    for art in variants:
        try:
            session = probe if art is probe.artifact else Session(model, provider=provider, artifact=art.name,
                                                                  options=options)
        except ProviderError as exc:  # e.g. OpenVINO cannot compile it on this CPU
            log(f"not run here: {art.name} ({exc})")
            skipped[art.name] = str(exc)
            bar.update(len(sizes) * len(batch_sizes))
            continue
        for size in sizes:
            h = w = round_up(int(size), m)
            for batch in batch_sizes:
                log(f"bench {session.describe()}: batch {batch}, {h}x{w}")
                row = {"artifact": art.name, "kind": art.kind, "precision": art.precision,
                       "provider": session.provider, "batch_size": batch, "height": h, "width": w,
                       "open_ms": session.open_s * 1000}
                row.update(_time_variant(session, batch, h, w, warmup, runs))
                rows.append({k: row[k] for k in ROW_KEYS})
                bar.update(1)
    bar.close()
    return {"schema": SCHEMA, "model": str(model), "machine": _machine_info(threads), "warmup": warmup,
            "runs": runs, "rows": rows, "skipped": skipped, "auto_pick": pick,
            "auto_note": probe.auto_note if pick else None}


def _machine_info(threads: int = 0) -> dict:
    import onnxruntime

    info = {"platform": platform.platform(), "cpu": cpu_info(), "cores": os.cpu_count(),
            "threads": threads or usable_cores(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}
    if module_available("openvino"):
        from importlib.metadata import version

        info["openvino"] = version("openvino")
    return info


def format_table(result: dict, markdown: bool = False) -> str:
    """The rows, per batch and per image labelled; ``*`` marks what --provider auto would run."""
    head = ["artifact", "precision", "provider", "batch", "size", "open ms", "first ms", "p50 ms/batch",
            "p90 ms/batch", "p99 ms/batch", "ms/img (p50)", "img/s", "peak RSS MB"]
    pick = result.get("auto_pick")
    body = [[r["artifact"] + (" *" if r["artifact"] == pick else ""), r["precision"], r["provider"],
             str(r["batch_size"]), f"{r['height']}x{r['width']}", f"{r['open_ms']:.0f}", f"{r['first_run_ms']:.1f}",
             f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['p50_ms'] / r['batch_size']:.2f}",
             f"{r['images_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}"] for r in result["rows"]]
    note = [f"* = what --provider auto runs here ({result['auto_note']})"] if pick else []
    note += [f"not run here: {name} ({why})" for name, why in result.get("skipped", {}).items()]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body] + ([""] + note if note else []))
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join(["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *body]] + note)
