"""Paired augmentation: the mask is a known function of the pixels; after random geometric and
photometric transforms it must still match the image."""

import numpy as np
import pytest
import torch

from segrt.manifest import IMAGENET_MEAN, IMAGENET_STD
from segrt.training.augment import TrainDataset, train_transform
from segrt.training.data import IGNORE_INDEX

COLORS = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230]], np.uint8)  # class c -> dominant channel c


def make_sample(rng, size=128, cell=32):
    classes = rng.integers(0, 3, (size // cell, size // cell))
    mask = np.kron(classes, np.ones((cell, cell), np.int64)).astype(np.uint8)
    return COLORS[mask], mask


def agreement(img, mask):
    """Fraction of non-ignored pixels whose dominant channel equals the mask class."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    dominant = (img * std + mean).argmax(0)
    keep = mask != IGNORE_INDEX
    return float((dominant[keep] == mask[keep]).float().mean()), keep


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    return [make_sample(rng) for _ in range(8)]


def test_mask_follows_image(samples):
    torch.manual_seed(0)
    ds = TrainDataset(samples, train_transform((64, 64), IMAGENET_MEAN, IMAGENET_STD))
    for _ in range(5):
        for i in range(len(ds)):
            img, mask = ds[i]
            assert img.shape == (3, 64, 64) and img.dtype == torch.float32
            assert mask.shape == (64, 64) and mask.dtype == torch.int64
            assert set(mask.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}  # nearest: no new values
            score, keep = agreement(img, mask)
            assert keep.float().mean() > 0.5
            assert score > 0.93, score  # only boundary pixels may differ


def test_control_unpaired_transform_fails(samples):
    """The same check on independently transformed image and mask does fail (test can fail)."""
    torch.manual_seed(0)
    ds = TrainDataset(samples, train_transform((64, 64), IMAGENET_MEAN, IMAGENET_STD))
    scores = []
    for i in range(len(ds)):
        img, _ = ds[i]
        _, mask = ds[i]
        scores.append(agreement(img, mask)[0])
    assert np.mean(scores) < 0.8
