"""`segrt triton-repo` (Ray is predict's --engine)."""

from __future__ import annotations

import click

from segrt.options import examples

from segrt.cli.common import COUNT, echo_out, user_errors

__all__ = ["triton_repo"]


@click.command("triton-repo", epilog=examples("segrt triton-repo exported/pets --out models/ --max-batch-size 16"))
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

