"""Segmentation metrics from a confusion matrix (numpy only, no torch).

Conventions:
- ``cm[t, p]`` counts pixels of true class t predicted as p.
- Pixels whose target equals ``ignore_index`` are left out everywhere.
- A class absent from both prediction and target has IoU/Dice = NaN and is excluded from the
  means (mIoU, mean Dice): it was neither present nor hallucinated, so it says nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ConfusionMatrix", "mask_iou"]


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
