"""Cross-entropy, soft Dice and their sum; class weights and ignore_index honoured by both."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["soft_dice_loss", "SegmentationLoss", "LOSS_WEIGHTS", "median_frequency_weights"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
                   class_weights: torch.Tensor | None = None, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of soft Dice. logits NCHW float, target NHW int64.

    Ignored pixels count neither in prediction nor target. A perfect prediction gives ~0.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).float()
    valid = valid.unsqueeze(1).float()
    probs, onehot = probs * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)  # per class
    if class_weights is None:
        return 1 - dice.mean()
    w = class_weights.to(dice)
    return 1 - (dice * w).sum() / w.sum()


class SegmentationLoss(nn.Module):
    """ce_weight * CE + dice_weight * soft Dice."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0,
                 class_weights: torch.Tensor | None = None, ignore_index: int | None = 255):
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        self.ce_weight, self.dice_weight, self.ignore_index = ce_weight, dice_weight, ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            ignore = -100 if self.ignore_index is None else self.ignore_index
            loss = loss + self.ce_weight * F.cross_entropy(
                logits.float(), target, weight=self.class_weights, ignore_index=ignore)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index, self.class_weights)
        return loss


LOSS_WEIGHTS = {"ce": (1.0, 0.0), "dice": (0.0, 1.0), "ce+dice": (1.0, 1.0)}


def median_frequency_weights(counts: np.ndarray) -> torch.Tensor:
    """Median-frequency balancing: w_c = median(f) / f_c (classes never seen get weight 0)."""
    freq = counts / max(counts.sum(), 1)
    seen = freq > 0
    w = np.zeros_like(freq, dtype=np.float64)
    w[seen] = np.median(freq[seen]) / freq[seen]
    return torch.tensor(w, dtype=torch.float32)
