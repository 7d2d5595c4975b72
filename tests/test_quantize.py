import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import PETS

from segrt.cli import main
from segrt.manifest import Manifest
from segrt.options import QuantizeOptions
from segrt.runtime.session import Session
from segrt.verify.imagesets import split_paths

pytestmark = pytest.mark.slow


@pytest.fixture
def export_copy(exported, tmp_path):
    dst = tmp_path / "exp"
    shutil.copytree(exported, dst)
    return dst


def quantize(folder, *args):
    return CliRunner().invoke(main, ["quantize", str(folder), "--calib-images", str(PETS / "images"), *args])


def test_int8_runs_and_is_listed_with_gate_numbers(export_copy):
    res = quantize(export_copy, "--quant-gate", "0.9")
    assert res.exit_code == 0, res.output
    n_calib = len(split_paths(QuantizeOptions(calib_images=PETS / "images"))[0])  # the 80% the gate does not hold out
    assert f"only {n_calib} calibration images" in res.output  # fewer than ~100: warned
    m = Manifest.load(export_copy)
    art = m.artifact("onnx", "int8")
    assert art.extra["calibration"] == {"method": "minmax", "count": n_calib}
    assert art.extra["ms_per_image"]["int8"] > 0 and "excluded_nodes" in art.extra
    gate = m.parity["model.int8.onnx"]
    assert gate.passed and gate.mask_iou >= 0.9 and gate.gates.mask_iou_min == 0.9 and gate.reference == "eager"
    m.verify(export_copy)
    model = onnx.load(str(export_copy / "model.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert not any(n.op_type == "ConvTranspose" for n in model.graph.node)  # rewritten: INT8 end to end
    ups = m.model_config["depth"]  # one 2x2/2 ConvTranspose per decoder level
    assert art.extra["rewrites"] == {"ConvTranspose -> Conv 1x1 + pixel shuffle": ups,
                                     "1x1 Conv head -> MatMul, float logits": 1}
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer["logits"].op_type == "Add" and producer[producer["logits"].input[0]].op_type == "Transpose"  # float logits
    assert json.loads({p.key: p.value for p in model.metadata_props}["segrt.classes"])[1] == "pet"
    s = Session(export_copy, precision="int8", provider="cpu")
    out = s.run(np.zeros((2, 3, 64, 96), np.float32))
    assert out.shape == (2, 3, 64, 96)
    res = CliRunner().invoke(main, ["predict", str(PETS / "images" / "Bengal_133.jpg"), "--model", str(export_copy),
                                    "--precision", "int8", "--out", str(export_copy.parent / "p"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["precision"] == "int8"


def test_impossible_gate_fails_with_best_result_and_fallback(export_copy):
    res = quantize(export_copy, "--quant-gate", "1.0")
    assert res.exit_code == 1
    assert "INT8 gate failed: best mask IoU agreement" in res.output
    assert "scanning" in res.output and "node(s) kept fp32: node" in res.output  # the fallback excluded nodes
    assert not (export_copy / "model.int8.onnx").exists()
    Manifest.load(export_copy).verify(export_copy)  # export untouched


def test_fallback_passes_a_gate_that_full_int8_misses(export_copy):
    """Find a gate between full INT8 and the best fallback result; the fallback must then pass it."""
    from segrt.errors import GateFailed
    from segrt.options import QuantizeOptions
    from segrt.quantize.ort import quantize_int8

    opts = QuantizeOptions(calib_images=PETS / "images", gate=1.0)
    with pytest.raises(GateFailed) as info:
        quantize_int8(export_copy, opts, log=lambda m: None)
    search = info.value.report["search"]
    full, better = search[0]["mask_iou"], max(s["mask_iou"] for s in search[1:])
    if better <= full:
        pytest.fail(f"no exclusion improved on full INT8 ({full}) in {search}")
    opts.gate = better
    art = quantize_int8(export_copy, opts, log=lambda m: None)
    assert 1 <= len(art.extra["excluded_nodes"]) and Manifest.load(export_copy).parity[art.file].mask_iou >= better


def test_fp16_gated_and_runs(export_copy):
    res = CliRunner().invoke(main, ["quantize", str(export_copy), "--precision", "fp16"])
    assert res.exit_code == 0, res.output
    m = Manifest.load(export_copy)
    assert m.parity["model.fp16.onnx"].mask_iou >= 0.995
    s = Session(export_copy, precision="fp16", provider="cpu")
    assert s.run(np.zeros((1, 3, 64, 64), np.float32)).dtype == np.float32  # I/O kept fp32


def test_bad_calibration_inputs(export_copy, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(main, ["quantize", str(export_copy), "--calib-images", str(empty)])
    assert res.exit_code == 2 and "no images found for calibration" in res.output
    res = CliRunner().invoke(main, ["quantize", str(export_copy)])
    assert res.exit_code == 2 and "--calib-images" in res.output
    bad = tmp_path / "bad"
    shutil.copytree(PETS / "images", bad)
    (bad / "Bengal_133.jpg").write_bytes(b"broken")
    res = CliRunner().invoke(main, ["quantize", str(export_copy), "--calib-images", str(bad)])
    assert res.exit_code == 2 and "Bengal_133.jpg" in res.output and "image unusable" in res.output
    m = Manifest.load(export_copy)  # mismatched channels: metadata says 1, the model takes 3
    m.channels, m.mean, m.std = 1, [0.5], [0.25]
    m.save(export_copy)
    res = CliRunner().invoke(main, ["quantize", str(export_copy), "--calib-images", str(PETS / "images")])
    assert res.exit_code == 2 and "3 input channels" in res.output


def test_export_with_quantize_and_parity_on_real_images(tiny_ckpt, tmp_path):
    out = tmp_path / "q"
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(out), "--formats", "onnx",
                                    "--quantize", "int8", "--quantize", "fp16", "--calib-images",
                                    str(PETS / "images"), "--quant-gate", "0.9"])
    assert res.exit_code == 0, res.output
    assert "INT8 (QDQ) is for CPUs" in res.output and "model.int8.onnx" in res.output
    res = CliRunner().invoke(main, ["parity", str(out), "--images", str(PETS / "images")])
    assert res.exit_code == 0, res.output  # a failed gate would exit 1
    assert "model.int8.onnx" in res.output and "model.fp16.onnx" in res.output and "all gates passed" in res.output


def test_entropy_calibration_clips_ranges(exported, tmp_path):
    """ORT's entropy defaults (128 bins = 128 quantized bins) reproduce minmax; ours must not."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, load_tensors_data

    from segrt.imaging.decode import read_model_input
    from segrt.imaging.files import list_images
    from segrt.quantize.ort import _Reader, entropy_ranges

    m = Manifest.load(exported)
    calib = [read_model_input(p, m)[0] for p in list_images(PETS / "images")[:8]]
    model = exported / m.artifact("onnx", "fp32").file
    entropy_ranges(model, calib, m.input_name, tmp_path / "entropy.json")
    entropy = load_tensors_data(tmp_path / "entropy.json").data
    minmax = create_calibrator(model, augmented_model_path=str(tmp_path / "aug.onnx"), calibrate_method=CalibrationMethod.MinMax)
    minmax.collect_data(_Reader(calib, m.input_name))
    minmax = minmax.compute_data().data
    def width(t):
        return float(np.ptp(np.concatenate([np.ravel(v) for v in t.range_value])))

    clipped = [k for k, t in entropy.items() if width(t) < 0.9 * width(minmax[k])]
    assert set(entropy) == set(minmax) and clipped  # some activation ranges are clipped by entropy


def test_a_failed_int8_keeps_the_fp32_export_and_a_rerun_decides_from_its_record(tiny_ckpt, tmp_path):
    """export --quantize int8 below its gate: minmax, then percentile calibration (no --calib-method); the
    fp32 export is written, the failure recorded (manifest, parity.html), exit 1; quantize with a lower
    --quant-gate reuses the searches instead of repeating them."""
    out = tmp_path / "exp"
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(out), "--formats", "onnx", "--quantize",
                                    "int8", "--calib-images", str(PETS / "images"), "--quant-gate", "0.99999"])
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert errors[-1].startswith("error: INT8 gate failed") and f"{out} was written without model.int8.onnx" in errors[-1]
    assert "minmax calibration misses the gate (best mask IoU" in res.output and "trying percentile" in res.output
    assert "try --calib-method entropy," in errors[-1]  # the method not tried
    m = Manifest.load(out)
    assert m.artifact("onnx", "fp32") and not (out / "model.int8.onnx").exists()
    failed = m.parity["model.int8.onnx"]
    assert not failed.passed and failed.measures["written"] is False and "INT8 gate failed" in failed.measures["reason"]
    searches = {t["key"]["method"]: t["results"] for t in [failed.measures["tried"], *failed.measures["tried_also"]]}
    assert set(searches) == {"minmax", "percentile"} and failed.mask_iou in [r["mask_iou"] for r in
                                                                            failed.measures["tried"]["results"]]
    assert "failed its gate, not written" in (out / "parity.html").read_text()
    Session(out, provider="auto")  # the export runs: the failed variant is not a candidate
    tried = searches["minmax"]
    res = quantize(out, "--quant-gate", str(round(tried[0]["mask_iou"] - 0.01, 4)))
    assert res.exit_code == 0, res.output
    assert f"reusing the last search's {len(tried)} measurement(s)" in res.output
    assert "scanning" not in res.output and res.output.count("all nodes int8") == 1
    m = Manifest.load(out)
    assert m.passed("model.int8.onnx") and (out / "model.int8.onnx").is_file()
    before = (out / "model.int8.onnx").read_bytes()
    res = quantize(out, "--quant-gate", "0.99999", "--calib-method", "minmax")  # a failed retry keeps what passed
    assert res.exit_code == 1 and "the earlier model.int8.onnx, which passed its gate at" in res.output, res.output
    assert "trying percentile" not in res.output  # an explicit method is the only one tried
    assert Manifest.load(out).passed("model.int8.onnx") and (out / "model.int8.onnx").read_bytes() == before


def test_gate_masks_with_values_of_no_class_are_said_once(export_copy, tmp_path):
    """--val-masks labelled otherwise (the trimap's values + 10): one line for all of them, not one per image."""
    from PIL import Image

    (tmp_path / "m").mkdir()
    for p in (PETS / "masks").iterdir():
        Image.fromarray(np.asarray(Image.open(p)) + 10).save(tmp_path / "m" / p.name)
    res = quantize(export_copy, "--quant-gate", "0.9", "--val-masks", str(tmp_path / "m"))
    assert res.exit_code == 0, res.output
    assert res.output.count("mask values 11, 12, 13 are no class id of this export") == 1, res.output
