import numpy as np
from conftest import PETS
from PIL import Image

from segrt.imaging import decode, masks, prepare
from segrt.manifest import Manifest


def test_draft_decode_covers_size_and_keeps_original(tmp_path):
    path = PETS / "images" / "american_bulldog_10.jpg"
    full = decode.load_image(path)
    small, original = decode.decode_image(path, at_least=(64, 64))
    assert original == full.shape[:2]
    assert small.shape[0] >= 64 and small.shape[1] >= 64 and small.shape[0] < full.shape[0]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(full).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    rot, original = decode.decode_image(tmp_path / "rot.jpg", at_least=(64, 64))
    assert original == (full.shape[1], full.shape[0]) and rot.shape[0] > rot.shape[1]


def test_read_model_input_resize_and_native():
    m = Manifest(name="t", classes=["a", "b"], mean=[0.5] * 3, std=[0.25] * 3, channels=3, size_multiple=16,
                 input_size=[64, 96])
    path = PETS / "images" / "Bengal_133.jpg"
    w, h = Image.open(path).size
    x, geo = decode.read_model_input(path, m)
    assert x.shape == (3, 64, 96) and x.dtype == np.float32 and geo.original_hw == (h, w) and not geo.padded
    full_path, _ = prepare.prepare(decode.load_image(path), m.mean, m.std, (64, 96), 16)
    assert np.abs(x - full_path).mean() < 0.05  # DCT-scaled decode: the same picture
    x, geo = decode.read_model_input(path, m, native=True)
    assert x.shape == (3, -(-h // 16) * 16, -(-w // 16) * 16) and geo.padded
    assert (x[:, h:, :] == 0).all() and (x[:, :, w:] == 0).all()


def test_normalize_and_palette():
    img = np.full((2, 2, 3), 255, np.uint8)
    x = prepare.normalize(img, [0.5] * 3, [0.5] * 3)
    assert x.shape == (3, 2, 2) and np.allclose(x, 1.0)
    pal = masks.voc_palette()
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0]


def test_dataset_quirks_decode():
    gif = decode.load_image(PETS / "images" / "Abyssinian_34.jpg")  # really a GIF (palette)
    rgba = decode.load_image(PETS / "images" / "Abyssinian_5.jpg")  # really a PNG with alpha
    assert gif.shape == (202, 250, 3) and rgba.shape == (150, 200, 3)
    assert gif.dtype == rgba.dtype == np.uint8 and gif.std() > 10 and rgba.std() > 10
    assert decode.load_image(PETS / "images" / "Abyssinian_34.jpg", channels=1).shape == (202, 250, 1)
