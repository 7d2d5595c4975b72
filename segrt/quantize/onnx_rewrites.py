"""ONNX graph rewrites that keep the math and help ONNX Runtime's INT8 kernels.

ORT runs INT8 convolutions channels-last (NHWC) and inserts layout Transposes around any op it can
not run that way. Both rewrites below are written channels-last on purpose, so that ORT's transpose
optimizer cancels those Transposes against the ones spelled out here.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

__all__ = ["opset_of", "convtranspose_to_pixel_shuffle", "head_to_matmul", "uint8_input"]

_PROBE = 1024  # input size for shape inference when measuring each node's scale


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _plain_upsample(node, inits) -> int | None:
    """k when ``node`` is a ConvTranspose with kernel == stride == k, no pads/groups/dilation."""
    from onnx import numpy_helper

    if node.op_type != "ConvTranspose" or node.input[1] not in inits:
        return None
    a = _attrs(node)
    k = list(a.get("kernel_shape") or numpy_helper.to_array(inits[node.input[1]]).shape[2:])
    plain = (len(k) == 2 and k[0] == k[1] and list(a.get("strides", [1, 1])) == k and a.get("group", 1) == 1
             and not any(a.get("pads", [])) and not any(a.get("output_padding", []))
             and set(a.get("dilations", [1])) == {1} and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
             and "output_shape" not in a and (len(node.input) < 3 or not node.input[2] or node.input[2] in inits))
    return int(k[0]) if plain else None


def _output_scales(model, tensors: set[str]) -> dict[str, Fraction]:
    """Spatial size of each tensor relative to the graph input (the same for H and W), from ONNX
    shape inference at a fixed input size; tensors it cannot resolve are left out."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    dims = probe.graph.input[0].type.tensor_type.shape.dim
    for i, d in enumerate(dims):
        if i != 1:  # batch and spatial dims fixed, channels kept
            d.Clear()
            d.dim_value = _PROBE if i >= 2 else 1
    del probe.graph.value_info[:]
    for o in probe.graph.output:
        o.type.tensor_type.ClearField("shape")
    try:
        probe = onnx.shape_inference.infer_shapes(probe, strict_mode=True)
    except Exception:  # noqa: BLE001 - no scales, so no rewrite
        return {}
    out = {}
    for v in [*probe.graph.value_info, *probe.graph.output]:
        d = [x.dim_value for x in v.type.tensor_type.shape.dim]
        if v.name in tensors and len(d) == 4 and d[2] and d[2] == d[3]:
            out[v.name] = Fraction(d[2], _PROBE)
    return out


