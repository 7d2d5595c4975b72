"""Sliding-window inference: tile placement, blending weights, band finalization, bounded memory,
the CLI and its errors, on a pointwise fake model (exact answers) and the tiny U-Net."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PETS
from PIL import Image

from segrt.cli import main
from segrt.errors import SegrtError
from segrt.manifest import Manifest
from segrt.runtime.tiling import TiledImage, TileSpec, segment, starts, tile_spec, window

GRAY = Manifest(name="g", classes=["a", "b", "c"], mean=[0.5], std=[0.25],
                channels=1, size_multiple=8, input_size=None, crop_size=[32, 32])


def pointwise(x: np.ndarray) -> np.ndarray:
    """A fake model whose logits at a pixel depend on that pixel only: class c scores -(x - c + 2)^2.
    Any tiling and blending must then give exactly the whole-image mask."""
    return np.concatenate([-(x - c + 2) ** 2 for c in range(3)], axis=1)


@pytest.mark.parametrize("length,tile,stride", [(100, 32, 24), (97, 32, 24), (32, 32, 24), (20, 32, 24),
                                                (200, 64, 48), (65, 64, 1), (1000, 256, 192)])
def test_tiles_cover_every_pixel_and_stay_inside(length, tile, stride):
    s = starts(length, tile, stride)
    covered = np.zeros(length, bool)
    for a in s:
        covered[a:a + tile] = True
    assert covered.all() and s[0] == 0 and s == sorted(set(s))
    if length > tile:
        assert s[-1] == length - tile and all(b - a <= stride for a, b in zip(s, s[1:]))


def test_blending_windows():
    g, c = window(32, 48, "gaussian"), window(32, 48, "constant")
    assert g.shape == (32, 48) and g.max() == pytest.approx(1.0) and g.min() >= 1e-3
    assert np.allclose(g, g[::-1, ::-1]) and g[16, 24] > g[0, 0]  # symmetric, peaked at the centre
    assert (c == 1).all()


@pytest.mark.parametrize("h,w", [(100, 70), (97, 131), (32, 32), (20, 45), (8, 8)])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_tiled_mask_equals_whole_image_for_a_pointwise_model(h, w, blend):
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 1), dtype=np.uint8)
    mask = segment(pointwise, image, TileSpec(32, 0.25, blend), GRAY, batch_size=3)
    x = (image[None, :, :, 0].astype(np.float32) / 255 - 0.5) / 0.25
    assert mask.shape == (h, w) and (mask == pointwise(x[None]).argmax(1)[0]).all()


def test_band_is_one_tile_high_and_rows_are_final_in_order():
    image = np.zeros((300, 50, 1), np.uint8)
    tiled = TiledImage(image, TileSpec(32, 0.5), GRAY.mean, GRAY.std, 8, 3)
    assert tiled.band.shape == (3, 32, 50)  # memory: C x tile x W, whatever the height
    tiles = list(tiled.tiles())
    assert len(tiles) == tiled.count == len(starts(300, 32, 16)) * len(starts(50, 32, 16))
    per_row = len(tiled.xs)
    finished = []
    for i, _ in enumerate(tiles):
        logits = np.zeros((3, 32, 32), np.float32)
        logits[2] = 1  # class 2 everywhere
        tiled.add(logits)
        if (i + 1) % per_row == 0:  # after each tile row, the rows above the next one are final
            row = (i + 1) // per_row
            final_to = tiled.ys[row] if row < len(tiled.ys) else 300
            finished.append(final_to)
            assert (tiled.mask[:final_to] == 2).all() and (tiled.mask[final_to:] == 0).all()
    assert tiled.done and finished[-1] == 300


def test_spec_checks():
    assert tile_spec("auto", 0.25, "gaussian", GRAY).tile == 32
    assert tile_spec(64, 0.25, "constant", GRAY).stride == 48
    for args, msg in [((4, 0.25, "gaussian"), "must be a multiple of 8"), ((36, 0.25, "gaussian"), "multiple of 8"),
                      ((32, 0.9, "gaussian"), r"--overlap 0.9: must be in \[0, 0.9\)"),
                      ((32, -0.1, "gaussian"), "--overlap"), ((32, 0.2, "linear"), "--blend 'linear'"),
                      (("big", 0.2, "gaussian"), "expected a size in pixels or 'auto'")]:
        with pytest.raises(SegrtError, match=msg):
            tile_spec(*args, GRAY)
    fixed = Manifest(name="f", classes=["a"], mean=[0.5], std=[0.25],
                     channels=1, size_multiple=1, input_size=[64, 64], fixed_size=[64, 64])
    with pytest.raises(SegrtError, match="fixed 64x64 input"):
        tile_spec(32, 0.25, "gaussian", fixed)
    with pytest.raises(SegrtError, match="records no training crop"):
        tile_spec("auto", 0.25, "gaussian", Manifest(name="n", classes=["a"], mean=[0.5], std=[0.25],
                                                     channels=1, size_multiple=8, input_size=None))


@pytest.mark.slow
def test_predict_tiled_on_the_tiny_model(exported, tmp_path):
    from segrt.imaging.decode import load_image
    from segrt.imaging.prepare import prepare
    from segrt.imaging.masks import to_mask
    from segrt.runtime.session import Session

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict", str(PETS / "images"), "--model", str(exported), "--out", str(out),
                                    "--tile", "64", "--overlap", "0.25", "--provider", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["written"] == 32 and summary["mode"].startswith("tiled 64x64 (overlap 0.25, stride 48")
    s = Session(exported, provider="cpu")
    image = load_image(PETS / "images" / "Bengal_133.jpg")
    mask = np.array(Image.open(out / "Bengal_133.png"))
    assert mask.shape == image.shape[:2]
    assert (mask == segment(s.run, image, TileSpec(64, 0.25), s.manifest)).all()  # the pipeline = segment()
    # one tile covering the whole (padded) image is the whole-image run
    small = image[:64, :96]
    x, geo = prepare(small, s.manifest.mean, s.manifest.std, None, s.manifest.size_multiple)
    whole = to_mask(s.run(x[None])[0], geo)
    assert (segment(s.run, small, TileSpec(96, 0.0, "constant"), s.manifest) == whole).all()


@pytest.mark.slow
def test_tile_errors_are_one_line(exported, tmp_path):
    for args, msg in [(["--tile", "60"], "--tile 60: must be a multiple of 8"),
                      (["--tile", "64", "--overlap", "0.95"], "'--overlap': 0.95 is not in the range"),
                      (["--tile", "64", "--save-probs"], "--save-probs cannot be used with --tile")]:
        res = CliRunner().invoke(main, ["predict", str(PETS / "images"), "--model", str(exported), "--out",
                                        str(tmp_path / "o"), "--provider", "cpu", *args])
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert res.exit_code == 2 and len(errors) == 1 and msg in errors[0], res.output
        assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_parity_tile_reports_tiled_vs_whole(exported, tmp_path):
    res = CliRunner().invoke(main, ["parity", str(exported), "--images", str(PETS / "images"), "--masks",
                                    str(PETS / "masks"), "--tile", "64", "--limit", "4", "--json", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "t.json").read_text())
    assert r["inputs"] == 4 and r["tile"] == 64 and r["stride"] == 48 and 0 < r["mask_iou_tiled_vs_whole"] <= 1
    assert 0 < r["miou_tiled_vs_ground_truth"] <= 1 and 0 < r["miou_whole_vs_ground_truth"] <= 1
    assert "tiled 64x64 (overlap 0.25, stride 48, gaussian) vs whole image" in res.output
    res = CliRunner().invoke(main, ["parity", str(exported), "--tile", "64"])
    assert res.exit_code == 2 and "--tile needs --images" in res.output
