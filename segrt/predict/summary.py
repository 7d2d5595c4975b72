"""What a predict run counted, and its summary.json (local and Ray runs write the same one)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from segrt.predict.options import PredictOptions
from segrt.runtime.session import Session

__all__ = ["SUMMARY", "make_summary", "summary_name", "format_summary", "Stats", "summary_bytes"]

SUMMARY = "summary.json"
_SUMMARY_FORMAT = "segrt-predictions/1"


def make_summary(model, session: Session, opts: PredictOptions, inputs: int, stats: Stats, wall: float) -> dict:
    summary = {
        "format": _SUMMARY_FORMAT, "model": str(model), "artifact": session.artifact.name, "kind": session.kind,
        "precision": session.artifact.precision, "provider": session.provider, "runtime": session.describe(),
        "auto_choice": session.auto_note,
        "inputs": inputs, "written": stats.ok, "skipped_existing": stats.skipped, "interrupted": stats.interrupted,
        "stopped_by": stats.stopped_by,
        "failed": len(stats.failures), "failures": stats.failures, "notes": stats.notes,
        "batch_size": opts.batch_size, "mode": _describe_mode(opts, session.manifest),
        # wall: the first image to the last (startup apart: opening the model, checks, listing the inputs);
        # decode and write: summed over their threads; inference: time with a batch in flight;
        # waits: the main thread stalled on a decoded image or on logits (where the time goes)
        "timings_s": {"wall": wall, "startup": stats.startup_s, "decode": stats.decode_s,
                      "inference": stats.inference_busy_s(), "write": stats.write_s, "wait_decode": stats.wait_decode_s,
                      "wait_inference": stats.wait_inference_s},
        "images_per_s": stats.ok / wall if wall > 0 else 0.0,
        "cpu": stats.cpu,
        "out": str(opts.out),
    }
    if opts.shard:
        summary["shard"] = list(opts.shard)
    return summary


def summary_name(shard: tuple[int, int] | None) -> str:
    """summary.json, or summary.shard-I-of-N.json for one shard of a job array."""
    return SUMMARY if shard is None else f"summary.shard-{shard[0]}-of-{shard[1]}.json"


def _describe_mode(opts: PredictOptions, manifest) -> str:
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
            f"({s['images_per_s']:.1f} img/s; start-up {t.get('startup', 0.0):.2f}s apart; "
            f"inference busy {t['inference']:.2f}s = {100 * busy:.0f}% of the time, "
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
    cpu = (s.get("cpu") or {}).get("core_ms_per_image")
    if cpu and s["written"]:
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in cpu.items() if k != "total" and v >= 0.05)
        line += f"\nCPU per image (core-ms): {parts}; total {cpu['total']:.1f}"
    where = s["summary_error"] if s.get("summary_error") else f"in {s['out']}/{name}"
    names = "NAME.png = class ids" + ("; a stack's NAME.tif: a page of class ids per page" if s.get("stacks") else "")
    return line + f"\noutputs in {s['out']}/ ({names}), summary {where}"


@dataclass
class Stats:
    ok: int = 0
    skipped: int = 0
    failures: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each: nothing is silent
    decode_s: float = 0.0  # summed over decode threads
    write_s: float = 0.0  # the writer thread
    wait_decode_s: float = 0.0  # the main thread, waiting for a decoded image
    wait_inference_s: float = 0.0  # the main thread, waiting for logits
    spans: list[tuple[float, float]] = field(default_factory=list)  # (submitted, done) per batch
    interrupted: bool = False  # Ctrl-C or SIGTERM: the run stopped early
    stopped_by: str | None = None  # SIGINT | SIGTERM
    startup_s: float = 0.0  # run_predict's call to its first image: the model opened, options checked, inputs listed
    cpu: dict | None = None  # CPU time by stage (predict.accounting.Ledger.finish)

    def inference_busy_s(self) -> float:
        """Time during which at least one batch was being inferred (union of the spans)."""
        busy, end = 0.0, float("-inf")
        for start, stop in sorted(self.spans):
            busy += max(0.0, stop - max(start, end))
            end = max(end, stop)
        return busy


def summary_bytes(summary: dict) -> bytes:
    return (json.dumps(summary, indent=2) + "\n").encode()
