"""A built wheel carries the default model: `segrt predict photo.jpg` works from an empty folder in a
clean venv that has only the base dependencies (no torch)."""

import json
import shutil
import subprocess
import sys
import venv
import zipfile

import pytest
from conftest import ROOT

from segrt.cli.common import DEFAULT_MODELS
from segrt.manifest import Manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Built from a copy of the tracked files: an in-tree build/ left by an earlier build could carry
    files the tree no longer has."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, check=True).stdout.split(b"\0")
    for name in (f.decode() for f in files if f):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("segrt-*.whl")
    return path


def test_wheel_carries_the_serving_subset(wheel):
    names = {n.split("/", 2)[2] for n in zipfile.ZipFile(wheel).namelist() if n.startswith("segrt/default_model/")}
    assert names == {"manifest.json", "model.onnx", "model.int8.onnx", "model.u8.int8.xml", "model.u8.int8.bin",
                     "parity.html", "gate_sample.npz"}  # the sample: auto re-checks the INT8 variants on a new CPU
    manifest = Manifest.load(DEFAULT_MODELS[1])
    assert {manifest.artifact("onnx", "fp32").file, manifest.artifact("onnx", "int8").file} <= names
    assert manifest.parity[manifest.artifact("onnx", "int8").name].passed


def test_plain_install_predicts_from_an_empty_folder(wheel, tmp_path):
    env_dir, work = tmp_path / "venv", tmp_path / "empty"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=600)
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0  # the base install has no torch
    work.mkdir()
    shutil.copy(sorted((ROOT / "examples" / "images").iterdir())[0], work / "photo.jpg")
    res = subprocess.run([str(env_dir / "bin" / "segrt"), "predict", "photo.jpg", "--json"], cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["written"] == 1 and (work / "predictions" / "photo.png").is_file()
    assert "site-packages" in summary["model"] and "default_model" in summary["model"]
    assert "model.u8.int8.xml (OpenVINO is not installed" in res.stderr  # auto says why it skips a variant
    assert "model.int8.xml (not in this copy" in res.stderr
