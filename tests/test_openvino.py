"""The OpenVINO backend on the tiny U-Net: IR export and its parity gate, NNCF INT8 behind the gate
and its fallback, bf16, provider choice (auto, explicit, missing), streaming predict, bench."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PETS, ROOT

from segrt.cli import main
from segrt.errors import GateFailed, ProviderError, SegrtError
from segrt.manifest import Manifest, sha256_file
from segrt.options import QuantizeOptions
from segrt.records import SpeedRecord
from segrt.runtime.session import Session

pytestmark = pytest.mark.slow
IMAGES = PETS / "images"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="session")
def ov_export(tiny_ckpt, tmp_path_factory):
    """onnx + OpenVINO IR, then gated OpenVINO INT8 (NNCF) and bf16 variants."""
    from segrt.quantize.openvino import gate_bf16, quantize_int8

    out = tmp_path_factory.mktemp("ov") / "tiny"
    res = cli("export", tiny_ckpt, "--out", out, "--formats", "onnx,openvino")
    assert res.exit_code == 0, res.output
    quantize_int8(out, QuantizeOptions(calib_images=IMAGES, gate=0.9, max_fp32_nodes=1.0), log=lambda m: None)
    gate_bf16(out, QuantizeOptions(val_images=IMAGES, gate=0.9), log=lambda m: None)
    return out


@pytest.fixture
def ov_copy(ov_export, tmp_path):
    shutil.copytree(ov_export, tmp_path / "exp")
    return tmp_path / "exp"


def test_ir_is_fp32_listed_with_its_bin_and_parity_gated(ov_export):
    import openvino as ov

    m = Manifest.load(ov_export)
    ir = m.artifact("openvino", "fp32")
    assert ir.file == "model.xml" and ir.companions["model.bin"]["sha256"] == sha256_file(ov_export / "model.bin")
    gate = m.parity["model.xml"]
    assert gate.passed and gate.max_abs_logit_diff <= 1e-3 and gate.mask_iou >= 0.999
    consts = [op for op in ov.Core().read_model(str(ov_export / "model.xml")).get_ordered_ops()
              if op.get_type_name() == "Constant" and op.get_output_size() and len(op.get_output_shape(0)) == 4]
    assert consts and all(op.get_element_type() == ov.Type.f32 for op in consts)  # weights not compressed to fp16
    m.verify(ov_export)


def test_tampered_bin_is_refused(ov_copy):
    data = bytearray((ov_copy / "model.bin").read_bytes())
    data[100] ^= 1
    (ov_copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(SegrtError, match="model.bin: sha256 does not match"):
        Manifest.load(ov_copy).verify(ov_copy)


def test_openvino_matches_eager_and_onnx_runtime(ov_export):
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    ort_out = Session(ov_export, provider="cpu", kind="onnx").run(x)
    from segrt.runtime.backends.base import SessionOptions

    # the gated OpenVINO variant auto would pick; the default order (no timing: 64x64 timings are noise)
    fastest = Session(ov_export, provider="openvino", options=SessionOptions(measure=False))
    assert fastest.artifact.name == "model.int8.xml" and fastest.auto_note.startswith("provider openvino -> model.int8")
    s = Session(ov_export, provider="openvino", precision="fp32")  # --precision pins one
    assert s.artifact.name == "model.xml" and s.provider == "openvino" and "precision f32" in s.describe()
    np.testing.assert_allclose(s.run(x), ort_out, atol=1e-4)
    futures = [s.submit(x[i:i + 1]) for i in range(2)]  # the async path gives the same logits
    np.testing.assert_allclose(np.concatenate([f.result() for f in futures]), ort_out, atol=1e-4)


def test_failed_request_is_an_error_not_a_hang(ov_export):
    from segrt.runtime.backends.base import SessionOptions

    s = Session(ov_export, provider="openvino", options=SessionOptions(throughput=True))
    bad = s.submit(np.zeros((1, 3, 65, 64), np.float32))  # not a multiple of 8: the skip concat fails
    good = s.submit(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(SegrtError, match="OpenVINO inference failed"):
        bad.result()
    assert good.result().shape == (1, 3, 64, 64) and good.span[0] <= good.span[1]


def test_bare_onnx_on_openvino(ov_export, tmp_path):
    shutil.copy(ov_export / "model.onnx", tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    s = Session(tmp_path / "m.onnx", provider="openvino")
    assert s.provider == "openvino" and s.kind == "onnx" and "OpenVINO" in s.describe()
    np.testing.assert_allclose(s.run(x), Session(tmp_path / "m.onnx", provider="cpu").run(x), atol=1e-4)


def test_int8_gated_and_recorded(ov_export):
    m = Manifest.load(ov_export)
    art = m.artifact("openvino", "int8")
    assert art.file == "model.int8.xml" and "model.int8.bin" in art.companions
    assert art.extra["inference_precision"] in ("f32", "bf16") and art.extra["measured_on"]["model"]
    assert art.extra["source"] == "model.onnx" and art.extra["search"][0]["method"] == "nncf.quantize defaults"
    gate = m.parity["model.int8.xml"]
    assert gate.passed and gate.mask_iou >= 0.9 and gate.gates.mask_iou_min == 0.9 and gate.reference == "eager"
    s = Session(ov_export, provider="openvino", precision="int8")
    assert s.run(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 3, 64, 64)


def test_int8_fallback_closes_a_gate_that_nncf_defaults_miss(ov_copy):
    """Find a gate above NNCF's defaults that the accuracy-control fallback reaches; it must pass."""
    from segrt.quantize.openvino import quantize_int8

    opts = QuantizeOptions(calib_images=IMAGES, gate=1.0, max_fp32_nodes=1.0)
    try:
        art = quantize_int8(ov_copy, opts, log=lambda m: None)
        search = art.extra["search"]
    except GateFailed as exc:
        search = exc.report["search"]
        Manifest.load(ov_copy).verify(ov_copy)  # the failed attempt left the export as it was
        opts.gate = search[-1]["mask_iou"]
        art = quantize_int8(ov_copy, opts, log=lambda m: None)
    defaults, fallback = art.extra["search"][0], art.extra["search"][-1]
    assert fallback["method"] == "nncf.quantize_with_accuracy_control" and fallback["excluded"]
    assert defaults["mask_iou"] < opts.gate <= Manifest.load(ov_copy).parity["model.int8.xml"].mask_iou
    assert search[-1]["mask_iou"] > search[0]["mask_iou"]


