"""The HTML parity report: every artifact, every worst image, decodable embedded images, nothing
fetched from outside; quantize writes it into the export and the manifest names it."""

import base64
import io
import json
import re
import shutil

import pytest
from click.testing import CliRunner
from conftest import PETS
from PIL import Image

from segrt.cli import main
from segrt.manifest import Manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    """The tiny export plus a gated INT8 variant (and its parity.html)."""
    out = tmp_path_factory.mktemp("rep") / "exp"
    shutil.copytree(exported, out)
    res = CliRunner().invoke(main, ["quantize", str(out), "--calib-images", str(PETS / "images"), "--quant-gate", "0.9"])
    assert res.exit_code == 0, res.output
    return out


def images_in(page: str) -> list[Image.Image]:
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def test_report_structure(quantized, tmp_path):
    res = CliRunner().invoke(main, ["bench", str(quantized), "--runs", "1", "--warmup", "0", "--sizes", "64",
                                    "--batch-sizes", "1", "--provider", "cpu", "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["parity", str(quantized), "--images", str(PETS / "images"), "--masks",
                                    str(PETS / "masks"), "--report", str(tmp_path / "r.html"), "--worst", "3",
                                    "--bench", str(tmp_path / "b.json"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    report = json.loads((tmp_path / "r.json").read_text())
    assert "visuals" not in report  # the JSON stays the plain machine-readable form
    for name in report["artifacts"]:
        assert f'<h2 id="{name}">' in page
    worst = report["artifacts"]["model.int8.onnx"]["per_image"][:3]
    for row in worst:
        assert f"<b>{row['input']}</b>: mask IoU {row['mask_iou']:.4f}" in page
    figures = page.count("<figure>")
    assert figures == 3  # only the non-fp32 artifact shows its worst images
    decoded = images_in(page)
    assert len(decoded) == 4 * figures and all(im.size == (64, 64) for im in decoded)
    assert not re.search(r"(?:src|href)=[\"'](?:https?:)?//", page) and "<script" not in page
    assert page.count("<svg") == len(report["artifacts"])  # one agreement histogram per artifact
    assert "mIoU vs ground truth (eager)" in page and "speed (p50, batch 1)" in page and "IoU agreement: border" in page
    from segrt.cpuinfo import cpu_info

    assert "PASS" in page and cpu_info()["model"] in page


def test_quantize_writes_the_gate_report(quantized):
    m = Manifest.load(quantized)
    assert m.report == "parity.html"
    page = (quantized / "parity.html").read_text()
    assert '<h2 id="model.int8.onnx">' in page and "reference: eager" in page and "all gates passed" in page
    held_out = m.parity["model.int8.onnx"].inputs  # the 20% of the 32 photos the INT8 gate held out
    assert page.count("<figure>") == min(8, held_out) and len(images_in(page)) == 4 * min(8, held_out)
