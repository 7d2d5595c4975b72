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
                              std=[0.25] * 3, size=64, size_multiple=4, formats="onnx", progress=lambda m: None)
    m = result.manifest
    assert m.classes == ["a", "b", "c"] and m.input_size == [64, 64] and "nn.Module UNet" in m.source["route"]
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


def _user_pipeline_masks(model, paths, size=128):
    """What a user's own eager PyTorch pipeline gives: full decode, bilinear resize, ImageNet
    normalization, logits upsampled (bilinear) to the photo's size, argmax."""
    import numpy as np
    from PIL import Image
    from torch.nn import functional as F

    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out = {}
    for p in paths:
        img = Image.open(p).convert("RGB")
        x = torch.from_numpy(np.asarray(img.resize((size, size), Image.BILINEAR)).copy()).permute(2, 0, 1) / 255.0
        with torch.inference_mode():
            logits = model(((x - mean) / std)[None])
            logits = F.interpolate(logits, size=img.size[::-1], mode="bilinear", align_corners=False)
        out[p.stem] = logits.argmax(1)[0].numpy().astype(np.uint8)
    return out


def test_a_bare_onnx_imported_joins_the_fold_and_matches_the_users_pipeline(tmp_path):
    """predict on a bare ONNX names what it assumes and refuses --precision int8; segrt import makes an export
    that parity, quantize and predict accept, whose masks agree >= 0.99 with the user's own eager pipeline."""
    import numpy as np
    from PIL import Image

    from segrt.imaging.metrics import ConfusionMatrix, agreement

    sys.path.insert(0, str(TUTORIAL.parent))
    try:
        from texture import Texture  # masks that move with fine detail: reduced-scale decoding gives 0.94 here
    finally:
        sys.path.remove(str(TUTORIAL.parent))
    model = Texture().eval()
    x = torch.randn(1, 3, 128, 128)
    torch.onnx.export(model, (x,), str(tmp_path / "user.onnx"), input_names=["input"], output_names=["out"],
                      dynamo=False)
    res = cli("predict", IMAGES, "--model", tmp_path / "user.onnx", "--out", tmp_path / "bare")
    assert res.exit_code == 0 and "carries no segrt metadata: assumed normalization mean" in res.output
    one_line_error(cli("predict", IMAGES, "--model", tmp_path / "user.onnx", "--precision", "int8", "--out",
                       tmp_path / "b2"), "an fp32 graph, not int8")
    out = tmp_path / "imported"
    res = cli("import", tmp_path / "user.onnx", "--out", out, *NORM, "--classes", "background,pet,border")
    assert res.exit_code == 0, res.output
    assert "no reference: later gates compare with the fp32 ONNX itself" in res.output
    res = cli("verify", out, "--decode-images", ROOT / "examples" / "images")  # no gate sample yet: decoding only
    assert res.exit_code == 0 and "reduced-scale decoding fails the gate" in res.output, res.output
    assert "no gate sample, so no variant was re-checked" in res.output and Manifest.load(out).decode == "full"
    res = cli("quantize", out, "--calib-images", IMAGES, "--quant-gate", "0.8")
    assert res.exit_code == 0, res.output
    res = cli("parity", out, "--images", IMAGES, "--limit", "4")
    assert res.exit_code == 0 and "reference: the fp32 ONNX itself" in res.output, res.output
    photos = ROOT / "examples" / "images"  # full-size photos (the committed slice is small)
    res = cli("predict", photos, "--model", out, "--precision", "fp32", "--provider", "cpu", "--out", tmp_path / "p")
    assert res.exit_code == 0, res.output
    paths = sorted(photos.iterdir())
    assert min(min(Image.open(p).size) for p in paths) > 256
    theirs, cm = _user_pipeline_masks(model, paths), ConfusionMatrix(3)
    for stem, mask in theirs.items():
        cm.update(np.asarray(Image.open(tmp_path / "p" / f"{stem}.png")), mask)
    assert agreement(cm)["mask_iou"] >= 0.99


