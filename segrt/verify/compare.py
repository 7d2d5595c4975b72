"""Comparators: how one runner's logits are compared with a reference's (Polygraphy keeps these
apart from the runners too). Used by parity, the quantization gates and the reports.

For each image: mask IoU and pixel agreement of the argmax masks, the largest |logit difference|;
over all: the same from one confusion matrix (mask IoU: the mean over the classes with support,
imaging.metrics.agreement), per-class IoU agreement with each class's share of the pixels, and,
where ground truth is given, each side's mIoU against it at the original resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segrt.imaging.prepare import Geometry
from segrt.imaging.masks import to_mask
from segrt.imaging.metrics import ConfusionMatrix, agreement

__all__ = ["Batch", "compare"]


@dataclass
class Batch:
    """Model-ready inputs: NCHW float32, one name per image, and for real images how to restore.

    ``x`` is read as predict serves the images; ``trained_x``, where any image of the batch reads
    differently that way (a JPEG decoded at reduced scale), as training read them (every pixel)."""

    label: str
    x: np.ndarray
    names: list[str]
    geometries: list[Geometry] | None = None
    truths: list[np.ndarray | None] | None = None  # HW class ids at original size (255 = ignore)
    trained_x: np.ndarray | None = None
    differs: list[bool] | None = None  # per image: read differently by the two sides

    @property
    def reference_x(self) -> np.ndarray:
        """What the reference runs on: the images as training read them."""
        return self.x if self.trained_x is None else self.trained_x


def compare(eager: list[np.ndarray], outs: list[np.ndarray], batches: list[Batch], num_classes: int,
            numerics: list[np.ndarray | None] | None = None) -> dict:
    """Per-image and overall agreement of one artifact's logits with the reference's ``eager`` logits
    (on the images as training read them: masks agree end to end, decoding included). |logit
    difference| is taken on the same pixels: against ``numerics`` (the reference on the served
    pixels) where given, else over the images both sides read alike."""
    agree_cm, per_image = ConfusionMatrix(num_classes), []
    gt_eager, gt_art = ConfusionMatrix(num_classes, 255), ConfusionMatrix(num_classes, 255)
    max_diff, abs_sum, count, has_truth, differ = 0.0, 0.0, 0, False, 0
    for bi, (b, e, o) in enumerate(zip(batches, eager, outs)):
        same_pixels = numerics[bi] if numerics and numerics[bi] is not None else e
        counted = [not (b.differs and b.differs[i]) or same_pixels is not e for i in range(len(b.names))]
        diff = np.abs(same_pixels - o)
        for i in np.flatnonzero(counted):
            max_diff = max(max_diff, float(diff[i].max()))
            abs_sum, count = abs_sum + float(diff[i].sum(dtype=np.float64)), count + diff[i].size
        em, om = e.argmax(1), o.argmax(1)
        for i, name in enumerate(b.names):
            agree_cm.update(om[i], em[i])
            row = {"input": name, "mask_iou": ConfusionMatrix(num_classes).update(om[i], em[i]).miou(),
                   "pixel_agreement": float((om[i] == em[i]).mean()),
                   "max_abs_logit_diff": float(diff[i].max()) if counted[i] else None}
            if b.differs and b.differs[i]:
                row["decoded_differently"], differ = True, differ + 1
            per_image.append(row)
            if b.truths is not None and b.truths[i] is not None:
                has_truth = True
                gt_eager.update(to_mask(e[i], b.geometries[i]), b.truths[i])
                gt_art.update(to_mask(o[i], b.geometries[i]), b.truths[i])
    per_image.sort(key=lambda r: (r["mask_iou"], -(r["max_abs_logit_diff"] or 0.0)))
    agreed = agreement(agree_cm)
    summary = {"inputs": len(per_image), "max_abs_logit_diff": max_diff, "mean_abs_logit_diff": abs_sum / max(count, 1),
               "pixel_agreement": agreed["pixel_agreement"], "mask_iou": agreed["mask_iou"],
               "iou_agreement_per_class": [c["iou"] for c in agreed["classes"]], "classes": agreed["classes"]}
    if differ:
        summary["decoded_differently"] = differ
    if has_truth:
        summary["miou_vs_ground_truth"] = gt_art.miou()
        summary["miou_eager_vs_ground_truth"] = gt_eager.miou()
        summary["iou_vs_ground_truth"] = [None if np.isnan(v) else float(v) for v in gt_art.iou()]
    return {"summary": summary, "worst": per_image[:5], "per_image": per_image}
