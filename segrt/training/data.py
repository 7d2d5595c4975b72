"""Datasets: image/mask folders, the Oxford-IIIT Pet layout and the ISBI membrane folder.

Every pair is decoded and checked once, up front (one clear line per bad file), and kept in
memory as uint8 tensors, so the per-step cost is only the augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from segrt.errors import SegrtError
from segrt.imaging.decode import load_image, load_mask, page_count
from segrt.imaging.files import list_images
from segrt.imaging.labels import LabelTable, colour_mask, is_colour_mask, palette_of
from segrt.manifest import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IGNORE_INDEX", "DataError", "Layout", "pets_layout", "isbi_layout", "folders_layout", "parse_mask_map",
           "find_pairs", "palettes_note", "reduce_zero_label", "load_pair", "load_all", "class_shares",
           "describe_shares", "label_counts"]

IGNORE_INDEX = 255
_GRAY_MEAN, _GRAY_STD = [0.5], [0.25]


class DataError(SegrtError):
    """A dataset file that cannot be used for training."""


@dataclass
class Layout:
    """Where a dataset's files are and what its mask values mean."""

    images: Path
    masks: Path
    classes: list[str]
    mask_map: dict[int, int]  # raw mask value -> class id (or IGNORE_INDEX)
    channels: int = 3
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    note: str | None = None  # what was chosen from the data (e.g. 1 channel for grayscale folders)
    table: LabelTable | None = None  # colour-coded labels: masks read by colour (segrt.imaging.labels)
    unknown_as_void: bool = False  # a colour not in the table is void (counted and said), not an error
    mask_suffix: str = ""  # the mask of X.png is X{suffix}.* (CamVid: _L)
    image_suffix: str = ""  # images are named X{suffix}.* (Cityscapes: _leftImg8bit)
    unknown_colours: dict = field(default_factory=dict)  # (r, g, b) -> pixels read as void
    folders: list = field(default_factory=list)  # [(images, masks, split)] found under --data (training.folders)
    palettes: dict = field(default_factory=dict)  # palette bytes -> masks read by index without a table

def pets_layout(root: str | Path) -> Layout:
    """Oxford-IIIT Pet: images/<id>.jpg with masks/<id>.png or annotations/trimaps/<id>.png.

    Trimap 1 pet, 2 background, 3 border -> classes 0 background, 1 pet, 2 border.
    """
    root = Path(root)
    masks = root / "annotations" / "trimaps"
    return Layout(root / "images", masks if masks.is_dir() else root / "masks",
                  ["background", "pet", "border"], {2: 0, 1: 1, 3: 2})


def isbi_layout(root: str | Path) -> Layout:
    """ISBI 2012 membranes: 8-bit grayscale; mask 0 membrane -> class 0, 255 interior -> class 1."""
    root = Path(root)
    return Layout(root / "images", root / "masks", ["membrane", "interior"], {0: 0, 255: 1},
                  channels=1, mean=list(_GRAY_MEAN), std=list(_GRAY_STD))


def folders_layout(images: str | Path, masks: str | Path, classes: list[str],
                   mask_map: dict[int, int] | None = None, channels: int | None = None) -> Layout:
    """Generic folders; the default mask map is identity (value i -> class i) and 255 the ignore label.
    ``channels`` None: 1 when every image is grayscale, else 3 (``Layout.note`` says which and why)."""
    mask_map = mask_map or {**{i: i for i in range(len(classes))}, IGNORE_INDEX: IGNORE_INDEX}  # 255: void
    note = None
    if channels is None:
        channels, note = _detect_channels(Path(images))
    gray = channels == 1
    return Layout(Path(images), Path(masks), classes, mask_map, channels,
                  list(_GRAY_MEAN if gray else IMAGENET_MEAN), list(_GRAY_STD if gray else IMAGENET_STD), note)


def _detect_channels(folder: Path) -> tuple[int, str | None]:
    """-> (1 if every image in the folder is grayscale else 3, the line that says so). Reads headers only."""
    from PIL import Image

    from segrt.imaging.decode import GRAY_MODES

    paths, gray = list_images(folder) if folder.is_dir() else [], 0
    for p in paths:
        if not p.is_file():  # a FIFO or a device is never opened (loading names it)
            continue
        try:
            with Image.open(p) as img:
                gray += img.mode in GRAY_MODES
        except (OSError, ValueError):
            pass  # decoding says what is wrong with it, later
    if paths and gray == len(paths):
        return 1, (f"all {gray} image files are grayscale: a 1-channel model, normalization mean {_GRAY_MEAN[0]}, std "
                   f"{_GRAY_STD[0]} (--channels 3 for RGB); for microscopy or tiles predicted at full size, "
                   "consider --native")
    if gray:
        return 3, f"{gray} of {len(paths)} image files are grayscale: all are read as RGB (3 channels; --channels 1 for gray)"
    return 3, None


