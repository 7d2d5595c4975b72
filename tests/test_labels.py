"""Datasets as they come (issue 35): colour tables in three formats, RGB and palette label images read by
colour, void by name, colour or value, an unknown colour named, X_L.png masks paired; and a CamVid-style
run whose predicted colour masks use exactly the table's colours."""

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import one_line_error
from PIL import Image

from segrt.errors import SegrtError
from segrt.imaging.labels import IGNORE, colour_mask, is_colour_mask, read_label_table

TABLE = [("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128)), ("Void", (0, 0, 0))]


def write_tables(folder):
    (folder / "label_colors.txt").write_text("".join(f"{r} {g} {b}\t{n}\n" for n, (r, g, b) in TABLE))
    (folder / "hex.txt").write_text("".join(f"#{r:02x}{g:02x}{b:02X} {n}\n" for n, (r, g, b) in TABLE))
    (folder / "class_dict.csv").write_text("name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in TABLE))


def label_image(classes: np.ndarray, colours) -> np.ndarray:
    return np.asarray(colours, np.uint8)[classes]


@pytest.mark.parametrize("name", ["label_colors.txt", "hex.txt", "class_dict.csv"])
def test_every_table_format_reads_the_same(tmp_path, name):
    write_tables(tmp_path)
    table = read_label_table(tmp_path / name)
    said = []
    table.choose_void([], said.append)
    assert table.names == [n for n, _ in TABLE] and table.colours == [c for _, c in TABLE]
    assert table.classes == ["Sky", "Road", "Car"] and table.class_colours == [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
    assert len(said) == 1 and "'Void' (0, 0, 0) is void" in said[0]


def test_rgb_and_palette_masks_read_by_colour_void_and_unknown(tmp_path):
    write_tables(tmp_path)
    table = read_label_table(tmp_path / "label_colors.txt")
    table.choose_void([], lambda m: None)
    classes = np.array([[0, 1, 2, 3], [1, 1, 0, 3]])
    Image.fromarray(label_image(classes, [c for _, c in TABLE])).save(tmp_path / "rgb.png")
    want = np.array([[0, 1, 2, IGNORE], [1, 1, 0, IGNORE]], np.uint8)
    assert (colour_mask(tmp_path / "rgb.png", table) == want).all()
    assert is_colour_mask(tmp_path / "rgb.png")
    Image.fromarray(classes.astype(np.uint8)).save(tmp_path / "grey.png")
    assert not is_colour_mask(tmp_path / "grey.png")
    odd = label_image(classes, [c for _, c in TABLE])
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    with pytest.raises(SegrtError, match=r"odd.png: colour \(1, 2, 3\) \(12.50% of its pixels\) is not in .*label_colors"
                                         r".*--unknown-as-void"):
        colour_mask(tmp_path / "odd.png", table)
    counted = {}
    assert colour_mask(tmp_path / "odd.png", table, True, counted)[0, 0] == IGNORE and counted == {(1, 2, 3): 1}
    table.void = set()
    table.choose_void(["128 64 128"], lambda m: None)  # --void by colour: Road is void, the classes renumber
    assert table.classes == ["Sky", "Car", "Void"]


def test_a_palette_mask_is_read_by_its_colours_not_its_indices(tmp_path):
    write_tables(tmp_path)
    table = read_label_table(tmp_path / "class_dict.csv")
    table.choose_void(["Void"], lambda m: None)
    indices = np.array([[0, 1], [2, 3]], np.uint8)
    pal = Image.fromarray(indices, "P")
    pal.putpalette([v for _, c in TABLE[::-1] for v in c])  # index 0 is Void's colour, 3 is Sky's
    pal.save(tmp_path / "pal.png")
    assert (colour_mask(tmp_path / "pal.png", table) == np.array([[IGNORE, 2], [1, 0]])).all()
    assert is_colour_mask(tmp_path / "pal.png")


def _camvid(tmp_path, n=6, size=32):
    """CamVid-style: images/X.png, labels/X_L.png (RGB), label_colors.txt."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_tables(tmp_path)
    for i in range(n):
        classes = np.zeros((size, size), np.int64)
        classes[: size // 2] = 0
        classes[size // 2:] = 1
        classes[size // 2:, : size // 3] = 2
        classes[0, :4] = 3
        colours = np.asarray([c for _, c in TABLE], np.uint8)
        image = (colours[classes] * 0.6 + rng.integers(0, 60, (size, size, 3))).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / "images" / f"0001TP_{i:04d}.png")
        Image.fromarray(colours[classes]).save(tmp_path / "labels" / f"0001TP_{i:04d}_L.png")
    return tmp_path


def test_an_rgb_mask_without_a_table_names_the_option(tmp_path):
    from segrt.cli import main

    root = _camvid(tmp_path)
    res = CliRunner().invoke(main, ["train", "--images", str(root / "images"), "--masks", str(root / "labels"),
                                    "--classes", "a,b,c", "--out", str(tmp_path / "run"), "--epochs", "1",
                                    "--workers", "0", "--quiet"])
    one_line_error(res, "_L.png: an RGB label image", "--label-colors")


@pytest.mark.slow
def test_a_camvid_style_run_round_trips_the_users_colours(tmp_path):
    """train with --label-colors on X.png/X_L.png (suffix found), export, predict: the colour masks hold
    exactly the table's RGB values."""
    from segrt.cli import main

    root = _camvid(tmp_path)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--images", str(root / "images"), "--masks", str(root / "labels"),
                                    "--label-colors", str(root / "label_colors.txt"), "--out", str(run), "--epochs", "2",
                                    "--size", "32", "--base-channels", "4", "--depth", "2", "--batch-size", "4",
                                    "--workers", "0", "--quiet", "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert "each is its image's stem + '_L'" in res.output and "'Void' (0, 0, 0) is void" in res.output
    res = CliRunner().invoke(main, ["export", str(run / "last.pt"), "--out", str(tmp_path / "exp"), "--formats", "onnx"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["predict", str(root / "images"), "--model", str(tmp_path / "exp"), "--out",
                                    str(tmp_path / "pred"), "--quiet"])
    assert res.exit_code == 0, res.output
    truth = tmp_path / "truth"  # RGB ground truth, named like the photos: parity reads it by the export's colours
    truth.mkdir()
    for f in (root / "labels").iterdir():
        (truth / f.name.replace("_L.png", ".png")).write_bytes(f.read_bytes())
    res = CliRunner().invoke(main, ["parity", str(tmp_path / "exp"), "--images", str(root / "images"), "--masks",
                                    str(truth)])
    assert res.exit_code == 0 and "vs ground truth, per class for model.onnx: Sky" in res.output, res.output
    table = {c for _, c in TABLE[:3]}
    for png in (tmp_path / "pred").glob("*.color.png"):
        used = {tuple(v) for v in np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)}
        assert used <= table, (png, used - table)


def _tiles(root, layout):
    """Index masks (0 road, 1 land, 2 water) under root/<folder>/images|masks, same names in every folder."""
    rng = np.random.default_rng(1)
    for folder, names in layout.items():
        for sub in ("images", "masks"):
            (root / folder / sub).mkdir(parents=True)
        for name in names:
            classes = np.zeros((24, 24), np.uint8)
            classes[12:] = 1
            if "water" in folder:
                classes[:, :6] = 2
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / folder / "images" / f"{name}.jpg")
            Image.fromarray(classes).save(root / folder / "masks" / f"{name}.png")
    return root


def test_data_check_nested_tiles_and_split_folders(tmp_path):
    import json

    from segrt.cli import main

    root = _tiles(tmp_path / "aerial", {"Tile 1": ["part_1", "part_2"], "Tile 2 water": ["part_1", "part_2"]})
    (root / "Tile 1" / "images" / "stray.jpg").write_bytes((root / "Tile 1" / "images" / "part_1.jpg").read_bytes())
    res = CliRunner().invoke(main, ["data", "check", "--data", str(root), "--classes", "road,land,water"])
    assert res.exit_code == 1, res.output  # the stray image has no mask
    assert "all: 4 pairs (4 read)" in res.output and "water 12.5%" in res.output
    assert "unpaired: " in res.output and "stray.jpg" in res.output
    split = tmp_path / "split"
    _tiles(split, {"train/water": ["a", "b", "c"], "val": ["a"], "test": ["a", "b"]})
    res = CliRunner().invoke(main, ["data", "check", "--data", str(split), "--classes", "road,land,water", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    assert {k: v["pairs"] for k, v in report["splits"].items()} == {"train": 3, "val": 1, "test": 2}
    assert report["absent_from_val"] == ["water"]


@pytest.mark.slow
def test_training_on_split_folders_never_trains_on_test(tmp_path):
    import json

    from segrt.cli import main

    root = _tiles(tmp_path / "d", {"train": ["a", "b", "c", "d"], "val": ["a", "b"],
                                   "test": ["a"]})
    res = CliRunner().invoke(main, ["train", "--data", str(root), "--classes", "road,land,water", "--out",
                                    str(tmp_path / "run"), "--epochs", "1", "--size", "16", "--base-channels", "4",
                                    "--depth", "2", "--batch-size", "2", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "split from the folders: 4 train, 2 val, 1 test (never trained on)" in res.output
    assert "train: 4 pairs; pixels: road 50.0%, land 50.0%, water absent" in res.output  # before the first epoch
    assert "over the 2 of 3 classes present" in res.output and "water=absent" in res.output
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["test"] == ["test/images/a"] and all(n.startswith("train/") for n in split["train"])
    assert split["val"] == ["val/images/a", "val/images/b"]


def test_palette_masks_without_a_table_are_read_by_index_as_peers_read_them(tmp_path):
    from segrt.training.data import DataError, folders_layout, load_pair, palettes_note

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    indices = np.array([[0, 1], [2, 255]], np.uint8)
    for name, palette in (("a", TABLE), ("b", TABLE), ("c", TABLE[::-1])):
        Image.new("RGB", (2, 2)).save(tmp_path / "images" / f"{name}.png")
        pal = Image.fromarray(indices, "P")
        colours = [v for _, c in palette for v in c]
        pal.putpalette(colours + [0] * (768 - len(colours)))  # a full palette: index 255 stays 255
        pal.save(tmp_path / "masks" / f"{name}.png")
    Image.fromarray(label_image(np.array([[0, 1], [2, 3]]), [c for _, c in TABLE])).save(tmp_path / "rgb.png")
    layout = folders_layout(tmp_path / "images", tmp_path / "masks", ["a", "b", "c"])
    for name in ("a", "b"):  # VOC-style: indices are the classes, 255 void
        _, mask = load_pair(tmp_path / "images" / f"{name}.png", tmp_path / "masks" / f"{name}.png", layout)
        assert (mask == indices).all()
    assert "differ" not in palettes_note(layout)
    _, mask = load_pair(tmp_path / "images" / "c.png", tmp_path / "masks" / "c.png", layout)  # another palette
    assert (mask == indices).all()  # by index, as MMSegmentation and torchvision read it, and said
    assert palettes_note(layout).startswith("3 palette mask(s) read by their indices") and "2 palettes differ" in \
        palettes_note(layout) and "--label-colors" in palettes_note(layout)
    with pytest.raises(DataError, match=r"rgb.png: an RGB label image: pass --label-colors"):
        load_pair(tmp_path / "images" / "a.png", tmp_path / "rgb.png", layout)


def test_a_void_value_and_mask_map_adding_to_the_identity(tmp_path):
    from segrt.training.cli import parse
    from segrt.training.data import load_pair
    from segrt.training.setup import build_layout

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (3, 1)).save(tmp_path / "images" / "x.png")
    Image.fromarray(np.array([[0, 11, 2]], np.uint8)).save(tmp_path / "masks" / "x.png")
    base = ["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--classes", "a,b,c",
            "--out", str(tmp_path / "run")]
    layout = build_layout(parse([*base, "--ignore-index", "11", "--mask-map", "2:1"]))  # SegNet's CamVid: 11 is void
    assert layout.mask_map == {0: 0, 1: 1, 2: 1, 255: 255, 11: 255}
    _, mask = load_pair(tmp_path / "images" / "x.png", tmp_path / "masks" / "x.png", layout)
    assert mask.tolist() == [[0, 255, 1]]
