"""Train/val(/test) splits: a seeded random split, a stored split.json, the split the folders give. No torch."""

from __future__ import annotations

import json
import random
from pathlib import Path

from segrt.errors import SegrtError

from .data import DataError

__all__ = ["split_pairs", "read_split", "split_from_file", "split_record", "write_split", "folder_split",
           "list_files", "split_from_lists", "split_data"]
_LIST_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


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
    by = {k: [p for p in pairs if p.split == k] for k in ("train", "val", "test", None)}  # test: never used
    train = by["train"] + by[None]
    val = by["val"]
    if not val:
        train, val = split_pairs(train, args.val_fraction, getattr(args, "seed", 0))
    print(f"split from the folders: {len(train)} train, {len(val)} val"
          + ("" if by["val"] else f" (--val-fraction {args.val_fraction} of train: no val folder)")
          + (f", {len(by['test'])} test (never trained on)" if by["test"] else ""), flush=True)
    return train, val


def list_files(args) -> dict[str, Path]:
    """{split: list file} from --split-file NAME=FILE; else a folder under --data holding train.txt and
    val.txt (MMSegmentation's splits/, VOC's ImageSets/Segmentation/), said in one line."""
    given = [f for f in args.split_file or () if "=" in f]
    lists = {}
    for item in given:
        name, _, file = item.partition("=")
        if name.lower() not in _LIST_NAMES:
            raise DataError(f"--split-file {item}: NAME is train, val or test (got {name!r})")
        if not Path(file).is_file():
            raise DataError(f"--split-file {item}: no such file")
        lists[_LIST_NAMES[name.lower()]] = Path(file)
    if lists or not getattr(args, "data", None) or getattr(args, "images", None) or args.layout != "folders":
        return lists
    for found in sorted(Path(args.data).rglob("train.txt")):
        if (found.parent / "val.txt").is_file() and len(found.relative_to(args.data).parts) <= 4:
            lists = {k: found.parent / f"{k}.txt" for k in ("train", "val", "test") if (found.parent / f"{k}.txt").is_file()}
            print(f"split lists found in {found.parent}: {', '.join(f'{k}.txt' for k in lists)} (one name a line; "
                  "--split-file NAME=FILE to choose others)", flush=True)
            break
    return lists


def split_from_lists(pairs, lists: dict[str, Path]) -> dict[str, list]:
    """The pairs each list names (a stem or relative path a line, with or without extension); a name
    with no pair is an error naming it; pairs no list names are left out."""
    index = {}
    for p in pairs:
        for key in (p.name, p.key, p.image.stem, p.image.with_suffix("").as_posix()):
            if key:
                index.setdefault(key, p)
    out = {}
    for split, path in lists.items():
        names = [ln.strip().split()[0] for ln in path.read_text().splitlines() if ln.strip()]
        keys = [Path(n).with_suffix("").as_posix() if Path(n).suffix.lower() in (".jpg", ".jpeg", ".png", ".tif",
                                                                                  ".tiff", ".bmp") else n
                for n in names]
        missing = [n for n in keys if n not in index and not any(k.endswith("/" + n) for k in index)]
        if missing:
            raise DataError(f"{path}: {len(missing)} of its {len(names)} names have no image/mask pair, e.g. "
                            f"{missing[:3]}")
        tails = {k.rsplit("/", 1)[-1]: p for k, p in index.items()}
        out[split] = [index.get(n) or tails[n.rsplit("/", 1)[-1]] for n in keys]
    return out


def split_data(args, layout, pairs, problems: list[str]):
    """-> (train, val, test pairs, how: val-images | lists | folders | json | random) as the options and the
    data say: --val-images, list files, the folders' train/val/test, a stored split.json, else a seeded
    random split (written to --split-file FILE.json)."""
    from . import data

    json_file = next((Path(f) for f in args.split_file or () if "=" not in f), None)
    test = [p for p in pairs if p.split == "test"]
    if args.val_images:  # read as the training side is: its table, suffixes and value map
        import dataclasses

        val_layout = dataclasses.replace(layout, images=Path(args.val_images),
                                         masks=Path(args.val_masks or args.val_images), folders=[])
        val, more = data.find_pairs(val_layout, args.skip_bad)
        problems += more
        return [p for p in pairs if p.split != "test"], val, test, "val-images"
    lists = list_files(args)
    if lists:
        found = split_from_lists(pairs, lists)
        if problems:  # VOC: JPEGImages holds many photos without masks; a listed one without is an error above
            print(f"{len(problems)} image(s) without a mask, in no list: left out", flush=True)
            problems.clear()
        train, val, test = found.get("train", []), found.get("val", []), found.get("test", [])
        if not val:
            train, val = split_pairs(train, args.val_fraction, args.seed)
        print(f"split from the lists: {len(train)} train, {len(val)} val" + (f", {len(test)} test (never trained on)"
              if test else "") + f"; {len(pairs) - len(train) - len(val) - len(test)} pair(s) in no list left out",
              flush=True)
        return train, val, test, "lists"
    if any(p.split for p in pairs):
        train, val = folder_split(pairs, args)
        return train, val, test, "folders"
    if json_file and json_file.is_file():
        return (*split_from_file(pairs, json_file), [], "json")
    train, val = split_pairs(pairs, args.val_fraction, args.seed)
    if json_file:
        write_split(train, val, json_file, args.seed, args.val_fraction)
    return train, val, [], "random"
