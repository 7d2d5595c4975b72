"""The `segrt` command line: each command parses arguments and calls one library function."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from segrt import __version__
from segrt.runtime.backends import usable_cores
from segrt.errors import SegrtError, first_line
from segrt.options import IntList, OneLineErrors
from segrt.verify.thresholds import DEFAULT_IOU_GATES, FP32_MASK_IOU, FP32_MAX_LOGIT_DIFF

COUNT = click.IntRange(min=1)
NONNEG = click.IntRange(min=0)
FRACTION = click.FloatRange(0.0, 1.0)
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
            stdout_gone()
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
        stdout_gone()


def stdout_gone() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segrt")
def main():
    """segrt: U-Net segmentation from training to a fast, verified deployment.

    \b
    Train:   segrt train --layout pets --data DIR --out runs/NAME
    Export:  segrt export runs/NAME/best.pt --out exported/NAME
    Check:   segrt parity exported/NAME --images DIR [--masks DIR]
    Run:     segrt predict IMAGES... --model exported/NAME --provider auto
    """


def gate_options(fn):
    fn = click.option("--gate-iou", type=FRACTION, default=FP32_MASK_IOU, show_default=True,
                      help="minimum mask IoU agreement for fp32 artifacts")(fn)
    return click.option("--gate-logit", type=click.FloatRange(min=0.0), default=FP32_MAX_LOGIT_DIFF, show_default=True,
                        help="maximum |logit difference| for fp32 artifacts")(fn)


def gpu_options(fn, sharded: bool = False):
    more = " (one process per GPU: --device N with --shard N/GPUS)" if sharded else ""
    fn = click.option("--device", type=NONNEG, default=0, show_default=True,
                      help=f"the GPU for cuda/tensorrt{more}")(fn)
    return click.option("--trt-fp16", is_flag=True, help="tensorrt: build the engine in fp16")(fn)


def quantize_options(fn):
    for opt in reversed([
        click.option("--calib-images", type=click.Path(), help="calibration images (INT8), read like predict"),
        click.option("--calib-count", type=COUNT, help="use at most N calibration images"),
        click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
                     show_default=True),
        click.option("--val-images", type=click.Path(), help="held-out gate images (default: the calibration images that did not train the model, "
                                                          "or 20% of them when its split is unknown)"),
        click.option("--val-masks", type=click.Path(), help="ground truth for the held-out images (adds mIoU)"),
        click.option("--quant-gate", type=FRACTION,
                     help=f"min mask IoU agreement (default int8 {DEFAULT_IOU_GATES['int8']}, fp16 and bf16 "
                          f"{DEFAULT_IOU_GATES['fp16']})"),
    ]):
        fn = opt(fn)
    return fn


def make_quantize_options(calib_images, calib_count, calib_method, val_images, val_masks, quant_gate):
    from segrt.verify.gate import QuantizeOptions

    p = lambda v: Path(v) if v else None
    return QuantizeOptions(calib_images=p(calib_images), calib_count=calib_count, calib_method=calib_method,
                           val_images=p(val_images), val_masks=p(val_masks), gate=quant_gate)


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", type=click.Path(file_okay=False),
              help="export folder (default: export/ beside the checkpoint, e.g. runs/NAME/export; export-2/ ... "
                   "when that exists)")
@click.option("--opset", type=int, default=20, show_default=True)
@click.option("--formats", default="onnx,torchscript,pt2", show_default=True,
              help="comma separated: onnx, openvino (IR, needs onnx), torchscript, pt2")
@click.option("--force", is_flag=True, help="replace an existing export folder")
@click.option("--quantize", "quantize", multiple=True, type=click.Choice(["int8", "fp16", "bf16"]),
              help="also write gated variants for each format that has them (repeatable): int8 (onnx, "
                   "openvino), fp16 (onnx), bf16 (openvino)")
@click.option("--triton", type=click.Path(file_okay=False),
              help="also add the export to this Triton model repository (see segrt triton-repo)")
@click.option("--tta", type=click.Choice(["hflip"]),
              help="fold test-time augmentation into every artifact: hflip averages the logits of the image and "
                   "of its mirror (twice the compute; gated against eager PyTorch doing the same)")
@click.option("--size", type=IntList(), help="working size N or H,W that predict resizes images to (default: the "
                                            "training size); the gates and the quantizers run at it")
@click.option("--uint8-input", is_flag=True, help="also a uint8-input copy of every gated ONNX/OpenVINO variant "
                                                  "(normalization in the graph; gated like its base)")
@quantize_options
@gate_options
@user_errors
def export(checkpoint, out, opset, formats, force, quantize, triton, tta, size, uint8_input, calib_images, calib_count,
           calib_method, val_images, val_masks, quant_gate, gate_iou, gate_logit):
    """Export CHECKPOINT (a .pt, or an export folder to export again) to ONNX/TorchScript/pt2 with a
    manifest; fails unless parity holds."""
    from segrt.export.run import describe_export, run_export
    from segrt.verify.parity import ParityFailed, format_report

    try:
        result = run_export(checkpoint, out, formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
                            opset=opset, force=force, gate_iou=gate_iou, gate_logit=gate_logit,
                            progress=lambda m: click.echo(m, err=True), quantize=tuple(quantize), tta=tta, size=size,
                            uint8_input=uint8_input,
                            quantize_options=make_quantize_options(calib_images, calib_count, calib_method,
                                                                   val_images, val_masks, quant_gate))
    except ParityFailed as exc:
        echo_out(format_report(exc.report))
        click.echo(f"error: export refused, nothing written: {exc}", err=True)
        sys.exit(1)
    echo_out(format_report(result.report))
    echo_out(describe_export(result))
    if triton:
        from segrt.scale.triton import write_repo

        echo_out(f"Triton model repository: {write_repo(result.folder, triton)}/ (config.pbtxt, 1/model.onnx)")


@main.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--images", type=click.Path(exists=True), help="real images (default: random inputs)")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), help="ground-truth masks (by file stem)")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="eager reference (default: the export's)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the full report here")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="also write a self-contained HTML report (tables, histograms, the worst images)")
@click.option("--bench", "bench_path", type=click.Path(exists=True, dir_okay=False),
              help="with --report: a `segrt bench --json` file whose speeds go into the tables")
@click.option("--worst", type=COUNT, default=8, show_default=True, help="with --report: images shown per artifact")
@click.option("--record", metavar="NAME", help="with --images and --masks: store each artifact's mIoU vs ground truth "
                                               "in the manifest under quality.NAME (e.g. val-split)")
@click.option("--limit", type=COUNT, help="use only the first N images")
@click.option("--batch-size", type=COUNT, default=4, show_default=True)
@click.option("--provider", default="cpu", show_default=True)
@gpu_options
@click.option("--tile", help="instead: tiled vs whole-image agreement of one artifact at this tile size (or 'auto')")
@click.option("--overlap", type=click.FloatRange(0.0, 0.9, max_open=True), default=0.25, show_default=True)
@click.option("--blend", type=click.Choice(["gaussian", "constant"]), default="gaussian", show_default=True)
@click.option("--artifact", help="with --tile: the artifact to run (default model.onnx)")
@gate_options
@user_errors
def parity(export_dir, images, masks, checkpoint, json_path, report_path, bench_path, worst, record, limit, batch_size,
           provider, trt_fp16, device, tile, overlap, blend, artifact, gate_iou, gate_logit):
    """Compare every artifact of EXPORT_DIR with eager PyTorch; exit 1 when a gate fails. With
    --tile: compare tiled with whole-image inference (needs --images)."""
    if tile:
        from segrt.verify.tiles import format_tile_report, run_tile_parity

        if not images:
            raise SegrtError("--tile needs --images (real images to compare on)")
        echo_out(format_tile_report(run_tile_parity(
            export_dir, images, masks, tile=tile, overlap=overlap, blend=blend, provider=provider, artifact=artifact,
            batch_size=batch_size, limit=limit, json_path=json_path)))
        return
    from segrt.verify.parity import format_report, run_parity

    from segrt.runtime.session import SessionOptions

    report = run_parity(export_dir, images=images, masks=masks, checkpoint=checkpoint, json_path=json_path,
                        gate_iou=gate_iou, gate_logit=gate_logit, batch_size=batch_size, limit=limit,
                        provider=provider, options=SessionOptions(device=device, trt_fp16=trt_fp16),
                        report_path=report_path, bench_path=bench_path, worst=worst, record=record)
    echo_out(format_report(report))
    sys.exit(0 if report["passed"] else 1)


@main.command()
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--backend", type=click.Choice(["onnxruntime", "openvino"]), default="onnxruntime", show_default=True)
@click.option("--precision", type=click.Choice(["int8", "fp16", "bf16"]), default="int8", show_default=True,
              help="onnxruntime: int8, fp16; openvino: int8 (NNCF), bf16")
@click.option("--uint8-input", "uint8_of", multiple=True, metavar="ARTIFACT",
              help="instead: a uint8-input copy of this gated variant (repeatable; 'all' for every one): it takes "
                   "the decoder's pixels and normalizes in its graph, gated like its base")
@quantize_options
@user_errors
def quantize(export_dir, backend, precision, uint8_of, calib_images, calib_count, calib_method, val_images, val_masks,
             quant_gate):
    """Add a gated variant to an existing export: INT8 (ONNX Runtime QDQ or OpenVINO NNCF), FP16, bf16,
    or uint8-input copies of the gated ones."""
    from segrt.export.run import add_variants

    opts = make_quantize_options(calib_images, calib_count, calib_method, val_images, val_masks, quant_gate)
    uint8 = (True if "all" in uint8_of else list(uint8_of)) if uint8_of else False
    made = add_variants(Path(export_dir), [] if uint8 else [(backend, precision)], opts,
                        lambda m: click.echo(m, err=True), uint8=uint8)
    for art in made:
        provider = " --provider openvino" if art.kind == "openvino" else ""
        echo_out(f"added {art.name} to {export_dir}; --provider auto picks it where it is fastest, or run it with "
                 f"segrt predict IMAGES --model {Path(export_dir) / art.file}{provider}")


@main.command("triton-repo")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "repo", type=click.Path(file_okay=False), required=True, help="the model repository folder")
@click.option("--name", help="model name in the repository (default: the export's name)")
@click.option("--max-batch-size", type=COUNT, default=8, show_default=True)
@click.option("--instances", type=COUNT, default=1, show_default=True, help="model instances (instance_group count)")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--tensorrt-fp16", is_flag=True, help="ONNX Runtime's TensorRT accelerator in fp16 (GPU)")
@user_errors
def triton_repo(export_dir, repo, name, max_batch_size, instances, device, tensorrt_fp16):
    """Write EXPORT_DIR's fp32 ONNX model as a Triton Inference Server model repository entry."""
    from segrt.scale.triton import TritonOptions, write_repo

    folder = write_repo(export_dir, repo, TritonOptions(name, max_batch_size, instances, device, tensorrt_fp16))
    echo_out(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx; serve with "
               f"tritonserver --model-repository {repo}")


from segrt import cli_predict  # noqa: E402,F401 - registers predict and bench on main
from segrt.training.cli import train_command  # noqa: E402 - its options; torch is imported only when it runs

main.add_command(train_command)

if __name__ == "__main__":  # python -m segrt.cli: run the group the commands were registered on
    from segrt.cli import main as registered

    registered()
