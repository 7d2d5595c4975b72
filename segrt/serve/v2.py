"""The Open Inference Protocol (KServe v2) over HTTP: request parsing and response encoding, JSON
tensors and the binary tensor data extension (what tritonclient.http sends by default). Pure
functions over bytes; the routes are in segrt.serve.app.

Binary: the body is the JSON header (``Inference-Header-Content-Length`` bytes) followed by each
binary tensor's bytes in input order; a BYTES tensor is its elements, each a 4-byte little-endian
length and the bytes. In JSON a BYTES element is a string: image bytes travel base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

import numpy as np

__all__ = ["ProtocolError", "Tensor", "DTYPES", "parse_request", "encode_response", "requested_outputs", "HEADER"]

HEADER = "Inference-Header-Content-Length"
DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}


class ProtocolError(Exception):
    """A request the protocol cannot read, or that does not fit the model (answered 400)."""


class Tensor:
    """One input or output: name, datatype, shape and its values (an ndarray, or a list of bytes for BYTES)."""

    def __init__(self, name: str, datatype: str, shape: list[int], data):
        self.name, self.datatype, self.shape, self.data = name, datatype, list(shape), data


def parse_request(body: bytes, header_length: str | None) -> tuple[dict, list[Tensor]]:
    """An infer request's body -> (its JSON header, its input tensors). Raises ProtocolError."""
    try:
        split = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise ProtocolError(f"{HEADER} is not a number: {header_length!r}") from None
    if not 0 <= split <= len(body):
        raise ProtocolError(f"{HEADER} {split} is past the body's {len(body)} bytes")
    try:
        request = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the request header is not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ProtocolError("the request has no 'inputs' list")
    tensors, offset = [], split
    for spec in request["inputs"]:
        tensor, offset = _input(spec, body, offset)
        tensors.append(tensor)
    if offset != len(body):
        raise ProtocolError(f"{len(body) - offset} byte(s) of binary data left over after the inputs")
    return request, tensors


def _input(spec, body: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict) or not all(k in spec for k in ("name", "datatype", "shape")):
        raise ProtocolError("each input needs 'name', 'datatype' and 'shape'")
    name, datatype = str(spec["name"]), str(spec["datatype"]).upper()
    try:
        shape = [int(d) for d in spec["shape"]]
    except (TypeError, ValueError):
        raise ProtocolError(f"input {name!r}: shape {spec['shape']!r} is not a list of integers") from None
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {shape} has a negative dimension")
    count = int(np.prod(shape)) if shape else 1
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if datatype != "BYTES" and datatype not in DTYPES:
        raise ProtocolError(f"input {name!r}: unknown datatype {datatype!r}")
    if size is not None:
        size = int(size)
        if offset + size > len(body):
            raise ProtocolError(f"input {name!r}: binary_data_size {size} is past the end of the body")
        blob, offset = body[offset:offset + size], offset + size
        data = _bytes_elements(blob, name) if datatype == "BYTES" else _numeric(blob, datatype, name)
    elif "data" in spec:
        data = _json_data(spec["data"], datatype, name)
    else:
        raise ProtocolError(f"input {name!r}: no 'data' and no binary_data_size")
    if len(data) != count:
        raise ProtocolError(f"input {name!r}: shape {shape} holds {count} element(s), the data {len(data)}")
    if datatype != "BYTES":
        data = data.reshape(shape)
    return Tensor(name, datatype, shape, data), offset


def _bytes_elements(blob: bytes, name: str) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ProtocolError(f"input {name!r}: BYTES data cut inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", blob, pos)
        if pos + 4 + n > len(blob):
            raise ProtocolError(f"input {name!r}: BYTES element {len(out)} says {n} bytes, fewer are there")
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _numeric(blob: bytes, datatype: str, name: str) -> np.ndarray:
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if len(blob) % dtype.itemsize:
        raise ProtocolError(f"input {name!r}: {len(blob)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(blob, dtype).astype(dtype.newbyteorder("="))


def _json_data(data, datatype: str, name: str):
    if datatype == "BYTES":
        flat = list(_flatten(data))
        try:
            return [base64.b64decode(item, validate=True) for item in flat]
        except (binascii.Error, TypeError, ValueError):
            raise ProtocolError(f"input {name!r}: BYTES elements in JSON must be base64 strings") from None
    try:
        return np.asarray(data, DTYPES[datatype]).reshape(-1)
    except (TypeError, ValueError):
        raise ProtocolError(f"input {name!r}: data is not a list of {datatype} values") from None


def _flatten(data):
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def encode_response(model: str, request: dict, outputs: list[Tensor], binary: set[str]) -> tuple[bytes, dict]:
    """-> (body, extra headers): the JSON header (model_name, id, outputs), then the binary outputs' bytes."""
    header = {"model_name": model, "model_version": "1", "outputs": []}
    if "id" in request:
        header["id"] = request["id"]
    blobs = []
    for t in outputs:
        entry = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if t.name in binary:
            blob = (b"".join(struct.pack("<I", len(b)) + b for b in t.data) if t.datatype == "BYTES"
                    else np.ascontiguousarray(t.data).astype(np.dtype(t.data.dtype).newbyteorder("<")).tobytes())
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = ([base64.b64encode(b).decode() for b in t.data] if t.datatype == "BYTES"
                             else t.data.reshape(-1).tolist())
        header["outputs"].append(entry)
    text = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return text, {}
    return text + b"".join(blobs), {HEADER: str(len(text))}


def requested_outputs(request: dict, available: list[str]) -> tuple[list[str], set[str]]:
    """(the outputs to send, those to send as binary): the request's list (each may ask binary_data),
    else every output of its input kind (binary when the request's binary_data_output says so)."""
    default_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    asked = request.get("outputs")
    if not asked:
        return available, set(available) if default_binary else set()
    names, binary = [], set()
    for spec in asked:
        name = str(spec.get("name")) if isinstance(spec, dict) else None
        if name not in available:
            raise ProtocolError(f"unknown output {name!r} for this input; outputs: {', '.join(available)}")
        names.append(name)
        if (spec.get("parameters") or {}).get("binary_data", default_binary):
            binary.add(name)
    return names, binary
