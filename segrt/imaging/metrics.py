"""Segmentation metrics from a confusion matrix (numpy only, no torch).

Conventions:
- ``cm[t, p]`` counts pixels of true class t predicted as p.
- Pixels whose target equals ``ignore_index`` are left out everywhere.
- A class absent from both prediction and target has IoU/Dice = NaN and is excluded from the
  means (mIoU, mean Dice): it was neither present nor hallucinated, so it says nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_CLASS_SHARE", "CLASS_IOU_MARGIN", "ConfusionMatrix", "mask_iou", "agreement", "agreement_problems",
           "gate_score"]

# How agreement with a reference is gated (verify/thresholds.py holds the gate values themselves):
# a class gates when it covers at least MIN_CLASS_SHARE of the reference's pixels over the whole set
# (rarer classes are reported, not gating: two stray pixels say nothing), and each gating class may
# trail the gate by at most CLASS_IOU_MARGIN (a class with support that collapses fails the gate).
MIN_CLASS_SHARE = 0.002
CLASS_IOU_MARGIN = 0.05


class ConfusionMatrix:
    """Accumulates a (num_classes x num_classes) int64 confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> "ConfusionMatrix":
        """pred, target: integer class ids of the same shape (any number of dims)."""
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        target = np.asarray(target).reshape(-1).astype(np.int64)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target sizes differ: {pred.size} vs {target.size}")
        keep = target != self.ignore_index if self.ignore_index is not None else slice(None)
        pred, target = pred[keep], target[keep]
        n = self.num_classes
        if target.size and (target.min() < 0 or target.max() >= n or pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"class ids must be in [0, {n}) (or the ignore index)")
        self.matrix += np.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        return self

    def merge(self, other: "ConfusionMatrix | np.ndarray") -> "ConfusionMatrix":
        self.matrix += other.matrix if isinstance(other, ConfusionMatrix) else other
        return self

    def _tp_fp_fn(self):
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(axis=0) - tp
        fn = self.matrix.sum(axis=1) - tp
        return tp, fp, fn

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent from both."""
        tp, fp, fn = self._tp_fp_fn()
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def dice(self) -> np.ndarray:
        """Per-class Dice = 2TP / (2TP + FP + FN); NaN for classes absent from both."""
        tp, fp, fn = self._tp_fp_fn()
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / denom, np.nan)

    def miou(self) -> float:
        return _nanmean(self.iou())

    def mean_dice(self) -> float:
        return _nanmean(self.dice())

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def summary(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "mean_dice": self.mean_dice(),
            "pixel_accuracy": self.pixel_accuracy(),
            "iou": {n: _none_if_nan(v) for n, v in zip(names, self.iou())},
            "dice": {n: _none_if_nan(v) for n, v in zip(names, self.dice())},
        }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _none_if_nan(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def mask_iou(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """Mean over classes of IoU between two predicted masks (agreement, symmetric)."""
    return ConfusionMatrix(num_classes).update(a, b).miou()


def agreement(cm: ConfusionMatrix) -> dict:
    """A variant's masks against its reference's over a whole image set (intersection and union
    summed over images; ``cm[t, p]``: t the reference's class, p the variant's). -> {"mask_iou": mean
    IoU over the classes with support, "pixel_agreement", "classes": [{"share", "iou", "gated"}]}."""
    support = cm.matrix.sum(axis=1).astype(np.float64)
    share = support / max(support.sum(), 1.0)
    iou = cm.iou()
    gated = share >= MIN_CLASS_SHARE
    mean = _nanmean(iou[gated]) if gated.any() else _nanmean(iou)
    return {"mask_iou": mean, "pixel_agreement": cm.pixel_accuracy(),
            "classes": [{"share": float(sh), "iou": _none_if_nan(v), "gated": bool(g)}
                        for sh, v, g in zip(share, iou, gated)]}


def agreement_problems(agreed: dict, gate: float, names: list[str] | None = None) -> list[str]:
    """What misses ``gate`` in an agreement() result (empty: it passes): the mean IoU over the
    classes with support, the pixel agreement, and each such class (at most CLASS_IOU_MARGIN below)."""
    problems = []
    if not agreed["mask_iou"] >= gate:
        problems.append(f"mask IoU agreement {agreed['mask_iou']:.5f} < {gate}")
    if not agreed.get("pixel_agreement", 1.0) >= gate:
        problems.append(f"pixel agreement {agreed['pixel_agreement']:.5f} < {gate}")
    floor = gate - CLASS_IOU_MARGIN
    for i, c in enumerate(agreed.get("classes", [])):
        if c["gated"] and not (c["iou"] is not None and c["iou"] >= floor):
            name = names[i] if names and i < len(names) else f"class {i}"
            problems.append(f"class {name!r} ({c['share']:.1%} of the pixels) agrees at IoU "
                            f"{c['iou'] if c['iou'] is not None else float('nan'):.4f} < {floor:.3f}")
    return problems


def gate_score(agreed: dict) -> float:
    """One number that is >= a gate exactly when agreement_problems finds nothing: the smallest of the
    mean IoU over classes with support, the pixel agreement and each such class's IoU plus the margin.
    What the fallback searches (ONNX Runtime's, NNCF's accuracy control) maximise."""
    classes = [c["iou"] if c["iou"] is not None else 0.0 for c in agreed.get("classes", []) if c["gated"]]
    return min([agreed["mask_iou"], agreed.get("pixel_agreement", 1.0), *(v + CLASS_IOU_MARGIN for v in classes)])
