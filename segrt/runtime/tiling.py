"""Sliding-window inference for images larger than a model run can hold, in bounded memory.

Overlapping tiles cover the image (the last tile of each row and column aligned to the edge), each
tile's logits are weighted by a blending window (gaussian or constant) and summed, and the argmax
is taken. Unlike MONAI's sliding_window_inference or MMSegmentation's slide mode, full-image logits
are never held: tiles are cut and normalized one at a time from the uint8 image, the weighted
logits are summed in a band of rows one tile high, and a row of the mask is final, and written, as
soon as no later tile touches it. Memory: the uint8 image and mask (H x W each), plus C x tile x W
floats for the band, whatever the height.

The sum's argmax needs no division by the summed weights (the same for every class of a pixel).
Like `sliding_window_inference(inputs, roi_size, sw_batch_size, predictor, overlap, mode)`,
tiling knows nothing of runtimes: ``segment`` takes any ``run(x) -> logits``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from segrt.errors import SegrtError
from segrt.imaging.prepare import normalize, round_up

__all__ = ["TileSpec", "tile_spec", "starts", "window", "TiledImage", "segment"]

_BLENDS = ("gaussian", "constant")
_MAX_OVERLAP = 0.9
_SIGMA_SCALE = 0.125  # gaussian sigma as a fraction of the tile side (MONAI's default)


@dataclass(frozen=True)
class TileSpec:
    tile: int  # side of a square tile, a multiple of the model's size multiple
    overlap: float = 0.25  # fraction of the tile shared with the next one, in [0, 0.9)
    blend: str = "gaussian"

    @property
    def stride(self) -> int:
        return max(1, self.tile - int(round(self.tile * self.overlap)))


def tile_spec(tile: str | int, overlap: float, blend: str, manifest) -> TileSpec:
    """Check --tile/--overlap/--blend against the model once; ``tile`` 'auto' is the training crop."""
    m = manifest.size_multiple
    if manifest.fixed_size:
        raise SegrtError(f"--tile: the model takes a fixed {'x'.join(map(str, manifest.fixed_size))} input; tiling "
                         "needs a model that runs at any size (a multiple of its stride)")
    if tile == "auto":
        crop = manifest.crop_size or manifest.input_size
        if not crop:
            raise SegrtError("--tile auto: the manifest records no training crop; give --tile N")
        tile = round_up(max(crop), m)
    try:
        tile = int(tile)
    except ValueError:
        raise SegrtError(f"--tile: expected a size in pixels or 'auto', got {tile!r}") from None
    if tile < m or tile % m:
        raise SegrtError(f"--tile {tile}: must be a multiple of {m} (the model's size multiple), at least {m}")
    if not 0 <= overlap < _MAX_OVERLAP:
        raise SegrtError(f"--overlap {overlap}: must be in [0, {_MAX_OVERLAP})")
    if blend not in _BLENDS:
        raise SegrtError(f"--blend {blend!r}: choose {' or '.join(_BLENDS)}")
    return TileSpec(tile, overlap, blend)


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, the last one aligned to the end (so tiles
    never hang over the edge unless the image is shorter than a tile: then one tile at 0)."""
    if length <= tile:
        return [0]
    out = list(range(0, length - tile, stride))
    return out + [length - tile]


@functools.lru_cache(maxsize=16)
def window(h: int, w: int, blend: str) -> np.ndarray:
    """HW float32 blending weights, max 1: a gaussian (sigma = 0.125 x side) or ones. The gaussian
    is kept >= 1e-3 so that every pixel a tile covers has weight."""
    if blend == "constant":
        return np.ones((h, w), np.float32)
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (_SIGMA_SCALE * n)) ** 2) for n in (h, w)]
    win = np.outer(*axes).astype(np.float32)
    return np.maximum(win / win.max(), 1e-3)


class TiledImage:
    """One image's tiles and its band of summed logits. ``tiles()`` yields NCHW-ready CHW float32
    tiles in row-major order; ``add(logits)`` must get their logits in that order; ``mask`` is the
    HW uint8 result, complete when ``done``."""

    def __init__(self, image: np.ndarray, spec: TileSpec, mean, std, multiple: int, num_classes: int):
        self.image, self.spec, self.mean, self.std = image, spec, mean, std
        self.h, self.w = image.shape[:2]
        # a short image: one tile, padded to the multiple
        self.th, self.tw = min(spec.tile, round_up(self.h, multiple)), min(spec.tile, round_up(self.w, multiple))
        self.ys, self.xs = starts(self.h, self.th, spec.stride), starts(self.w, self.tw, spec.stride)
        self.win = window(self.th, self.tw, spec.blend)
        self.band = np.zeros((num_classes, self.th, max(self.w, self.tw)), np.float32)  # rows [top, top + th)
        self.mask = np.zeros((self.h, self.w), np.uint8)
        self.count, self.row, self.col = len(self.ys) * len(self.xs), 0, 0
        self.added = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.th, self.tw

    @property
    def done(self) -> bool:
        return self.added == self.count

    def tiles(self) -> Iterator[np.ndarray]:
        for y in self.ys:
            for x in self.xs:
                crop = self.image[y:y + self.th, x:x + self.tw]
                tile = normalize(crop, self.mean, self.std)
                if tile.shape[1:] != (self.th, self.tw):  # past the image edge: the mean colour (0)
                    tile = np.pad(tile, ((0, 0), (0, self.th - tile.shape[1]), (0, self.tw - tile.shape[2])))
                yield tile

    def add(self, logits: np.ndarray) -> None:
        """The CHW logits of the next tile, in the order tiles() gave them."""
        x = self.xs[self.col]
        self.band[:, :, x:x + self.tw] += logits * self.win
        self.added += 1
        self.col += 1
        if self.col == len(self.xs):  # a tile row is complete: rows above the next one are final
            self.col, self.row = 0, self.row + 1
            top = self.ys[self.row - 1]
            nxt = self.ys[self.row] if self.row < len(self.ys) else self.h
            self._finalize(top, nxt)

    def _finalize(self, top: int, nxt: int) -> None:
        n = min(nxt, self.h) - top
        self.mask[top:top + n] = self.band[:, :n, :self.w].argmax(0)
        keep = self.th - (nxt - top)
        if keep > 0:  # rows shared with the next tile row move to the top of the band
            self.band[:, :keep] = self.band[:, nxt - top:]
        self.band[:, max(keep, 0):] = 0


def segment(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, spec: TileSpec, manifest,
            batch_size: int = 4) -> np.ndarray:
    """HWC uint8 image -> HW uint8 mask by sliding window, ``batch_size`` tiles per ``run`` call."""
    tiled = TiledImage(image, spec, manifest.mean, manifest.std, manifest.size_multiple, manifest.num_classes)
    batch = []
    for tile in tiled.tiles():
        batch.append(tile)
        if len(batch) == batch_size:
            for logits in run(np.stack(batch)):
                tiled.add(logits)
            batch = []
    if batch:
        for logits in run(np.stack(batch)):
            tiled.add(logits)
    return tiled.mask
