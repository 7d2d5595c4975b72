"""Your own model through export, its gates, INT8 and predict (issue 34): a tutorial-style U-Net as a
state_dict with --arch, torch.export programs (dynamic and fixed size), an smp Unet from
save_pretrained, torchvision's LR-ASPP by factory (a dict output), an nn.Module through the Python API;
and the one-line refusals. Untrained tiny models: the mechanics, not the masks."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import PETS, ROOT, one_line_error

from segrt.cli import main
from segrt.manifest import Manifest

pytestmark = pytest.mark.slow
TUTORIAL = ROOT / "tests" / "data" / "own" / "tutorial_unet.py"
NORM = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
IMAGES = PETS / "images"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tutorial_model(base=8):
    sys.path.insert(0, str(TUTORIAL.parent))
    try:
        from tutorial_unet import UNet
    finally:
        sys.path.remove(str(TUTORIAL.parent))
    torch.manual_seed(0)
    return UNet(base=base).eval()


def gated_and_predicts(out, tmp_path):
    """The export passed parity, gets a gated INT8 variant, predicts; its reference is model.pt2."""
    m = Manifest.load(out)
    assert m.passed("model.onnx") and m.source["reference"] == "model.pt2" and (out / "model.pt2").is_file()
    res = cli("quantize", out, "--calib-images", IMAGES, "--quant-gate", "0.8")
    assert res.exit_code == 0, res.output
    assert Manifest.load(out).passed("model.int8.onnx")
    res = cli("predict", ROOT / "examples" / "images", "--model", out, "--out", tmp_path / "pred", "--quiet")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "pred").glob("*.color.png"))) == 8


def test_tutorial_unet_state_dict_with_arch_and_parity_without_its_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(TUTORIAL, src / "tutorial_unet.py")
    torch.save(tutorial_model().state_dict(), src / "model.pt")
    out = tmp_path / "exp"
    res = cli("export", src / "model.pt", "--arch", f"{src / 'tutorial_unet.py'}:UNet", "--arch-args", '{"base": 8}',
              *NORM, "--size", "64", "--size-multiple", "4", "--classes", "background,pet,border", "--formats", "onnx",
              "--out", out)
    assert res.exit_code == 0, res.output
    assert "imported like uvicorn main:app" in res.output and "all gates passed" in res.output
    m = Manifest.load(out)
    assert m.classes == ["background", "pet", "border"] and m.input_size == [64, 64] and m.size_multiple == 4
    assert "tutorial_unet.py:UNet" in m.source["route"]
    gated_and_predicts(out, tmp_path)
    shutil.rmtree(src)  # the user's code is gone: parity still has the reference
    res = subprocess.run([sys.executable, "-m", "segrt.cli", "parity", str(out), "--images", str(IMAGES), "--limit", "4"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and "your model as a torch.export program (model.pt2" in res.stderr, res.stderr


@pytest.mark.parametrize("fixed", [False, True])
def test_a_torch_export_program(tmp_path, fixed):
    from torch.export import Dim

    x = torch.randn(1, 3, 64, 64)
    shapes = None if fixed else {"x": {2: 4 * Dim("h", min=1, max=256), 3: 4 * Dim("w", min=1, max=256)}}
    torch.export.save(torch.export.export(tutorial_model(), (x,), dynamic_shapes=shapes), str(tmp_path / "m.pt2"))
    res = cli("export", tmp_path / "m.pt2", *NORM, "--size-multiple", "4", "--size", "64", "--formats", "onnx",
              "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    m = Manifest.load(tmp_path / "exp")
    assert m.fixed_size == ([64, 64] if fixed else None)
    assert ("the program takes one size, 64x64" in res.output) == fixed
    gated_and_predicts(tmp_path / "exp", tmp_path)


def test_an_smp_unet_from_save_pretrained(tmp_path):
    smp = pytest.importorskip("segmentation_models_pytorch")
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=3)
    model.save_pretrained(str(tmp_path / "smp"))
    res = cli("export", tmp_path / "smp", *NORM, "--size", "64", "--formats", "onnx", "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    assert "segmentation_models_pytorch.from_pretrained" in Manifest.load(tmp_path / "exp").source["route"]
    gated_and_predicts(tmp_path / "exp", tmp_path)


def test_torchvision_lraspp_by_factory_returns_a_dict(tmp_path):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    args = {"weights": None, "weights_backbone": None, "num_classes": 3}
    torch.save(lraspp_mobilenet_v3_large(**args).state_dict(), tmp_path / "lraspp.pth")
    res = cli("export", tmp_path / "lraspp.pth", "--arch", "torchvision.models.segmentation:lraspp_mobilenet_v3_large",
              "--arch-args", json.dumps(args), *NORM, "--size", "64", "--formats", "onnx", "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    assert "the model returns a dict: segrt uses 'out'" in res.output
    gated_and_predicts(tmp_path / "exp", tmp_path)


def test_an_nn_module_through_the_python_api(tmp_path):
    import segrt

    result = segrt.run_export(tutorial_model(), tmp_path / "exp", classes=["a", "b", "c"], mean=[0.5] * 3,
                              std=[0.25] * 3, size=[64, 64], size_multiple=4, formats=("onnx",), progress=lambda m: None)
    assert result.manifest.classes == ["a", "b", "c"] and "nn.Module UNet" in result.manifest.source["route"]
    gated_and_predicts(tmp_path / "exp", tmp_path)


def test_refusals_are_one_line_and_leave_nothing(tmp_path):
    model = tutorial_model()
    torch.save(model, tmp_path / "pickled.pt")
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(tutorial_model(base=16).state_dict(), tmp_path / "other.pt")
    out = tmp_path / "exp"
    arch = ["--arch", f"{TUTORIAL}:UNet", "--arch-args", '{"base": 8}']
    one_line_error(cli("export", tmp_path / "pickled.pt", *NORM, "--out", out), "a pickled object",
                   "pass --arch FILE.py:CLASS", "--trust-pickle")
    one_line_error(cli("export", tmp_path / "model.pt", "--arch", "nothere.py:UNet", *NORM, "--out", out),
                   "nothere.py not found")
    one_line_error(cli("export", tmp_path / "other.pt", *arch, *NORM, "--out", out), "the weights do not fit --arch",
                   "shape mismatch: inc.net.0.weight (16, 3, 3, 3) vs the model's (8, 3, 3, 3)")
    one_line_error(cli("export", tmp_path / "model.pt", *arch, "--out", out), "--mean 0.485,0.456,0.406",
                   "--mean 0,0,0 --std 1,1,1")
    (tmp_path / "odd.py").write_text("import torch\nfrom torch import nn\n\n\nclass Odd(nn.Module):\n"
                                     "    def __init__(self):\n        super().__init__()\n"
                                     "        self.conv = nn.Conv2d(3, 2, 1)\n\n    def forward(self, x):\n"
                                     "        y = self.conv(x)\n"
                                     "        return y + torch.linalg.matrix_exp(y[..., :4, :4]).sum()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from odd import Odd
    finally:
        sys.path.remove(str(tmp_path))
    torch.save(Odd().state_dict(), tmp_path / "odd.pt")
    one_line_error(cli("export", tmp_path / "odd.pt", "--arch", f"{tmp_path / 'odd.py'}:Odd", *NORM, "--formats",
                       "onnx", "--out", out), "torch cannot export the model to ONNX", "aten::linalg_matrix_exp")
    assert not out.exists() and not any(p.name.startswith(".exp") for p in tmp_path.iterdir())
    assert os.listdir(tmp_path)  # the inputs are untouched
