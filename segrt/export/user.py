"""The manifest of your own model (segrt.model.foreign): what the file does not carry comes from
options, and nothing is guessed without a line saying so."""

from __future__ import annotations

from segrt.errors import SegrtError
from segrt.manifest import Manifest

__all__ = ["NORMALIZATION_HINT", "reference_format", "user_manifest"]

NORMALIZATION_HINT = ("--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 (ImageNet: torchvision, smp and timm "
                      "encoders), or --mean 0,0,0 --std 1,1,1 (pixels scaled to 0..1)")


_REFERENCE_FILES = {"pt2": "model.pt2", "torchscript": "model.ts"}


def user_manifest(user, name: str, *, classes=None, mean=None, std=None, size=None, multiple: int = 32,
                  versions: dict | None = None, log=print) -> Manifest:
    """A manifest for ``user`` (a UserModel): classes (else class0..N-1, said), the normalization it
    was trained with (required), the working size (else native resolution padded to ``multiple``, said)."""
    from segrt.export.checks import working_size

    if mean is None or std is None:
        raise SegrtError(f"{user.label}: the model does not say how its inputs were normalized; pass {NORMALIZATION_HINT}")
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) == 1 and user.channels > 1:
        mean, std = mean * user.channels, std * user.channels
    if len(mean) != user.channels or len(std) != user.channels:
        raise SegrtError(f"--mean/--std: {user.channels} value(s) each, one per input channel of the model")
    if classes is None:
        classes = [f"class{i}" for i in range(user.classes)]
        log(f"no --classes: named {', '.join(classes)} (pass --classes NAME,NAME,... to name them)")
    classes = list(classes)
    if len(classes) != user.classes:
        raise SegrtError(f"--classes: {len(classes)} name(s) for a model with {user.classes} output channel(s)")
    input_size = user.fixed_size or (working_size(list(size), multiple) if size else None)
    if not input_size:
        log(f"no --size: images run at their native resolution, padded to a multiple of {multiple} (pass --size H,W "
            "for the size the model was trained at)")
    for note in user.notes:
        log(f"note: {note}")
    values = {str(v): i for i, v in enumerate(user.class_values or [])}  # raw label value -> class id
    return Manifest(name=name, classes=classes, mean=mean, std=std, channels=user.channels, size_multiple=multiple,
                    input_size=input_size, fixed_size=user.fixed_size, versions=versions or {}, mask_values=values,
                    source={"route": user.route, "notes": user.notes, "reference": _REFERENCE_FILES[user.reference],
                            "batch": 1 if user.fixed_batch else None})


def reference_format(manifest: Manifest) -> str | None:
    """The export format that keeps your model's reference (pt2 or torchscript), None for segrt's own."""
    return {v: k for k, v in _REFERENCE_FILES.items()}.get(manifest.source.get("reference"))
