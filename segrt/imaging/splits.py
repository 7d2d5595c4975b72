"""A training run's split (split.json: which images trained and which validated), read once and
carried by the export's manifest, so gates never judge on training images and parity can say
whether the images it scored were held out. Images are matched by file stem."""

from __future__ import annotations

import json
import os
from pathlib import Path

from segrt.errors import SegrtError, first_line

__all__ = ["SPLIT_FILE", "read_split", "split_beside", "describe"]

SPLIT_FILE = "split.json"


def read_split(path: str | os.PathLike, option: str = "--split-file") -> dict:
    """{"train": [stems], "val": [stems], ...}, checked: JSON, both lists of names, none in both."""
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise SegrtError(f"{option} {path}: not a readable JSON split ({first_line(exc)})") from None
    for key in ("train", "val"):
        if not isinstance(split, dict) or not isinstance(split.get(key), list) \
                or not all(isinstance(s, str) for s in split[key]):
            raise SegrtError(f"{option} {path}: needs \"train\" and \"val\" lists of image names")
    both = sorted(set(split["train"]) & set(split["val"]))
    if both:
        raise SegrtError(f"{option} {path}: {len(both)} image(s) are in both train and val, e.g. {both[:3]}; "
                         "validation must be held out")
    return split


def split_beside(checkpoint: Path) -> tuple[dict, str | None]:
    """The split of the run a checkpoint came from: RUN/split.json, or the manifest of the export
    it sits in. -> (split or {}, where it came from)."""
    here = checkpoint.parent / SPLIT_FILE
    if here.is_file():
        return read_split(here, "split"), str(here)
    try:
        split = json.loads((checkpoint.parent / "manifest.json").read_text()).get("split") or {}
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}, None
    return (split, str(checkpoint.parent / "manifest.json")) if split else ({}, None)


def describe(names: list[str], split: dict) -> tuple[str, list[str]]:
    """-> (what the scored images are, the training images among them): 'the model's validation
    split', 'held out (not in the training split)', 'unknown: ...', or 'INCLUDES N training image(s)'."""
    if not split:
        return "unknown: the export records no training split", []
    stems = [Path(n).stem for n in names]
    seen = sorted({s for s in stems if s in set(split.get("train", []))})
    if seen:
        return f"INCLUDES {len(seen)} training image(s) of {len(set(stems))}, e.g. {', '.join(seen[:3])}", seen
    if set(stems) <= set(split.get("val", [])):
        return "the model's validation split", []
    return "held out (none is in the training split)", []