def reduce_zero_label(num_classes: int) -> dict[int, int]:
    """MMSegmentation's reduce_zero_label: raw 0 is void, raw k is class k-1, 255 stays void."""
    return {0: IGNORE_INDEX, **{k: k - 1 for k in range(1, num_classes + 1)}, IGNORE_INDEX: IGNORE_INDEX}


def parse_mask_map(text: str, num_classes: int | None = None) -> dict[int, int]:
    """'255:1,0:0' -> {255: 1, 0: 0}; a class of 'ignore' maps to the ignore index. Raw values are
    0..255, class ids 0..num_classes-1."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        raw, _, cls = item.partition(":")
        try:
            value, cls_id = int(raw), IGNORE_INDEX if cls.strip() == "ignore" else int(cls)
        except ValueError:
            raise DataError(f"--mask-map: expected VALUE:CLASS pairs like '0:0,255:1' (CLASS may be 'ignore'), "
                            f"got {item!r}") from None
        if not 0 <= value <= 255:
            raise DataError(f"--mask-map: raw mask values are 0..255, got {value} in {item!r}")
        if cls_id != IGNORE_INDEX and num_classes is not None and not 0 <= cls_id < num_classes:
            raise DataError(f"--mask-map: class {cls_id} in {item!r} does not exist; there are {num_classes} "
                            f"classes (0..{num_classes - 1})")
        out[value] = cls_id
    if not out:
        raise DataError(f"--mask-map: expected VALUE:CLASS pairs like '0:0,255:1', got {text!r}")
    return out


class _Pair(NamedTuple):
    """An image and its mask, or one page of an image stack and the same page of its mask stack."""

    image: Path
    mask: Path
    page: int | None = None
    key: str = ""  # its relative path (no suffix) where folders were found under a root
    split: str | None = None  # train / val / test, from its folders

    @property
    def name(self) -> str:
        """Its name in split.json: the file stem (or relative path), 'stem[page]' for a page of a stack."""
        base = self.key or self.image.stem
        return base if self.page is None else f"{base}[{self.page}]"


def find_pairs(layout: Layout, skip_bad: bool = False) -> tuple[list[_Pair], list[str]]:
    """Match images to masks by file stem (by relative path in folders found under a root), both sides'
    suffixes taken off; a multi-page TIFF pairs page by page with its mask stack. A train/val/test folder
    below the images folder is a pair's split too. Returns (pairs, problems skipped)."""
    pairs, problems = [], []
    for images, masks, split in layout.folders or [(layout.images, layout.masks, None)]:
        for folder in (images, masks):
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder")
        root = layout.images if layout.folders else None  # the --data root
        found, more = _pairs_in(images, masks, (layout.image_suffix, layout.mask_suffix), root, split)
        pairs += found
        for problem in more:
            if not skip_bad:
                raise DataError(problem + " (use --skip-bad to skip such images)")
            problems.append(problem)
    if not pairs:
        raise DataError(_no_pairs(layout))
    return pairs, problems


def _no_pairs(layout: Layout) -> str:
    """'no pairs', with one image and one mask seen and the mask name expected for that image."""
    images, masks = layout.folders[0][:2] if layout.folders else (layout.images, layout.masks)
    seen_i, seen_m = list_images(images)[:1], list_images(masks)[:1]
    text = f"{layout.images}: no image/mask pairs found"
    if seen_i and seen_m:
        stem = _strip(seen_i[0].stem, layout.image_suffix)
        text += (f" (e.g. image {seen_i[0].name} looks for a mask {stem}{layout.mask_suffix}.*; the masks are named "
                 f"like {seen_m[0].name}: set --image-suffix / --mask-suffix)")
    return text


def _strip(stem: str, suffix: str) -> str:
    return stem[:-len(suffix)] if suffix and stem.endswith(suffix) else stem


def _keyed(files: list[Path], top: Path, nested: bool, suffix: str, what: str) -> dict[str, Path]:
    """{stem (relative path when nested) without ``suffix``: file}, files without the suffix left out
    (gtFine_color beside gtFine_labelTrainIds); two files under one key are an error."""
    out: dict[str, Path] = {}
    for p in files:
        k = p.relative_to(top).with_suffix("").as_posix() if nested else p.stem
        if suffix and not k.endswith(suffix):
            continue
        k = _strip(k, suffix)
        if k in out:
            raise DataError(f"{out[k]} and {p}: two {what} with the name {k!r}, so which pairs is unclear; rename one"
                            + ("" if nested else ", or give --data ROOT to pair by relative path"))
        out[k] = p
    return out


