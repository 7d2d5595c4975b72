"""An export as an NVIDIA Triton Inference Server model repository (online serving with dynamic
batching): REPO/NAME/config.pbtxt, REPO/NAME/1/model.onnx and the manifest beside them.

The config follows Triton's model configuration schema (model_config.proto): platform
onnxruntime_onnx, batch dimension implicit (max_batch_size > 0) with -1 for the dynamic height and
width, dynamic batching, an instance group, and optionally ONNX Runtime's TensorRT accelerator
with fp16 on GPUs. Clients preprocess with segrt's own reader and turn logits into masks with
segrt.imaging.masks (examples/triton_client.py).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from segrt.errors import SegrtError
from segrt.fsutil import atomic_dir, check_apart, check_replaceable, plain_name
from segrt.manifest import Manifest

__all__ = ["TritonOptions", "write_repo"]


@dataclass
class TritonOptions:
    name: str | None = None  # default: the export's name
    max_batch_size: int = 8
    instances: int = 1
    device: str = "gpu"  # gpu | cpu (the instance group's kind)
    tensorrt_fp16: bool = False  # ORT's TensorRT execution accelerator, fp16 (GPU only)
    max_queue_delay_us: int = 100


def _config_pbtxt(manifest: Manifest, opts: TritonOptions, name: str) -> str:
    """The config.pbtxt text for an export's fp32 ONNX model."""
    hw = manifest.fixed_size or [-1, -1]

    def tensor(tensor_name: str, channels: int) -> str:
        return (f'  {{\n    name: "{tensor_name}"\n    data_type: TYPE_FP32\n'
                f"    dims: [ {channels}, {hw[0]}, {hw[1]} ]\n  }}")

    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {opts.max_batch_size}",
             "input [", tensor(manifest.input_name, manifest.channels), "]",
             "output [", tensor(manifest.output_name, manifest.num_classes), "]",
             f"dynamic_batching {{\n  max_queue_delay_microseconds: {opts.max_queue_delay_us}\n}}",
             f"instance_group [\n  {{\n    count: {opts.instances}\n    kind: KIND_{opts.device.upper()}\n  }}\n]"]
    if opts.tensorrt_fp16:
        lines.append('optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n'
                     '      name : "tensorrt"\n      parameters { key: "precision_mode" value: "FP16" }\n'
                     '    } ]\n  }\n}')
    return "\n".join(lines) + "\n"


def write_repo(export_dir: str | os.PathLike, repo: str | os.PathLike, opts: TritonOptions | None = None) -> Path:
    """Add the export's fp32 ONNX model to a Triton repository; returns REPO/NAME."""
    opts = opts or TritonOptions()
    export_dir, repo = Path(export_dir), Path(repo)
    manifest = Manifest.load(export_dir)
    manifest.verify(export_dir, [manifest.artifact("onnx", "fp32").name])
    if opts.device not in ("gpu", "cpu"):
        raise SegrtError(f"--device {opts.device!r}: choose gpu or cpu")
    if opts.tensorrt_fp16 and opts.device != "gpu":
        raise SegrtError("--tensorrt-fp16 needs --device gpu (TensorRT runs on NVIDIA GPUs)")
    if opts.max_batch_size < 1 or opts.instances < 1:
        raise SegrtError("--max-batch-size and --instances must be >= 1")
    name = plain_name(opts.name or manifest.name, "--name" if opts.name else "the export's name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SegrtError(f"model name {name!r}: use letters, digits, '_', '.', '-' (Triton's directory name)")
    check_apart(repo, {"export folder": export_dir})
    entry = repo / name
    if entry.exists():  # replace only an entry segrt wrote, never the repository or a user's folder
        check_replaceable(entry, "manifest.json", "a Triton model entry", "triton-repo")
        if not (entry / "config.pbtxt").is_file():
            raise SegrtError(f"{entry}: exists and is not a Triton model entry segrt wrote (no config.pbtxt); "
                             "choose another --name")
    with atomic_dir(entry, force=entry.exists()) as tmp:
        (tmp / "1").mkdir()
        shutil.copy2(export_dir / manifest.artifact("onnx", "fp32").file, tmp / "1" / "model.onnx")
        shutil.copy2(export_dir / "manifest.json", tmp / "manifest.json")
        (tmp / "config.pbtxt").write_text(_config_pbtxt(manifest, opts, name))
    return entry
