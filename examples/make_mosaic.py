"""A large grayscale mosaic of EM slices, to try tiled inference on an image larger than any model run:

    python examples/make_mosaic.py --images tests/data/isbi/images --size 8192 --out mosaic.png
    segrt predict mosaic.png --model exported/isbi --tile auto --max-pixels 0 --out big/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None


def mosaic(images: list[Path], size: int) -> np.ndarray:
    """size x size uint8: the images side by side, flipped in turn so that neighbours differ."""
    tiles = [np.asarray(Image.open(p).convert("L")) for p in images]
    th, tw = tiles[0].shape
    out = np.empty((size, size), np.uint8)
    k = 0
    for y in range(0, size, th):
        for x in range(0, size, tw):
            t = tiles[k % len(tiles)]
            t = t[::-1] if k % 2 else t
            t = t[:, ::-1] if (k // len(tiles)) % 2 else t
            out[y:y + th, x:x + tw] = t[:size - y, :size - x]
            k += 1
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=Path, required=True, help="a folder of same-size grayscale images")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--out", type=Path, default=Path("mosaic.png"))
    args = p.parse_args()
    Image.fromarray(mosaic(sorted(args.images.glob("*.png")), args.size)).save(args.out, compress_level=1)
    print(f"wrote {args.out} ({args.size}x{args.size})")


if __name__ == "__main__":
    main()
