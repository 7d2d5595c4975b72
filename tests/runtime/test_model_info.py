"""What a model file says about itself: an export's manifest, segrt metadata in a bare ONNX, or the
documented defaults for a foreign ONNX (with the overrides that must fit it)."""

import onnx
import pytest
from synthetic import conv_onnx, tiny_export

from segrt.errors import SegrtError
from segrt.manifest import IMAGENET_MEAN, Manifest
from segrt.runtime.model_info import load_model_info


def test_a_foreign_onnx_gets_the_documented_defaults(tmp_path):
    m, folder = load_model_info(conv_onnx(tmp_path / "foreign.onnx", classes=4))
    assert folder is None and m.classes == [f"class{i}" for i in range(4)] and m.mean == IMAGENET_MEAN
    assert m.size_multiple == 32 and m.input_size is None and m.artifacts[0].file == "foreign.onnx"
    gray, _ = load_model_info(conv_onnx(tmp_path / "gray.onnx", channels=1))
    assert gray.channels == 1 and gray.mean == [0.5] and gray.std == [0.25]


def test_fixed_sizes_and_symbolic_class_counts(tmp_path):
    fixed, _ = load_model_info(conv_onnx(tmp_path / "f.onnx", in_shape=[1, 3, 64, 48], out_shape=[1, 2, 64, 48]))
    assert fixed.fixed_size == [64, 48] and fixed.input_size == [64, 48] and fixed.size_multiple == 1
    assert load_model_info(tmp_path / "f.onnx", size=[64, 48])[0].input_size == [64, 48]  # --size saying the same
    with pytest.raises(SegrtError, match="--size: .*f.onnx takes one size, 64x48"):
        load_model_info(tmp_path / "f.onnx", size=[64])
    probed, _ = load_model_info(conv_onnx(tmp_path / "s.onnx", classes=5, out_shape=["n", "k", "h", "w"]))
    assert probed.num_classes == 5  # one run on zeros


def test_overrides_must_fit_the_file(tmp_path):
    path = conv_onnx(tmp_path / "m.onnx", classes=2)
    m, _ = load_model_info(path, classes=["sky", "road"], mean=[0.1, 0.2, 0.3])
    assert m.classes == ["sky", "road"] and m.mean == [0.1, 0.2, 0.3]
    assert load_model_info(path, mean=[0.5], std=[0.25])[0].std == [0.25] * 3  # one value: every channel
    with pytest.raises(SegrtError, match=r"--classes: .* has 2 classes, got 3 value\(s\)"):
        load_model_info(path, classes=["a", "b", "c"])
    with pytest.raises(SegrtError, match="--mean is for a bare .onnx file"):
        load_model_info(tiny_export(tmp_path / "e"), mean=[0.1, 0.2, 0.3])


def test_segrt_metadata_makes_a_bare_onnx_describe_itself(tmp_path):
    folder = tiny_export(tmp_path / "e", classes=("background", "cat", "dog"))
    model = onnx.load(str(conv_onnx(tmp_path / "bare.onnx", classes=3)))
    Manifest.load(folder).set_onnx_metadata(model)
    onnx.save(model, str(tmp_path / "bare.onnx"))
    m, folder_of = load_model_info(tmp_path / "bare.onnx")
    assert folder_of is None and m.classes == ["background", "cat", "dog"] and m.mean == [0.5] * 3


def test_an_export_file_needs_its_manifest(tmp_path):
    folder = tiny_export(tmp_path / "e")
    m, where = load_model_info(folder / "model.onnx")
    assert where == folder and m.name == "tiny"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model.ts").write_bytes(b"")
    with pytest.raises(SegrtError, match="needs the manifest.json of its export folder"):
        load_model_info(tmp_path / "x" / "model.ts")
    with pytest.raises(SegrtError, match="no such model file or export folder"):
        load_model_info(tmp_path / "nothing.onnx")
