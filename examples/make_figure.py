"""README figure: photo | predicted overlay | ground-truth trimap, for a few example images.

    python examples/make_figure.py --model exported/pets --out examples/figure.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from segrt.imaging import decode, masks
from segrt.runtime.session import Session
from segrt.verify.parity import truth_lut

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=HERE.parent / "exported" / "pets")
    p.add_argument("--images", type=Path, default=HERE / "images")
    p.add_argument("--masks", type=Path, default=HERE / "masks")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--out", type=Path, default=HERE / "figure.png")
    args = p.parse_args()

    session = Session(args.model, provider="cpu")
    m = session.manifest
    lut = truth_lut(m)
    paths = decode.list_images(args.images)[: args.count]
    fig, axes = plt.subplots(len(paths), 3, figsize=(9, 2.6 * len(paths)))
    for row, path in zip(np.atleast_2d(axes), paths):
        image = decode.load_image(path)
        x, geo = decode.read_model_input(path, m)
        pred = masks.to_mask(session.run(x[None])[0], geo)
        truth = lut[decode.load_mask(args.masks / f"{path.stem}.png")]
        truth = np.where(truth == 255, 0, truth).astype(np.uint8)
        for ax, img, title in zip(row, (image, masks.overlay(image, pred), masks.overlay(image, truth)),
                                  (path.name, "predicted (segrt predict)", "ground truth (trimap)")):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{m.name}: red = pet, green = border; {session.describe()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
