"""Decoded pixels -> model input, and its geometry back (numpy + Pillow, no torch): resize to the working
size (Pillow's filters) or pad at native size, normalize (or keep uint8 pixels for a variant that
normalizes in its graph); masks resized nearest; normalized inputs turned back into pixels.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["FILTERS", "Geometry", "round_up", "prepare", "normalize", "resize_mask", "to_uint8", "untimed"]


def untimed(stage: str):
    """A clock that times nothing (the default where no accounting asks)."""
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Geometry:
    """How a model input relates to the original image: resized, or padded at native size."""

    original_hw: tuple[int, int]
    input_hw: tuple[int, int]
    padded: bool  # True: image sits at the top-left of the input, unscaled
    upsample: str = "logits"  # to the original size: resize the logits (bilinear), or the mask (nearest)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= n."""
    return -(-n // multiple) * multiple


def prepare(image: np.ndarray | Image.Image, mean: list[float], std: list[float], size: tuple[int, int] | None, multiple: int,
            original_hw: tuple[int, int] | None = None, pixels: bool = False, resample: str = "bilinear",
            upsample: str = "logits", clock=None) -> tuple[np.ndarray, Geometry]:
    """HWC uint8 (or a Pillow image in mode L or RGB that is to be resized) -> (CHW float32 normalized,
    Geometry); ``pixels``: CHW uint8 instead (for a variant
    that normalizes in its graph; padding round(255*mean), the nearest pixel to the mean colour).

    ``size`` (h, w): resize to the model's working size (``resample``: Pillow's bilinear, bicubic or nearest;
    antialiased when shrinking). ``upsample``: how to_mask brings the prediction back (logits or mask).
    ``size`` None: keep native resolution and pad bottom/right to a multiple of ``multiple``
    (padding value 0 after normalization, i.e. the mean colour).
    ``original_hw``: the file's true size when ``image`` was decoded at a reduced scale.
    """
    h, w = image.shape[:2] if isinstance(image, np.ndarray) else (image.height, image.width)
    original_hw, clock = tuple(original_hw or (h, w)), clock or untimed
    if size is not None:
        if (h, w) != tuple(size):
            with clock("resize"):
                image = _resize_uint8(image, size, resample)
        in_hw, padded = tuple(size), False
    else:
        in_hw, padded = (round_up(h, multiple), round_up(w, multiple)), True
    with clock("to_tensor"):
        return _to_tensor(image, mean, std, pixels, padded, in_hw, h, w), Geometry(original_hw, in_hw, padded, upsample)


def _to_tensor(image, mean, std, pixels: bool, padded: bool, in_hw, h: int, w: int) -> np.ndarray:
    x = np.ascontiguousarray(image.transpose(2, 0, 1)) if pixels else normalize(image, mean, std)
    if padded and in_hw != (h, w):
        pad = ((0, 0), (0, in_hw[0] - h), (0, in_hw[1] - w))
        x = np.stack([np.pad(c, pad[1:], constant_values=round(255 * m)) for c, m in zip(x, mean)]) if pixels \
            else np.pad(x, pad)
    return x


def normalize(image: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """HWC uint8 -> CHW float32, (x/255 - mean) / std per channel (a 256-entry table per channel)."""
    lut = _normalize_table(tuple(map(float, mean)), tuple(map(float, std)))
    return np.stack([lut[c][image[:, :, c]] for c in range(image.shape[2])])


@functools.lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return ((levels[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None])


FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def _resize_uint8(image: np.ndarray | Image.Image, size: tuple[int, int], resample: str = "bilinear") -> np.ndarray:
    """HWC uint8 (or an L / RGB Pillow image) -> HWC uint8 at size (h, w), Pillow's filter (antialiased when
    shrinking)."""
    img = image
    if isinstance(image, np.ndarray):
        img = Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image, "RGB")
    out = np.asarray(img.resize((size[1], size[0]), FILTERS[resample]))
    return out[:, :, None] if out.ndim == 2 else out


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HW uint8 -> HW uint8 at size (h, w), nearest neighbour."""
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def to_uint8(x: np.ndarray, mean, std) -> np.ndarray:
    """NCHW float32 normalized -> NCHW uint8: the pixels it was made from (padding becomes round(255*mean))."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return np.clip(np.rint((x * s + m) * 255.0), 0, 255).astype(np.uint8)