def test_a_qdq_onnx_is_labelled_int8(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from segrt.runtime.model_info import load_model_info

    model = tutorial_model()
    torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(tmp_path / "m.onnx"), dynamo=False)
    quantize_dynamic(str(tmp_path / "m.onnx"), str(tmp_path / "m.int8.onnx"), weight_type=QuantType.QInt8)
    assert load_model_info(tmp_path / "m.int8.onnx")[0].artifacts[0].precision == "int8"
    assert load_model_info(tmp_path / "m.onnx")[0].artifacts[0].precision == "fp32"


def test_import_gated_against_its_reference(tmp_path):
    """segrt import --reference: the ONNX is gated against the program it came from; another model's
    program fails that gate (exit 1) and leaves nothing."""
    from torch.export import Dim

    x, dims = torch.randn(1, 3, 64, 64), {"x": {2: 4 * Dim("h", min=1, max=64), 3: 4 * Dim("w", min=1, max=64)}}
    model = tutorial_model()
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=dims), str(tmp_path / "ref.pt2"))
    torch.manual_seed(1)
    other = torch.export.export(type(model)(base=8).eval(), (x,), dynamic_shapes=dims)
    torch.export.save(other, str(tmp_path / "other.pt2"))
    args = ["--mean", "0.5", "--std", "0.25", "--size", "64", "--size-multiple", "4"]
    res = cli("import", tmp_path / "m.onnx", "--reference", tmp_path / "ref.pt2", *args, "--out", tmp_path / "imp")
    assert res.exit_code == 0 and "reference: model.pt2, the fp32 ONNX gated against it" in res.output, res.output
    m = Manifest.load(tmp_path / "imp")
    assert m.source["reference"] == "model.pt2" and m.passed("model.onnx") and m.std == [0.25] * 3
    res = cli("import", tmp_path / "m.onnx", "--reference", tmp_path / "other.pt2", *args, "--out", tmp_path / "bad")
    assert res.exit_code == 1 and "parity gate failed: model.onnx" in res.output and not (tmp_path / "bad").exists()
    res = cli("parity", tmp_path / "imp", "--images", IMAGES, "--limit", "4")
    assert res.exit_code == 0 and "your model as a torch.export program (model.pt2" in res.output, res.output


