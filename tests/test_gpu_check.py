"""`make gpu-check` on a machine without CUDA (one line, exit 0), and its plan and report, checked
without a GPU: every planned command parses, the report computes the targets."""

import json
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
    steps = gpu_check.plan(tmp_path, ROOT / "examples" / "images", tmp_path / "many")
    names = [s.name for s in steps]
    assert len(set(names)) == len(names) and {"parity on cuda", "bench cuda (torchscript, pt2)", "AOTInductor pt2, gated",
                                              "train 1 epoch, DDP over NCCL", "predict end to end vs bare session"} <= set(names)
    for step in steps:
        cmd = step.cmd
        assert "pip" not in cmd and not any("http" in a for a in cmd)  # nothing to fetch on the GPU machine
        if cmd[1:3] == ["-m", "segrt.cli"]:
            ctx = main.make_context("segrt", cmd[3:4])
            main.get_command(ctx, cmd[3]).make_context(cmd[3], cmd[4:], parent=ctx)  # raises on a bad option
            assert "--provider" not in cmd or cmd[cmd.index("--provider") + 1] == "cuda"
        elif "segrt.training" in cmd:
            parse(cmd[cmd.index("segrt.training") + 1:])
        elif cmd[1].endswith("predict_throughput.py"):
            assert cmd[cmd.index("--provider") + 1] == "cuda" and cmd[cmd.index("--kind") + 1] == "pt2"


def test_plan_fits_one_device_call():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--plan"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    plan = json.loads(res.stdout)
    assert res.returncode == 0 and plan["tree_mib"] + plan["carry_mib"] <= 64 and plan["tree_mib"] <= 48
    assert all(s["offline"] for s in plan["steps"]) and sum(s["timeout_s"] for s in plan["steps"]) <= 540
    assert plan["total_timeout_s"] <= plan["budget_s"] == 540
    assert plan["not_run"][0]["name"] == "ONNX Runtime CUDA and TensorRT" and "CPU build" in plan["not_run"][0]["why"]


def test_results_go_to_out(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    stem = gpu_check.save_results({"a": 1}, "# md\n", "gpu-x")
    assert stem == tmp_path / "out" / "gpu-x" and json.loads((tmp_path / "out" / "gpu-x.json").read_text()) == {"a": 1}


def test_without_network_make_gpu_check_is_one_line(tmp_path):
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no nvidia-smi, no network
    res = subprocess.run(["unshare", "-n", "make", "-s", "gpu-check"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.splitlines() == [
        "gpu-check: no CUDA GPU on this machine (nvidia-smi finds none); nothing to check"], res.stdout + res.stderr


def fake(name, rc=0, js=None):
    return gpu_check.Step(name, ["x"], result={"rc": rc, "seconds": 1.0, **({"json": js} if js else {})})


def test_report_computes_the_targets():
    eager = {"rows": [{"backend": "eager fp32", "batch_size": 32, "size": 256, "images_per_s": 100.0},
                      {"backend": "eager AMP fp16", "batch_size": 32, "size": 256, "images_per_s": 400.0}]}
    bench = {"rows": [{"artifact": "model.pt2", "precision": "fp32", "batch_size": 32, "height": 256,
                       "images_per_s": 700.0}]}
    aoti = {"rows": [{"backend": "AOTInductor pt2", "batch_size": 32, "size": 256, "images_per_s": 900.0}]}
    steps = [fake("eager fp32, AMP fp16 and bf16, channels-last", js=eager), fake("bench cuda (torchscript, pt2)", js=bench),
             fake("AOTInductor pt2, gated", js=aoti),
             fake("predict end to end vs bare session", js={"predict_img_s": 900.0, "ratio": 0.85}),
             fake("train 1 epoch, AMP", rc=1)]
    steps[2].optional = True
    result, md = gpu_check.report("NVIDIA H200", steps)
    assert result["targets"][0] == "model.pt2: 700 img/s at batch 32, 256x256 = 7.00x eager fp32, 1.75x eager AMP fp16"
    assert result["targets"][1].startswith("AOTInductor pt2: 900 img/s") and "0.85x the bare session" in result["targets"][2]
    assert "| AOTInductor pt2, gated | 0 (optional) | 1.0 |" in md and md.startswith("### gpu-check on NVIDIA H200")
    assert "not run: ONNX Runtime CUDA and TensorRT" in md
    assert gpu_check.report("G", [fake("bench cuda (torchscript, pt2)", rc=1)])[0]["targets"] == [
        "no target could be computed (see the failed steps)"]


@pytest.mark.slow
def test_eager_and_aoti_steps_run_on_the_cpu(exported, tmp_path):
    """The two Python steps, on the CPU at tiny sizes: every eager mode timed; AOTInductor compiled,
    gated against eager on real photos, and timed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_steps import MODES, aoti_check, eager_times

    rows = eager_times(exported, tmp_path / "e.json", batches=(1,), sizes=(64,), runs=1)["rows"]
    assert [r["backend"] for r in rows] == list(MODES) and all(r["images_per_s"] > 0 for r in rows)
    res = aoti_check(exported, ROOT / "tests" / "data" / "pets" / "images", tmp_path / "a.json", batches=(1,), sizes=(64,),
                     runs=1)
    assert res["gate"]["passed"] and res["gate"]["mask_iou"] >= 0.999 and res["rows"][0]["images_per_s"] > 0


@pytest.mark.gpu
def test_gpu_check_runs_on_a_gpu():
    """Only where CUDA is present (pytest -m gpu): the whole check, without the reinstall."""
    if gpu_check.gpu_name() is None:
        pytest.skip("no CUDA GPU here")
    assert gpu_check.main(["--skip-install"]) == 0


def test_tensorrt_and_cuda_options(tmp_path):
    from segrt.manifest import Manifest
    from segrt.runtime.backends.base import SessionOptions
    from segrt.runtime.backends.ort import provider_list

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

    from segrt.predict.options import PredictOptions
    from segrt.predict.run import run_predict

    images, model = ROOT / "tests" / "data" / "isbi" / "images", ROOT / "exported" / "isbi"
    for name, device_masks in (("host", False), ("model", True)):
        run_predict([str(images)], model, provider="cpu", precision="fp32", log=lambda m: None,
                    opts=PredictOptions(out=tmp_path / name, progress=False, device_masks=device_masks, writers=2))
    for p in sorted(Path(tmp_path / "host").glob("*.png")):
        assert p.read_bytes() == (tmp_path / "model" / p.name).read_bytes()
    assert len(list(Path(tmp_path / "host").glob("*.png"))) == 6
