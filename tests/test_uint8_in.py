"""uint8-input variants (segrt.quantize.uint8): the normalization in the graph, folded into the first conv
where exact; Session feeds them pixels; predict decodes to pixels for them and writes the masks the
float variant writes. Fast, on synthetic ONNX models."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from test_edges import photos, tiny_export

from segrt.cli import main
from segrt.imaging.prepare import normalize, prepare, to_uint8
from segrt.quantize.onnx_rewrites import uint8_input
from segrt.quantize.uint8 import u8_name
from segrt.records import GateRecord, Gates

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def padded_conv(path, with_relu_first=False):
    """image -> 3x3 Conv (zero padding 1) -> logits: where the padding's value matters."""
    w = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float32)
    first = [helper.make_node("Relu", ["image"], ["r"])] if with_relu_first else []
    conv = helper.make_node("Conv", ["r" if with_relu_first else "image", "w"], ["logits"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(first + [conv], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2, "h", "w"])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return model


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


@pytest.mark.parametrize("relu_first", [False, True])
def test_normalization_in_the_graph_is_exact(tmp_path, relu_first):
    model = padded_conv(tmp_path / "m.onnx", relu_first)
    u8 = uint8_input(model, MEAN, STD)
    ops = [n.op_type for n in u8.graph.node]
    assert ops[:2] == ["Cast", "Sub"] and ("Mul" in ops) == relu_first  # folded into the conv unless it cannot be
    pixels = np.random.default_rng(1).integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)
    want = run(model, np.stack([normalize(p, MEAN, STD) for p in pixels]))
    got = run(u8, np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(got, want, atol=2e-5)  # border included: the padding is still the mean colour


def test_pixels_round_trip_and_padding():
    img = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    x, geo = prepare(img, MEAN, STD, None, 16)
    u, geo_u = prepare(img, MEAN, STD, None, 16, pixels=True)
    assert u.dtype == np.uint8 and u.shape == x.shape == (3, 32, 32) and geo == geo_u
    assert (to_uint8(x[None], MEAN, STD)[0] == u).all()  # a float input turned back into the same pixels
    assert (u[:, 20:, :] == np.array([round(255 * m) for m in MEAN])[:, None, None]).all()
    assert u8_name("model.int8.xml") == "model.u8.int8.xml" and u8_name("model.onnx") == "model.u8.onnx"


def test_uint8_variant_gated_fed_and_predicted(tmp_path):
    from segrt.manifest import Manifest
    from segrt.runtime.session import Session

    exp = tiny_export(tmp_path / "exp")
    m = Manifest.load(exp)
    m.parity["model.onnx"] = GateRecord(passed=True, mask_iou=1.0, gates=Gates(0.999))
    m.save(exp)
    src = photos(tmp_path / "in", "a.jpg", "b.jpg")
    res = CliRunner().invoke(main, ["quantize", str(exp), "--uint8-input", "all", "--val-images", str(src)])
    assert res.exit_code == 0 and "added model.u8.onnx" in res.output, res.output
    m = Manifest.load(exp)
    art = m.find("model.u8.onnx")
    assert art.extra == {"input_dtype": "uint8", "base": "model.onnx"} and m.parity[art.name].passed
    s = Session(exp, artifact="model.u8.onnx", provider="cpu")
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert s.takes_uint8 and s.feed(x).dtype == np.uint8
    base = Session(exp, artifact="model.onnx", provider="cpu")
    np.testing.assert_allclose(s.run(x), base.run(_back(s.feed(x), m)), atol=1e-4)  # a float input: its pixels
    for name, model in (("float", exp), ("u8", exp / "model.u8.onnx")):
        res = CliRunner().invoke(main, ["predict", str(src), "--model", str(model), "--out", str(tmp_path / name),
                                        "--provider", "cpu"])
        assert res.exit_code == 0, res.output
    for f in ("a.png", "b.png"):
        assert (tmp_path / "float" / f).read_bytes() == (tmp_path / "u8" / f).read_bytes()
    assert json.loads((tmp_path / "u8" / "summary.json").read_text())["artifact"] == "model.u8.onnx"


def _back(pixels, m):
    """uint8 NCHW pixels -> the normalized floats the float variant takes."""
    return np.stack([normalize(p.transpose(1, 2, 0), m.mean, m.std) for p in pixels])