def opset_of(model) -> int:
    """The default-domain opset an ONNX model is written in (0 if none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def convtranspose_to_pixel_shuffle(model):
    """Rewrite each ConvTranspose with kernel == stride == k (the U-Net's 2x2/2 upsampling) as a 1x1
    Conv to k*k*C channels followed by a channels-last pixel shuffle (Reshape, one Transpose that moves
    a single axis, Reshape). The same function; ORT has no INT8 ConvTranspose, and its DepthToSpace
    only runs channels-first (slow on uint8, with layout Transposes around it). The output size comes
    from the graph input's size (Shape -> Mul/Div), so batch, height and width stay dynamic.
    Returns (model, rewritten count)."""
    inits = {t.name: t for t in model.graph.initializer}
    ks = {n.output[0]: k for n in model.graph.node if (k := _plain_upsample(n, inits))}
    scales = _output_scales(model, set(ks)) if opset_of(model) >= 15 else {}
    nodes, count = [], 0
    for node in model.graph.node:
        scale = scales.get(node.output[0])
        if scale is None:
            nodes.append(node)
            continue
        nodes += _pixel_shuffle(model, node, inits, ks[node.output[0]], scale)
        count += 1
    _replace_nodes(model, nodes)
    return model, count


def _const(model, name: str, value) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _output_size(model, p: str, scale: Fraction) -> tuple[list, str]:
    """Nodes computing the rewritten output's (H, W) from the graph input's: x numerator / denominator."""
    from onnx import helper

    nodes = [helper.make_node("Shape", [model.graph.input[0].name], [f"{p}_in_hw"], name=f"{p}_in_hw", start=2, end=4)]
    hw = f"{p}_in_hw"
    for op, value, tag in (("Mul", scale.numerator, "hw_mul"), ("Div", scale.denominator, "hw")):
        if value != 1:
            nodes.append(helper.make_node(op, [hw, _const(model, f"{p}_{tag}_k", np.array(value, np.int64))],
                                          [f"{p}_{tag}"], name=f"{p}_{tag}"))
            hw = f"{p}_{tag}"
    return nodes, hw


def _pixel_shuffle(model, node, inits, k: int, scale: Fraction) -> list:
    """The nodes that replace one ConvTranspose(k, stride k): 1x1 Conv, then the channels-last shuffle."""
    from onnx import helper, numpy_helper

    p = f"{node.name or node.output[0]}_ps"
    w = numpy_helper.to_array(inits[node.input[1]])  # (C_in, C_out, k, k)
    c_out = w.shape[1]
    inputs = [node.input[0], _const(model, f"{p}_w", np.ascontiguousarray(
        w.transpose(2, 3, 1, 0).reshape(k * k * c_out, w.shape[0], 1, 1)))]  # channels ordered (dy, dx, c)
    if len(node.input) > 2 and node.input[2]:
        inputs.append(_const(model, f"{p}_b", np.tile(numpy_helper.to_array(inits[node.input[2]]), k * k)))
    size, hw = _output_size(model, p, scale)
    return size + [
        helper.make_node("Concat", [_const(model, f"{p}_n", np.array([0], np.int64)), hw,
                                    _const(model, f"{p}_c", np.array([c_out], np.int64))], [f"{p}_shape"],
                         name=f"{p}_shape", axis=0),
        helper.make_node("Conv", inputs, [f"{p}_conv"], name=f"{p}_conv", kernel_shape=[1, 1]),
        helper.make_node("Transpose", [f"{p}_conv"], [f"{p}_nhwc"], name=f"{p}_nhwc", perm=[0, 2, 3, 1]),
        # (N, H, W, dy, dx*C) -> (N, H, dy, W, dx*C) is (N, kH, kW, C) in memory
        helper.make_node("Reshape", [f"{p}_nhwc", _const(model, f"{p}_rows", np.array([0, 0, 0, k, k * c_out], np.int64))],
                         [f"{p}_rows_out"], name=f"{p}_rows"),
        helper.make_node("Transpose", [f"{p}_rows_out"], [f"{p}_interleave"], name=f"{p}_interleave",
                         perm=[0, 1, 3, 2, 4]),
        helper.make_node("Reshape", [f"{p}_interleave", f"{p}_shape"], [f"{p}_merged"], name=f"{p}_merge"),
        helper.make_node("Transpose", [f"{p}_merged"], list(node.output), name=f"{p}_nchw", perm=[0, 3, 1, 2])]


def head_to_matmul(model):
    """Rewrite a 1x1 Conv that produces a graph output (the segmentation head) as a channels-last
    MatMul + bias. Quantized with its output left in float (ORT fuses it to MatMulIntegerToFloat),
    the logits keep full precision, while the Conv would either quantize the logits to 8 bits or run
    in fp32. Returns (model, names of the nodes after the MatMul, which must stay float); ([]) when
    there is no such head."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    nodes, tail = [], []
    for node in model.graph.node:
        a = _attrs(node)
        w = numpy_helper.to_array(inits[node.input[1]]) if node.op_type == "Conv" and node.input[1] in inits else None
        if (w is None or tail or node.output[0] not in outputs or w.shape[2:] != (1, 1) or a.get("group", 1) != 1
                or set(a.get("strides", [1])) != {1} or any(a.get("pads", [])) or len(node.input) < 3
                or node.input[2] not in inits):
            nodes.append(node)
            continue
        p = f"{node.name or node.output[0]}_mm"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(w[:, :, 0, 0].T), f"{p}_w"),
            numpy_helper.from_array(numpy_helper.to_array(inits[node.input[2]]).reshape(-1, 1, 1), f"{p}_b")])
        tail = [f"{p}_nchw", f"{p}_bias"]
        nodes += [helper.make_node("Transpose", [node.input[0]], [f"{p}_nhwc"], name=f"{p}_nhwc", perm=[0, 2, 3, 1]),
                  helper.make_node("MatMul", [f"{p}_nhwc", f"{p}_w"], [f"{p}_out"], name=p),
                  helper.make_node("Transpose", [f"{p}_out"], [f"{p}_nchw"], name=tail[0], perm=[0, 3, 1, 2]),
                  helper.make_node("Add", [f"{p}_nchw", f"{p}_b"], list(node.output), name=tail[1])]
    _replace_nodes(model, nodes)
    return model, tail


def _replace_nodes(model, nodes) -> None:
    """Set the node list and drop initializers nothing uses any more."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def uint8_input(model, mean: list[float], std: list[float]):
    """A copy of ``model`` that takes the decoder's pixels: uint8 NCHW in [0, 255]. In the graph:
    Cast, Sub 255*mean per channel (before any padding, so the zero padding is still the mean
    colour, exactly), then the division by 255*std folded into the first convolution's weights
    where the input feeds a single Conv with constant weights, else an explicit Mul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, name = out.graph, out.graph.input[0].name
    inits = {t.name: t for t in g.initializer}
    consumers = [n for n in g.node if name in n.input]
    c = len(mean)
    shift = numpy_helper.from_array((255.0 * np.asarray(mean, np.float32)).reshape(1, c, 1, 1), f"{name}_u8_shift")
    scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
    nodes = [helper.make_node("Cast", [name], [f"{name}_f32"], to=TensorProto.FLOAT),
             helper.make_node("Sub", [f"{name}_f32", shift.name], [f"{name}_centred"])]
    g.initializer.append(shift)
    conv = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "Conv" else None
    if conv is not None and conv.input[1] in inits and conv.input[0] == name:
        w = numpy_helper.to_array(inits[conv.input[1]]) * scale.reshape(1, c, 1, 1)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), conv.input[1]))
        feed = f"{name}_centred"
    else:
        g.initializer.append(numpy_helper.from_array(scale.reshape(1, c, 1, 1), f"{name}_u8_scale"))
        nodes.append(helper.make_node("Mul", [f"{name}_centred", f"{name}_u8_scale"], [f"{name}_normalized"]))
        feed = f"{name}_normalized"
    for n in consumers:
        n.input[:] = [feed if i == name else i for i in n.input]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)  # stays topologically sorted: the new nodes read only the graph input
    g.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return out