def test_int8_gate_failure_writes_nothing(ov_copy):
    (ov_copy / "model.int8.xml").unlink()
    (ov_copy / "model.int8.bin").unlink()
    m = Manifest.load(ov_copy)
    m.artifacts = [a for a in m.artifacts if a.name != "model.int8.xml"]
    m.save(ov_copy)
    res = cli("quantize", ov_copy, "--backend", "openvino", "--calib-images", IMAGES, "--quant-gate", "1.0")
    assert res.exit_code == 1 and "OpenVINO INT8 gate failed: best mask IoU agreement" in res.output
    assert not (ov_copy / "model.int8.xml").exists() and not (ov_copy / "model.int8.bin").exists()
    Manifest.load(ov_copy).verify(ov_copy)


def test_bf16_variant_or_clear_error(ov_export):
    from segrt.runtime.backends.openvino import cpu_capabilities

    m = Manifest.load(ov_export)
    if "BF16" not in cpu_capabilities():  # not run here: quantize skipped it (said), so the export has none
        assert m.find("model.xml@bf16") is None
        with pytest.raises(SegrtError, match="has no openvino bf16 artifact"):
            Session(ov_export, provider="openvino", precision="bf16")
        return
    art = m.find("model.xml@bf16")
    assert art.file == "model.xml" and art.precision == "bf16" and art.extra["measured_on"]["isa"] is not None
    assert m.parity["model.xml@bf16"].passed and m.artifact("openvino", "fp32").name == "model.xml"
    s = Session(ov_export, provider="openvino", precision="bf16")
    assert "precision bf16" in s.describe()
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert np.abs(s.run(x) - Session(ov_export, provider="openvino").run(x)).max() < 0.5


