"""The segrt checkpoint: a dict of tensors and plain values, loadable with weights_only=True."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch

from segrt.errors import CheckpointError, first_line
from segrt.fsutil import atomic_path
from segrt.model.unet import UNet, UNetConfig
from segrt.records import finite_numbers, hw_size

__all__ = ["FORMAT", "save_checkpoint", "cpu_state", "load_checkpoint", "model_from_checkpoint", "blocked_global",
           "plain_load_error"]

FORMAT = "segrt-checkpoint/1"
_REQUIRED_KEYS = ("model_config", "state_dict", "classes", "normalization", "input_size")


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    classes: list[str],
    normalization: dict,
    input_size: tuple[int, int] | None,
    crop_size: tuple[int, int] | None = None,
    epoch: int = 0,
    metrics: dict | None = None,
    ignore_index: int | None = None,
    mask_values: dict | None = None,
    colors: list | None = None,
    train_args: dict | None = None,
    optimizer=None,
    scheduler=None,
    scaler=None,
    raw_model: torch.nn.Module | None = None,
) -> Path:
    """Write atomically (temp file + rename). ``model`` may be wrapped in DDP. With an EMA, ``model``
    is the average (what was validated, what export uses) and ``raw_model`` the trained weights
    (kept for --resume)."""
    model = getattr(model, "module", model)
    ckpt = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": cpu_state(model),
        "classes": list(classes),
        "normalization": {"mean": [float(x) for x in normalization["mean"]],
                          "std": [float(x) for x in normalization["std"]]},
        "input_size": None if input_size is None else [int(input_size[0]), int(input_size[1])],  # None: native
        "crop_size": None if crop_size is None else [int(crop_size[0]), int(crop_size[1])],  # training crop
        "epoch": int(epoch),
        "metrics": metrics or {},
        "ignore_index": ignore_index,
        "mask_values": {int(k): int(v) for k, v in (mask_values or {}).items()},  # raw label -> class
        "colors": [[int(v) for v in c] for c in colors] if colors else None,  # the dataset's class colours
        "train_args": train_args or {},
    }
    if raw_model is not None:
        ckpt["raw_state_dict"] = cpu_state(getattr(raw_model, "module", raw_model))
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            ckpt[key] = obj.state_dict()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and validate; every failure is a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling, truncated zip, not a torch file at all
        blocked = blocked_global(exc)
        if blocked:
            raise CheckpointError(f"{path}: refused: it needs {blocked} to load, and segrt loads only tensors and "
                                  "plain values (weights_only=True); this is not a segrt checkpoint") from None
        raise CheckpointError(f"{path}: not a readable segrt checkpoint: {plain_load_error(exc)}") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(f"{path}: not a segrt checkpoint (no 'format' key)")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format']!r} is not supported (this segrt reads {FORMAT!r})"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    _check_fields(ckpt, path)
    ckpt["path"] = str(path)  # in memory only: later errors name the file
    return ckpt


def _check_archive(path: Path) -> None:
    """A torch checkpoint is a zip archive: every member's CRC must match (a flipped byte, a bad copy)."""
    try:
        if not zipfile.is_zipfile(path):
            return  # torch.load says what it is not
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint archive ({first_line(exc)})") from None
    if bad is not None:
        member = bad.split("/", 1)[-1]  # torch names the archive's root folder after the file it first wrote
        raise CheckpointError(f"{path}: corrupt: its {member} fails the CRC check (damaged on disk or in a copy); "
                              "restore the file or use another checkpoint")


def _check_fields(ckpt: dict, path: Path) -> None:
    """The values export and training rely on, checked once, with the field named."""
    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: {field} must be {what}, got {ckpt.get(field)!r}"[:300])

    cfg, norm = ckpt["model_config"], ckpt["normalization"]
    need(isinstance(cfg, dict), "model_config", "a dict of UNetConfig fields")
    classes = ckpt["classes"]
    need(isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes), "classes",
         "a non-empty list of class names")
    need(cfg.get("num_classes") == len(classes), "classes", f"one name per model output ({cfg.get('num_classes')})")
    channels = cfg.get("in_channels")
    need(isinstance(norm, dict) and all(finite_numbers(norm.get(k)) and len(norm[k]) == channels
                                        for k in ("mean", "std"))
         and min(norm["std"]) > 0, "normalization", f"{{mean, std}} with {channels} finite value(s) each, std > 0")
    for field in ("input_size", "crop_size"):
        size = ckpt.get(field)
        need(hw_size(list(size) if isinstance(size, tuple) else size),
             field, "null or [height, width] in positive integers")
    state = ckpt["state_dict"]
    need(isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()), "state_dict",
         "a dict of tensors")
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:
        raise CheckpointError(f"{path}: weight {broken} holds NaN or infinite values (a diverged run?); "
                              "use an earlier checkpoint")


def blocked_global(exc: Exception) -> str | None:
    """The code a weights-only load refused to run, e.g. 'posix.system' (torch's message goes on to
    suggest weights_only=False, which segrt never repeats)."""
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", str(exc))
    return found.group(1) if found else None


def plain_load_error(exc: Exception) -> str:
    """What is wrong with a file torch could not load, in plain words (never torch's internal text,
    never a hint to load with weights_only=False)."""
    text = str(exc)
    if "central directory" in text or "miniz" in text or "zip archive" in text or isinstance(exc, EOFError):
        return "truncated, or not a checkpoint at all; re-copy it, or resume from last.pt"
    return f"not a torch checkpoint ({type(exc).__name__}); re-copy it, or resume from last.pt"


def model_from_checkpoint(ckpt: dict) -> UNet:
    """Rebuild the UNet from the stored config and load its weights; returns it in eval mode."""
    where = ckpt.get("path", "checkpoint")
    try:
        model = UNet(UNetConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc).strip())
        raise CheckpointError(f"{where}: its weights do not fit its model config {ckpt.get('model_config')} "
                              f"({detail[:160]})") from None
    return model.eval()
