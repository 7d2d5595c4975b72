"""Train/val(/test) splits: a seeded random split, a stored split.json, the split the folders give. No torch."""

from __future__ import annotations

import json
import random
from pathlib import Path

from segrt.errors import SegrtError

from .data import DataError

__all__ = ["split_pairs", "read_split", "split_from_file", "split_record", "write_split", "folder_split"]


def split_pairs(pairs, val_fraction: float, seed: int):
    """Seeded split by stem; returns (train, val)."""
    order = sorted(pairs, key=lambda p: p.name)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if val_fraction > 0 else 0
    return order[n_val:], order[:n_val]


def read_split(split_file: Path) -> dict:
    from segrt.imaging.splits import read_split as checked

    try:
        return checked(split_file)
    except SegrtError as exc:
        raise DataError(str(exc)) from None


def split_from_file(pairs, split_file: Path):
    """Use a stored split {"train": [stems], "val": [stems]}; every stem must exist."""
    split = read_split(split_file)
    by_stem = {p.name: p for p in pairs}
    missing = [s for s in split["train"] + split["val"] if s not in by_stem]
    if missing:
        raise DataError(f"{split_file}: {len(missing)} listed images are missing, e.g. {missing[:3]}")
    return [by_stem[s] for s in split["train"]], [by_stem[s] for s in split["val"]]


def split_record(train, val, seed: int, val_fraction: float | None) -> dict:
    """What split.json holds: image names (stems) of each side, and how they were drawn."""
    return {"seed": seed, "val_fraction": val_fraction, "train": sorted(p.name for p in train),
            "val": sorted(p.name for p in val)}


def write_split(train, val, path: Path, seed: int, val_fraction: float) -> None:
    from segrt.fsutil import write_bytes_atomic

    record = split_record(train, val, seed, val_fraction)
    write_bytes_atomic(path, (json.dumps(record, indent=1) + "\n").encode())


def folder_split(pairs, args):
    """The split the folders give: train trains, val validates (a share of train when there is no val
    folder), test is never used; said in one line."""
    by = {k: [p for p in pairs if p.split == k] for k in ("train", "val", "test", None)}
    train = by["train"] + by[None]
    val = by["val"]
    if not val:
        train, val = split_pairs(train, args.val_fraction, getattr(args, "seed", 0))
    print(f"split from the folders: {len(train)} train, {len(val)} val"
          + ("" if by["val"] else f" (--val-fraction {args.val_fraction} of train: no val folder)")
          + (f", {len(by['test'])} test (never trained on)" if by["test"] else ""), flush=True)
    return train, val
