"""What a model file says about itself: an export folder's manifest, a bare .onnx's metadata_props,
or, for an ONNX file from elsewhere, what its graph shows (documented defaults for the rest).

A foreign model needs one NCHW image input. A fixed input size means "resize to this size" (and a
fixed batch size is honoured by the backends); a symbolic class dimension is found by one probe run.
"""

from __future__ import annotations

import os
from pathlib import Path

from segrt.errors import SegrtError, first_line
from segrt.fsutil import export_path
from segrt.manifest import DEFAULT_MULTIPLE, IMAGENET_MEAN, IMAGENET_STD, Artifact, Manifest

__all__ = ["load_model_info"]

_PROBE_SIZE = 128  # spatial size of the probe run that finds a symbolic class count


def load_model_info(path: str | os.PathLike, *, classes: list[str] | None = None,
                    mean: list[float] | None = None, std: list[float] | None = None,
                    size_multiple: int | None = None, size: list[int] | None = None) -> tuple[Manifest, Path | None]:
    """-> (manifest, export folder or None). The overrides are for a bare .onnx only, and must fit it;
    what a bare file without segrt metadata is assumed to take is listed in ``manifest.source["assumed"]``."""
    path = export_path(path)
    overrides = {"classes": classes, "mean": mean, "std": std, "size_multiple": size_multiple, "size": size}
    given = [k for k, v in overrides.items() if v is not None]
    folder = path if path.is_dir() else path.parent if path.is_file() and (path.suffix != ".onnx" or
                                                                          _listed(path)) else None
    if folder is not None:
        if given:
            raise SegrtError(f"{path}: --{given[0].replace('_', '-')} is for a bare .onnx file; an export's "
                             "manifest.json defines classes and normalization")
        if not (folder / "manifest.json").is_file() and path.is_file():
            raise SegrtError(f"{path}: a {path.suffix} file needs the manifest.json of its export folder beside it")
        return Manifest.load(folder), folder
    if not path.is_file():
        raise SegrtError(f"{path}: no such model file or export folder")
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SegrtError(f"{path}: not a readable ONNX model ({first_line(exc, 120)})") from None
    props = {p.key: p.value for p in model.metadata_props}
    manifest = Manifest.from_metadata_props(props, path.stem)
    if manifest is None:
        manifest = _manifest_from_graph(model, path)
        manifest.source = {"assumed": _assumed(manifest, overrides)}
    _apply_overrides(manifest, path, **overrides)
    int8 = any(n.op_type in _INT8_OPS for n in model.graph.node)
    manifest.artifacts = [Artifact(file=path.name, kind="onnx", precision="int8" if int8 else "fp32")]
    return manifest, None


_INT8_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul")


def _assumed(manifest: Manifest, overrides: dict) -> list[str]:
    """What segrt assumes for a foreign ONNX, but for what an option gave."""
    said = []
    if overrides["mean"] is None or overrides["std"] is None:
        said.append(f"normalization mean {manifest.mean}, std {manifest.std} (--mean/--std)")
    if overrides["classes"] is None:
        said.append(f"classes {', '.join(manifest.classes)} (--classes)")
    if overrides["size"] is None and not manifest.fixed_size:
        said.append(f"native resolution, padded to a multiple of {manifest.size_multiple} (--size H,W to resize)")
    return said


def _listed(path: Path) -> bool:
    """Is this .onnx file an artifact of the export folder it sits in (its manifest names it)?"""
    import json

    try:
        listed = json.loads((path.parent / "manifest.json").read_text()).get("artifacts", [])
        return any(isinstance(a, dict) and a.get("file") == path.name for a in listed)
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _apply_overrides(manifest: Manifest, path: Path, **overrides) -> None:
    sizes = {"classes": manifest.num_classes, "mean": manifest.channels, "std": manifest.channels}
    size = overrides.pop("size", None)
    if size is not None:
        hw = list(size) * 2 if len(size) == 1 else list(size)
        if len(hw) != 2 or min(hw) < 1:
            raise SegrtError(f"--size {','.join(map(str, size))}: expected N or H,W")
        if manifest.fixed_size and hw != list(manifest.fixed_size):
            raise SegrtError(f"--size: {path} takes one size, {'x'.join(map(str, manifest.fixed_size))}")
        manifest.input_size = hw
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("mean", "std") and len(value) == 1:  # one value for every channel, as export takes it
            value = list(value) * manifest.channels
        if key in sizes and len(value) != sizes[key]:
            what = "classes" if key == "classes" else "input channels"
            raise SegrtError(f"--{key}: {path} has {sizes[key]} {what}, got {len(value)} value(s)")
        setattr(manifest, key, value)


def _manifest_from_graph(model, path: Path) -> Manifest:
    """Documented defaults for a foreign ONNX file: see segrt.manifest.DEFAULT_*."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise SegrtError(f"{path}: the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                         "segrt runs models with one NCHW image input")
    inp, out = inputs[0], model.graph.output[0]
    dims = lambda v: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
    in_dims, out_dims = dims(inp), dims(out)
    if len(in_dims) != 4 or len(out_dims) != 4:
        raise SegrtError(f"{path}: expected NCHW image input and NCHW logits output, got input {in_dims} "
                         f"and output {out_dims}: not a segmentation model")
    channels = in_dims[1] or 3
    fixed = in_dims[2:] if all(in_dims[2:]) else None
    n_cls = out_dims[1] or _probe_classes(path, in_dims, channels, inp.name)
    gray = channels == 1
    return Manifest(name=path.stem, classes=[f"class{i}" for i in range(n_cls)],
                    mean=[0.5] if gray else list(IMAGENET_MEAN), std=[0.25] if gray else list(IMAGENET_STD),
                    channels=channels, size_multiple=1 if fixed else DEFAULT_MULTIPLE, input_size=fixed,
                    input_name=inp.name, output_name=out.name, fixed_size=fixed)


def _probe_classes(path: Path, in_dims: list, channels: int, name: str) -> int:
    """The class count of a model whose output channel dimension is symbolic: one run on zeros."""
    import numpy as np
    import onnxruntime as ort

    shape = [in_dims[0] or 1, channels, in_dims[2] or _PROBE_SIZE, in_dims[3] or _PROBE_SIZE]
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        out = sess.run(None, {name: np.zeros(shape, np.float32)})[0]
    except Exception as exc:
        raise SegrtError(f"{path}: its class count is symbolic and a probe run on {shape} failed "
                         f"({first_line(exc)})") from None
    if out.ndim != 4 or out.shape[1] < 1:
        raise SegrtError(f"{path}: a probe run gave output {list(out.shape)}; not NCHW logits")
    return int(out.shape[1])
