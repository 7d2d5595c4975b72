"""Symlinked image sets from segrt/training/splits/pets.json, for calibration and evaluation:

    calib/        the first N train-split images (INT8 calibration)
    eval/         100 images never used for calibration: the 90 val-split images + train-split ones after calib
    val/images, val/masks   the val split with its trimaps (parity --masks, quality numbers)

    python benchmarks/pets_sets.py --data ../shared/data/oxford_iiit_pet_subset --out /tmp/pets-sets
"""

import argparse
import json
import os
from pathlib import Path

SPLIT = Path(__file__).resolve().parents[1] / "segrt" / "training" / "splits" / "pets.json"


def link(src: Path, dst_dir: Path) -> None:
    dst_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst_dir / src.name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--calib", type=int, default=100)
    p.add_argument("--eval", type=int, default=100)
    args = p.parse_args()
    split = json.loads(SPLIT.read_text())
    image = lambda stem: next((args.data / "images").glob(f"{stem}.*"))
    calib, rest = split["train"][: args.calib], split["train"][args.calib:]
    evaluation = (split["val"] + rest)[: args.eval]
    for stem in calib:
        link(image(stem), args.out / "calib")
    for stem in evaluation:
        link(image(stem), args.out / "eval")
    for stem in split["val"]:
        link(image(stem), args.out / "val" / "images")
        link(args.data / "masks" / f"{stem}.png", args.out / "val" / "masks")
    print(f"{args.out}: calib {len(calib)}, eval {len(evaluation)} (no overlap with calib), val {len(split['val'])}")


if __name__ == "__main__":
    main()
