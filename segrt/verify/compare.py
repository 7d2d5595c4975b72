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

from segrt.imaging.decode import Geometry
from segrt.imaging.masks import to_mask
from segrt.imaging.metrics import ConfusionMatrix, agreement

__all__ = ["Batch", "compare"]


@dataclass
class Batch:
    """Model-ready inputs: NCHW float32, one name per image, and for real images how to restore."""

    label: str
    x: np.ndarray
    names: list[str]
    geometries: list[Geometry] | None = None
    truths: list[np.ndarray | None] | None = None  # HW class ids at original size (255 = ignore)


def compare(eager: list[np.ndarray], outs: list[np.ndarray], batches: list[Batch], num_classes: int) -> dict:
    """Per-image and overall agreement of one artifact's logits with eager logits."""
    agree_cm, per_image = ConfusionMatrix(num_classes), []
    gt_eager, gt_art = ConfusionMatrix(num_classes, 255), ConfusionMatrix(num_classes, 255)
    max_diff, abs_sum, count, has_truth = 0.0, 0.0, 0, False
    for b, e, o in zip(batches, eager, outs):
        diff = np.abs(e - o)
        max_diff = max(max_diff, float(diff.max()))
        abs_sum, count = abs_sum + float(diff.sum(dtype=np.float64)), count + diff.size
        em, om = e.argmax(1), o.argmax(1)
        for i, name in enumerate(b.names):
            agree_cm.update(om[i], em[i])
            per_image.append({"input": name, "mask_iou": ConfusionMatrix(num_classes).update(om[i], em[i]).miou(),
                              "pixel_agreement": float((om[i] == em[i]).mean()),
                              "max_abs_logit_diff": float(diff[i].max())})
            if b.truths is not None and b.truths[i] is not None:
                has_truth = True
                gt_eager.update(to_mask(e[i], b.geometries[i]), b.truths[i])
                gt_art.update(to_mask(o[i], b.geometries[i]), b.truths[i])
    per_image.sort(key=lambda r: (r["mask_iou"], -r["max_abs_logit_diff"]))
    agreed = agreement(agree_cm)
    summary = {"inputs": len(per_image), "max_abs_logit_diff": max_diff, "mean_abs_logit_diff": abs_sum / max(count, 1),
               "pixel_agreement": agreed["pixel_agreement"], "mask_iou": agreed["mask_iou"],
               "iou_agreement_per_class": [c["iou"] for c in agreed["classes"]], "classes": agreed["classes"]}
    if has_truth:
        summary["miou_vs_ground_truth"] = gt_art.miou()
        summary["miou_eager_vs_ground_truth"] = gt_eager.miou()
        summary["iou_vs_ground_truth"] = [None if np.isnan(v) else float(v) for v in gt_art.iou()]
    return {"summary": summary, "worst": per_image[:5], "per_image": per_image}
