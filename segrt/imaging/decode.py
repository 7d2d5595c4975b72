"""Image files -> HWC uint8 pixels, and the one reader of model inputs (numpy + Pillow, no torch).

Shared by predict, parity, calibration and training validation so every path sees identical
inputs. Images are HWC uint8 in [0, 255]; model inputs CHW float32 normalized; logits CHW float32.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segrt.errors import ImageError
from segrt.imaging.prepare import Geometry, prepare, untimed

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "GRAY_MODES", "load_image", "decode_image", "page_count", "say",
           "decoding", "read_model_input", "read_file", "load_mask"]

# segrt checks the pixel count itself (max_pixels below), with a message that names the flag.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_PIXELS = 64_000_000  # a 8000x8000 photo; raise with --max-pixels
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
GRAY_MODES = ("1", "L", "LA", "F", *_SIXTEEN_BIT_MODES)


def load_image(path: str | os.PathLike, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               page: int | None = None) -> np.ndarray:
    """Decode any common image file to HWC uint8 with ``channels`` (1 or 3) channels. EXIF orientation is
    applied; palette, RGBA, CMYK, grayscale and 16-bit (value / 257) are converted. Raises ImageError."""
    return decode_image(path, channels, max_pixels, page=page)[0]


def decode_image(path: str | os.PathLike, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 at_least: tuple[int, int] | None = None, check=None, notes: list[str] | None = None,
                 page: int | None = None, data: bytes | None = None,
                 as_image: bool = False) -> tuple[np.ndarray | Image.Image, tuple[int, int]]:
    """load_image, plus the original (h, w) after EXIF rotation; ``as_image``: the pixels as a loaded Pillow
    image (mode L or RGB), for a caller that resizes it next (no copy out and back).

    With ``at_least`` (h, w), a JPEG may be decoded at a reduced DCT scale (1/2, 1/4, 1/8) that still
    covers that size: the same picture for a model that resizes to it anyway, at a fraction of the cost.
    ``check(h, w)`` runs on the header's size before the pixels are decoded (it may raise ImageError).
    The file is read as it is decoded and the pixels are copied out once, so a 16000 x 16000
    grayscale image peaks at twice its size (Pillow's and ours), not five times. ``page``: that page
    of a multi-page file (a TIFF stack), read alone; without it a multi-page or animated file gives
    its first page, and says so in ``notes`` (else as a warning). ``data``: the encoded file itself
    (an upload to segrt serve), with ``path`` only its name in messages.
    """
    path = Path(path)
    f = io.BytesIO(data) if data is not None else _open_regular(path)
    with decoding(path, "image data", None if data is None else len(data)), f, Image.open(f) as img:
        if page:
            _seek_page(img, page, path)
        w, h = img.size
        pages = getattr(img, "n_frames", 1)
        if pages > 1 and page is None:
            say(notes, f"{path}: {pages} pages (or frames); only the first was read")
        if max_pixels and w * h > max_pixels:
            raise ImageError(f"{path}: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} "
                             "(decompression-bomb guard; raise it with --max-pixels)")
        orientation = img.getexif().get(0x0112, 1)
        swapped = orientation in (5, 6, 7, 8)
        original = (w, h) if swapped else (h, w)
        if check is not None:
            check(*original)
        if at_least is not None and img.format == "JPEG":
            th, tw = at_least
            img.draft(None, (th, tw) if swapped else (tw, th))
        if notes is not None and (channels == 3) == (img.mode in GRAY_MODES):
            have = "grayscale" if channels == 3 else f"colour ({img.mode})"
            notes.append(f"{path}: a {have} image into a {channels}-channel model: converted")
        if orientation != 1:  # exif_transpose copies even when nothing turns
            img = ImageOps.exif_transpose(img)
        img = _converted(img, channels, path)
        if as_image:
            img.load()
            return img, original
        return _array(img), original


def _seek_page(img: Image.Image, page: int, path: Path) -> None:
    try:
        img.seek(page)
    except EOFError:
        raise ImageError(f"{path}: has no page {page} (it has {getattr(img, 'n_frames', 1)})") from None


def page_count(path: str | os.PathLike) -> int:
    """Pages of a TIFF stack (multi-page or OME-TIFF); 1 for any other file or an unreadable one."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return 1
    try:
        _check_regular_file(Path(path))
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except (ImageError, OSError, ValueError, SyntaxError):
        return 1


def say(notes: list[str] | None, text: str) -> None:
    """A note for the caller's list, else a warning (never silent)."""
    if notes is None:
        import warnings

        return warnings.warn(text, stacklevel=3)
    notes.append(text)


@contextlib.contextmanager
def decoding(path: Path, what: str, size: int | None = None):
    """Pillow's decode errors as one ImageError naming the file; ``size``: an in-memory image's bytes."""
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        if (os.stat(path).st_size if size is None else size) == 0:
            raise ImageError(f"{path}: empty file (0 bytes)") from None
        raise ImageError(f"{path}: not an image, or a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: corrupt or truncated {what} ({exc})") from None


def _open_regular(path: Path):
    """The regular file at ``path``, opened for reading, or ImageError with the reason."""
    _check_regular_file(path)
    try:
        return path.open("rb")
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_regular_file(path: Path) -> None:
    """Only regular files (symlinks followed) are read: a FIFO blocks, a device never ends. Else ImageError."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file" + (" (broken symbolic link)" if os.path.islink(path) else "")) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(f"{path}: symbolic link loop") from None
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise ImageError(f"{path}: not a regular file ({kind}); only regular files are read as images")


def read_model_input(path: str | os.PathLike, manifest, native: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     notes: list[str] | None = None, page: int | None = None, pixels: bool = False,
                     decode: str | None = None, data: bytes | None = None, clock=None) -> tuple[np.ndarray, Geometry]:
    """File (or its encoded ``data``) -> (CHW float32 model input, Geometry): the one reader predict, parity,
    serve and calibration share. Resizes as the manifest's policy says (its working size, or ``resize.scale``
    times the image; ``resize.filter``) unless ``native`` (or no size): then pads. A JPEG is decoded at a
    reduced DCT scale covering the working size when ``decode`` (else the manifest's) is "reduced".
    ``clock(stage)``: a context that times each stage (decode, resize, to_tensor; predict's accounting)."""
    clock = clock or untimed
    policy = manifest.resize or {}
    scale = None if native else policy.get("scale")
    size = None if native or scale or not manifest.input_size else tuple(manifest.input_size)
    draft = size if (decode or manifest.decode) == "reduced" else None
    with clock("decode"):
        image, original = decode_image(path, manifest.channels, max_pixels, at_least=draft, notes=notes, page=page,
                                       data=data, as_image=True)
        if scale:  # the image scaled by a factor, aspect kept (int() of each side, as PIL pipelines write it)
            size = (max(1, int(scale * original[0])), max(1, int(scale * original[1])))
        if size is None or (image.height, image.width) == size:  # not resized: its pixels now
            image = _array(image)
    return prepare(image, manifest.mean, manifest.std, size, manifest.size_multiple, original, pixels,
                   policy.get("filter", "bilinear"), policy.get("upsample", "logits"), clock)


def read_file(path: Path) -> bytes:
    """A regular file's bytes (ImageError naming it otherwise): predict reads, then decodes from memory."""
    with _open_regular(path) as f:
        return f.read()


def _converted(img: Image.Image, channels: int, path: Path) -> Image.Image:
    """The image in mode RGB (3 channels) or L (1)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        raise ImageError(f"{path}: 32-bit float images are not supported; convert to 8-bit first")
    if channels == 3:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
        return img if img.mode == "RGB" else img.convert("RGB")
    if channels == 1:
        return img if img.mode == "L" else img.convert("L")
    raise ImageError(f"{path}: models with {channels} input channels are not supported (1 or 3)")


def _array(img: Image.Image) -> np.ndarray:
    """An L or RGB image -> HWC uint8."""
    return _pixels(img)[:, :, None] if img.mode == "L" else _pixels(img)


_STRIP_BYTES = 1 << 24


def _pixels(img: Image.Image) -> np.ndarray:
    """An L or RGB image as a writable, contiguous HW / HWC uint8 array. A large one is copied in
    strips of rows: numpy's array interface goes through tobytes(), which holds the pixels twice
    (chunks, then their join), so a 16000 x 16000 image would peak at three times its size."""
    w, h = img.size
    bands = len(img.getbands())
    if w * h * bands <= _STRIP_BYTES:
        return np.array(img)
    img.load()
    out = np.empty((h, w, bands) if bands > 1 else (h, w), np.uint8)
    step = max(1, _STRIP_BYTES // (w * bands))
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(img.crop((0, y, w, min(h, y + step))))
    return out


def load_mask(path: str | os.PathLike, page: int | None = None) -> np.ndarray:
    """A label image (or one ``page`` of a label stack) -> HW uint8 raw values (masks carry no EXIF)."""
    path = Path(path)
    _check_regular_file(path)
    with decoding(path, "mask"), Image.open(path) as img:
        if page:
            _seek_page(img, page, path)
        if img.mode not in ("L", "P", "1", "I", "I;16"):
            img = img.convert("L")
        arr = np.asarray(img)
    if arr.max(initial=0) > 255:
        raise ImageError(f"{path}: mask values above 255 are not supported")
    return arr.astype(np.uint8)
