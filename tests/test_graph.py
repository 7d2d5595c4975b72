import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from segrt.quantize.onnx_rewrites import convtranspose_to_pixel_shuffle, head_to_matmul

RNG = np.random.default_rng(0)


def model_of(nodes, inits, out_channels=4):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", out_channels, "H", "W"])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def convtranspose_model(kernel, stride, bias=True, pads=(0, 0, 0, 0), pool=1):
    """[MaxPool(pool) ->] ConvTranspose(6 -> 4 channels)."""
    inits = {"w": RNG.standard_normal((6, 4, kernel, kernel)), **({"b": RNG.standard_normal(4)} if bias else {})}
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[pool, pool], strides=[pool, pool])] if pool > 1 else []
    nodes.append(helper.make_node("ConvTranspose", ["p" if pool > 1 else "x", *inits], ["y"], name="up",
                                  kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads)))
    return model_of(nodes, inits)


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def inputs(*shapes):
    return [np.random.default_rng(1).standard_normal(s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("kernel,bias,pool", [(2, True, 1), (2, False, 1), (3, True, 1), (2, True, 4)])
def test_kernel_equal_stride_becomes_conv_and_pixel_shuffle(kernel, bias, pool):
    model = convtranspose_model(kernel, kernel, bias, pool=pool)
    xs = inputs((1, 6, 20, 28), (3, 6, 8, 12))  # batch, height and width stay dynamic
    expected = [run(model, x) for x in xs]
    rewritten, count = convtranspose_to_pixel_shuffle(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert count == 1 and "ConvTranspose" not in {n.op_type for n in rewritten.graph.node}
    for x, want in zip(xs, expected):
        np.testing.assert_allclose(run(rewritten, x), want, atol=1e-5)
    assert not {"w", "b"} & {t.name for t in rewritten.graph.initializer}  # old weights dropped


@pytest.mark.parametrize("kernel,stride,pads", [(3, 2, (1, 1, 1, 1)), (4, 2, (1, 1, 1, 1))])
def test_other_convtranspose_left_alone(kernel, stride, pads):
    rewritten, count = convtranspose_to_pixel_shuffle(convtranspose_model(kernel, stride, pads=pads))
    assert count == 0 and [n.op_type for n in rewritten.graph.node] == ["ConvTranspose"]


def test_head_becomes_matmul_with_float_tail():
    inits = {"w": RNG.standard_normal((6, 6, 3, 3)), "hw": RNG.standard_normal((3, 6, 1, 1)), "hb": RNG.standard_normal(3)}
    model = model_of([helper.make_node("Conv", ["x", "w"], ["f"], pads=[1, 1, 1, 1]),
                      helper.make_node("Conv", ["f", "hw", "hb"], ["y"], name="head")], inits, out_channels=3)
    (x,) = inputs((2, 6, 10, 14))
    expected = run(model, x)
    rewritten, tail = head_to_matmul(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Transpose", "MatMul", "Transpose", "Add"]
    assert tail == [n.name for n in rewritten.graph.node[-2:]]
    np.testing.assert_allclose(run(rewritten, x), expected, atol=1e-5)
    # only the 1x1 Conv that makes a graph output is a head
    assert head_to_matmul(convtranspose_model(2, 2))[1] == []