class _Heads(torch.nn.Module):
    """Returns a dict without 'out': the logits under another key, beside an auxiliary map."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return {"aux": x[:, :1], "logits": self.conv(x)}


def test_output_key_picks_the_logits_of_a_dict(tmp_path):
    torch.save(_Heads().state_dict(), tmp_path / "m.pt")
    (tmp_path / "heads.py").write_text("from test_own_model import _Heads as Heads\n")
    args = ["export", tmp_path / "m.pt", "--arch", f"{tmp_path / 'heads.py'}:Heads", *NORM, "--formats", "onnx"]
    one_line_error(cli(*args, "--out", tmp_path / "no"), "it returns a dict with aux, logits; pass --output-key")
    assert not (tmp_path / "no").exists()
    res = cli(*args, "--output-key", "logits", "--out", tmp_path / "exp")
    assert res.exit_code == 0 and "the model returns a dict: segrt uses 'logits'" in res.output, res.output
    assert Manifest.load(tmp_path / "exp").num_classes == 2


class _HalfResolutionPair(torch.nn.Module):
    """Returns (logits at half the input's size, an auxiliary head), as many segmentation models do."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y, y.mean()


def test_tuple_output_low_resolution_safetensors_and_trust_pickle(tmp_path):
    from safetensors.torch import save_file

    model = _HalfResolutionPair().eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    (tmp_path / "half.py").write_text("from test_own_model import _HalfResolutionPair as Half\n")
    res = cli("export", tmp_path / "m.safetensors", "--arch", f"{tmp_path / 'half.py'}:Half", *NORM, "--size", "64",
              "--formats", "onnx", "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    assert "returns a tuple of 2: segrt uses the first item" in res.output
    assert "its logits are 32x48 for a 64x96 input: upsampled (bilinear)" in res.output
    assert Manifest.load(tmp_path / "exp").passed("model.onnx")
    torch.save(model, tmp_path / "pickled.pt")
    res = cli("export", tmp_path / "pickled.pt", "--trust-pickle", *NORM, "--formats", "onnx", "--out", tmp_path / "p")
    assert res.exit_code == 0 and "pickled module" in Manifest.load(tmp_path / "p").source["route"], res.output


def test_a_torchscript_archive_is_exported_and_kept_as_its_reference(tmp_path, recwarn):
    torch.jit.save(torch.jit.script(tutorial_model()), str(tmp_path / "m.ts"))
    recwarn.clear()
    res = cli("export", tmp_path / "m.ts", *NORM, "--size", "64", "--size-multiple", "4", "--formats", "onnx",
              "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    assert "torchscript (the archive's graph)" in res.output
    assert not [w for w in recwarn if "torch" in w.filename], [str(w.message) for w in recwarn]  # no torch internals
    m = Manifest.load(tmp_path / "exp")
    assert m.source["reference"] == "model.ts" and m.passed("model.onnx") and m.passed("model.ts")
    res = cli("parity", tmp_path / "exp", "--images", IMAGES, "--limit", "3")
    assert res.exit_code == 0 and "your model as a TorchScript archive (model.ts" in res.output, res.output


def test_everything_downstream_works_on_your_model(tmp_path):
    """OpenVINO IR and both INT8 variants, a uint8-input copy, auto, tiles, bench, the HTML report and the
    Triton repository, on an nn.Module of your own, as on segrt's U-Net."""
    import segrt
    from segrt.options import QuantizeOptions

    pytest.importorskip("openvino")
    out = tmp_path / "exp"
    segrt.run_export(tutorial_model(), out, classes=["background", "pet", "border"], mean=[0.485, 0.456, 0.406],
                     std=[0.229, 0.224, 0.225], size=[64, 64], size_multiple=4, formats=("onnx", "openvino"),
                     quantize=("int8",), quantize_options=QuantizeOptions(calib_images=IMAGES, gate=0.8),
                     uint8_input=True, progress=lambda m: None)
    m = Manifest.load(out)
    assert m.passed("model.int8.onnx") and m.passed("model.int8.xml") and m.source["reference"] == "model.pt2"
    assert any(a.extra.get("input_dtype") == "uint8" for a in m.artifacts)
    res = cli("predict", IMAGES, "--model", out, "--provider", "auto", "--out", tmp_path / "auto", "--quiet", "--json")
    assert res.exit_code == 0 and "provider auto ->" in res.output, res.output
    res = cli("predict", IMAGES, "--model", out, "--tile", "64", "--out", tmp_path / "tiles", "--quiet")
    assert res.exit_code == 0 and len(list((tmp_path / "tiles").glob("*.color.png"))) == len(list(IMAGES.iterdir()))
    res = cli("bench", out, "--runs", "1", "--warmup", "0", "--sizes", "64", "--batch-sizes", "1", "--provider", "cpu",
              "--json", tmp_path / "b.json")
    assert res.exit_code == 0, res.output
    benched = {r["artifact"] for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert {"model.onnx", "model.int8.onnx", "model.xml", "model.int8.xml"} <= benched
    res = cli("parity", out, "--images", IMAGES, "--limit", "8", "--report", tmp_path / "r.html")
    assert res.exit_code == 0 and "model.int8.xml" in (tmp_path / "r.html").read_text(), res.output
    res = cli("triton-repo", out, "--out", tmp_path / "repo", "--name", "mine")
    assert res.exit_code == 0 and (tmp_path / "repo" / "mine" / "config.pbtxt").is_file(), res.output
