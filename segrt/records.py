"""The records a manifest carries across wings, typed with one shape each and serialised only here:
an artifact's gate (``parity``), the CPU speeds ``auto`` reads (``speed``), mIoU against ground truth
(``quality``). Older manifests still load: a gate's threshold may be top level (``mask_iou_min``),
nested (``gates``) or both. Also what a manifest must hold before anything trusts it: values of the
right type, count and range, files that stay inside the export; one line naming the field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from segrt.errors import SegrtError
from segrt.fsutil import check_member

__all__ = ["Gates", "GateRecord", "SpeedRecord", "QualityRecord", "RESIZE_FILTERS", "records_from_json", "records_to_json",
           "finite_numbers", "hw_size", "check_manifest"]

_KINDS = ("onnx", "openvino", "torchscript", "pt2", "checkpoint")
_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_DICT_FIELDS = ("versions", "model_config", "mask_values", "split", "source")


def _set_fields(record, leave=()) -> dict:
    """A record's fields that are set (not None), but those in ``leave``."""
    return {k: v for k, v in asdict(record).items() if v is not None and k not in leave}


def _known(cls, d: dict) -> tuple[dict, dict]:
    """``d`` split into the fields of ``cls`` and the rest."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


@dataclass
class Gates:
    """The thresholds an artifact was held to: mask IoU at least ``mask_iou_min``; fp32 also |logit
    difference| at most ``max_abs_logit_diff_max``."""

    mask_iou_min: float
    max_abs_logit_diff_max: float | None = None
    min_class_share: float | None = None  # classes below this share of the reference's pixels do not gate
    class_iou_margin: float | None = None  # a class with support may trail mask_iou_min by at most this

    def to_json(self) -> dict:
        return _set_fields(self)


@dataclass
class GateRecord:
    """manifest.parity[NAME]: how an artifact agreed with its reference, and whether it passed.
    ``measures``: what else its gate measured (per-class agreement, batch invariance, the worst
    images, the INT8 search), kept as measured. ``passed`` False with a ``reason`` in measures: a
    variant that failed its gate and was not written (its measurements kept)."""

    passed: bool
    mask_iou: float
    gates: Gates
    inputs: int = 0
    reference: str | None = None
    pixel_agreement: float | None = None
    max_abs_logit_diff: float | None = None
    mean_abs_logit_diff: float | None = None
    measured_on: dict | None = None  # runtime.here.signature(): the ISA class and runtime versions
    measures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**_set_fields(self, leave=("gates", "measures")), "gates": self.gates.to_json(), **self.measures}

    @classmethod
    def from_json(cls, d: dict) -> "GateRecord":
        d = dict(d)
        nested = d.pop("gates", None) or {}
        top = d.pop("mask_iou_min", None)
        gates = Gates(**{**_known(Gates, nested)[0], "mask_iou_min": nested.get("mask_iou_min", top)})
        known, rest = _known(cls, d)
        return cls(**{"passed": False, "mask_iou": 0.0, **known, "gates": gates, "measures": rest})


@dataclass
class SpeedRecord:
    """manifest.speed: batch-1 ms/image of every gated CPU variant, timed together in one process on
    ``cpu`` at ``input`` (NCHW), from decoded pixels; ``size_from`` says where that size came from."""

    ms_per_image: dict[str, float]
    cpu: dict | None = None
    threads: int | None = None
    input: list[int] = field(default_factory=list)
    size_from: str | None = None
    date: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SpeedRecord | None":
        return cls(**{"ms_per_image": {}, **_known(cls, d)[0]}) if d else None


@dataclass
class QualityRecord:
    """manifest.quality[NAME] (segrt parity --record NAME): mIoU against ground truth on an image
    set, of eager PyTorch and of each artifact ({miou, iou per class, agreement with eager})."""

    images: int
    classes: list[str]
    artifacts: dict[str, dict]
    eager_miou: float | None = None
    date: str | None = None

    def to_json(self) -> dict:
        return _set_fields(self)

    @classmethod
    def from_json(cls, d: dict) -> "QualityRecord":
        return cls(**{"images": 0, "classes": [], "artifacts": {}, **_known(cls, d)[0]})


def records_from_json(d: dict) -> dict:
    """The manifest's ``parity``, ``speed`` and ``quality`` objects as records (TypeError or
    AttributeError on a malformed one, which the manifest reports in one line)."""
    for key in ("parity", "speed", "quality"):
        if not isinstance(d.get(key, {}), dict):
            raise TypeError(f"{key} must be an object")
    return {"parity": {k: GateRecord.from_json(v) for k, v in d.get("parity", {}).items()},
            "speed": SpeedRecord.from_json(d.get("speed") or {}),
            "quality": {k: QualityRecord.from_json(v) for k, v in d.get("quality", {}).items()}}


def records_to_json(m) -> dict:
    return {"parity": {k: v.to_json() for k, v in m.parity.items()},
            "speed": m.speed.to_json() if m.speed else {},
            "quality": {k: v.to_json() for k, v in m.quality.items()}}


def finite_numbers(values) -> bool:
    """A list of finite ints/floats (no bools)."""
    return isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def hw_size(value) -> bool:
    """None, or [h, w] of positive integers."""
    return value is None or (isinstance(value, list) and len(value) == 2
                             and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


RESIZE_FILTERS = ("bilinear", "bicubic", "nearest")  # Pillow's, as imaging.decode.FILTERS applies them


def _resize_policy(policy) -> bool:
    """Is this a valid input.resize: {scale, filter, upsample}, each optional?"""
    return isinstance(policy, dict) and not set(policy) - {"scale", "filter", "upsample"} and \
        policy.get("filter", "bilinear") in RESIZE_FILTERS and policy.get("upsample", "logits") in ("logits", "mask") \
        and (policy.get("scale") is None or (finite_numbers([policy["scale"]]) and 0 < policy["scale"] <= 8))


def check_manifest(m, raw: dict, where: str) -> None:
    """Raise SegrtError naming the first key that is wrong."""
    def bad(key: str, need: str, got) -> SegrtError:
        return SegrtError(f"{where}: {key} must be {need}, got {got!r}"[:300])

    if not isinstance(m.name, str) or not m.name:
        raise bad("name", "a non-empty string", m.name)
    if not m.classes or not all(isinstance(c, str) and c for c in m.classes):
        raise bad("classes", "a non-empty list of class names", m.classes)
    declared = [raw.get("num_classes"), raw["output"].get("channels") if isinstance(raw.get("output"), dict) else None,
                m.model_config.get("num_classes") if isinstance(m.model_config, dict) else None]
    for key, n in zip(("num_classes", "output.channels", "model_config.num_classes"), declared):
        if n is not None and n != len(m.classes):
            raise bad(key, f"the number of classes ({len(m.classes)})", n)
    if m.channels not in (1, 3) or not isinstance(raw["input"]["channels"], int):
        raise bad("input.channels", "1 or 3", raw["input"]["channels"])
    for key, values in (("normalization.mean", m.mean), ("normalization.std", m.std)):
        if len(values) != m.channels or not finite_numbers(values):
            raise bad(key, f"{m.channels} finite number(s), one per input channel", values)
    if min(m.std) <= 0:
        raise bad("normalization.std", "> 0", m.std)
    if not isinstance(raw["input"]["size_multiple"], int) or m.size_multiple < 1:
        raise bad("input.size_multiple", "an integer >= 1", raw["input"]["size_multiple"])
    for key, value in (("input.size", m.input_size), ("input.fixed_size", m.fixed_size),
                         ("input.crop_size", m.crop_size)):
        if not hw_size(value):
            raise bad(key, "null or [height, width] in positive integers", value)
    if m.decode not in ("full", "reduced"):
        raise bad("input.decode", "'full' or 'reduced'", m.decode)
    if not _resize_policy(m.resize):
        raise bad("input.resize", "{scale (0..8], filter (Pillow's), upsample (logits or mask)}", m.resize)
    for key in _DICT_FIELDS:
        if not isinstance(getattr(m, key), dict):
            raise bad(key, "an object", getattr(m, key))
    for key in ("train", "val"):
        if key in m.split and not (isinstance(m.split[key], list) and all(isinstance(n, str) for n in m.split[key])):
            raise bad(f"split.{key}", "a list of image names", m.split[key])
    if m.colors is not None and not (isinstance(m.colors, list) and len(m.colors) == len(m.classes) and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in m.colors)):
        raise bad("labels.colors", "null or one [r, g, b] (0..255) per class", m.colors)
    if m.tta not in (None, "hflip"):
        raise bad("output.tta", "null or 'hflip'", m.tta)
    _check_members(m, where, bad)


def _check_members(m, where: str, bad) -> None:
    """The gate sample, the reference and every artifact: files inside the export, of known kinds."""
    sample = m.gate_sample
    if sample is not None and not (isinstance(sample, dict) and isinstance(sample.get("file"), str)
                                   and isinstance(sample.get("sha256"), str)):
        raise bad("gate_sample", "null or an object with a file and its sha256", sample)
    if sample:
        check_member(sample["file"], where=where)
    if isinstance(m.source.get("reference"), str):
        check_member(m.source["reference"], where=where)
    for a in m.artifacts:
        check_member(a.file, where=where)
        if a.kind not in _KINDS or a.precision not in _PRECISIONS:
            raise bad(f"artifact {a.file!r}", f"of a known kind {_KINDS} and precision {_PRECISIONS}",
                      f"{a.kind}/{a.precision}")
        if not isinstance(a.sha256, str) or not isinstance(a.companions, dict) or not isinstance(a.name, str):
            raise bad(f"artifact {a.file!r}", "a sha256 string, a name and a companions object", a.companions)
        for other in a.companions:
            check_member(other, where=where)
