"""`make gpu-check` on a machine without CUDA (one line, exit 0), and its plan and report, checked
without a GPU: every planned command parses, the report computes the targets."""

import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_without_cuda_one_line_and_exit_0(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no nvidia-smi on this PATH
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout == "gpu-check: no CUDA GPU on this machine (nvidia-smi finds none); nothing to check\n"


def test_every_planned_command_parses(tmp_path):
    from segrt.cli import main
    from segrt.training.cli import parse

    (tmp_path / "pets").mkdir()  # bench wants its model folder to exist
    steps = gpu_check.install_steps() + gpu_check.plan(tmp_path, ROOT / "examples" / "images", tmp_path / "many")
    names = [s.name for s in steps]
    assert {"predict cuda fp16", "predict tensorrt fp16", "parity tensorrt", "bench tensorrt fp16",
            "train 1 epoch, DDP over NCCL", "predict end to end vs bare session"} <= set(names)
    for step in steps:
        cmd = step.cmd
        if cmd[1:3] == ["-m", "segrt.cli"]:
            ctx = main.make_context("segrt", cmd[3:4])
            main.get_command(ctx, cmd[3]).make_context(cmd[3], cmd[4:], parent=ctx)  # raises on a bad option
        elif "segrt.training" in cmd:
            parse(cmd[cmd.index("segrt.training") + 1:])
        elif cmd[1].endswith("predict_throughput.py"):
            assert "--provider" in cmd and cmd[cmd.index("--provider") + 1] == "cuda"


def fake(name, rc=0, js=None):
    return gpu_check.Step(name, ["x"], result={"rc": rc, "seconds": 1.0, **({"json": js} if js else {})})


def test_report_computes_the_targets():
    eager = {"rows": [{"backend": "eager fp32", "batch_size": 32, "size": 256, "images_per_s": 100.0},
                      {"backend": "eager AMP", "batch_size": 32, "size": 256, "images_per_s": 400.0}]}
    bench = {"rows": [{"artifact": "model.fp16.onnx", "precision": "fp16", "batch_size": 32, "height": 256,
                       "images_per_s": 700.0}]}
    steps = [fake("eager fp32 and AMP", js=eager), fake("bench cuda", js=bench),
             fake("predict end to end vs bare session", js={"predict_img_s": 900.0, "ratio": 0.85}),
             fake("install tensorrt", rc=1)]
    steps[-1].optional = True
    result, md = gpu_check.report("NVIDIA H100", steps)
    assert result["targets"][0] == ("bench cuda (model.fp16.onnx): 700 img/s at batch 32, 256x256 = 7.00x eager fp32 "
                                    "(target 5x), 1.75x eager AMP (target 1.5x)")
    assert "0.85x the bare session (target 0.8x)" in result["targets"][1]
    assert "| install tensorrt | 1 (optional) | 1.0 |" in md and md.startswith("### gpu-check on NVIDIA H100")
    assert gpu_check.report("G", [fake("bench cuda", rc=1)])[0]["targets"] == [
        "no target could be computed (see the failed steps)"]


@pytest.mark.gpu
def test_gpu_check_runs_on_a_gpu():
    """Only where CUDA is present (pytest -m gpu): the whole check, without the reinstall."""
    if gpu_check.gpu_name() is None:
        pytest.skip("no CUDA GPU here")
    assert gpu_check.main(["--skip-install"]) == 0


def test_tensorrt_and_cuda_options(tmp_path):
    from segrt.backends import SessionOptions
    from segrt.backends.ort import provider_list
    from segrt.manifest import Manifest

    m = Manifest(name="m", classes=["a", "b"], mean=[0.5], std=[0.25],
                 channels=1, size_multiple=16, input_size=[160, 160])
    trt, cuda = provider_list("tensorrt", SessionOptions(device=2, trt_fp16=True), m, tmp_path / "model.onnx")
    assert cuda == ("CUDAExecutionProvider", {"device_id": 2}) and trt[0] == "TensorrtExecutionProvider"
    o = trt[1]
    assert o["device_id"] == 2 and o["trt_fp16_enable"] is True and o["trt_max_workspace_size"] == 4 * 2**30
    assert (o["trt_profile_min_shapes"], o["trt_profile_opt_shapes"], o["trt_profile_max_shapes"]) == (
        "image:1x1x16x16", "image:8x1x160x160", "image:64x1x2048x2048")
    assert o["trt_engine_cache_path"] == o["trt_timing_cache_path"] == str(tmp_path / ".trt-cache")
    assert provider_list("cuda", SessionOptions(device=1), m, tmp_path / "model.onnx") == [
        ("CUDAExecutionProvider", {"device_id": 1})]
    fixed = Manifest(name="f", classes=["a"], mean=[0.5], std=[0.25],
                     channels=3, size_multiple=1, input_size=[64, 64], fixed_size=[64, 64])
    o = provider_list("tensorrt", SessionOptions(), fixed, tmp_path / "f.onnx")[0][1]
    assert o["trt_profile_min_shapes"] == "image:1x3x64x64" and o["trt_profile_max_shapes"] == "image:64x3x64x64"


@pytest.mark.slow
def test_masks_from_the_model_equal_host_masks(tmp_path):
    """The GPU path's in-graph argmax (forced on the CPU here) writes the same masks as the host's."""
    from pathlib import Path

    from segrt.predict import PredictOptions, run_predict

    images, model = ROOT / "tests" / "data" / "isbi" / "images", ROOT / "exported" / "isbi"
    for name, device_masks in (("host", False), ("model", True)):
        run_predict([str(images)], model, provider="cpu", precision="fp32", log=lambda m: None,
                    opts=PredictOptions(out=tmp_path / name, progress=False, device_masks=device_masks, writers=2))
    for p in sorted(Path(tmp_path / "host").glob("*.png")):
        assert p.read_bytes() == (tmp_path / "model" / p.name).read_bytes()
    assert len(list(Path(tmp_path / "host").glob("*.png"))) == 6
