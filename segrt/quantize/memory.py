"""Memory for calibration, checked before any image is read (predict and bench check theirs too).

ONNX Runtime's histogram calibrators (entropy, percentile) keep every calibrated tensor of every
calibration image until the end, then copy them into histograms: measured on the bundled pets
model at 288x288, 290 MB per image, 0.55 of the sum of all its activations (523 MB). Its min-max calibrator keeps only each tensor's
range per image, and NNCF reduces statistics as it goes: one image's activations at a time. The
decoded calibration and gate images are held as float32 inputs throughout.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from segrt.errors import SegrtError
from segrt.imaging.prepare import round_up
from segrt.manifest import Manifest
from segrt.runtime.memory import batch_bytes, gb, memory_budget

__all__ = ["activation_bytes_per_pixel", "calibration_bytes", "check_calibration_memory"]

_HISTOGRAM_SHARE = 0.6  # of all activations, kept per calibration image (0.55 measured, see above)


def activation_bytes_per_pixel(onnx_path: Path, channels: int, side: int = 64) -> float:
    """Bytes of every intermediate float tensor of one input, per input pixel (ONNX shape inference
    at side x side; a fully convolutional model's activations grow with its pixels)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, channels, side, side)):
        d.ClearField("dim_param")
        d.dim_value = v
    for out in model.graph.output:  # declared with symbolic sizes: let inference size them too
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model)
    total = 0
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.elem_type == onnx.TensorProto.FLOAT and t.shape.dim and all(d.HasField("dim_value") for d in t.shape.dim):
            n = 1
            for d in t.shape.dim:
                n *= d.dim_value
            total += 4 * n
    return total / (side * side)


def _pixels(paths: list[Path], manifest: Manifest) -> list[int]:
    """Input pixels per image as predict reads it (the working size, else native, padded)."""
    if manifest.input_size:
        h, w = manifest.input_size
        return [h * w] * len(paths)
    found = []
    for p in paths:
        if not p.is_file():  # a FIFO or a device is never opened (the reader names it)
            continue
        try:
            with Image.open(p) as img:
                w, h = img.size
        except OSError:
            continue  # the reader names it later
        found.append(round_up(h, manifest.size_multiple) * round_up(w, manifest.size_multiple))
    return found


def calibration_bytes(per_pixel: float, manifest: Manifest, calib: list[int], held: list[int], backend: str,
                      method: str) -> int:
    """Peak bytes of a calibration over images of ``calib`` pixels each, gated on ``held``."""
    inputs = 4 * manifest.channels * (sum(calib) + sum(held))
    run = batch_bytes(manifest, 1, max(calib + held, default=0), 1)
    if backend == "onnxruntime" and method != "minmax":
        return int(inputs + run + _HISTOGRAM_SHARE * per_pixel * sum(calib))
    return int(inputs + run + per_pixel * max(calib, default=0))


def check_calibration_memory(folder: Path, manifest: Manifest, opts, backend: str) -> None:
    """Refuse, before reading any image, a calibration (``opts``: QuantizeOptions) that would not fit
    in the memory available, naming the largest --calib-count that does."""
    from segrt.verify.imagesets import split_paths

    budget, method = memory_budget(), (opts.calib_method or "minmax") if backend == "onnxruntime" else "minmax"
    calib_paths, held_paths = split_paths(opts, manifest.split.get("train"))
    calib_paths = calib_paths[: opts.calib_count] if opts.calib_count else calib_paths
    if budget is None or not calib_paths:
        return
    per_pixel = activation_bytes_per_pixel(folder / manifest.artifact("onnx", "fp32").file, manifest.channels)
    calib, held = _pixels(calib_paths, manifest), _pixels(held_paths, manifest)
    need = calibration_bytes(per_pixel, manifest, calib, held, backend, method)
    if need <= budget:
        return
    fit = max((n for n in range(len(calib), 0, -1)
               if calibration_bytes(per_pixel, manifest, calib[:n], held, backend, method) <= budget), default=0)
    how = "ONNX Runtime keeps every activation of every image for its histograms" \
        if backend == "onnxruntime" and method != "minmax" else "the decoded images and one run"
    fix = f"use --calib-count {fit} or less" if fit else "use fewer or smaller gate images (--val-images)"
    raise SegrtError(f"--calib-method {method} on {len(calib)} calibration images needs ~{gb(need)} ({how}), "
                     f"{gb(budget)} of memory is available; {fix}"
                     + ("" if method == "minmax" or backend != "onnxruntime" else ", or --calib-method minmax"))
