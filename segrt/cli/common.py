"""What the commands share: option types and groups, one-line errors, stdout that survives a closed pipe,
the default model."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from segrt.cpuinfo import usable_cores
from segrt.errors import SegrtError, first_line
from segrt.verify.thresholds import DEFAULT_IOU_GATES, FP32_MASK_IOU, FP32_MAX_LOGIT_DIFF

__all__ = ["COUNT", "NONNEG", "CORES", "THREADS", "IO_THREADS", "user_errors", "echo_out", "gate_options",
           "description_options", "gpu_options", "quantize_options", "make_quantize_options", "DEFAULT_MODELS", "default_model",
           "provider_option"]

COUNT = click.IntRange(min=1)
NONNEG = click.IntRange(min=0)
_FRACTION = click.FloatRange(0.0, 1.0)
CORES = usable_cores()
THREADS = click.IntRange(0, CORES)  # compute threads: more than the cores only slows down
IO_THREADS = click.IntRange(0, 4 * CORES)  # decode and write threads also wait on files


def user_errors(fn):
    """Show SegrtError (and an OSError no one caught: a read-only folder, a full disk) as one line
    on stderr with exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SegrtError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except BrokenPipeError:
            _stdout_gone()
            sys.exit(1)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or first_line(exc)}", err=True)
            sys.exit(2)

    return wrapper


def echo_out(text: str) -> None:
    """click.echo to stdout; a reader that closed the pipe (`| head -1`) is not an error."""
    try:
        click.echo(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


def _stdout_gone() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def gate_options(fn, recorded: bool = False):
    """--gate-iou, --gate-logit; ``recorded``: --gate-iou defaults to the gate the export was made under."""
    fn = click.option("--gate-iou", type=_FRACTION, default=None if recorded else FP32_MASK_IOU, show_default=not recorded,
                      help="minimum mask IoU agreement for fp32 artifacts" + (
                          f" (default: the gate its export was made under, else {FP32_MASK_IOU})" if recorded else
                          "; also what reduced-scale JPEG decoding must keep"))(fn)
    return click.option("--gate-logit", type=click.FloatRange(min=0.0), default=FP32_MAX_LOGIT_DIFF, show_default=True,
                        help="maximum |logit difference| for fp32 artifacts")(fn)


def description_options(fn, scope: str, size: bool = True):
    """--classes, --mean, --std (and --size): what a model file does not say about itself."""
    from segrt.options import FloatList, IntList

    opts = [click.option("--classes", help=f"class names, comma separated ({scope}; default class0..N-1, said)"),
            click.option("--mean", type=FloatList(), help=f"the normalization mean, comma separated ({scope})"),
            click.option("--std", type=FloatList(positive=True), help=f"the normalization std, > 0 ({scope})")]
    if size:
        opts.append(click.option("--size", type=IntList(), help=f"N or H,W: the size images are resized to ({scope})"))
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def gpu_options(fn, sharded: bool = False):
    more = " (one process per GPU: --device N with --shard N/GPUS)" if sharded else ""
    fn = click.option("--device", type=NONNEG, default=0, show_default=True,
                      help=f"the GPU for cuda/tensorrt{more}")(fn)
    return click.option("--trt-fp16", is_flag=True, help="tensorrt: build the engine in fp16")(fn)


def quantize_options(fn):
    for opt in reversed([
        click.option("--calib-images", type=click.Path(), help="calibration images (INT8), read like predict"),
        click.option("--calib-count", type=COUNT, help="use at most N calibration images"),
        click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]),
                     help="ONNX Runtime INT8 calibration (default: minmax, then percentile where minmax misses the gate "
                          "and memory allows)"),
        click.option("--val-images", type=click.Path(), help="held-out gate images (default: the calibration images that did not train the model, "
                                                          "or 20% of them when its split is unknown)"),
        click.option("--val-masks", type=click.Path(), help="ground truth for the held-out images (adds mIoU)"),
        click.option("--quant-gate", type=_FRACTION,
                     help=f"min mask IoU agreement (default int8 {DEFAULT_IOU_GATES['int8']}, fp16 and bf16 "
                          f"{DEFAULT_IOU_GATES['fp16']})"),
    ]):
        fn = opt(fn)
    return fn


def make_quantize_options(calib_images, calib_count, calib_method, val_images, val_masks, quant_gate):
    from segrt.options import QuantizeOptions

    p = lambda v: Path(v) if v else None
    return QuantizeOptions(calib_images=p(calib_images), calib_count=calib_count, calib_method=calib_method,
                           val_images=p(val_images), val_masks=p(val_masks), gate=quant_gate)


# the default pets model: the copy inside an installed wheel (a subset of exported/pets: ONNX fp32,
# ONNX Runtime and OpenVINO INT8), else the source tree's exported/pets (a clone, an editable install)
DEFAULT_MODELS = (Path(__file__).resolve().parents[1] / "default_model",
                  Path(__file__).resolve().parents[2] / "exported" / "pets")


def default_model() -> Path:
    for folder in DEFAULT_MODELS:
        if (folder / "manifest.json").is_file():
            return folder
    raise SegrtError(f"no --model given and no default model found (looked in {', '.join(map(str, DEFAULT_MODELS))}); "
                     "pass --model EXPORT_FOLDER")


def provider_option(fn):
    return click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt", "openvino"]),
                        default="auto", show_default=True,
                        help="cpu/cuda/tensorrt: ONNX Runtime (torch for .ts/.pt2); openvino: native OpenVINO; "
                             "auto: CUDA if it works, else the fastest gated CPU variant. An unavailable explicit "
                             "choice is an error")(fn)


