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


def test_resizing_from_the_decoders_image_gives_the_array_paths_input(tmp_path):
    """read_model_input resizes the decoded Pillow image directly; the model input must be exactly what
    decoding to numpy and resizing that gives, for every mode decoding converts (and EXIF rotation)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 70, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (50, 70), np.uint16)).save(tmp_path / "deep.png")
    files = [tmp_path / n for n in ("rot.jpg", "grey.png", "rgba.png", "deep.png")] + [PETS / "images" / "Abyssinian_34.jpg"]
    for channels, size, pixels in ((3, (32, 48), False), (1, (40, 90), False), (3, (64, 64), True)):
        m = Manifest(name="t", classes=["a", "b"], mean=[0.5] * channels, std=[0.25] * channels, channels=channels,
                     size_multiple=16, input_size=list(size))
        for path in files:
            x, _ = decode.read_model_input(path, m, pixels=pixels)
            ref, _ = prepare.prepare(decode.load_image(path, channels), m.mean, m.std, size, 16, pixels=pixels)
            np.testing.assert_array_equal(x, ref, err_msg=f"{path.name}, {channels} channels")
