"""ONNX graph rewrites that keep the math and help ONNX Runtime's INT8 kernels."""

from __future__ import annotations

import numpy as np


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def convtranspose_to_depth_to_space(model):
    """Rewrite each ConvTranspose whose kernel equals its stride (the U-Net's 2x2/2 upsampling) as a
    1x1 Conv to C*k*k channels + DepthToSpace (CRD): the same function, but ONNX Runtime has no INT8
    ConvTranspose, while Conv and DepthToSpace run in INT8. Returns (model, rewritten count)."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes, count = [], 0
    for node in model.graph.node:
        a = _attrs(node)
        k = a.get("kernel_shape") or (list(numpy_helper.to_array(inits[node.input[1]]).shape[2:])
                                      if node.op_type == "ConvTranspose" and node.input[1] in inits else None)
        plain = (node.op_type == "ConvTranspose" and node.input[1] in inits and k is not None and len(set(k)) == 1
                 and list(a.get("strides", [1, 1])) == list(k) and a.get("group", 1) == 1
                 and not any(a.get("pads", [])) and not any(a.get("output_padding", []))
                 and set(a.get("dilations", [1])) == {1} and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
                 and "output_shape" not in a and (len(node.input) < 3 or node.input[2] in inits))
        if not plain:
            nodes.append(node)
            continue
        kk = int(k[0])
        w = numpy_helper.to_array(inits[node.input[1]])  # (C_in, C_out, k, k)
        c_in, c_out = w.shape[:2]
        conv_w = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c_out * kk * kk, c_in, 1, 1))
        base = node.name or node.output[0]
        inputs = [node.input[0], f"{base}_s2d_w"]
        model.graph.initializer.append(numpy_helper.from_array(conv_w, inputs[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = np.repeat(numpy_helper.to_array(inits[node.input[2]]), kk * kk)
            inputs.append(f"{base}_s2d_b")
            model.graph.initializer.append(numpy_helper.from_array(bias, inputs[2]))
        mid = f"{base}_s2d_out"
        nodes.append(helper.make_node("Conv", inputs, [mid], name=f"{base}_conv1x1", kernel_shape=[1, 1]))
        nodes.append(helper.make_node("DepthToSpace", [mid], list(node.output), name=f"{base}_d2s",
                                      blocksize=kk, mode="CRD"))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model, count
