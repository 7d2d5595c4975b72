"""The typed records a manifest carries (gate, speed, quality): one shape each when written, and
manifests written before them still load."""

import json
from pathlib import Path

import pytest

from segrt.errors import SegrtError
from segrt.manifest import Manifest
from segrt.records import GateRecord, Gates, QualityRecord, SpeedRecord

DATA = Path(__file__).parent / "data"
TODAY = DATA / "manifest-2026-12-01.json"  # exported/pets/manifest.json as of the day the records got types


def load(d: dict) -> Manifest:
    return Manifest.from_json(d, "test manifest")


def test_todays_manifest_loads_typed():
    raw = json.loads(TODAY.read_text())
    m = load(raw)
    assert set(m.parity) == set(raw["parity"]) and all(isinstance(g, GateRecord) for g in m.parity.values())
    fp32, int8 = m.parity["model.onnx"], m.parity["model.int8.onnx"]
    assert fp32.gates == Gates(0.999, 0.001) and fp32.passed and fp32.measures["batch_invariance"]["same_mask"]
    assert int8.gates == Gates(raw["parity"]["model.int8.onnx"]["mask_iou_min"]) and int8.reference
    assert int8.measures["worst"] == raw["parity"]["model.int8.onnx"]["worst"]
    assert isinstance(m.speed, SpeedRecord) and m.speed.ms_per_image == raw["speed"]["ms_per_image"]
    assert isinstance(m.quality["val-split"], QualityRecord) and m.quality["val-split"].images == 90


def test_written_gates_have_one_shape_and_round_trip():
    m = load(json.loads(TODAY.read_text()))
    out = m.to_json()
    for name, entry in out["parity"].items():
        assert "mask_iou_min" not in entry and "mask_iou_min" in entry["gates"], name
    again = load(json.loads(json.dumps(out)))
    assert again.parity == m.parity and again.speed == m.speed and again.quality == m.quality
    assert again.to_json() == out


@pytest.mark.parametrize("entry", [
    {"passed": True, "mask_iou": 0.99, "mask_iou_min": 0.98},  # top level (quantizers before the records)
    {"passed": True, "mask_iou": 0.99, "gates": {"mask_iou_min": 0.98}},  # nested (parity)
    {"passed": True, "mask_iou": 0.99, "mask_iou_min": 0.98, "gates": {"mask_iou_min": 0.98}},  # both
])
def test_every_old_gate_shape_reads_the_same(entry):
    assert GateRecord.from_json(entry).gates == Gates(0.98)
    assert GateRecord.from_json(entry).to_json() == {"passed": True, "mask_iou": 0.99, "inputs": 0,
                                                     "gates": {"mask_iou_min": 0.98}}


def test_no_speed_recorded_is_none():
    raw = json.loads(TODAY.read_text())
    raw["speed"] = {}
    assert load(raw).speed is None and load(raw).to_json()["speed"] == {}


@pytest.mark.parametrize("field", ["parity", "speed", "quality"])
def test_a_malformed_record_is_one_line(field):
    raw = json.loads(TODAY.read_text())
    raw[field] = ["not", "an", "object"]
    with pytest.raises(SegrtError, match="malformed manifest"):
        load(raw)
