"""What a manifest must hold before anything trusts it: values of the right type, count and range,
and file names that stay inside the export folder (an export is a closed world). One line naming
the field on any problem."""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from segrt.errors import SegrtError

KINDS = ("onnx", "openvino", "torchscript", "pt2", "checkpoint")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DICT_FIELDS = ("parity", "speed", "quality", "versions", "model_config", "mask_values", "split")


def check_member(file, folder: str | os.PathLike | None = None, where: str = "manifest") -> None:
    """A file the manifest names: a relative name inside the export, no '..', and (with ``folder``)
    no symbolic link that leads out of it."""
    ok = isinstance(file, str) and file and "\0" not in file and "\\" not in file
    parts = PurePosixPath(file).parts if ok else ()
    if not ok or PurePosixPath(file).is_absolute() or PureWindowsPath(file).drive or ".." in parts:
        raise SegrtError(f"{where}: artifact file {file!r} is not a relative name inside the export folder; "
                         "refused (an export names only its own files)")
    if folder is not None:
        path, root = os.path.realpath(Path(folder) / file), os.path.realpath(folder)
        if os.path.commonpath([path, root]) != root:
            raise SegrtError(f"{Path(folder) / file}: a symbolic link that leads out of the export folder "
                             f"(to {path}); refused")


def finite_numbers(values) -> bool:
    """A list of finite ints/floats (no bools)."""
    return isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def hw_size(value) -> bool:
    """None, or [h, w] of positive integers."""
    return value is None or (isinstance(value, list) and len(value) == 2
                             and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def check_manifest(m, raw: dict, where: str) -> None:
    """Raise SegrtError naming the first field that is wrong."""
    def bad(field: str, need: str, got) -> SegrtError:
        return SegrtError(f"{where}: {field} must be {need}, got {got!r}"[:300])

    if not isinstance(m.name, str) or not m.name:
        raise bad("name", "a non-empty string", m.name)
    if not m.classes or not all(isinstance(c, str) and c for c in m.classes):
        raise bad("classes", "a non-empty list of class names", m.classes)
    declared = [raw.get("num_classes"), raw["output"].get("channels") if isinstance(raw.get("output"), dict) else None,
                m.model_config.get("num_classes") if isinstance(m.model_config, dict) else None]
    for field, n in zip(("num_classes", "output.channels", "model_config.num_classes"), declared):
        if n is not None and n != len(m.classes):
            raise bad(field, f"the number of classes ({len(m.classes)})", n)
    if m.channels not in (1, 3) or not isinstance(raw["input"]["channels"], int):
        raise bad("input.channels", "1 or 3", raw["input"]["channels"])
    for field, values in (("normalization.mean", m.mean), ("normalization.std", m.std)):
        if len(values) != m.channels or not finite_numbers(values):
            raise bad(field, f"{m.channels} finite number(s), one per input channel", values)
    if min(m.std) <= 0:
        raise bad("normalization.std", "> 0", m.std)
    if not isinstance(raw["input"]["size_multiple"], int) or m.size_multiple < 1:
        raise bad("input.size_multiple", "an integer >= 1", raw["input"]["size_multiple"])
    for field, value in (("input.size", m.input_size), ("input.fixed_size", m.fixed_size),
                         ("input.crop_size", m.crop_size)):
        if not hw_size(value):
            raise bad(field, "null or [height, width] in positive integers", value)
    for field in DICT_FIELDS:
        if not isinstance(getattr(m, field), dict):
            raise bad(field, "an object", getattr(m, field))
    for key in ("train", "val"):
        if key in m.split and not (isinstance(m.split[key], list) and all(isinstance(n, str) for n in m.split[key])):
            raise bad(f"split.{key}", "a list of image names", m.split[key])
    if m.tta not in (None, "hflip"):
        raise bad("output.tta", "null or 'hflip'", m.tta)
    for a in m.artifacts:
        check_member(a.file, where=where)
        if a.kind not in KINDS or a.precision not in PRECISIONS:
            raise bad(f"artifact {a.file!r}", f"of a known kind {KINDS} and precision {PRECISIONS}",
                      f"{a.kind}/{a.precision}")
        if not isinstance(a.sha256, str) or not isinstance(a.companions, dict) or not isinstance(a.name, str):
            raise bad(f"artifact {a.file!r}", "a sha256 string, a name and a companions object", a.companions)
        for other in a.companions:
            check_member(other, where=where)
