"""The accuracy gate every reduced-precision variant goes through, whatever its runtime.

Held-out images (never used for calibration) are read exactly like predict; the reference is
eager PyTorch (or the fp32 ONNX that passed parity with it); a variant passes when its mask IoU
agreement with the reference is >= the gate. ``fallback_search`` is the shared recovery when it
misses: score each quantizable node by how much keeping it in higher precision helps, then keep
the worst ones out of INT8 greedily until the gate passes (ONNX Runtime: nodes_to_exclude,
OpenVINO/NNCF: IgnoredScope).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from segrt.errors import GateFailed
from segrt.imaging.metrics import CLASS_IOU_MARGIN, MIN_CLASS_SHARE, agreement_problems, gate_score
from segrt.manifest import Manifest
from segrt.options import QuantizeOptions
from segrt.records import GateRecord
from segrt.verify.compare import Batch, compare
from segrt.verify.imagesets import gate_batches, split_paths, validation_batches
from segrt.verify.reference import reference_runner

__all__ = ["GateResult", "write_gate_report", "run_batches", "evaluate", "save_variant", "require"]


@dataclass
class GateResult:
    mask_iou: float
    summary: dict
    excluded: list[str] = field(default_factory=list)
    ms_per_image: float = 0.0

    def problems(self, gate: float, names: list[str] | None = None) -> list[str]:
        """What misses ``gate``: the mean over the classes with support, the pixel agreement, each
        such class (imaging.metrics.agreement_problems); empty when it passes."""
        return agreement_problems({**self.summary, "mask_iou": self.mask_iou}, gate, names)

    def passes(self, gate: float) -> bool:
        return not self.problems(gate)

    @property
    def score(self) -> float:
        """>= a gate exactly when it passes (imaging.metrics.gate_score): what a fallback maximises."""
        return gate_score({**self.summary, "mask_iou": self.mask_iou})

    def record(self, gate: float, reference: str, max_logit_diff: float | None = None) -> GateRecord:
        """What the manifest keeps under parity[name], with the CPU and runtime it was measured on."""
        from segrt.runtime.here import signature

        return GateRecord.from_json({**self.summary, "reference": reference, "passed": self.passes(gate),
                                     "measured_on": signature(), "gates": {
                                         "mask_iou_min": gate, "max_abs_logit_diff_max": max_logit_diff,
                                         "min_class_share": MIN_CLASS_SHARE, "class_iou_margin": CLASS_IOU_MARGIN}})


def write_gate_report(folder: str | os.PathLike, opts: QuantizeOptions, log=print,
                      final: str | os.PathLike | None = None) -> Path:
    """parity.html beside the manifest, which names it: every artifact against the reference on the
    held-out images the gates used (the INT8 split's, else --val-images, else random inputs), with
    the worst images of each reduced-precision variant: the evidence a shipped export carries.
    ``final``: where ``folder`` will be (an export written in a temp folder): the path it prints."""
    from segrt.fsutil import write_bytes_atomic
    from segrt.verify.parity import run_parity_on
    from segrt.verify.report import render

    folder = Path(folder)
    manifest = Manifest.load(folder)
    batches = (validation_batches(opts, manifest, split_paths(opts, manifest.split.get("train"))[1])
               if opts.calib_images
               else gate_batches(opts, manifest))
    reference, ref_name = reference_runner(folder, manifest)
    report, shown = run_parity_on(folder, manifest, reference, batches, worst=8)
    report["reference"] = ref_name
    report["failed_variants"] = {n: r.measures.get("reason", "") for n, r in manifest.parity.items()
                                 if not r.passed and r.measures.get("written") is False}
    if opts.calib_images or opts.val_images:
        from segrt.imaging.splits import describe

        report["images_are"] = describe([n for b in batches for n in b.names], manifest.split)[0]
    path = folder / "parity.html"
    write_bytes_atomic(path, render(report, manifest, "cpu", shown=shown).encode())
    manifest.report = path.name
    manifest.save(folder)
    log(f"gate report: {Path(final or folder) / path.name} ({'all gates passed' if report['passed'] else 'FAILED: ' + '; '.join(report['failures'])})")
    return path


def run_batches(run: Callable[[np.ndarray], np.ndarray], batches: list[Batch]) -> tuple[list[np.ndarray], float]:
    """-> (logits per batch, ms per image after one warm-up run)."""
    run(batches[0].x[:1])
    t0, outs = time.perf_counter(), [run(b.x) for b in batches]
    return outs, (time.perf_counter() - t0) * 1000 / sum(len(b.x) for b in batches)


def evaluate(run: Callable[[np.ndarray], np.ndarray], reference: list[np.ndarray], batches: list[Batch],
             num_classes: int) -> GateResult:
    outs, ms = run_batches(run, batches)
    res = compare(reference, outs, batches, num_classes)
    return GateResult(res["summary"]["mask_iou"], {**res["summary"], "worst": res["worst"]}, ms_per_image=ms)


def save_variant(folder: Path, art, gate_record: GateRecord) -> None:
    """List a gated variant in the export's manifest: its hashes and its gate record."""
    manifest = Manifest.load(folder)
    manifest.add_artifact(folder, art)
    manifest.parity[art.name] = gate_record
    manifest.save(folder)


_CALIB_HINT = "try more or other calibration images, or a lower --quant-gate"


def require(result: GateResult, gate: float, what: str, search: list[dict] | None = None,
            hint: str = _CALIB_HINT, names: list[str] | None = None) -> None:
    """Raise GateFailed (exit 1, nothing written) when ``result`` misses the gate; ``search``: the
    fallback's record, for INT8; ``names``: the class names its message uses."""
    problems = result.problems(gate, names)
    if not problems:
        return
    kept = f" (with {len(result.excluded)} node(s) kept fp32: {', '.join(result.excluded) or 'none'})" \
        if search is not None else ""
    hint = "; " + (hint if search is not None else "use a higher precision or a lower --quant-gate")
    raise GateFailed(f"{what} gate failed: best {'; '.join(problems)}{kept}{hint}",
                     {"best": {"mask_iou": result.mask_iou, "excluded": result.excluded}, "search": search or [],
                      "gate": gate})
