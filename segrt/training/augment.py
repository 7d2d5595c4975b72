"""Augmentation and the datasets training reads: paired transforms (torchvision transforms.v2, the
mask a tv_tensors.Mask filled with the ignore label), in-memory training pairs augmented on the fly,
and validation prepared exactly as `segrt predict` prepares images."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from segrt.imaging.prepare import prepare, resize_mask
from segrt.training.data import IGNORE_INDEX

__all__ = ["train_transform", "native_train_transform", "TrainDataset", "EvalDataset"]


def train_transform(size: tuple[int, int], mean, std, channels: int = 3, crop_scale: float = 0.25) -> v2.Compose:
    """Geometric transforms move image and mask together (mask: nearest, ignore fill);
    photometric ones touch the image only."""
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=15, scale=(0.9, 1.1), fill=fill)], p=0.3),
        v2.ColorJitter(0.3, 0.3, 0.3 if channels == 3 else 0, 0.05 if channels == 3 else 0),
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(mean, std),
    ])


def native_train_transform(size: tuple[int, int], mean, std, channels: int = 3) -> v2.Compose:
    """Random crops at native scale (no resizing: the model sees the scale it will be run at),
    flips both ways, small rotations; photometric jitter on the image only."""
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
    return v2.Compose([
        v2.RandomCrop(size, pad_if_needed=True, fill=fill),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=15, fill=fill)], p=0.3),
        v2.ColorJitter(0.3, 0.3, 0.3 if channels == 3 else 0, 0.05 if channels == 3 else 0),
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(mean, std),
    ])


class TrainDataset(torch.utils.data.Dataset):
    """In-memory uint8 pairs, augmented on the fly. Yields (CHW float32, HW int64)."""

    def __init__(self, samples, transform):
        self.samples = [(torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(m))
                        for img, m in samples]
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        img, mask = self.samples[i]
        img, mask = self.transform(tv_tensors.Image(img), tv_tensors.Mask(mask))
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class EvalDataset(torch.utils.data.Dataset):
    """Deterministic, exactly as `segrt predict` prepares images (segrt.imaging.decode): resized to
    ``size`` (masks nearest), or with ``size`` None at native resolution padded to ``multiple``
    (masks padded with the ignore label)."""

    def __init__(self, samples, size: tuple[int, int] | None, mean, std, multiple: int = 1):
        self.items = []
        for img, labels in samples:
            x, geo = prepare(img, mean, std, size, multiple)
            mask = resize_mask(labels, size) if size else np.pad(
                labels, ((0, geo.input_hw[0] - labels.shape[0]), (0, geo.input_hw[1] - labels.shape[1])),
                constant_values=IGNORE_INDEX)
            self.items.append((torch.from_numpy(x), torch.from_numpy(mask.astype(np.int64))))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
