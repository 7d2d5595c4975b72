"""--provider auto's choice among gated CPU variants, on manifests built in the test (no files)."""

import pytest

from segrt.cpuinfo import cpu_info
from segrt.errors import SegrtError
from segrt.manifest import Artifact, Manifest
from segrt.records import GateRecord, Gates, SpeedRecord
from segrt.runtime.select import candidates, choose_cpu_variant


def manifest(*arts, passed=True):
    m = Manifest(name="m", classes=["a", "b"], mean=[0.5] * 3, std=[0.25] * 3, channels=3, size_multiple=8,
                 input_size=[64, 64])
    m.artifacts = list(arts)
    m.parity = {a.name: GateRecord(passed=passed, mask_iou=0.99, gates=Gates(0.98)) for a in arts}
    return m


FP32, INT8 = Artifact(file="m.onnx", kind="onnx"), Artifact(file="m.int8.onnx", kind="onnx", precision="int8")
FP16 = Artifact(file="m.fp16.onnx", kind="onnx", precision="fp16")


def test_without_speeds_int8_comes_first_and_says_why():
    art, note = choose_cpu_variant(manifest(FP32, INT8))
    assert art is INT8 and "no speeds measured on this CPU (none recorded)" in note
    assert "gate: mask IoU 0.9900 >= 0.98" in note


def test_speeds_on_this_cpu_pick_the_fastest():
    m = manifest(FP32, INT8)
    m.speed = SpeedRecord(cpu=cpu_info(), input=[1, 3, 64, 64], ms_per_image={"m.onnx": 5.0, "m.int8.onnx": 9.0})
    art, note = choose_cpu_variant(m)
    assert art is FP32 and "5.0 ms/image at 64x64" in note and "others: m.int8.onnx 9.0" in note


def test_speeds_from_another_cpu_are_not_trusted():
    m = manifest(FP32, INT8)
    m.speed = SpeedRecord(cpu={"model": "Elsewhere 9000", "isa": [], "cores": 64}, input=[1, 3, 64, 64],
                          ms_per_image={"m.onnx": 1.0, "m.int8.onnx": 9.0})
    art, note = choose_cpu_variant(m)
    assert art is INT8 and "measured on Elsewhere 9000" in note


def test_ungated_fp16_and_missing_variants_are_skipped_with_reasons(tmp_path):
    m = manifest(FP32, INT8, FP16)
    m.parity[INT8.name].passed = False
    ok, skipped = candidates(m)
    assert ok == [FP32] and "m.int8.onnx (no passed gate recorded)" in skipped
    assert any(s.startswith("m.fp16.onnx (fp16 is for GPUs") for s in skipped)
    ok, skipped = candidates(m, folder=tmp_path)  # an empty copy: nothing is here
    assert not ok and "m.onnx (not in this copy: m.onnx missing)" in skipped
    with pytest.raises(SegrtError, match="has no gated variant that can run on this CPU"):
        choose_cpu_variant(m, folder=tmp_path)


def test_a_precision_narrows_the_choice():
    art, _ = choose_cpu_variant(manifest(FP32, INT8), precision="fp32")
    assert art is FP32
    with pytest.raises(SegrtError, match="no gated bf16 variant"):
        choose_cpu_variant(manifest(FP32, INT8), precision="bf16")
