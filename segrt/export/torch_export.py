"""The torch exporters: the graph an export runs (the U-Net with its TTA), ONNX with dynamic batch,
height and width (torch.export-based, the TorchScript tracer as fallback), TorchScript, torch.export."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from segrt.errors import SegrtError, first_line
from segrt.manifest import Artifact, Manifest
from segrt.model.unet import UNet

__all__ = ["CannotCarry", "ExportGraph", "example_input", "batch_one", "size_oblivious", "dynamic_shapes", "export_onnx", "export_torchscript",
           "export_pt2"]


class ExportGraph(nn.Module):
    """What gets exported: the UNet without its Python size check (the dynamic dims carry the rule)."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet = unet

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet.forward_unchecked(image)


def example_input(multiple: int, channels: int, fixed: list[int] | None = None, batch_one: bool = False) -> torch.Tensor:
    """Batch 2 and distinct H/W so torch.export keeps all three dims symbolic; ``fixed``: the one
    [h, w] a model takes (batch 1); ``batch_one``: a model that takes batch 1 only."""
    shape = (1 if fixed or batch_one else 2, channels, *(fixed or (max(2 * multiple, 64), max(3 * multiple, 96))))
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def batch_one(graph: nn.Module) -> bool:
    """Does the graph wrap a program that takes batch 1 only (segrt.model.foreign.Outputs)?"""
    return any(getattr(m, "fixed_batch", False) for m in graph.modules())


def size_oblivious():
    """Trace without 0/1 specialisation: otherwise torch.export assumes every symbolic size is >= 2
    and guards the bottleneck, so an input of exactly one size multiple per side fails at run time."""
    from torch.fx.experimental import _config

    return _config.patch(backed_size_oblivious=True)


def dynamic_shapes(multiple: int, batch_one: bool = False) -> dict:
    from torch.export import Dim

    low = 1 if multiple >= 8 else -(-16 // multiple)  # a model of any size (multiple 1): sides of 16 pixels up
    high = max(1024, 8192 // multiple)
    batch, h, w = Dim("batch", min=1, max=1024), Dim("h_blocks", min=low, max=high), Dim("w_blocks", min=low, max=high)
    return {"image": {**({} if batch_one else {0: batch}), 2: multiple * h, 3: multiple * w}}


def export_onnx(graph: nn.Module, path: Path, manifest: Manifest, opset: int) -> Artifact:
    """torch.export-based exporter first; the TorchScript-based one as a fallback. Then checker,
    shape inference, friendly dim names and metadata_props."""
    import onnx

    m, c, fixed, one = manifest.size_multiple, manifest.channels, manifest.fixed_size, batch_one(graph)
    x = example_input(m, c, fixed, one)
    common = dict(input_names=["image"], output_names=["logits"], opset_version=opset)
    scripted = isinstance(graph, torch.jit.ScriptModule)  # your TorchScript archive: only that exporter reads it
    try:
        if scripted:
            raise SegrtError("a TorchScript archive")
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), size_oblivious():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (x,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes=None if fixed else dynamic_shapes(m, one), **common)
        exporter = "torch.export (dynamo)"
    except Exception as exc:  # fall back to the TorchScript-based exporter
        first = first_line(exc)
        axes = {0: "batch", 2: "height", 3: "width"} if not one else {2: "height", 3: "width"}
        try:
            with warnings.catch_warnings():  # its deprecation and tracer notes: torch's internals, not the user's
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, (x,), str(path), dynamo=False, **common,
                                  dynamic_axes=None if fixed else {"image": axes, "logits": axes})
        except Exception as exc2:  # noqa: BLE001 - neither exporter: the model's operation is named
            raise SegrtError(f"torch cannot export the model to ONNX: {first_line(exc2)}"
                             + ("" if scripted else f" (the torch.export-based exporter: {first[:120]})")) from None
        exporter = "torchscript (the archive's graph)" if scripted else \
            f"torchscript (fallback; torch.export-based failed: {first})"
    model = onnx.load(str(path))
    for value in (model.graph.input[0], model.graph.output[0]) if not fixed else ():
        dims = value.type.tensor_type.shape.dim
        for i, name in ((0, "batch"), (2, "height"), (3, "width"))[1 if one else 0:]:
            dims[i].ClearField("dim_value")
            dims[i].dim_param = name
    manifest.set_onnx_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(path))
    from segrt.quantize.onnx_rewrites import opset_of

    opset_used = opset_of(model)
    return Artifact(file=path.name, kind="onnx", opset=opset_used, exporter=exporter)


class CannotCarry(SegrtError):
    """A format that cannot hold this model (the export goes on without it, said in one line)."""


def export_torchscript(graph: nn.Module, path: Path, manifest: Manifest) -> Artifact:
    if isinstance(graph, torch.jit.ScriptModule):  # your TorchScript archive: kept as it is
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation: said once, plainly, in TORCHSCRIPT_NOTE
            torch.jit.save(graph, str(path))
        return Artifact(file=path.name, kind="torchscript", exporter="torch.jit (given)")
    x = example_input(manifest.size_multiple, manifest.channels, manifest.fixed_size, batch_one(graph))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation: said once, plainly, in TORCHSCRIPT_NOTE
        try:
            traced = torch.jit.trace(graph, x)
        except Exception as exc:  # noqa: BLE001 - e.g. a torch.export program with symbolic sizes (4*H)
            raise CannotCarry(f"torch.jit.trace cannot trace this model ({type(exc).__name__}: {first_line(exc)})") \
                from None
        torch.jit.save(traced, str(path))
    return Artifact(file=path.name, kind="torchscript", exporter="torch.jit.trace")


def export_pt2(graph: nn.Module, path: Path, manifest: Manifest) -> Artifact:
    one = batch_one(graph)
    x = example_input(manifest.size_multiple, manifest.channels, manifest.fixed_size, one)
    with warnings.catch_warnings(), size_oblivious():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(graph, (x,), dynamic_shapes=None if manifest.fixed_size else
                                          dynamic_shapes(manifest.size_multiple, one))
        except Exception as exc:  # noqa: BLE001 - the model's code: its operation is named
            raise SegrtError(f"torch.export cannot export the model: {first_line(exc)}") from None
        torch.export.save(program, str(path))
    return Artifact(file=path.name, kind="pt2", exporter="torch.export")
