"""Gates that hold here (segrt.runtime.here): a reduced-precision variant gated on another CPU is
re-checked on the export's gate sample, the verdict cached per (artifact, CPU, runtime version);
auto never picks one that fails, an explicit one is refused; speeds are measured once. On synthetic
1x1-conv exports: an "int8" variant that is the fp32 model itself, and one whose classes are swapped."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image
from synthetic import conv_onnx, tiny_export

from segrt import cpuinfo
from segrt.errors import SegrtError
from segrt.manifest import Artifact, Manifest
from segrt.records import GateRecord, Gates
from segrt.runtime import here
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.select import cannot_run_here, choose_cpu_variant
from segrt.runtime.session import Session
from segrt.verify.sample import write_sample

CLASSES = ("background", "cat", "dog")


def _variant(folder, name, swap: bool):
    """model.onnx's weights as an 'int8' variant; ``swap``: classes 1 and 2 exchanged (fails any gate)."""
    model = onnx.load(str(folder / "model.onnx"))
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    if swap:
        w[[1, 2]] = w[[2, 1]]
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    onnx.save(model, str(folder / name))
    return Artifact(file=name, kind="onnx", precision="int8")


@pytest.fixture
def export(tmp_path, monkeypatch):
    """fp32 + good.int8.onnx + bad.int8.onnx, both 'gated' elsewhere (no measured_on), with a gate sample."""
    monkeypatch.setenv("SEGRT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tiny_export(tmp_path / "exp", classes=CLASSES)
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    m = Manifest.load(folder)
    for name, swap in (("good.int8.onnx", False), ("bad.int8.onnx", True)):
        m.add_artifact(folder, _variant(folder, name, swap))
        m.parity[name] = GateRecord(passed=True, mask_iou=0.995, gates=Gates(0.99))
    m.parity["model.onnx"] = GateRecord(passed=True, mask_iou=1.0, gates=Gates(0.999))
    m.save(folder)
    write_sample(folder, sorted(photos.iterdir()), str(photos), log=lambda s: None)
    m = Manifest.load(folder)  # as if bad.int8.onnx had agreed where the sample was made: this CPU differs
    m.gate_sample["agreement"]["bad.int8.onnx"] = 1.0
    m.save(folder)
    return folder


def _check(folder, name, log=lambda s: None):
    m = Manifest.load(folder)
    return here.check_here(folder, m, m.find(name), log)


def test_the_sample_is_listed_hashed_and_recorded_with_each_variants_agreement(export):
    m = Manifest.load(export)
    pixels, masks = here.load_sample(export, m)
    assert pixels.shape == (5, 3, 32, 32) and pixels.dtype == np.uint8 and masks.shape == (5, 32, 32)
    assert m.gate_sample["images"] == 5 and m.gate_sample["agreement"]["good.int8.onnx"] == 1.0
    assert m.gate_sample["measured_on"]["isa_class"] == cpuinfo.isa_class()
    (export / "gate_sample.npz").write_bytes(b"changed")
    with pytest.raises(SegrtError, match="gate_sample.npz: sha256 does not match"):
        here.load_sample(export, m)


def test_a_miss_checks_and_caches_then_a_hit_does_not_run(export, monkeypatch):
    first = _check(export, "bad.int8.onnx")
    assert not first.passed and not first.cached and "mask IoU agreement" in first.problems[0]
    assert "agrees only" in first.line() and "< gate 0.99" in first.line()
    monkeypatch.setattr(here, "open_variant", lambda *a: pytest.fail("a cached verdict ran the model"))
    again = _check(export, "bad.int8.onnx")
    assert again.cached and again.mask_iou == first.mask_iou and not again.passed


def test_another_runtime_version_or_isa_class_is_a_miss(export, monkeypatch):
    monkeypatch.setenv(cpuinfo.SIMULATE_ENV, "avx2")
    assert not _check(export, "good.int8.onnx").cached
    versions = here._runtime_versions()
    monkeypatch.setattr(here, "_runtime_versions", lambda: {**versions, "onnxruntime": "0.0.1"})
    assert not _check(export, "good.int8.onnx").cached
    monkeypatch.setattr(here, "_runtime_versions", lambda: versions)
    assert _check(export, "good.int8.onnx").cached
    monkeypatch.setenv(cpuinfo.SIMULATE_ENV, "none")  # no SIMD flags at all: another ISA class
    verdict = _check(export, "good.int8.onnx")
    assert not verdict.cached and verdict.passed and verdict.key["isa_class"] == "baseline"


def test_a_gate_measured_on_this_isa_class_and_runtime_is_trusted(export):
    m = Manifest.load(export)
    m.parity["bad.int8.onnx"].measured_on = here.signature()
    m.save(export)
    assert _check(export, "bad.int8.onnx") is None


def test_a_corrupt_cache_file_is_a_miss(export):
    verdict = _check(export, "good.int8.onnx")
    path = here._cache_file("verdicts", verdict.key)
    path.write_text("{not json")
    said = []
    again = _check(export, "good.int8.onnx", said.append)
    assert not again.cached and again.passed and "unreadable cache file" in said[0]
    assert json.loads(path.read_text())["mask_iou"] == again.mask_iou  # stored again


def test_the_export_is_only_read(export):
    before = {p.name: p.stat().st_mtime_ns for p in export.iterdir()}
    os.chmod(export, 0o555)
    try:
        assert not _check(export, "bad.int8.onnx").passed
        choose_cpu_variant(Manifest.load(export), folder=export)
    finally:
        os.chmod(export, 0o755)
    assert {p.name: p.stat().st_mtime_ns for p in export.iterdir()} == before


def test_auto_never_picks_a_variant_that_fails_here_and_says_why(export):
    m = Manifest.load(export)
    m.parity["good.int8.onnx"].passed = False  # leave fp32 and the failing one
    m.save(export)
    art, note = choose_cpu_variant(Manifest.load(export), folder=export, measure=False)
    assert art.name == "model.onnx"
    assert "bad.int8.onnx agrees only" in note and "not used" in note and "re-checked bad.int8.onnx" in note


def test_an_explicit_variant_failing_here_is_refused_unless_allowed(export):
    with pytest.raises(SegrtError, match=r"bad.int8.onnx agrees only .*: refused; .*--allow-below-gate"):
        Session(export, artifact="bad.int8.onnx", provider="cpu", options=SessionOptions(gate_here=True))
    s = Session(export, artifact="bad.int8.onnx", provider="cpu",
                options=SessionOptions(gate_here=True, allow_below_gate=True))
    assert "running it anyway (--allow-below-gate)" in s.auto_note
    assert Session(export, artifact="bad.int8.onnx", provider="cpu").artifact.name == "bad.int8.onnx"  # parity, bench


def test_auto_measures_speeds_once_where_none_are_recorded_for_this_cpu(export):
    m = Manifest.load(export)
    m.parity["bad.int8.onnx"].passed = False
    m.save(export)
    _, note = choose_cpu_variant(Manifest.load(export), folder=export)
    assert "timed on this CPU now, once" in note and "others: " in note
    _, note = choose_cpu_variant(Manifest.load(export), folder=export)
    assert "timed on this CPU by an earlier run (cached)" in note
    _, note = choose_cpu_variant(Manifest.load(export), folder=export, measure=False)
    assert "default order int8 > fp32" in note


def test_a_simulated_avx2_cpu_has_no_bf16(monkeypatch):
    monkeypatch.setenv(cpuinfo.SIMULATE_ENV, "avx2")
    info = cpuinfo.cpu_info()
    assert info["isa"] in ([], ["avx2"]) and "(simulated" in info["model"]
    assert cpuinfo.isa_class() in ("avx2", "baseline") and not cpuinfo.has_bf16()
    bf16 = Artifact(file="model.xml", kind="openvino", precision="bf16", name="model.xml@bf16")
    why = cannot_run_here(bf16)
    assert why and ("no bf16" in why or "OpenVINO is not installed" in why)


def test_a_variant_with_no_sample_is_trusted_as_gated(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGRT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tiny_export(tmp_path / "exp")
    conv_onnx(folder / "m.int8.onnx")
    m = Manifest.load(folder)
    art = m.add_artifact(folder, Artifact(file="m.int8.onnx", kind="onnx", precision="int8"))
    m.parity[art.name] = GateRecord(passed=True, mask_iou=0.995, gates=Gates(0.99))
    assert here.check_here(folder, m, art) is None
