"""`segrt export` and `segrt quantize`."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from segrt.cli.common import (description_options, echo_out, gate_options, make_quantize_options, quantize_options,
                              user_errors)
from segrt.options import IntList, examples

__all__ = ["export", "quantize", "import_onnx"]


@click.command(epilog=examples("segrt export runs/pets/best.pt --out exported/pets --quantize int8 --calib-images DATA/val", "segrt export model.pt --arch unet.py:UNet --arch-args '{\"n_classes\": 3}' --mean 0.5 --std 0.25"))
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
@click.option("--resize", metavar="size|scale:F|native",
              help="how images reach the model: size (the working size, default), scale:F (each image scaled by F, "
                   "aspect kept: your pipeline's scale factor; needs a model of any size), native (padded)")
@click.option("--resize-filter", type=click.Choice(["bilinear", "bicubic", "nearest"]),
              help="Pillow's filter for that resize (default bilinear)")
@click.option("--upsample", type=click.Choice(["logits", "mask"]),
              help="back to each image's size: resize the logits then argmax (default), or argmax then resize the "
                   "mask (nearest), as your pipeline does; recorded and used by predict, parity and serve")
@click.option("--uint8-input", is_flag=True, help="also a uint8-input copy of every gated ONNX/OpenVINO variant "
                                                  "(normalization in the graph; gated like its base)")
@click.option("--full-decode", is_flag=True, help="read every JPEG in full at predict (default: reduced-scale "
              "decoding for large JPEGs where the held-out images show it keeps the fp32 gate)")
@click.option("--arch", metavar="FILE.py:NAME", help="your own model: the class or factory that builds it "
              "(FILE.py:NAME, imported like uvicorn main:app, or package.module:NAME); CHECKPOINT is its state_dict")
@click.option("--arch-args", metavar="JSON", help="keyword arguments for --arch, e.g. '{\"n_classes\": 3}'")
@functools.partial(description_options, scope="your own model; mean and std required", size=False)
@click.option("--size-multiple", type=click.IntRange(min=1), help="your own model: what its input sides must be "
                                                                   "multiples of (default 32)")
@click.option("--output-key", help="your own model: the entry of its output dict that holds the logits "
                                   "(default 'out' where it has one)")
@click.option("--trust-pickle", is_flag=True, help="load a pickled module (torch.save(model)): runs code from the "
                                                   "file; only for files you trust")
@quantize_options
@gate_options
@user_errors
def export(checkpoint, out, opset, formats, force, quantize, triton, tta, size, resize, resize_filter, upsample, uint8_input,
           full_decode, arch, arch_args, classes,
           mean, std, size_multiple, output_key, trust_pickle, calib_images, calib_count, calib_method, val_images,
           val_masks, quant_gate, gate_iou, gate_logit):
    """Export CHECKPOINT to ONNX/TorchScript/pt2 with a manifest; fails unless parity holds. CHECKPOINT:
    a segrt checkpoint or export folder, or your own model: a state_dict with --arch, a torch.export
    program (.pt2), a segmentation_models_pytorch save_pretrained folder."""
    from segrt.export.run import describe_export, run_export
    from segrt.verify.parity import ParityFailed
    from segrt.verify.report import format_report

    try:
        result = run_export(checkpoint, out, formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
                            opset=opset, force=force, gate_iou=gate_iou, gate_logit=gate_logit,
                            progress=lambda m: click.echo(m, err=True), quantize=tuple(quantize), tta=tta, size=size,
                            uint8_input=uint8_input, full_decode=full_decode, resize=resize,
                            resize_filter=resize_filter, upsample=upsample,
                            quantize_options=make_quantize_options(calib_images, calib_count, calib_method,
                                                                   val_images, val_masks, quant_gate),
                            arch=arch, arch_args=arch_args, classes=classes.split(",") if classes else None, mean=mean,
                            std=std, size_multiple=size_multiple, output_key=output_key, trust_pickle=trust_pickle)
    except ParityFailed as exc:
        echo_out(format_report(exc.report))
        click.echo(f"error: export refused, nothing written: {exc}", err=True)
        sys.exit(1)
    echo_out(format_report(result.report))
    echo_out(describe_export(result))
    if triton:
        from segrt.scale.triton import write_repo

        echo_out(f"Triton model repository: {write_repo(result.folder, triton)}/ (config.pbtxt, 1/model.onnx)")


@click.command(epilog=examples("segrt quantize exported/pets --precision fp16", "segrt quantize exported/pets --backend openvino --precision int8 --calib-images DATA/val"))
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
    made, failed = add_variants(Path(export_dir), [] if uint8 else [(backend, precision)], opts,
                                lambda m: click.echo(m, err=True), uint8=uint8)
    for art in made:
        provider = " --provider openvino" if art.kind == "openvino" else ""
        echo_out(f"added {art.name} to {export_dir}; --provider auto picks it where it is fastest, or run it with "
                 f"segrt predict IMAGES --model {Path(export_dir) / art.file}{provider}")

    if failed:
        from segrt.errors import GateFailed

        raise GateFailed(f"{'; '.join(failed.values())}; nothing else in {export_dir} changed but the record of "
                         "its measurements (manifest.json, parity.html)")


@click.command("import", epilog=examples("segrt import model.onnx --mean 0.5 --std 0.25 --classes bg,cell --out exported/theirs"))
@click.argument("onnx_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="the export folder to write (default: export/ beside "
                                                              "the file)")
@functools.partial(description_options, scope="mean and std required; default size: native, padded")
@click.option("--size-multiple", type=click.IntRange(min=1), help="what input sides must be multiples of (default 32)")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False),
              help="a torch.export program (.pt2) of the model the ONNX came from: the gates compare with it (without "
                   "one they compare with the fp32 ONNX itself)")
@click.option("--force", is_flag=True, help="replace an earlier export at --out")
@user_errors
def import_onnx(onnx_file, out, classes, mean, std, size, size_multiple, reference, force):
    """Make ONNX_FILE (exported elsewhere) an export folder with a manifest: then parity, quantize (gated
    INT8), --provider auto, bench and the report work on it."""
    from segrt.export.bare import import_onnx as run_import

    folder, manifest = run_import(onnx_file, out, classes=classes.split(",") if classes else None, mean=mean, std=std,
                          size=size, size_multiple=size_multiple, reference=reference, force=force,
                          log=lambda m: click.echo(m, err=True))
    echo_out(f"imported {onnx_file} as {folder}/ (classes {', '.join(manifest.classes)}); next: segrt quantize "
             f"{folder} --calib-images IMAGES, segrt parity {folder} --images IMAGES, segrt predict IMAGES --model {folder}")
