"""Synthetic models for fast unit tests: a 1x1-conv ONNX (no training, no torch) and a segrt export
folder around it. Importable from every test folder (tests/ is on sys.path through conftest.py)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from segrt.manifest import Artifact, Manifest


def conv_onnx(path, classes=2, channels=3, in_shape=None, out_shape=None, extra=None):
    """image (N, C, H, W) -> 1x1 conv -> logits (N, classes, H, W); all dims but C symbolic unless
    ``in_shape`` / ``out_shape`` fix them; ``extra`` nodes appended after the conv."""
    w = np.random.default_rng(0).standard_normal((classes, channels, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"])] + (extra or []), "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, in_shape or ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape or ["n", classes, "h", "w"])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def conv_weights(path) -> np.ndarray:
    """The (classes, channels) matrix of a conv_onnx model: logits = W @ pixels, per pixel."""
    (w,) = onnx.load(str(path)).graph.initializer
    return numpy_helper.to_array(w)[:, :, 0, 0]


def tiny_export(folder, name="tiny", classes=("background", "cat"), input_size=(32, 32)):
    """A segrt export folder around conv_onnx: manifest with hashes, nothing trained."""
    folder.mkdir(parents=True)
    conv_onnx(folder / "model.onnx", len(classes))
    m = Manifest(name=name, classes=list(classes), mean=[0.5] * 3, std=[0.25] * 3, channels=3, size_multiple=1,
                 input_size=list(input_size) if input_size else None)
    m.add_artifact(folder, Artifact(file="model.onnx", kind="onnx"))
    m.save(folder)
    return folder
