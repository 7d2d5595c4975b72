"""Logits -> masks at the original image size, and mask outputs (PNG, palette, overlay). numpy + Pillow.

``to_mask`` is the one definition of a predicted mask: resize the logits to the original size
(Pillow's bilinear), then take the per-pixel argmax (first class wins ties).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from isal import isal_zlib
from PIL import Image

from segrt.imaging.prepare import Geometry, resize_mask

__all__ = ["to_mask", "argmax", "restore_logits", "softmax", "voc_palette", "palette", "encode_mask_pngs", "overlay", "overlay_jpeg"]


def to_mask(logits: np.ndarray, geometry: Geometry) -> np.ndarray:
    """CHW logits of the model input -> HW uint8 class ids at the original size (resize, then argmax; or,
    where the export's policy says upsample mask, argmax then a nearest resize of the mask).

    Resizing is linear, so only the C-1 differences to class 0 are resized; class 0 wins where
    every difference is <= 0. When enlarging, only pixels near a class boundary are interpolated.
    """
    h, w = geometry.original_hw
    if geometry.upsample == "mask":  # the pipeline's own way: argmax at the model's size, mask resized (nearest)
        small = argmax(logits[:, :h, :w] if geometry.padded else logits)
        return small if small.shape == (h, w) else resize_mask(small, (h, w))
    diffs = logits[1:] - logits[:1]
    if not geometry.padded and h >= diffs.shape[1] and w >= diffs.shape[2] and (h, w) != diffs.shape[1:]:
        return _enlarged_mask(diffs, (h, w))
    return _argmax(restore_logits(diffs, geometry))[0]


def argmax(logits: np.ndarray) -> np.ndarray:
    """CHW logits -> HW uint8 class per pixel, the first class on ties (to_mask's definition)."""
    return _argmax(logits[1:] - logits[:1])[0]


def restore_logits(logits: np.ndarray, geometry: Geometry) -> np.ndarray:
    """CHW float32 logits of the model input -> CHW float32 at the original image size."""
    h, w = geometry.original_hw
    if geometry.padded:
        return logits[:, :h, :w]
    if logits.shape[1:] == (h, w):
        return logits
    return np.stack([_resize_plane(c, (h, w)) for c in logits])


def _resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HW float32 -> HW float32 at size (h, w): Pillow's BILINEAR (antialiased when shrinking)."""
    img = Image.fromarray(np.ascontiguousarray(plane, np.float32), "F")
    return np.asarray(img.resize((size[1], size[0]), Image.BILINEAR))


def _argmax(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C-1, ...) differences to class 0 -> (uint8 class index per pixel (first wins ties), the
    winning value: max(0, diffs))."""
    best = np.zeros(diffs.shape[1:], np.float32)
    idx = np.zeros(diffs.shape[1:], np.uint8)
    for c, plane in enumerate(diffs, start=1):
        idx[plane > best] = c
        np.maximum(best, plane, out=best)
    return idx, best


def _enlarged_mask(diffs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """to_mask when enlarging, exactly: a bilinear output pixel is a convex mix of (at most) 2x2
    input pixels, so where all of them strictly agree on the class it is that class. Only the
    other pixels (a few % along boundaries) are interpolated."""
    _, h, w = diffs.shape
    H, W = size
    cls, best = _argmax(diffs)
    cls = cls.view(np.int8)
    ties = (best == 0).astype(np.int8) + (diffs == best).sum(axis=0, dtype=np.int8)
    cls[ties > 1] = -1
    p = np.pad(cls, ((0, 1), (0, 1)), mode="edge")  # cell (i, j) = inputs {i, i+1} x {j, j+1}
    a = p[:-1, :-1]
    cell = np.where((a == p[1:, :-1]) & (a == p[:-1, 1:]) & (a == p[1:, 1:]), a, np.int8(-1))
    y0, y1, wy0 = _enlarge_taps(h, H)
    x0, x1, wx0 = _enlarge_taps(w, W)
    full = np.take(cell, x0, axis=1)[y0].reshape(-1)  # nearest cell per output pixel (columns first: fewer rows)
    todo = np.flatnonzero(full < 0)
    ys, xs = np.divmod(todo, W)
    a0, b0 = wy0[ys], wx0[xs]
    a1, b1 = 1 - a0, 1 - b0
    r0, r1, c0, c1 = y0[ys] * w, y1[ys] * w, x0[xs], x1[xs]
    flat = diffs.reshape(len(diffs), -1)
    mixed = ((flat.take(r0 + c0, 1) * b0 + flat.take(r0 + c1, 1) * b1) * a0
             + (flat.take(r1 + c0, 1) * b0 + flat.take(r1 + c1, 1) * b1) * a1)
    full[todo] = _argmax(mixed)[0].view(np.int8)
    return full.view(np.uint8).reshape(H, W)


@functools.lru_cache(maxsize=256)
def _enlarge_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bilinear taps when enlarging (n_out >= n_in): (first, second, first's weight)."""
    centers = (np.arange(n_out) + 0.5) * (n_in / n_out)
    first = np.maximum(np.floor(centers - 0.5), 0).astype(np.int64)
    second = np.minimum(first + 1, n_in - 1)
    w0 = 1 - np.abs(first + 0.5 - centers)
    w1 = np.where(second > first, np.clip(1 - np.abs(second + 0.5 - centers), 0, None), 0)
    return first, second, (w0 / (w0 + w1)).astype(np.float32)


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@functools.lru_cache(maxsize=4)
def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: (n, 3) uint8; class 0 black, 1 dark red, 2 green, ..."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    pal.flags.writeable = False  # cached: shared by every caller
    return pal


def palette(colours: list | None = None) -> np.ndarray:
    """(256, 3) uint8: the dataset's class colours first (a label table, manifest labels.colors), the
    VOC palette for the rest (and for all where there are none)."""
    pal = voc_palette().copy()
    if colours:
        pal[:len(colours)] = np.asarray(colours, np.uint8)
    return pal


def encode_mask_pngs(mask: np.ndarray, colours: list | None = None) -> tuple[bytes, bytes]:
    """HW uint8 class ids -> (greyscale PNG, palette PNG), both holding the class ids as pixel values.

    Encoded once: the two files share their pixel data (IDAT: rows unfiltered, deflated by ISA-L at its
    fastest level, ~5x zlib's for class masks) and differ only in the colour type and the palette.
    """
    h, w = mask.shape
    rows = np.zeros((h, w + 1), np.uint8)  # each row starts with its filter type, 0 (none)
    rows[:, 1:] = mask
    data = _chunk(b"IDAT", isal_zlib.compress(rows.tobytes(), 1)) + _chunk(b"IEND", b"")
    header = lambda colour_type: _PNG + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))  # noqa: E731
    return header(0) + data, header(3) + _chunk(b"PLTE", palette(colours).tobytes()) + data


_PNG = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, skip_class: int | None = 0,
            rows: int = 1024, colours: list | None = None) -> np.ndarray:
    """Blend palette colours over an HWC uint8 RGB image; ``skip_class`` pixels are left as they are.
    Done ``rows`` rows at a time, so a huge image needs no full-size float copy."""
    out, pal = np.empty((*mask.shape, 3), np.uint8), palette(colours)
    for y in range(0, mask.shape[0], rows):
        img, band = image[y:y + rows], mask[y:y + rows]
        rgb = img if img.shape[2] == 3 else np.repeat(img, 3, axis=2)
        blend = rgb.astype(np.float32) * (1 - alpha) + pal[band].astype(np.float32) * alpha
        if skip_class is not None:
            blend[band == skip_class] = rgb[band == skip_class]
        out[y:y + rows] = blend
    return out


def overlay_jpeg(image: np.ndarray, mask: np.ndarray, skip_class: int | None, colours: list | None = None) -> bytes:
    """overlay() as the JPEG predict writes (NAME.overlay.jpg) and serve answers (?format=overlay)."""
    buf = io.BytesIO()
    Image.fromarray(overlay(image, mask, skip_class=skip_class, colours=colours)).save(buf, "JPEG", quality=90)
    return buf.getvalue()