def test_bf16_needs_real_images_and_unknown_pairs_refused(ov_copy):
    from segrt.cpuinfo import has_bf16

    res = cli("quantize", ov_copy, "--backend", "openvino", "--precision", "bf16")
    if has_bf16():
        assert res.exit_code == 2 and "bf16 is gated on real photos" in res.output
    else:  # a CPU without bf16: not run here, one line, nothing added
        assert res.exit_code == 0 and "not run here: bf16 (this CPU has no bf16" in res.output
    res = cli("quantize", ov_copy, "--backend", "openvino", "--precision", "fp16")
    assert res.exit_code == 2 and "no fp16 variant for backend 'openvino'" in res.output
    res = cli("quantize", ov_copy, "--precision", "bf16")
    assert res.exit_code == 2 and "no bf16 variant for backend 'onnxruntime'" in res.output


def test_export_openvino_needs_onnx(tiny_ckpt, tmp_path):
    res = cli("export", tiny_ckpt, "--out", tmp_path / "x", "--formats", "openvino")
    assert res.exit_code == 2 and "use --formats onnx,openvino" in res.output and not (tmp_path / "x").exists()


def _with_speeds(folder, ms: dict, cpu=None):
    from segrt.cpuinfo import cpu_info

    m = Manifest.load(folder)
    m.speed = SpeedRecord(cpu=cpu or cpu_info(), input=[1, 3, 64, 64], ms_per_image=ms)
    m.save(folder)


def test_auto_picks_the_fastest_gated_variant_and_says_why(ov_copy):
    names = ("model.onnx", "model.xml", "model.int8.xml", "model.xml@bf16")
    _with_speeds(ov_copy, {n: 9.0 for n in names} | {"model.onnx": 1.0})
    s = Session(ov_copy, provider="auto")
    assert s.artifact.name == "model.onnx" and s.provider == "cpu"
    assert "the fastest gated variant, 1.0 ms/image" in s.auto_note and "(the export's speeds, measured on this CPU)" \
        in s.auto_note
    _with_speeds(ov_copy, {n: 9.0 for n in names} | {"model.int8.xml": 2.0})
    s = Session(ov_copy, provider="auto")
    assert s.artifact.name == "model.int8.xml" and s.provider == "openvino"
    assert s.auto_note.startswith("provider auto -> model.int8.xml (openvino int8; gate: mask IoU")
    m = Manifest.load(ov_copy)  # an ungated variant is never picked, however fast
    m.parity["model.int8.xml"].passed = False
    m.save(ov_copy)
    s = Session(ov_copy, provider="auto")
    assert s.artifact.name != "model.int8.xml" and "model.int8.xml (no passed gate recorded)" in s.auto_note
    s = Session(ov_copy, provider="auto", precision="fp32")  # a requested precision narrows the choice
    assert s.artifact.precision == "fp32"


def test_auto_on_another_cpu_measures_here_or_uses_the_default_order(ov_copy):
    from segrt.runtime.backends.base import SessionOptions

    _with_speeds(ov_copy, {"model.onnx": 1.0}, cpu={"model": "Some Other CPU", "isa": []})
    s = Session(ov_copy, provider="auto", options=SessionOptions(measure=False))  # predict --no-measure
    assert s.artifact.name == "model.int8.xml"  # int8 first, OpenVINO before ONNX Runtime
    assert "no speeds measured on this CPU (measured on Some Other CPU" in s.auto_note
    s = Session(ov_copy, provider="auto")  # timed here once, cached
    assert "ms/image at 64x64 (timed on this CPU now, once:" in s.auto_note and "others: " in s.auto_note
    assert "(timed on this CPU by an earlier run (cached)" in Session(ov_copy, provider="auto").auto_note  # + load, ties


