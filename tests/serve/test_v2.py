"""The Open Inference Protocol's encoding, against tritonclient's own encoder and parser (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segrt.serve.v2 import HEADER, ProtocolError, Tensor, encode_response, parse_request, requested_outputs

th = pytest.importorskip("tritonclient.http")


def triton_request(inputs, outputs=None) -> tuple[bytes, str | None]:
    body, header_length = th.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, None if header_length is None else str(header_length)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_requests_parse(binary):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    inp = th.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    request, (tensor,) = parse_request(*triton_request([inp]))
    assert tensor.name == "image" and tensor.datatype == "FP32" and np.array_equal(tensor.data, x)
    assert request["inputs"][0]["shape"] == [2, 3, 2, 2]


def test_binary_bytes_elements_of_their_own_sizes():
    items = [b"\xff\xd8jpeg", b"", b"\x89PNG" * 100]
    inp = th.InferInput("image_bytes", [3], "BYTES")
    inp.set_data_from_numpy(np.array(items, dtype=object))
    _, (tensor,) = parse_request(*triton_request([inp]))
    assert tensor.data == items


@pytest.mark.parametrize("body, header, message", [
    (b"{}", None, "no 'inputs'"),
    (b"not json", None, "not JSON"),
    (b'{"inputs": []}', "99", "past the body"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', None, "holds 2 element"),
    (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["***"]}]}', None, "base64"),
    (b'{"inputs": [{"name": "x", "datatype": "COMPLEX", "shape": [1], "data": [1]}]}', None, "unknown datatype"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', None, "negative"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "no 'data'"),
])
def test_bad_requests_are_one_line(body, header, message):
    with pytest.raises(ProtocolError, match=message):
        parse_request(body, header)


def test_cut_binary_data():
    head = json.dumps({"inputs": [{"name": "b", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    with pytest.raises(ProtocolError, match="says 100 bytes"):
        parse_request(head + (100).to_bytes(4, "little") + b"abcd", str(len(head)))
    with pytest.raises(ProtocolError, match="left over"):
        parse_request(head + (4).to_bytes(4, "little") + b"abcdXY", str(len(head)))


def test_responses_read_by_tritonclient():
    masks = np.random.default_rng(0).integers(0, 3, (2, 5, 7), dtype=np.uint8)
    outputs = [Tensor("masks", "UINT8", list(masks.shape), masks),
               Tensor("masks_png", "BYTES", [2], [b"\x89PNG one", b"two"])]
    for binary in ({"masks", "masks_png"}, set(), {"masks"}):
        body, headers = encode_response("pets", {"id": "r1"}, outputs, binary)
        result = th.InferResult.from_response_body(body, header_length=headers.get(HEADER) and int(headers[HEADER]))
        assert result.get_response()["id"] == "r1"
        assert np.array_equal(result.as_numpy("masks"), masks)
        pngs = list(result.as_numpy("masks_png"))
        if "masks_png" not in binary:  # JSON carries bytes as base64 text
            import base64

            pngs = [base64.b64decode(p) for p in pngs]
        assert pngs == [b"\x89PNG one", b"two"]


def test_requested_outputs():
    available = ["masks", "mask_shapes", "masks_png"]
    assert requested_outputs({}, available) == (available, set())
    assert requested_outputs({"parameters": {"binary_data_output": True}}, available) == (available, set(available))
    asked = {"outputs": [{"name": "masks_png", "parameters": {"binary_data": True}}, {"name": "masks"}]}
    assert requested_outputs(asked, available) == (["masks_png", "masks"], {"masks_png"})
    with pytest.raises(ProtocolError, match="unknown output 'logits'"):
        requested_outputs({"outputs": [{"name": "logits"}]}, available)
