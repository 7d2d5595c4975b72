"""Your own model: what `segrt export` takes besides a segrt checkpoint, as one nn.Module that maps
NCHW float32 to NCHW logits at the input's size (torch is imported here; only export uses it).

Routes: an ``nn.Module`` (the Python API); a state_dict (.pt/.pth/.safetensors) with ``--arch
FILE.py:NAME`` or ``package.module:NAME`` (a class or factory called with ``--arch-args`` JSON keyword
arguments; FILE.py is imported the way ``uvicorn main:app`` does: its folder first on sys.path),
loaded strictly; a torch.export program (.pt2); a folder written by segmentation_models_pytorch's
``save_pretrained``; a TorchScript archive (where the TorchScript-based ONNX exporter can export its
graph; else one line naming the routes that work); a pickled module (``torch.save(model)``) only
with ``trust_pickle``. An ONNX file is refused with the route that works (segrt import).
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from segrt.errors import CheckpointError, SegrtError, first_line
from segrt.model.arch import build

__all__ = ["Outputs", "UserModel", "is_segrt_source", "load_user_model"]

_STATE_KEYS = ("state_dict", "model_state_dict", "model")  # where tutorials nest the weights


class Outputs(nn.Module):
    """The user's model as segrt runs it: its output dict entry (``key``) or first item, upsampled
    (bilinear) to the input's size where it is smaller."""

    def __init__(self, model: nn.Module, key: str | None = None, first: bool = False, upsample: bool = False,
                 fixed_batch: bool = False):
        super().__init__()
        self.model, self.key, self.first, self.upsample = model, key, first, upsample
        self.fixed_batch = fixed_batch  # a program that takes batch 1: eager runs a batch image by image

    def train(self, mode: bool = True) -> "Outputs":
        self.training = mode
        _set_mode(self.model, mode)
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch and image.shape[0] != 1:
            return torch.cat([self(image[i:i + 1]) for i in range(image.shape[0])])
        out = self.model(image)
        if self.key is not None:
            out = out[self.key]
        elif self.first:
            out = out[0]
        if self.upsample:  # (N, K, h, w) -> (N, K, H, W)
            out = F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return out


def _set_mode(model: nn.Module, mode: bool) -> None:
    try:
        model.train(mode)
    except NotImplementedError:  # a torch.export program keeps the mode it was exported in
        pass


@dataclass
class UserModel:
    graph: nn.Module  # Outputs around the model; a TorchScript archive's graph itself
    label: str  # the file, or the module's class: what error lines name
    route: str  # where it came from, one line
    channels: int
    classes: int
    fixed_size: list[int] | None = None  # a program exported at one size
    fixed_batch: bool = False  # a program exported for batch 1
    reference: str = "pt2"  # the format its reference is kept in: pt2 (torch.export), torchscript for an archive
    notes: list[str] = field(default_factory=list)
    class_values: list[int] | None = None  # the label value of each class (milesial's mask_values)


def is_segrt_source(path: Path, user_options: bool = False) -> bool:
    """An export folder, or a checkpoint segrt wrote (a torch archive whose pickle names segrt's
    format), or a file that is no torch archive at all (segrt's loader says what it is not); never
    with --arch or --trust-pickle, which describe your own model. Nothing is unpickled here."""
    if path.is_dir():
        return (path / "manifest.json").is_file()
    if user_options or path.suffix.lower() in (".pt2", ".safetensors", ".onnx"):
        return False
    if not path.is_file():
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            pickle = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            return pickle is not None and b"segrt-checkpoint" in archive.read(pickle)
    except (zipfile.BadZipFile, OSError, RuntimeError):
        return True


