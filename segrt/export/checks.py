"""What `segrt export` checks and decides before any work (no torch): formats, opset, working size,
the quantization jobs and the inputs they need, where the export goes."""

from __future__ import annotations

from pathlib import Path

from segrt.errors import SegrtError

__all__ = ["DEFAULT_FORMATS", "quantize_jobs", "check_usage", "working_size", "check_opset", "check_formats",
           "output_folder", "resize_policy"]

_FORMATS = ("onnx", "openvino", "torchscript", "pt2")
DEFAULT_FORMATS = ("onnx", "torchscript", "pt2")
_BACKEND_OF_FORMAT = {"onnx": "onnxruntime", "openvino": "openvino"}  # who quantizes an exported format
_MIN_OPSET = 13  # the oldest opset with the U-Net's ops as the exporters write them


def quantize_jobs(precisions: tuple[str, ...], formats: tuple[str, ...]) -> list[tuple[str, str]]:
    """--quantize P for every exported format whose runtime makes P: [(backend, precision)]."""
    from segrt.quantize import VARIANTS

    jobs = []
    for p in precisions:
        found = [(_BACKEND_OF_FORMAT[f], p) for f in formats if (_BACKEND_OF_FORMAT.get(f), p) in VARIANTS]
        if not found:
            raise SegrtError(f"--quantize {p}: none of the formats {', '.join(formats)} has a {p} variant "
                             "(int8: onnx, openvino; fp16: onnx; bf16: openvino)")
        jobs += found
    return jobs


def check_usage(formats: tuple[str, ...], jobs: list[tuple[str, str]], opts) -> None:
    """Combinations that cannot succeed, refused before anything is exported (one line)."""
    from segrt.cpuinfo import module_available
    from segrt.imaging.files import list_images

    if "openvino" in formats and not module_available("openvino"):
        raise SegrtError("--formats openvino needs OpenVINO: pip install 'segrt[openvino]'")
    folders = [("--calib-images", opts and opts.calib_images), ("--val-images", opts and opts.val_images),
               ("--val-masks", opts and opts.val_masks)]
    if any(p == "int8" for _, p in jobs) and not folders[0][1]:
        raise SegrtError("--quantize int8 needs calibration images: pass --calib-images DIR (photos like the ones "
                         "you will predict; training images are fine)")
    if any(p == "bf16" for _, p in jobs) and not (folders[0][1] or folders[1][1]):
        raise SegrtError("--quantize bf16 is gated on real photos: pass --val-images DIR (or --calib-images DIR)")
    for option, folder in folders:
        if folder and (not Path(folder).is_dir() or (option != "--val-masks" and not list_images(folder))):
            raise SegrtError(f"{option} {folder}: " + ("no such folder" if not Path(folder).is_dir() else
                                                       "no images found"))


def _default_out(checkpoint: Path, force: bool, progress) -> Path:
    """No --out: an ``export`` folder beside the checkpoint (RUN/export for RUN/best.pt; NAME-export for
    an export folder NAME); when that
    exists, export-2, export-3, ... (said in one line), or with --force that one replaced."""
    from segrt.fsutil import next_free

    first = checkpoint.with_name(checkpoint.name + "-export") if checkpoint.is_dir() else checkpoint.parent / "export"
    out = first if force else next_free(first)
    if out != first:
        progress(f"{first} exists: writing {out} (pass --out to choose, --force to replace {first.name})")
    return out


def working_size(size: list[int], multiple: int) -> list[int]:
    """--size N or H,W -> [h, w], each a positive multiple of the model's size multiple."""
    hw = list(size) * 2 if len(size) == 1 else list(size)
    if len(hw) != 2 or min(hw) < 1 or any(v % multiple for v in hw):
        raise SegrtError(f"--size {','.join(map(str, size))}: expected N or H,W, each a multiple of {multiple} "
                         "(the model's size multiple)")
    return hw


def check_opset(opset: int) -> None:
    import onnx

    top = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not _MIN_OPSET <= opset <= top:
        raise SegrtError(f"--opset {opset}: choose {_MIN_OPSET}..{top} (this onnx package's newest opset)")


def check_formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in _FORMATS]
    if unknown or not formats:
        raise SegrtError(f"unknown export format(s) {unknown}; choose from {', '.join(_FORMATS)}")
    if "openvino" in formats and "onnx" not in formats:
        raise SegrtError("the OpenVINO IR is converted from the ONNX export: use --formats onnx,openvino")
    return tuple(f for f in _FORMATS if f in formats)  # onnx before openvino


def output_folder(out, checkpoint: Path | None, opts, force: bool, progress) -> Path:
    """--out (or the default beside the checkpoint), refused when it is, holds or lies inside an input,
    or exists and is not an export segrt made; temp folders of killed exports there are removed (said)."""
    from segrt.fsutil import check_apart, check_replaceable, remove_stale_temps

    out = Path(out) if out else _default_out(checkpoint, force, progress)
    check_apart(out, {"checkpoint": checkpoint, "calibration images": opts.calib_images,
                      "gate images": opts.val_images, "gate masks": opts.val_masks})
    for stale in remove_stale_temps(out.parent, out.name):
        progress(f"removed {stale}, left by an earlier export that was killed")
    if out.exists() and not force:
        raise SegrtError(f"{out}: already exists; choose another --out or pass --force to replace it")
    if out.exists():
        check_replaceable(out, "manifest.json", "an export folder", "--force")
    return out


def resize_policy(manifest, resize: str | None, resize_filter: str | None, upsample: str | None, progress) -> None:
    """--resize size|scale:F|native, --resize-filter, --upsample into the manifest (input.resize): how
    predict, parity and serve bring an image to the model and its prediction back; said in one line."""
    from segrt.records import RESIZE_FILTERS

    if resize is None and resize_filter is None and upsample is None:
        return
    policy = {}
    if resize and resize.startswith("scale:"):
        try:
            policy["scale"] = float(resize.partition(":")[2])
        except ValueError:
            policy["scale"] = 0.0
        if not 0 < policy["scale"] <= 8:
            raise SegrtError(f"--resize {resize}: scale:F with F in (0, 8], e.g. scale:0.5")
        if manifest.fixed_size or manifest.size_multiple > 1:
            raise SegrtError(f"--resize {resize}: scaled images have any size, and this model takes "
                             + (f"only {manifest.fixed_size}" if manifest.fixed_size else
                                f"multiples of {manifest.size_multiple}") + " (your own model: --size-multiple 1)")
        manifest.input_size = None
    elif resize == "native":
        manifest.input_size = None
    elif resize not in (None, "size"):
        raise SegrtError(f"--resize {resize}: choose size (the working size), scale:F, or native")
    if resize_filter not in (None, *RESIZE_FILTERS) or upsample not in (None, "logits", "mask"):
        raise SegrtError("--resize-filter is bilinear, bicubic or nearest; --upsample is logits or mask")
    policy.update({k: v for k, v in (("filter", resize_filter), ("upsample", upsample)) if v not in (None, "bilinear",
                                                                                               "logits")})
    manifest.resize = policy
    to = (f"scaled by {policy['scale']:g}" if "scale" in policy else "at native size, padded" if not
          manifest.input_size else f"resized to {manifest.input_size[1]}x{manifest.input_size[0]}")
    progress(f"preprocessing: images {to} ({policy.get('filter', 'bilinear')}); "
             + ("the predicted mask is resized back (nearest)" if policy.get("upsample") == "mask" else
                "the logits are resized back (bilinear) before the argmax"))
