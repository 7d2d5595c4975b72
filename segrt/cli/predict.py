"""`segrt predict`."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from segrt.options import examples

from segrt.cli.common import (CORES, COUNT, IO_THREADS, NONNEG, THREADS, default_model, description_options, echo_out,
                              gpu_options,
                              provider_option, user_errors)
from segrt.imaging.decode import DEFAULT_MAX_PIXELS
from segrt.manifest import Manifest

__all__ = ["predict", "exit_code"]


@click.command(epilog=examples("segrt predict photos/ --out masks/", "segrt predict huge.tif --model exported/isbi --tile auto"))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", type=click.Path(), help="export folder or .onnx (default: the bundled pets model)")
@click.option("--out", type=click.Path(file_okay=False),
              help="output folder (default: a new predictions/, predictions-2/, ... so runs never mix)")
@click.option("--batch-size", type=COUNT, default=4, show_default=True)
@provider_option
@functools.partial(gpu_options, sharded=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="artifact precision (default: fp32; with --provider auto, the fastest gated one)")
@click.option("--kind", type=click.Choice(["onnx", "openvino", "torchscript", "pt2"]),
              help="artifact kind (default: openvino for --provider openvino, else onnx)")
@click.option("--native", is_flag=True, help="keep native resolution (pad to the size multiple) instead of resizing")
@click.option("--tile", help="sliding-window inference at native resolution with square tiles of this size "
                             "(a multiple of the model's size multiple), or 'auto' (the training crop)")
@click.option("--overlap", type=click.FloatRange(0.0, 0.9, max_open=True), default=0.25, show_default=True,
              help="with --tile: the fraction of a tile shared with its neighbour")
@click.option("--blend", type=click.Choice(["gaussian", "constant"]), default="gaussian", show_default=True,
              help="with --tile: how overlapping tiles' logits are weighted")
@click.option("--overlay", is_flag=True, help="also write NAME.overlay.jpg")
@click.option("--write-values", is_flag=True, help="NAME.png holds each class's label value as the export records it "
              "(e.g. milesial's mask_values 0/255) instead of class ids")
@click.option("--no-color", is_flag=True, help="do not write NAME.color.png")
@click.option("--save-probs", is_flag=True, help="also write NAME.probs.npy (float16 CHW softmax)")
@click.option("--per-page", is_flag=True, help="multi-page TIFF stacks: besides NAME.tif (one label page per page), "
                                               "each page's colour mask NAME.pNNNN.color.png (and overlay)")
@click.option("--skip-existing", is_flag=True, help="skip images whose outputs exist (resume a run)")
@click.option("--shard", help="I/N: only shard I (0-based) of N, split by a stable hash of each input's path "
                              "(one job of a job array; writes summary.shard-I-of-N.json)")
@click.option("--threads", type=THREADS, default=0, help=f"inference threads, at most the {CORES} cores (0: all)")
@click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
              show_default=True, help="ONNX Runtime graph optimization level")
@click.option("--no-arena", is_flag=True, help="disable ONNX Runtime's CPU memory arena (lower peak memory)")
@click.option("--workers", type=IO_THREADS, default=0, help="decode threads (0: half the cores, at least 1)")
@click.option("--writers", type=IO_THREADS, default=0,
              help="output threads: mask resize, PNG encoding, files (0: a quarter of the cores, at least 1)")
@click.option("--max-pixels", type=NONNEG,
              help="refuse larger images (decompression-bomb guard; default 64000000, 0 disables); with --tile "
                   "there is none by default: the memory check decides from the image's header")
@functools.partial(description_options, scope="for a bare .onnx; an export's manifest says its own")
@click.option("--allow-below-gate", is_flag=True,
              help="run a reduced-precision variant even when it fails its gate on this CPU's gate sample "
                   "(said; default: refused)")
@click.option("--full-decode", is_flag=True, help="read every JPEG in full, as training did (default: as the export "
              "chose; reduced-scale decoding of large JPEGs only where its held-out images showed it keeps the gate)")
@click.option("--no-measure", is_flag=True,
              help="auto: where the export has no speeds from this CPU, use the default order (int8 > fp32, "
                   "OpenVINO first) instead of timing the candidates once")
@click.option("--quiet", is_flag=True, help="no progress bar, no summary line")
@click.option("--json", "as_json", is_flag=True, help="print summary.json to stdout")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: Ray Data with a pool of actors, one Session each (pip install 'segrt[ray]'); --out may "
                   "then be a pyarrow filesystem URI")
@click.option("--address", help="with --engine ray: the Ray cluster to join (default: start a local one)")
@click.option("--num-workers", type=COUNT, default=1, show_default=True, help="with --engine ray: actors")
@user_errors
def predict(inputs, model, out, batch_size, provider, trt_fp16, device, precision, kind, native, tile, overlap, blend,
            overlay, write_values, no_color, save_probs, per_page, skip_existing, shard, engine, address, num_workers, threads, graph_opt,
            no_arena, workers, writers, max_pixels, classes, mean, std, size, allow_below_gate, full_decode, no_measure, quiet, as_json):
    """Segment INPUTS (image files, folders, or text files listing paths) and write masks."""
    import json

    from segrt.predict.options import PredictOptions
    from segrt.predict.run import run_predict
    from segrt.predict.summary import format_summary

    if not model:
        model = default_model()
        click.echo(f"no --model: the bundled pets demo model ({', '.join(Manifest.load(model).classes)}); "
                   "pass --model EXPORT for your own", err=True)
    if max_pixels is None:
        max_pixels = 0 if tile else DEFAULT_MAX_PIXELS
    if not out:
        from segrt.fsutil import next_free

        out = str(next_free(Path("predictions")))
    from segrt.predict.inputs import parse_shard

    if engine == "ray":  # first: what the Ray engine does not do
        from segrt.scale.ray import refuse_options

        refuse_options({"--tile": tile, "--per-page": per_page, "--overlay": overlay, "--save-probs": save_probs,
                        "--write-values": write_values,
                        "--shard": shard, "--kind": kind, "--classes": classes, "--mean": mean, "--std": std})
    opts = PredictOptions(out=Path(out), batch_size=batch_size, native=native, color=not no_color, overlay=overlay,
                          save_probs=save_probs, per_page=per_page, skip_existing=skip_existing, workers=workers,
                          writers=writers, max_pixels=max_pixels or None, progress=not quiet,
                          shard=parse_shard(shard) if shard else None, full_decode=full_decode,
                          write_values=write_values)
    if engine == "ray":
        from segrt.scale.ray import predict as ray_predict

        summary = ray_predict(list(inputs), model, out, opts, provider=provider, precision=precision,
                              num_workers=num_workers, address=address, log=lambda m: click.echo(m, err=True))
        echo_out(json.dumps(summary, indent=2) if as_json else "" if quiet else
                 f"{summary['written']} of {summary['inputs']} image(s) segmented on Ray ({num_workers} worker(s), "
                 f"{summary['images_per_s']:.1f} img/s); summary in {out}/summary.json")
        sys.exit(1 if summary["failed"] else 0)
    from segrt.runtime.backends.base import SessionOptions

    summary = run_predict(list(inputs), model, provider=provider, precision=precision, kind=kind, opts=opts,
                          session_options=SessionOptions(threads=threads, graph_opt=graph_opt, arena=not no_arena,
                                                         spin=False, throughput=True, device=device,
                                                         trt_fp16=trt_fp16, gate_here=True,
                                                         allow_below_gate=allow_below_gate,
                                                         measure=not no_measure), classes=classes.split(",") if classes else None, mean=mean,
                          std=std, **({"size": size} if size else {}), tile=tile, overlap=overlap, blend=blend)
    if as_json:
        echo_out(json.dumps(summary, indent=2))
    elif not quiet:
        echo_out(format_summary(summary))
    sys.exit(exit_code(summary))


def exit_code(summary: dict) -> int:
    """143 stopped by SIGTERM, 130 by Ctrl-C, 1 when an image (or the summary) failed, else 0."""
    if summary["interrupted"]:
        return 143 if summary.get("stopped_by") == "SIGTERM" else 130
    return 1 if summary["failed"] or summary.get("summary_error") else 0