def _state_dict(path: Path) -> tuple[dict, str, dict]:
    """-> (the tensors of a .pt/.pth/.safetensors state_dict, the entry they were under or None, the
    plain values set aside from among them: milesial/Pytorch-UNet saves its ``mask_values`` there)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), None, {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(_load_refusal(path, exc)) from None
    for key in (None, *_STATE_KEYS):
        found = data if key is None else data.get(key) if isinstance(data, dict) else None
        tensors = {k: v for k, v in found.items() if isinstance(v, torch.Tensor)} if isinstance(found, dict) else {}
        if tensors and (key is not None or all(isinstance(k, str) and "." in k for k in tensors)):
            return tensors, None if key is None else f"its {key!r} entry", \
                {k: v for k, v in found.items() if k not in tensors}
    raise CheckpointError(f"{path}: no state_dict in it (a dict of tensors, or one under {', '.join(_STATE_KEYS)})")


def _load_refusal(path: Path, exc: Exception) -> str:
    from segrt.model.checkpoint import blocked_global

    blocked = blocked_global(exc)
    if blocked:
        return (f"{path}: a pickled object ({blocked}), and segrt loads weights only: save model.state_dict() and "
                "pass --arch FILE.py:CLASS (or --trust-pickle if you trust this file and its code)")
    from segrt.model.checkpoint import plain_load_error

    return f"{path}: not a readable torch file: {plain_load_error(exc)}"


def _strict_load(model: nn.Module, state: dict, where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        said = [f"{len(missing)} missing (first: {missing[0]})" if missing else "",
                f"{len(unexpected)} unexpected (first: {unexpected[0]})" if unexpected else "",
                f"shape mismatch: {shapes[0]}" if shapes else ""]
        raise CheckpointError(f"{where}: the weights do not fit --arch: {'; '.join(s for s in said if s)}")
    model.load_state_dict(state, strict=True)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _module_from(path: Path, arch: str | None, arch_args, trust_pickle: bool) -> tuple[nn.Module, str, list | None]:
    """-> (the module, its route, (the fixed [h, w] of a program or None, whether it takes batch 1 only))."""
    suffix = path.suffix.lower()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SegrtError(f"{path}: not an export folder (no manifest.json) nor a save_pretrained folder "
                             "(no config.json)")
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            raise SegrtError(f"{path}: a save_pretrained folder needs segmentation-models-pytorch: pip install "
                             "'segrt[smp]'") from None
        return smp.from_pretrained(str(path)), f"segmentation_models_pytorch.from_pretrained({path})", (None, False)
    if suffix == ".onnx":
        raise SegrtError(f"{path}: an ONNX file is exported already: segrt import {path} --mean ... --std ... makes "
                         "it an export folder (or run it with segrt predict --model)")
    if suffix == ".pt2":
        program = torch.export.load(str(path))
        shape = program.graph_signature.user_inputs and \
            next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
        dims = list(shape.meta["val"].shape) if shape is not None else []
        if dims and isinstance(dims[0], int) and dims[0] != 1:
            raise SegrtError(f"{path}: the program takes batch {dims[0]} only; export it with batch 1 or a dynamic "
                             "batch (torch.export.Dim)")
        fixed = [int(s) for s in dims[2:]] if len(dims) == 4 and all(isinstance(s, int) for s in dims[2:]) else None
        return program.module(), f"torch.export program {path}", (fixed, bool(dims) and isinstance(dims[0], int))
    if _is_torchscript(path):  # exported through the TorchScript-based ONNX exporter; its reference: model.ts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation: export says it once, plainly
            return torch.jit.load(str(path), map_location="cpu"), f"TorchScript archive {path}", (None, False)
    if arch:
        model = build(arch, arch_args)
        state, where, extras = _state_dict(path)
        _strict_load(model, state, str(path))
        model.segrt_extras = extras  # plain values beside the weights (read by load_user_model)
        how = "imported like uvicorn main:app, its folder first on sys.path" if ":" in arch and \
            arch.rpartition(":")[0].endswith(".py") else "imported"
        return model, f"state_dict {f'{where} of ' if where else ''}{path} into --arch {arch} ({how})", (None, False)
    if trust_pickle:
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, nn.Module):
            raise SegrtError(f"{path}: --trust-pickle loaded a {type(model).__name__}, not an nn.Module")
        return model, f"pickled module {path} (--trust-pickle)", (None, False)
    try:
        _state_dict(path)
    except CheckpointError as exc:
        raise SegrtError(str(exc)) from None
    raise SegrtError(f"{path}: a state_dict without its model: pass --arch FILE.py:CLASS (or package.module:NAME) "
                     "and --arch-args '{...}' for its constructor")


def _channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def load_user_model(source, *, arch: str | None = None, arch_args=None, trust_pickle: bool = False,
                    output_key: str | None = None, multiple: int = 32, fixed: list[int] | None = None) -> UserModel:
    """``source`` (an nn.Module or a path, see the module docstring) -> a UserModel, probed once on an
    input of 2x3 size multiples (``fixed``: the size a static program takes) to learn its channels,
    classes and output form."""
    if isinstance(source, nn.Module):
        model, route, (fixed_size, batch_one) = source, f"nn.Module {type(source).__name__} (Python API)", (None, False)
        label = type(source).__name__
    else:
        model, route, (fixed_size, batch_one) = _module_from(Path(source), arch, arch_args, trust_pickle)
        label = str(source)
    _set_mode(model, False)
    channels, notes = _channels(model), []
    h, w = fixed_size or fixed or (max(2 * multiple, 64), max(3 * multiple, 96))  # a model of any size: 64x96
    x = torch.randn(1, channels, h, w, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the user's forward
        raise SegrtError(f"{label}: the model failed on a {channels}x{h}x{w} input ({type(exc).__name__}: "
                         f"{first_line(exc)})") from None
    key, first = None, False
    if isinstance(out, dict):
        key = output_key or ("out" if "out" in out else next(iter(out)) if len(out) == 1 else None)
        if key not in out:
            raise SegrtError(f"{label}: it returns a dict with {', '.join(map(str, out))}; pass --output-key")
        notes.append(f"the model returns a dict: segrt uses {key!r}" + ("" if output_key else " (--output-key to choose)"))
        out = out[key]
    elif isinstance(out, (tuple, list)):
        first = True
        notes.append(f"the model returns a {type(out).__name__} of {len(out)}: segrt uses the first item as the logits")
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise SegrtError(f"{label}: its output is not NCHW logits (got {getattr(out, 'shape', type(out).__name__)})")
    upsample = tuple(out.shape[-2:]) != (h, w)
    if upsample:
        notes.append(f"its logits are {out.shape[-2]}x{out.shape[-1]} for a {h}x{w} input: upsampled (bilinear) "
                     "to the input's size in the exported graph")
    if fixed_size:
        notes.append(f"the program takes one size, {h}x{w}: exported and run at that size")
    if batch_one:
        notes.append("the program takes batch 1: the exported graph too (predict runs a batch image by image)")
    extras = getattr(model, "segrt_extras", None) or {}
    if extras:
        notes.append(f"its state_dict also holds {', '.join(f'{k}={_short(v)}' for k, v in extras.items())}: set "
                     "aside (not weights)" + ("; mask_values recorded as the export's mask values (predict "
                                              "--write-values writes them)" if _class_values(extras, out.shape[1])
                                              else ""))
    graph, reference = Outputs(model, key, first, upsample, batch_one).eval(), "pt2"
    if isinstance(model, torch.jit.ScriptModule):  # a TorchScript graph is exported as it is, and kept as it is
        if notes:
            raise SegrtError(f"{label}: a TorchScript archive whose output needs handling ({notes[0]}); segrt cannot "
                             "wrap a TorchScript graph: pass the state_dict with --arch FILE.py:CLASS, or a .pt2")
        graph, reference = model, "torchscript"
    return UserModel(graph, label, route, channels, int(out.shape[1]), fixed_size, batch_one, reference, notes,
                     _class_values(extras, int(out.shape[1])))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _class_values(extras: dict, classes: int) -> list[int] | None:
    """milesial's ``mask_values`` (the label value of each class, as its predict.py writes them), when
    they are one plain value per class; else None."""
    values = extras.get("mask_values")
    if isinstance(values, (list, tuple)) and len(values) == classes and \
            all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values):
        return list(values)
    return None
