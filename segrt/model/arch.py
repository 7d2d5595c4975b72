"""Your own model's code: ``--arch FILE.py:NAME`` or ``package.module:NAME`` imported, and NAME called
with the ``--arch-args`` keyword arguments (torch is imported here; only export uses it)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

from torch import nn

from segrt.errors import SegrtError, first_line

__all__ = ["import_arch", "build"]


def import_arch(spec: str):
    """``FILE.py:NAME`` or ``package.module:NAME`` -> the object NAME."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise SegrtError(f"--arch {spec}: expected FILE.py:NAME or package.module:NAME")
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise SegrtError(f"--arch {spec}: {where} not found")
        module = _import_file(path, spec)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise SegrtError(f"--arch {spec}: cannot import {where} ({first_line(exc)})") from None
    if not hasattr(module, name):
        raise SegrtError(f"--arch {spec}: {where} has no {name}")
    return getattr(module, name)


def _import_file(path: Path, spec: str):
    """A .py file as its code expects: inside a package (an __init__.py beside it), as package.module with
    the package's parent first on sys.path, so relative imports work; else alone, its folder first."""
    parts, top = [path.stem], path.parent
    while (top / "__init__.py").is_file():
        parts.insert(0, top.name)
        top = top.parent
    sys.path.insert(0, str(top))  # its own imports resolve as when it ran
    try:
        if len(parts) > 1:
            return importlib.import_module(".".join(parts))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    except Exception as exc:  # noqa: BLE001 - the user's file
        hint = ("; for a module of a package use package.module:NAME (its folder's parent on PYTHONPATH)"
                if "relative import" in str(exc) else "")
        raise SegrtError(f"--arch {spec}: importing {path.name} failed ({type(exc).__name__}: {first_line(exc)})"
                         + hint) from None


def build(spec: str, args: str | dict | None) -> nn.Module:
    try:
        kwargs = json.loads(args) if isinstance(args, str) else dict(args or {})
    except ValueError as exc:
        raise SegrtError(f"--arch-args: not JSON ({exc})") from None
    if not isinstance(kwargs, dict):
        raise SegrtError("--arch-args: a JSON object of keyword arguments, e.g. '{\"n_classes\": 3}'")
    try:
        model = import_arch(spec)(**kwargs)
    except SegrtError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's constructor
        raise SegrtError(f"--arch {spec}: calling it with {kwargs} failed ({type(exc).__name__}: {first_line(exc)})") \
            from None
    if not isinstance(model, nn.Module):
        raise SegrtError(f"--arch {spec}: gave a {type(model).__name__}, not a torch nn.Module")
    return model
