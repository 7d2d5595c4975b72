"""Datasets as their peers lay them out (MMSegmentation, BDD100K, Cityscapes, Pascal VOC, ADE20K), each
read the way its own tool reads it: by `segrt data check --json` (what train would find) and build_data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import one_line_error

CLASSES = "road,land,water"


def _pair(images, masks, image_name, mask_name, classes=None, offset=0, palette=None):
    """A 16x16 photo and its mask of class ids (+ ``offset``: a reduce-zero-label set stores k+1)."""
    rng = np.random.default_rng(len(image_name))
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / image_name)
    mask = np.zeros((16, 16), np.uint8) if classes is None else classes
    mask = mask.copy()
    mask[8:] = 1
    mask = mask + offset
    if palette is not None:
        img = Image.fromarray(mask, "P")
        img.putpalette(palette + [0] * (768 - len(palette)))
        img.save(masks / mask_name)
    else:
        Image.fromarray(mask).save(masks / mask_name)


def check(*args) -> tuple[int, dict, str]:
    from segrt.cli import main

    res = CliRunner().invoke(main, ["data", "check", "--json", *map(str, args)])
    return res.exit_code, (json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}), res.stderr


def pairs_of(report: dict) -> dict[str, int]:
    return {k: v["pairs"] for k, v in report["splits"].items()}


def test_split_folders_below_images_are_splits_and_json_is_alone_on_stdout(tmp_path):
    """BDD100K / Mapillary: images/{train,val,test} with labels/{train,val,test}, the same names in each."""
    root = tmp_path / "bdd"
    for split, names in (("train", "abc"), ("val", "ab"), ("test", "a")):
        for n in names:
            _pair(root / "images" / split, root / "labels" / split, f"{n}.jpg", f"{n}.png")
    code, report, err = check("--data", root, "--classes", CLASSES)
    assert code == 0 and pairs_of(report) == {"train": 3, "val": 2, "test": 1}, err
    assert "split from the folders: 3 train, 2 val, 1 test (never trained on)" in err  # notes on stderr


def test_mmsegmentation_img_dir_ann_dir(tmp_path):
    root = tmp_path / "loveda"
    for split, names in (("train", "abcd"), ("val", "ab")):
        for n in names:
            _pair(root / "img_dir" / split, root / "ann_dir" / split, f"{n}.png", f"{n}.png")
    code, report, err = check("--data", root, "--classes", CLASSES)
    assert code == 0 and pairs_of(report) == {"train": 4, "val": 2}, err


def test_split_list_files_found_beside_the_data_and_given(tmp_path):
    """Pascal VOC: JPEGImages (more photos than masks), SegmentationClass, ImageSets/Segmentation/*.txt."""
    root = tmp_path / "VOC2012"
    for n in ("2007_1", "2007_2", "2007_3", "2007_4", "2007_5"):
        _pair(root / "JPEGImages", root / "SegmentationClass", f"{n}.jpg", f"{n}.png")
    Image.new("RGB", (16, 16)).save(root / "JPEGImages" / "2008_no_mask.jpg")  # detection only: in no list
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_1\n2007_2\n2007_3\n")
    (lists / "val.txt").write_text("2007_4\n")
    code, report, err = check("--data", root, "--classes", CLASSES)
    assert code == 0 and pairs_of(report) == {"train": 3, "val": 1}, err
    assert "split lists found in" in err and "1 image(s) without a mask, in no list: left out" in err
    (tmp_path / "mine.txt").write_text("2007_5.jpg\n")
    code, report, err = check("--data", root, "--classes", CLASSES, "--split-file", f"val={tmp_path / 'mine.txt'}",
                              "--split-file", f"train={lists / 'train.txt'}")
    assert code == 0 and pairs_of(report) == {"train": 3, "val": 1}, err
    (tmp_path / "bad.txt").write_text("2007_9\n")
    code, _, err = check("--data", root, "--classes", CLASSES, "--split-file", f"val={tmp_path / 'bad.txt'}")
    assert code == 2 and "bad.txt: 1 of its 1 names have no image/mask pair" in err


@pytest.mark.parametrize("image_suffix, mask_suffix", [("_leftImg8bit", "_gtFine_labelTrainIds"), ("_img", "_gt")])
def test_both_sides_suffixes_are_found(tmp_path, image_suffix, mask_suffix):
    for n in ("aachen_000000_000019", "aachen_000001_000019", "bonn_000002_000019"):
        _pair(tmp_path / "images", tmp_path / "masks", f"{n}{image_suffix}.png", f"{n}{mask_suffix}.png")
    code, report, err = check("--images", tmp_path / "images", "--masks", tmp_path / "masks", "--classes", CLASSES)
    assert code == 0 and pairs_of(report) == {"all": 3}, err
    assert "taken off (--image-suffix / --mask-suffix to set them)" in err and repr(image_suffix) in err


def test_suffixes_by_flag_and_other_gtfine_files_left_out(tmp_path):
    for n in ("a_1", "b_2"):
        _pair(tmp_path / "leftImg8bit", tmp_path / "gtFine", f"{n}_leftImg8bit.png", f"{n}_gtFine_labelTrainIds.png")
        Image.new("RGB", (16, 16)).save(tmp_path / "gtFine" / f"{n}_gtFine_color.png")
    code, report, err = check("--images", tmp_path / "leftImg8bit", "--masks", tmp_path / "gtFine", "--classes", CLASSES,
                              "--image-suffix", "_leftImg8bit", "--mask-suffix", "_gtFine_labelTrainIds")
    assert code == 0 and pairs_of(report) == {"all": 2} and not report["unpaired"], err


def test_no_pairs_names_what_it_saw_and_expected(tmp_path):
    _pair(tmp_path / "images", tmp_path / "masks", "x.jpg", "other_mask.png")
    code, _, err = check("--images", tmp_path / "images", "--masks", tmp_path / "masks", "--classes", CLASSES,
                         "--mask-suffix", "_gt")
    assert code == 2 and "image x.jpg looks for a mask x_gt.*" in err and "named like other_mask.png" in err


def test_duplicate_stems_are_an_error_naming_both(tmp_path):
    for sub in ("a", "b"):
        _pair(tmp_path / "images" / sub, tmp_path / "masks", "x.jpg", "x.png")
    code, _, err = check("--images", tmp_path / "images", "--masks", tmp_path / "masks", "--classes", CLASSES)
    assert code == 2 and "a/x.jpg and" in err and "b/x.jpg: two images with the name 'x'" in err
    assert "--data ROOT" in err


def test_reduce_zero_label_as_mmsegmentation_reads_it(tmp_path):
    """ADE20K-style: 0 is void, class k is stored as k+1."""
    for n in "abcd":
        _pair(tmp_path / "images", tmp_path / "annotations", f"{n}.jpg", f"{n}.png", offset=1)
        mask = np.asarray(Image.open(tmp_path / "annotations" / f"{n}.png")).copy()
        mask[:2] = 0  # void rows
        mask[2:4] = 3  # class 2 (water)
        Image.fromarray(mask).save(tmp_path / "annotations" / f"{n}.png")
    base = ["--images", tmp_path / "images", "--masks", tmp_path / "annotations", "--classes", CLASSES]
    code, report, _ = check(*base, "--skip-bad")
    assert "pass --reduce-zero-label" in (report.get("hint") or ""), report  # read raw: 3 is no class
    code, report, err = check(*base, "--reduce-zero-label")
    assert code == 0, err
    shares = report["splits"]["all"]["shares"]  # of the labelled pixels: 0 is left out
    assert shares == pytest.approx([4 / 14, 8 / 14, 2 / 14]) and not report.get("hint")
    from segrt.training.data import load_pair
    from segrt.training.cli import parse
    from segrt.training.setup import build_layout

    layout = build_layout(parse([*map(str, base), "--reduce-zero-label", "--out", str(tmp_path / "run")]))
    _, mask = load_pair(tmp_path / "images" / "a.jpg", tmp_path / "annotations" / "a.png", layout)
    assert (mask[:2] == 255).all() and (mask[2:4] == 2).all() and (mask[8:] == 1).all()
    assert layout.mask_map[0] == 255 and layout.mask_map[1] == 0


def test_palettes_differing_per_file_are_read_by_index_and_said(tmp_path):
    for n, pal in (("a", [0, 0, 0, 128, 0, 0]), ("b", [9, 9, 9, 0, 128, 0])):
        _pair(tmp_path / "images", tmp_path / "masks", f"{n}.jpg", f"{n}.png", palette=pal)
    code, report, err = check("--images", tmp_path / "images", "--masks", tmp_path / "masks", "--classes", CLASSES)
    assert code == 0 and "2 palettes differ" in report["palettes"], err


def test_label_tables_a_colour_twice_and_a_void_colour_that_is_no_class(tmp_path):
    table = tmp_path / "colors.txt"
    table.write_text("128 64 128 road\n0 128 0 land\n0 0 255 water\n0 0 255 lake\n")
    for n in "ab":
        rgb = np.zeros((16, 16, 3), np.uint8)
        rgb[:8] = (128, 64, 128)
        rgb[8:12] = (0, 0, 255)
        rgb[12:] = (1, 2, 3)  # void, not in the table
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / "labels" / f"{n}.png")
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "images" / f"{n}.jpg")
    code, report, err = check("--images", tmp_path / "images", "--masks", tmp_path / "labels", "--label-colors", table,
                              "--void", "1,2,3")
    assert code == 0, err
    assert "(0, 0, 255) is listed for 'water' and 'lake'" in err and "(1, 2, 3) is not in" in err
    assert report["classes"] == ["road", "land", "water", "lake"]
    assert report["splits"]["all"]["shares"] == pytest.approx([2 / 3, 0, 1 / 3, 0])


def test_val_images_honour_the_suffixes(tmp_path):
    for n in "abc":
        _pair(tmp_path / "images", tmp_path / "masks", f"{n}.jpg", f"{n}_L.png")
    _pair(tmp_path / "vimages", tmp_path / "vmasks", "v.jpg", "v_L.png")
    code, report, err = check("--images", tmp_path / "images", "--masks", tmp_path / "masks", "--classes", CLASSES,
                              "--val-images", tmp_path / "vimages", "--val-masks", tmp_path / "vmasks")
    assert code == 0 and pairs_of(report) == {"train": 3, "val": 1}, err


def test_a_bad_split_name_is_one_line(tmp_path):
    from segrt.cli import main

    _pair(tmp_path / "images", tmp_path / "masks", "a.jpg", "a.png")
    res = CliRunner().invoke(main, ["data", "check", "--images", str(tmp_path / "images"), "--masks",
                                    str(tmp_path / "masks"), "--classes", CLASSES, "--split-file", "dev=x.txt"])
    one_line_error(res, "--split-file dev=x.txt: NAME is train, val or test")


@pytest.mark.slow
def test_a_reduce_zero_label_set_with_splits_below_images_end_to_end(tmp_path):
    """train (val and test never trained on), export (the value map recorded), parity on the raw masks."""
    from segrt.cli import main

    root = tmp_path / "ade"
    for split, names in (("training", "abcdef"), ("validation", "gh"), ("testing", "i")):
        for n in names:
            _pair(root / "images" / split, root / "annotations" / split, f"{n}.jpg", f"{n}.png", offset=1)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--data", str(root), "--classes", CLASSES, "--reduce-zero-label",
                                    "--out", str(run), "--epochs", "1", "--size", "16", "--base-channels", "4",
                                    "--depth", "2", "--batch-size", "2", "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "split from the folders: 6 train, 2 val, 1 test (never trained on)" in res.output
    split = json.loads((run / "split.json").read_text())
    assert split["test"] == ["images/testing/i"] and all("training/" in n for n in split["train"])
    res = CliRunner().invoke(main, ["export", str(run / "last.pt"), "--out", str(tmp_path / "exp"), "--formats", "onnx"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["labels"]["mask_values"]["0"] == 255 and manifest["labels"]["mask_values"]["1"] == 0
    res = CliRunner().invoke(main, ["parity", str(tmp_path / "exp"), "--images", str(root / "images" / "validation"),
                                    "--masks", str(root / "annotations" / "validation")])
    assert res.exit_code == 0, res.output
    assert "not class ids" not in res.output and "vs ground truth" in res.output
