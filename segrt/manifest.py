"""manifest.json: the contract between the exporter and the runtime (no torch).

The key facts are mirrored into ONNX ``metadata_props`` (keys prefixed ``segrt.``) so a bare
``.onnx`` file describes itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segrt.errors import SegrtError
from segrt.fsutil import export_path
from segrt.records import GateRecord, QualityRecord, SpeedRecord, check_manifest, records_from_json, records_to_json

__all__ = ["FORMAT", "IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_MULTIPLE", "Artifact", "Manifest", "member",
           "sha256_file"]

FORMAT = "segrt-manifest/1"
_META_PREFIX = "segrt."
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# For an ONNX file with no segrt metadata (exported elsewhere): ImageNet normalization,
# classes named class0..N-1, size multiple 32, native resolution (pad). Override with flags.
DEFAULT_MULTIPLE = 32


@dataclass
class Artifact:
    """One runnable variant. ``name`` is its key in the manifest (parity, --artifact): the file, or
    FILE@PRECISION for a precision chosen at run time on a shared file (OpenVINO bf16).
    ``companions``: other files it needs (file -> {sha256, size}), e.g. an OpenVINO IR's .bin."""

    file: str
    kind: str  # onnx | openvino | torchscript | pt2 | checkpoint
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8
    sha256: str = ""
    size: int = 0
    opset: int | None = None
    exporter: str | None = None
    extra: dict = field(default_factory=dict)
    name: str = ""
    companions: dict = field(default_factory=dict)

    def __post_init__(self):
        self.name = self.name or self.file


