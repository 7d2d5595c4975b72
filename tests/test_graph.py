import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from segrt.graph import convtranspose_to_depth_to_space


def convtranspose_model(kernel, stride, bias=True, pads=(0, 0, 0, 0)):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 4, kernel, kernel)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    node = helper.make_node("ConvTranspose", ["x", "w", "b"] if bias else ["x", "w"], ["y"], name="up",
                            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "H", "W"])], [w, b] if bias else [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("kernel,bias", [(2, True), (2, False), (3, True)])
def test_kernel_equal_stride_becomes_conv_and_depth_to_space(kernel, bias):
    model = convtranspose_model(kernel, kernel, bias)
    x = np.random.default_rng(1).standard_normal((1, 6, 5, 7)).astype(np.float32)
    expected = run(model, x)
    rewritten, count = convtranspose_to_depth_to_space(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert count == 1 and [n.op_type for n in rewritten.graph.node] == ["Conv", "DepthToSpace"]
    np.testing.assert_allclose(run(rewritten, x), expected, atol=1e-5)
    assert {t.name for t in rewritten.graph.initializer} == ({"up_s2d_w", "up_s2d_b"} if bias else {"up_s2d_w"})


@pytest.mark.parametrize("kernel,stride,pads", [(3, 2, (1, 1, 1, 1)), (4, 2, (1, 1, 1, 1))])
def test_other_convtranspose_left_alone(kernel, stride, pads):
    rewritten, count = convtranspose_to_depth_to_space(convtranspose_model(kernel, stride, pads=pads))
    assert count == 0 and [n.op_type for n in rewritten.graph.node] == ["ConvTranspose"]
