"""Parity covers preprocessing (issue 34, item 8): the reference reads photos as training did, the
served side as predict does; reduced-scale JPEG decoding is kept only where the export measured that
it holds the gate on the photos it changes, counts toward every gate, and can be turned off."""

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import ROOT
from PIL import Image
from torch import nn
from torch.nn import functional as F

import segrt
from segrt.cli import main
from segrt.manifest import Manifest
from segrt.options import QuantizeOptions
from segrt.verify.parity import run_parity

pytestmark = pytest.mark.slow
PHOTOS = ROOT / "examples" / "images"  # full-size photos: at 64x64 every one decodes at reduced scale


class Brightness(nn.Module):
    """Bright against dark, smoothed: masks that barely move with fine detail."""

    def forward(self, x):
        gray = F.avg_pool2d(x.mean(1, keepdim=True), 5, stride=1, padding=2)
        return torch.cat([gray, torch.zeros_like(gray)], dim=1)


def texture():
    sys.path.insert(0, str(ROOT / "tests" / "data" / "own"))
    try:
        from texture import Texture  # masks that move with fine detail
    finally:
        sys.path.pop(0)
    return Texture().eval()


def export(model, out, lines, classes, **kw):
    return segrt.run_export(model, out, classes=classes, mean=[0.5] * 3, std=[0.25] * 3, size=[64, 64],
                            size_multiple=4, formats=("onnx",), progress=lines.append, **kw)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """An export whose held-out photos keep its (lowered) gate under reduced-scale decoding."""
    out, lines = tmp_path_factory.mktemp("dec") / "smooth", []
    opts = QuantizeOptions(val_images=PHOTOS)
    export(Brightness().eval(), out, lines, ["dark", "bright"], gate_iou=0.95, quantize_options=opts)
    return out, lines


def test_reduced_scale_decoding_is_kept_only_where_it_holds_the_gate(reduced, tmp_path):
    out, lines = reduced
    m = Manifest.load(out)
    assert m.decode == "reduced" and m.decode_check["decoded_differently"] == 8 and m.decode_check["passed"]
    assert 0.95 <= m.decode_check["mask_iou"] < 1.0
    assert any("decoded at reduced scale: on the 8 of 8 photos it changes" in line for line in lines), lines
    strict = []  # fine detail at the default fp32 gate: refused, said, and recorded
    export(texture(), tmp_path / "t", strict, ["a", "b", "c"], quantize_options=QuantizeOptions(val_images=PHOTOS))
    m = Manifest.load(tmp_path / "t")
    assert m.decode == "full" and not m.decode_check["passed"] and m.decode_check["mask_iou"] < 0.999
    assert any(line.startswith("JPEGs are decoded in full: reduced-scale decoding fails the gate") for line in strict)
    off, none = [], []
    export(Brightness().eval(), tmp_path / "off", off, ["dark", "bright"], gate_iou=0.95, full_decode=True,
           quantize_options=QuantizeOptions(val_images=PHOTOS))
    export(Brightness().eval(), tmp_path / "none", none, ["dark", "bright"])  # nothing to measure on
    assert Manifest.load(tmp_path / "off").decode == "full" and "JPEGs are decoded in full (--full-decode)" in off
    assert Manifest.load(tmp_path / "none").decode == "full"
    assert any("no held-out images to measure reduced-scale decoding on" in line for line in none)


def test_parity_counts_the_decoding_difference_and_says_which_decoder(reduced, tmp_path):
    out, _ = reduced
    report = run_parity(out, images=PHOTOS, report_path=tmp_path / "r.html")  # the gate it was made under: 0.95
    d, s = report["decoding"], report["artifacts"]["model.onnx"]["summary"]
    assert d["decoded_differently"] == 8 and d["inputs"] == 8 and "as training read them" in d["reference"]
    assert d["served"].startswith("reduced-scale") and d["reference_agreement"]["mask_iou"] < 1.0
    assert s["mask_iou"] == pytest.approx(d["reference_agreement"]["mask_iou"])  # end to end: decoding counts
    assert s["max_abs_logit_diff"] < 1e-3  # numerics on the same pixels
    assert "8 of 8 image(s) read differently" in (tmp_path / "r.html").read_text()
    assert report["passed"] and report["artifacts"]["model.onnx"]["summary"]["gates"]["mask_iou_min"] == 0.95
    strict = run_parity(out, images=PHOTOS, gate_iou=0.999)  # the default fp32 gate: the decoding difference fails it
    assert not strict["passed"] and any("model.onnx: mask IoU agreement" in f for f in strict["failures"])
    full = run_parity(out, images=PHOTOS, full_decode=True)
    assert full["passed"] and full["decoding"]["decoded_differently"] == 0
    assert full["artifacts"]["model.onnx"]["summary"]["mask_iou"] == 1.0


def test_predict_says_it_and_full_decode_turns_it_off(reduced, tmp_path):
    out, _ = reduced
    runner = CliRunner()
    res = runner.invoke(main, ["predict", str(PHOTOS), "--model", str(out), "--out", str(tmp_path / "r"), "--quiet"])
    assert res.exit_code == 0 and "decoded at reduced scale (masks agree 0.9" in res.output, res.output
    res = runner.invoke(main, ["predict", str(PHOTOS), "--model", str(out), "--out", str(tmp_path / "f"), "--quiet",
                               "--full-decode"])
    assert res.exit_code == 0 and "reduced scale" not in res.output, res.output
    mine = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / "f").glob("*.png") if ".color" not in p.name}
    model, changed = Brightness().eval(), 0
    for photo in sorted(PHOTOS.iterdir()):  # --full-decode: exactly what the model gives on fully decoded photos
        img = Image.open(photo).convert("RGB")
        x = (np.asarray(img.resize((64, 64), Image.BILINEAR), np.float32) / 255 - 0.5) / 0.25
        with torch.inference_mode():
            logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
        want = F.interpolate(logits, size=img.size[::-1], mode="bilinear").argmax(1)[0].numpy()
        got = mine[photo.stem + ".png"]
        assert (got == want).mean() > 0.999
        changed += not np.array_equal(got, np.asarray(Image.open(tmp_path / "r" / (photo.stem + ".png"))))
    assert changed  # and the default (reduced) read some of them differently


def test_verify_measures_decoding_for_an_older_export(reduced, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(reduced[0], old)
    raw = json.loads((old / "manifest.json").read_text())
    raw["input"].pop("decode"), raw["input"].pop("decode_check")
    (old / "manifest.json").write_text(json.dumps(raw))
    assert Manifest.load(old).decode == "full"  # an older export is read in full until measured
    res = CliRunner().invoke(main, ["verify", str(old), "--decode-images", str(PHOTOS)])
    assert "on the 8 of 8 photos it changes" in res.output, res.output
    assert Manifest.load(old).decode_check["decoded_differently"] == 8
