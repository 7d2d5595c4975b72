"""The INT8 fallback search as a pure function over a fake ``build`` (no quantizer runs)."""

import pytest

from segrt.quantize.search import fallback_search
from segrt.verify.gate import GateResult

NODES = ["conv1", "conv2", "conv3", "head"]
HARM = {"conv1": 0.001, "conv2": 0.02, "conv3": 0.004, "head": 0.03}  # what keeping a node in INT8 costs


def build(excluded):
    built.append(list(excluded))
    iou = 1.0 - sum(v for n, v in HARM.items() if n not in excluded)
    return GateResult(mask_iou=iou, summary={}, excluded=list(excluded), ms_per_image=1.0 + len(excluded))


@pytest.fixture(autouse=True)
def reset():
    built.clear()


built: list = []


def test_all_int8_is_kept_when_it_passes():
    best, search = fallback_search(build, NODES, gate=0.9, max_fraction=0.5, log=lambda m: None)
    assert best.excluded == [] and built == [[]] and len(search) == 1


def test_the_most_sensitive_nodes_go_first_until_the_gate_passes():
    best, search = fallback_search(build, NODES, gate=0.98, max_fraction=0.5, log=lambda m: None)
    assert best.excluded == ["head", "conv2"] and best.mask_iou >= 0.98
    assert [s["excluded"] for s in search] == [[], ["head"], ["head", "conv2"]]
    assert built[:5] == [[], ["conv1"], ["conv2"], ["conv3"], ["head"]]  # one sensitivity run per node


def test_the_budget_caps_the_fallback_and_the_best_is_returned():
    best, search = fallback_search(build, NODES, gate=0.999, max_fraction=0.25, log=lambda m: None)
    assert best.excluded == ["head"] and len(search) == 2 and best.mask_iou < 0.999


def test_calibration_memory_is_checked_before_any_image_is_read(tmp_path, monkeypatch):
    """percentile calibration keeps every activation of every image: refused with the count that fits."""
    from PIL import Image
    from synthetic import tiny_export

    import segrt.quantize.memory as memory
    from segrt.errors import SegrtError
    from segrt.manifest import Manifest
    from segrt.options import QuantizeOptions

    folder = tiny_export(tmp_path / "exp", input_size=(256, 256))
    images = tmp_path / "calib"
    images.mkdir()
    for i in range(40):
        Image.new("RGB", (8, 8)).save(images / f"{i}.png")
    manifest = Manifest.load(folder)
    per_pixel = memory.activation_bytes_per_pixel(folder / "model.onnx", 3)
    assert per_pixel == pytest.approx(4 * 2)  # the conv's output: 2 classes of float32 a pixel
    opts = QuantizeOptions(calib_images=images, calib_method="percentile")
    twenty = memory.calibration_bytes(per_pixel, manifest, [256 * 256] * 20, [256 * 256] * 8, "onnxruntime",
                                      "percentile")  # 32 calibration images, 8 held out for the gate
    monkeypatch.setattr(memory, "memory_budget", lambda: twenty)
    with pytest.raises(SegrtError, match=r"--calib-method percentile on 32 calibration images needs .* use "
                                         r"--calib-count 20 or less, or --calib-method minmax"):
        memory.check_calibration_memory(folder, manifest, opts, "onnxruntime")
    need = {m: memory.calibration_bytes(per_pixel, manifest, [256 * 256] * 32, [256 * 256] * 8, "onnxruntime", m)
            for m in ("minmax", "percentile")}
    assert need["minmax"] < need["percentile"]
    monkeypatch.setattr(memory, "memory_budget", lambda: need["minmax"])
    memory.check_calibration_memory(folder, manifest, QuantizeOptions(calib_images=images), "onnxruntime")  # minmax fits
    memory.check_calibration_memory(folder, manifest, opts, "openvino")  # NNCF streams
    # after a default (minmax) search misses the gate, percentile is tried only where it fits, and said
    from segrt.quantize.ort import _second_method

    missed, said = GateResult(mask_iou=0.9, summary={}, excluded=[], ms_per_image=1.0), []
    default = QuantizeOptions(calib_images=images)
    assert _second_method(folder, manifest, default, missed, 0.99, said.append) is None
    assert said[-1].startswith("  minmax calibration misses the gate; percentile calibration not tried: "
                               "--calib-method percentile on 32 calibration images needs")
    monkeypatch.setattr(memory, "memory_budget", lambda: need["percentile"])
    assert _second_method(folder, manifest, default, missed, 0.99, said.append) == "percentile"
    assert _second_method(folder, manifest, QuantizeOptions(calib_images=images, calib_method="minmax"), missed, 0.99,
                          said.append) is None  # an explicit method is the only one
    assert _second_method(folder, manifest, default, missed, 0.8, said.append) is None  # it passed