@dataclass
class Manifest:
    name: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    channels: int
    size_multiple: int
    input_size: list[int] | None  # the training (working) size [h, w]; None: native only
    mask_values: dict[str, int] = field(default_factory=dict)  # raw label value -> class id
    colors: list | None = None  # [r, g, b] per class: the dataset's label colours (colour masks, overlays)
    model_config: dict = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    parity: dict[str, GateRecord] = field(default_factory=dict)  # each artifact's gate, by artifact name
    speed: SpeedRecord | None = None  # CPU speed of every gated variant, measured together (see segrt.runtime.select)
    versions: dict = field(default_factory=dict)
    input_name: str = "image"
    output_name: str = "logits"
    fixed_size: list[int] | None = None  # a foreign model's fixed input [h, w]: resize to it, never pad
    crop_size: list[int] | None = None  # the training crop [h, w] (--tile auto)
    report: str | None = None  # the gate evidence beside the manifest (parity.html)
    tta: str | None = None  # test-time augmentation folded into every artifact ('hflip'), None: plain
    quality: dict[str, QualityRecord] = field(default_factory=dict)  # parity --record NAME: mIoU vs ground truth
    split: dict = field(default_factory=dict)  # the training run's split.json: {"train": [stems], "val": [stems]}
    gate_sample: dict | None = None  # {file, sha256, images, size, source}: see segrt.runtime.here
    source: dict = field(default_factory=dict)  # your own model: {route, notes, reference (its torch.export program)}
    decode: str = "full"  # JPEGs: "full", or "reduced" (DCT-scaled where that covers the working size) where measured
    decode_check: dict | None = None  # the measurement that chose ``decode`` (segrt.verify.decoding)
    resize: dict = field(default_factory=dict)  # policy: {scale, filter, upsample}; {}: working size, bilinear, logits
    format: str = FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": self.format,
            "name": self.name,
            "classes": self.classes,
            "num_classes": self.num_classes,
            "normalization": {"mean": self.mean, "std": self.std},
            "input": {"name": self.input_name, "layout": "NCHW", "channels": self.channels, "dtype": "float32",
                      "size_multiple": self.size_multiple, "size": self.input_size, "fixed_size": self.fixed_size,
                      "crop_size": self.crop_size, "decode": self.decode, "decode_check": self.decode_check,
                      "resize": self.resize,
                      "value_range": "normalized: (pixel/255 - mean) / std"},
            "output": {"name": self.output_name, "layout": "NCHW", "dtype": "float32", "kind": "logits",
                       "channels": self.num_classes, "tta": self.tta},
            "labels": {"mask_values": self.mask_values, "colors": self.colors},
            "model_config": self.model_config,
            "artifacts": [asdict(a) for a in self.artifacts],
            **records_to_json(self),
            "split": self.split,
            "gate_sample": self.gate_sample,
            "source": self.source,
            "report": self.report,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, d: dict, where: str = "manifest") -> "Manifest":
        if not isinstance(d, dict):
            raise SegrtError(f"{where}: malformed manifest (a JSON object expected, got {type(d).__name__})")
        if d.get("format") != FORMAT:
            raise SegrtError(f"{where}: unsupported manifest format {d.get('format')!r} (expected {FORMAT!r})")
        try:
            inp = d["input"]
            manifest = cls(
                name=d["name"], classes=list(d["classes"]), mean=list(d["normalization"]["mean"]),
                std=list(d["normalization"]["std"]), channels=int(inp["channels"]),
                size_multiple=int(inp["size_multiple"]), input_size=inp.get("size"),
                mask_values=d.get("labels", {}).get("mask_values", {}), model_config=d.get("model_config", {}),
                colors=d.get("labels", {}).get("colors"),
                artifacts=[Artifact(**a) for a in d.get("artifacts", [])], **records_from_json(d),
                versions=d.get("versions", {}), input_name=inp.get("name", "image"),
                output_name=d.get("output", {}).get("name", "logits"), fixed_size=inp.get("fixed_size"),
                crop_size=inp.get("crop_size"), report=d.get("report"), tta=d.get("output", {}).get("tta"),
                split=d.get("split", {}), gate_sample=d.get("gate_sample"), source=d.get("source", {}),
                decode=inp.get("decode", "full"),
                decode_check=inp.get("decode_check"), resize=dict(inp.get("resize") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SegrtError(f"{where}: malformed manifest ({exc!r})") from None
        check_manifest(manifest, d, where)
        return manifest

    def save(self, folder: Path) -> Path:
        from segrt.fsutil import write_bytes_atomic

        path = export_path(folder) / "manifest.json"
        write_bytes_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = export_path(folder) / "manifest.json"
        if not path.is_file():
            raise SegrtError(f"{folder}: no manifest.json (is this a segrt export folder?)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SegrtError(f"{path}: unreadable manifest ({exc})") from None
        except RecursionError:
            raise SegrtError(f"{path}: unreadable manifest (nested too deeply)") from None
        return cls.from_json(data, str(path))

    # -- artifacts -------------------------------------------------------------------------
    def artifact(self, kind: str = "onnx", precision: str = "fp32") -> Artifact:
        for a in self.artifacts:
            if a.kind == kind and a.precision == precision:
                return a
        have = ", ".join(f"{a.kind}/{a.precision}" for a in self.artifacts if a.kind != "checkpoint")
        raise SegrtError(f"export {self.name!r} has no {kind} {precision} artifact (it has: {have or 'none'})")

    def find(self, name: str) -> Artifact | None:
        """The artifact with this name, else the first one stored in this file."""
        return next((a for a in self.artifacts if a.name == name), None) or \
            next((a for a in self.artifacts if a.file == name), None)

    def passed(self, name: str) -> bool:
        """Did the artifact ``name`` pass the gate recorded for it?"""
        gate = self.parity.get(name)
        return gate is not None and gate.passed

    def add_artifact(self, folder: Path, artifact: Artifact) -> Artifact:
        path = Path(folder) / artifact.file
        artifact.sha256, artifact.size = sha256_file(path), path.stat().st_size
        for other in artifact.companions:
            p = Path(folder) / other
            artifact.companions[other] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        self.artifacts = [a for a in self.artifacts if a.name != artifact.name] + [artifact]
        return artifact

    def runs_from(self, folder: Path, art: Artifact) -> tuple[Artifact, str | None]:
        """The artifact whose file runs ``art``: itself; or, for an OpenVINO fp32/bf16 IR that is
        not in this copy, the ONNX it was converted from (OpenVINO reads ONNX: the same graph; its
        compiled form is cached). -> (that artifact, the note saying so, or None)."""
        named = next((a.extra["source"] for a in self.artifacts if a.file == art.file and a.extra.get("source")), "")
        source = self.find(named) if art.kind == "openvino" and art.precision != "int8" else None
        if source is None or (Path(folder) / art.file).is_file() or not (Path(folder) / source.file).is_file():
            return art, None
        return source, f"{art.file} is not in this copy: OpenVINO runs {source.file}, which it was converted from"

    def missing(self, folder: Path, art: Artifact) -> list[str]:
        """The files that run ``art`` and are not in this folder (a copy may ship a subset)."""
        run = self.runs_from(folder, art)[0]
        return [f for f in (run.file, *run.companions) if not (Path(folder) / f).is_file()]

    def in_copy(self, folder: Path, art: Artifact) -> bool:
        return not self.missing(folder, art)

    def verify(self, folder: Path, names: list[str] | None = None) -> None:
        """Refuse an export whose files do not match the recorded hashes (names the file). With
        ``names``, those artifacts must be here; without, every artifact that is (a copy may ship a
        subset: see in_copy)."""
        checked = set()
        for a in self.artifacts:
            if names is not None and a.name not in names:
                continue
            a = self.runs_from(folder, a)[0]
            if names is None and not (Path(folder) / a.file).exists():
                continue
            for file, sha in [(a.file, a.sha256), *((f, c["sha256"]) for f, c in a.companions.items())]:
                if file in checked:
                    continue
                checked.add(file)
                path = member(folder, file)
                if not path.is_file():
                    raise SegrtError(f"{path}: listed in the manifest but missing")
                if sha256_file(path) != sha:
                    raise SegrtError(f"{path}: sha256 does not match manifest.json (modified after export?); "
                                     "re-export or restore the file")

    # -- ONNX metadata ---------------------------------------------------------------------
    def metadata_props(self) -> dict[str, str]:
        return {_META_PREFIX + k: json.dumps(v) for k, v in {
            "format": self.format, "name": self.name, "classes": self.classes, "mean": self.mean,
            "std": self.std, "channels": self.channels, "size_multiple": self.size_multiple,
            "input_size": self.input_size, "crop_size": self.crop_size, "mask_values": self.mask_values,
            "model_config": self.model_config}.items()}

    def set_onnx_metadata(self, model) -> None:
        """Replace an ONNX model's metadata_props with this manifest's key facts."""
        del model.metadata_props[:]
        for k, v in self.metadata_props().items():
            model.metadata_props.add(key=k, value=v)

    @classmethod
    def from_metadata_props(cls, props: dict[str, str], name: str) -> "Manifest | None":
        """From an ONNX file's metadata; None when it carries no segrt metadata."""
        if _META_PREFIX + "format" not in props:
            return None
        try:
            v = {k[len(_META_PREFIX):]: json.loads(s) for k, s in props.items() if k.startswith(_META_PREFIX)}
            m = cls(name=v.get("name", name), classes=v["classes"], mean=v["mean"], std=v["std"],
                    channels=v["channels"], size_multiple=v["size_multiple"], input_size=v.get("input_size"),
                    crop_size=v.get("crop_size"),
                    mask_values=v.get("mask_values", {}), model_config=v.get("model_config", {}))
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise SegrtError(f"{name}: malformed segrt metadata in the ONNX file ({exc!r})"[:300]) from None
        check_manifest(m, {"input": {"channels": m.channels, "size_multiple": m.size_multiple}},
                       f"{name} (segrt metadata)")
        return m


def member(folder: Path, file: str) -> Path:
    """``folder/file`` for a file the manifest names, refused unless it stays inside the export
    (a relative name, no '..', no symbolic link leading out)."""
    from segrt.fsutil import check_member

    check_member(file, folder)
    return Path(folder) / file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