def _pairs_in(images: Path, masks: Path, suffixes: tuple[str, str], root: Path | None, split: str | None):
    from .folders import split_of

    image_suffix, mask_suffix = suffixes
    by_key = _keyed(list_images(masks), masks, root is not None, mask_suffix, "masks")
    pairs, problems = [], []
    for k, img in _keyed(list_images(images), images, root is not None, image_suffix, "images").items():
        problem = f"{img}: no mask named {Path(k).name}{mask_suffix}.* in {masks}"
        name = f"{images.relative_to(root).as_posix()}/{k}" if root else ""
        where = split or split_of(img.parent.relative_to(images))  # images/train/X.jpg: a split below images/
        if k in by_key:
            pages, mask_pages = page_count(img), page_count(by_key[k])
            if pages == mask_pages:
                pairs += [_Pair(img, by_key[k], None, name, where)] if pages == 1 else \
                    [_Pair(img, by_key[k], i, name, where) for i in range(pages)]
                continue
            problem = f"{img}: {pages} page(s) but its mask {by_key[k].name} has {mask_pages}"
        problems.append(problem)
    return pairs, problems


def load_pair(image_path: Path, mask_path: Path, layout: Layout, page: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """-> (HWC uint8 image, HW uint8 class ids) of a file (or of one page of a stack); DataError
    naming the file on any problem."""
    try:
        image = load_image(image_path, layout.channels, page=page)
        if layout.table is not None:
            return image, _checked_size(image, colour_mask(mask_path, layout.table, layout.unknown_as_void,
                                                           layout.unknown_colours), image_path, mask_path)
        _check_palette(mask_path, layout)
        raw = load_mask(mask_path, page)
    except (SegrtError, OSError) as exc:
        raise DataError(str(exc)) from None
    where = "" if page is None else f" page {page}"
    if image.shape[:2] != raw.shape:
        raise DataError(f"{image_path}{where}: image is {image.shape[1]}x{image.shape[0]} but its mask "
                        f"{mask_path.name} is {raw.shape[1]}x{raw.shape[0]}")
    lut = np.full(256, -1, np.int32)
    for value, cls in layout.mask_map.items():
        lut[value] = cls
    mask = lut[raw]
    if (mask < 0).any():
        bad = sorted(set(np.unique(raw[mask < 0]).tolist()))
        raise DataError(f"{mask_path}{where}: mask values {bad[:8]} are not in the class mapping "
                        f"{layout.mask_map} (set it with --mask-map)")
    return image, mask.astype(np.uint8)


def _check_palette(mask_path: Path, layout: Layout) -> None:
    """Without a colour table: an RGB mask is refused (naming --label-colors); a palette mask is read by
    its indices, as its peers read it (the palettes seen are counted: palettes_note says so)."""
    palette = palette_of(mask_path)
    if palette is None:
        if is_colour_mask(mask_path):
            raise DataError(f"{mask_path}: an RGB label image: pass --label-colors FILE with the dataset's table of "
                            "class colours")
        return
    layout.palettes[palette] = layout.palettes.get(palette, 0) + 1


def palettes_note(layout: Layout) -> str | None:
    """One line when palette masks were read by index, naming how many palettes they use."""
    if not layout.palettes:
        return None
    n, k = sum(layout.palettes.values()), len(layout.palettes)
    return (f"{n} palette mask(s) read by their indices (as MMSegmentation and torchvision read them)"
            + (f"; their {k} palettes differ, so colours are ignored: --label-colors FILE reads them by colour"
               if k > 1 else ""))


def _checked_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> np.ndarray:
    if image.shape[:2] != mask.shape:
        raise DataError(f"{image_path}: image is {image.shape[1]}x{image.shape[0]} but its mask {mask_path.name} is "
                        f"{mask.shape[1]}x{mask.shape[0]}")
    return mask


def load_all(pairs, layout: Layout, skip_bad: bool, desc: str, show: bool = True):
    """Decode and check every pair once. Returns (list of (image, mask), problems skipped)."""
    loaded, problems = [], []
    for pair in tqdm(pairs, desc=desc, unit="img", disable=not show, leave=False):
        try:
            loaded.append(load_pair(pair.image, pair.mask, layout, pair.page))
        except DataError as exc:
            if not skip_bad:
                raise DataError(f"{exc} (use --skip-bad to skip such files)") from None
            problems.append(str(exc))
    return loaded, problems


def class_shares(samples, num_classes: int) -> list[float]:
    """Each class's share of the labelled pixels (void left out)."""
    counts = label_counts(samples, num_classes).astype(np.float64)
    return (counts / max(counts.sum(), 1.0)).tolist()


def describe_shares(classes: list[str], shares: list[float]) -> str:
    return ", ".join(f"{c} {v:.1%}" if v else f"{c} absent" for c, v in zip(classes, shares))


def label_counts(samples, num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, np.int64)
    for _, m in samples:
        counts += np.bincount(m[m != IGNORE_INDEX].reshape(-1), minlength=num_classes)[:num_classes]
    return counts
