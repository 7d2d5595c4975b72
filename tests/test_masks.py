import numpy as np
import pytest
from PIL import Image

from segrt.imaging import masks
from segrt.imaging.prepare import Geometry


def pillow_resize(logits, dst):
    return np.stack([np.asarray(Image.fromarray(c, "F").resize(dst[::-1], Image.BILINEAR)) for c in logits])


@pytest.mark.parametrize("src,dst", [((16, 24), (50, 37)), ((64, 64), (375, 500)), ((64, 64), (20, 30))])
def test_restore_logits_is_pillow_bilinear(src, dst):
    logits = np.random.default_rng(0).standard_normal((3, *src)).astype(np.float32)
    np.testing.assert_allclose(masks.restore_logits(logits, Geometry(dst, src, False)), pillow_resize(logits, dst),
                               atol=1e-5)


def test_padded_restore_crops():
    logits = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    assert masks.restore_logits(logits, Geometry((5, 7), (8, 8), True)).shape == (2, 5, 7)
    assert masks.to_mask(logits, Geometry((5, 7), (8, 8), True)).tolist() == [[1] * 7] * 5


def smooth_logits(classes, hw, seed):
    """Blobby logits, like a real model's: large regions with boundaries between them."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((classes, hw[0] // 8 + 1, hw[1] // 8 + 1)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(c, "F").resize(hw[::-1], Image.BICUBIC)) for c in coarse])


@pytest.mark.parametrize("classes,src,dst", [
    (3, (64, 64), (375, 500)),  # enlarging: boundary-only interpolation
    (2, (64, 96), (64, 300)),  # one axis kept, one enlarged
    (4, (64, 64), (20, 30)),  # shrinking
    (3, (64, 64), (40, 200)),  # one axis each way
    (3, (64, 64), (64, 64)),
])
def test_to_mask_is_argmax_of_pillow_resized_logits(classes, src, dst):
    for seed in range(3):
        logits = smooth_logits(classes, src, seed)
        ref = pillow_resize(logits, dst).argmax(0)
        got = masks.to_mask(logits, Geometry(dst, src, False))
        assert got.shape == dst and got.dtype == np.uint8
        assert (got != ref).mean() < 1e-4  # float rounding at exact ties only


def test_to_mask_ties_go_to_the_first_class():
    logits = np.zeros((3, 8, 8), np.float32)
    logits[1:, :4] = 1.0  # classes 1 and 2 tie on the top half
    mask = masks.to_mask(logits, Geometry((32, 32), (8, 8), False))
    assert set(np.unique(mask[:12])) == {1} and set(np.unique(mask[20:])) == {0}


def test_mask_pngs_share_pixels_grey_and_palette(tmp_path):
    mask = np.random.default_rng(3).integers(0, 3, (37, 53)).astype(np.uint8)
    grey, color = masks.encode_mask_pngs(mask)
    (tmp_path / "m.png").write_bytes(grey)
    (tmp_path / "m.color.png").write_bytes(color)
    with Image.open(tmp_path / "m.png") as g, Image.open(tmp_path / "m.color.png") as c:
        assert g.mode == "L" and c.mode == "P"
        np.testing.assert_array_equal(np.asarray(g), mask)
        np.testing.assert_array_equal(np.asarray(c), mask)
        np.testing.assert_array_equal(np.asarray(c.convert("RGB")), masks.voc_palette()[mask])


def test_mask_pngs_carry_every_value_and_the_dataset_colours(tmp_path):
    mask = np.arange(256, dtype=np.uint8).reshape(16, 16)
    grey, color = masks.encode_mask_pngs(mask, [[10, 20, 30], [40, 50, 60]])
    for data in (grey, color):
        (tmp_path / "m.png").write_bytes(data)
        with Image.open(tmp_path / "m.png") as img:
            img.verify()  # chunk CRCs and structure
        with Image.open(tmp_path / "m.png") as img:
            np.testing.assert_array_equal(np.asarray(img), mask)
    with Image.open(tmp_path / "m.png") as img:
        assert img.getpalette()[:6] == [10, 20, 30, 40, 50, 60]
