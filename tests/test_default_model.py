"""The bundled default model: loads, predicts every example image, and agrees with the trimaps
above a floor set from its measured validation numbers (a regression in preprocessing or export
fails here). Also runs the README's demo command."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from segrt.manifest import Manifest
from segrt.metrics import ConfusionMatrix
from segrt.parity import truth_lut

MODEL = ROOT / "exported" / "pets"
EXAMPLES = ROOT / "examples"
# measured mIoU on these 8 val-split images (OpenVINO INT8, as `auto` picks here): 0.7327
# (background 0.917, pet 0.805, border 0.477); the floor is that minus 0.05, rounded down
MIOU_FLOOR = 0.68

pytestmark = pytest.mark.slow


def test_bundled_model_is_intact():
    m = Manifest.load(MODEL)
    m.verify(MODEL)
    assert m.classes == ["background", "pet", "border"] and m.artifact("onnx", "fp32")
    for kind, precision in (("openvino", "fp32"), ("openvino", "int8"), ("onnx", "int8")):
        assert m.parity[m.artifact(kind, precision).name]["passed"]
    # checkpoint, ONNX fp32 + INT8, OpenVINO IR fp32 + INT8, parity.html (63 MB): the repo must stay small
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) < 64e6


def test_demo_command_predicts_examples_above_floor(tmp_path):
    out = tmp_path / "predictions"
    res = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", str(EXAMPLES / "images"), "--out", str(out),
                          "--overlay"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["written"] == 8 and summary["failed"] == 0
    lut = truth_lut(Manifest.load(MODEL))
    cm = ConfusionMatrix(3, ignore_index=255)
    for mask_path in sorted((EXAMPLES / "masks").glob("*.png")):
        truth = lut[np.array(Image.open(mask_path))]
        pred = np.array(Image.open(out / mask_path.name))
        assert pred.shape == truth.shape
        cm.update(pred, truth)
        assert (out / f"{mask_path.stem}.overlay.jpg").exists()
    assert cm.miou() >= MIOU_FLOOR, f"mIoU {cm.miou():.4f} fell below the floor {MIOU_FLOOR}"