def test_provider_errors_are_one_line(ov_export, tmp_path):
    with pytest.raises(ProviderError, match="OpenVINO artifacts run on provider openvino"):
        Session(ov_export, provider="cuda", kind="openvino")
    res = cli("predict", IMAGES / "Bengal_133.jpg", "--model", ov_export, "--provider", "openvino", "--precision",
              "fp16", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "has no openvino fp16 artifact" in res.output


def test_without_openvino_installed(ov_export, tmp_path, tiny_ckpt):
    """Block the openvino import: auto skips its variants and says so; asking for it names the extra."""
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from segrt.cli import main\n"
            "sys.argv = ['segrt'] + sys.argv[1:]\n"
            "main()\n")
    run = lambda *a: subprocess.run([sys.executable, "-c", code, *map(str, a)], capture_output=True, text=True,
                                    cwd=ROOT, timeout=300)
    res = run("predict", IMAGES / "Bengal_133.jpg", "--model", ov_export, "--out", tmp_path / "a", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["kind"] == "onnx" and "OpenVINO is not installed" in res.stderr
    res = run("predict", IMAGES / "Bengal_133.jpg", "--model", ov_export, "--provider", "openvino", "--out",
              tmp_path / "b")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "OpenVINO is not installed; pip install 'segrt[openvino]'" in res.stderr
    res = run("export", tiny_ckpt, "--out", tmp_path / "c", "--formats", "onnx,openvino")
    assert res.returncode == 2 and "pip install 'segrt[openvino]'" in res.stderr and "Traceback" not in res.stderr


def test_predict_streams_through_openvino_without_torch(ov_export, tmp_path):
    """Several requests in flight, outputs identical to one-at-a-time runs, torch never imported."""
    from PIL import Image

    from segrt.imaging import decode, masks

    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from segrt.predict.options import PredictOptions\nfrom segrt.predict.run import run_predict\n"
            f"s = run_predict([{str(IMAGES)!r}], {str(ov_export)!r}, provider='openvino', precision='int8', "
            f"log=lambda m: None, opts=PredictOptions(out={str(tmp_path / 'o')!r}, "
            "batch_size=2, progress=False))\n"
            "print(json.dumps(s))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["provider"] == "openvino" and summary["written"] == 32 and "in flight" in summary["runtime"]
    assert re.search(r"\d+ streams? x \d+ threads?$", summary["runtime"])  # how the engine shares the cores
    t = summary["timings_s"]
    assert 0 < t["inference"] <= t["wall"] and t["wait_inference"] >= 0 and t["wait_decode"] >= 0
    s = Session(ov_export, provider="openvino", precision="int8")
    for name in ("Bengal_133", "Abyssinian_5"):
        src = next(IMAGES.glob(f"{name}.*"))
        x, geo = decode.read_model_input(src, s.manifest)
        assert (np.array(Image.open(tmp_path / "o" / f"{name}.png")) == masks.to_mask(s.run(x[None])[0], geo)).all()


def test_bench_and_parity_cover_openvino(ov_export, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGRT_CACHE_DIR", str(tmp_path / "cache"))
    res = cli("bench", ov_export, "--runs", "2", "--warmup", "1", "--sizes", "64", "--batch-sizes", "1",
              "--provider", "openvino", "--json", tmp_path / "b.json")
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert {r["artifact"] for r in rows} >= {"model.xml", "model.int8.xml"}
    assert all(r["provider"] == "openvino" and r["open_ms"] > 0 for r in rows)
    assert any((tmp_path / "cache" / "openvino").iterdir())  # compiled models cached for the next start
    machine = json.loads((tmp_path / "b.json").read_text())["machine"]
    assert machine["cpu"]["model"] and "openvino" in machine
    res = cli("parity", ov_export, "--images", IMAGES, "--json", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert {"model.xml", "model.int8.xml"} <= set(report["artifacts"])
    assert report["artifacts"]["model.xml"]["summary"]["provider"] == "openvino"
    res = cli("parity", ov_export)  # random inputs: reduced-precision variants are gated on real photos
    assert res.exit_code == 0 and "skipped model.int8.xml: int8 is gated on real images" in res.output
