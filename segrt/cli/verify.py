"""`segrt parity` and `segrt verify`."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from segrt.options import examples

from segrt.cli.common import COUNT, echo_out, gate_options, gpu_options, user_errors
from segrt.errors import SegrtError

__all__ = ["parity", "verify"]


@click.command(epilog=examples("segrt parity exported/pets --images DATA/val --masks DATA/val_masks --report parity.html",
                               "segrt parity exported/mine --images photos/ --against my_pipeline.py:segment"))
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--images", type=click.Path(exists=True), help="real images (default: random inputs)")
@click.option("--masks", type=click.Path(exists=True, file_okay=False), help="ground-truth masks (by file stem)")
@click.option("--mask-map", help="ground-truth value -> class id, e.g. '1:0,2:1,3:2' (over the export's own table; "
                                 "CLASS may be 'ignore'): for masks labelled otherwise than the model's classes")
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
@click.option("--full-decode", is_flag=True, help="serve the images as predict --full-decode reads them (every JPEG "
                                                  "in full) instead of as the export chose")
@gpu_options
@click.option("--tile", help="instead: tiled vs whole-image agreement of one artifact at this tile size (or 'auto')")
@click.option("--overlap", type=click.FloatRange(0.0, 0.9, max_open=True), default=0.25, show_default=True)
@click.option("--blend", type=click.Choice(["gaussian", "constant"]), default="gaussian", show_default=True)
@click.option("--artifact", help="with --tile or --against: the artifact to run (default model.onnx)")
@click.option("--against", metavar="MODULE:FUNCTION", help="instead: segrt's masks against your own pipeline, a "
              "function taking an image path and returning its HW mask of class ids (FILE.py:NAME or "
              "package.module:NAME); per image, worst first, and the policy change closest to it")
@functools.partial(gate_options, recorded=True)
@user_errors
def parity(export_dir, images, masks, mask_map, checkpoint, json_path, report_path, bench_path, worst, record, limit, batch_size,
           provider, full_decode, trt_fp16, device, tile, overlap, blend, artifact, against, gate_iou, gate_logit):
    """Compare every artifact of EXPORT_DIR with eager PyTorch; exit 1 when a gate fails. With
    --tile: compare tiled with whole-image inference (needs --images)."""
    if mask_map:
        from segrt.training.data import parse_mask_map

        if not masks:
            raise SegrtError("--mask-map needs --masks")
        mask_map = parse_mask_map(mask_map)
    if against:
        from segrt.verify.against import format_against, run_against

        if not images:
            raise SegrtError("--against needs --images (the photos to compare on)")
        from segrt.verify.thresholds import AGAINST_PIPELINE

        report = run_against(export_dir, images, against, artifact=artifact, provider=provider, limit=limit,
                             gate=gate_iou or AGAINST_PIPELINE)
        if json_path:
            from segrt.fsutil import write_bytes_atomic

            write_bytes_atomic(Path(json_path), json.dumps(report, indent=1).encode())
        echo_out(format_against(report))
        sys.exit(0 if report["passed"] else 1)
    if tile:
        from segrt.verify.tiles import format_tile_report, run_tile_parity

        if not images:
            raise SegrtError("--tile needs --images (real images to compare on)")
        echo_out(format_tile_report(run_tile_parity(
            export_dir, images, masks, tile=tile, overlap=overlap, blend=blend, provider=provider, artifact=artifact,
            batch_size=batch_size, limit=limit, json_path=json_path, mask_map=mask_map)))
        return
    from segrt.runtime.backends.base import SessionOptions
    from segrt.verify.parity import run_parity
    from segrt.verify.report import format_report

    report = run_parity(export_dir, images=images, masks=masks, checkpoint=checkpoint, json_path=json_path,
                        gate_iou=gate_iou, gate_logit=gate_logit, batch_size=batch_size, limit=limit,
                        provider=provider, options=SessionOptions(device=device, trt_fp16=trt_fp16),
                        report_path=report_path, bench_path=bench_path, worst=worst, record=record,
                        full_decode=full_decode, mask_map=mask_map)
    echo_out(format_report(report))
    sys.exit(0 if report["passed"] else 1)



@click.command(epilog=examples("segrt verify exported/pets"))
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--sample-images", type=click.Path(exists=True),
              help="first make the export's gate sample from these held-out images (up to 16; never a training "
                   "image); for exports made before gate samples")
@click.option("--decode-images", type=click.Path(exists=True),
              help="first measure reduced-scale JPEG decoding on these held-out images and record whether predict "
                   "uses it (kept only where it holds the fp32 gate); for exports made before that was measured")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the table as JSON")
@user_errors
def verify(export_dir, sample_images, decode_images, json_path):
    """Run every variant of EXPORT_DIR on its gate sample on this CPU and hold it to its gate (the
    check auto makes before a variant gated on another CPU runs); exit 1 when one fails here."""
    import json
    from pathlib import Path

    from segrt.fsutil import write_bytes_atomic
    from segrt.verify.sample import format_verify, run_verify

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if decode_images:
        from segrt.verify.decoding import measure_decode

        if not measure_decode(export_dir, decode_images, log).gate_sample and not sample_images:
            return log(f"{export_dir}: no gate sample, so no variant was re-checked here (add one with "
                       "--sample-images HELD_OUT_IMAGES)")
    result = run_verify(export_dir, sample_images, log=log)
    echo_out(format_verify(result))
    if json_path:
        write_bytes_atomic(Path(json_path), (json.dumps(result, indent=2) + "\n").encode())
    sys.exit(0 if result["passed"] else 1)
