"""segrt serve as a service: a real server process on a free loopback port, driven by tritonclient.http
and plain HTTP (urllib), its masks held against `segrt predict` on the same files."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from serve_helpers import ROOT, Server, images

pytestmark = pytest.mark.slow
th = pytest.importorskip("tritonclient.http")


def post(url: str, data: bytes, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def server():
    with Server("--max-batch", 8, "--max-delay-ms", 20) as s:
        yield s
        assert s.stop() == 0


@pytest.fixture(scope="module")
def predicted(server, tmp_path_factory):
    """`segrt predict` on the same photos, after the server chose (the same export, the same auto pick)."""
    out = tmp_path_factory.mktemp("predicted") / "out"
    res = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", *map(str, images()), "--out", str(out),
                          "--quiet", "--no-color"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return {p.name: png_pixels((out / (p.stem + ".png")).read_bytes()) for p in images()}


def test_start_lines_say_the_model_the_variant_and_why(server):
    text = "\n".join(server.lines)
    assert "no --model: the bundled pets demo model" in text
    assert re.search(r"model 'pets': model\..*\((onnx|openvino) (fp32|int8|bf16)\)", text)
    assert "provider auto ->" in text and f"listening on {server.url}" in text


def test_v2_health_metadata_and_binary_bytes_masks_equal_predict(server, predicted):
    client = th.InferenceServerClient(server.host)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("pets")
    meta = client.get_model_metadata("pets")
    assert [i["name"] for i in meta["inputs"]] == ["image_bytes", "image"]
    assert {o["name"] for o in meta["outputs"]} == {"masks", "mask_shapes", "masks_png", "logits"}
    files = images()[:4]
    inp = th.InferInput("image_bytes", [len(files)], "BYTES")
    inp.set_data_from_numpy(np.array([f.read_bytes() for f in files], dtype=object))  # binary by default
    res = client.infer("pets", [inp])  # no outputs named: all of the input's outputs
    stacked, shapes, pngs = res.as_numpy("masks"), res.as_numpy("mask_shapes"), res.as_numpy("masks_png")
    assert stacked.dtype == np.uint8 and len(stacked) == len(shapes) == len(pngs) == 4
    assert len({tuple(s) for s in shapes}) > 1, "the photos differ in size: padded with 255"
    for f, m, (h, w), png in zip(files, stacked, shapes, pngs):
        want = predicted[f.name]
        assert (h, w) == want.shape and np.array_equal(m[:h, :w], want)
        assert (m[h:] == 255).all() and (m[:, w:] == 255).all()
        assert np.array_equal(png_pixels(png), want)


def test_v2_json_bytes_and_requested_outputs(server, predicted):
    client = th.InferenceServerClient(server.host)
    f = images()[5]
    inp = th.InferInput("image_bytes", [1], "BYTES")
    inp.set_data_from_numpy(np.array([base64.b64encode(f.read_bytes())], dtype=object), binary_data=False)
    res = client.infer("pets", [inp], outputs=[th.InferRequestedOutput("masks_png", binary_data=False)])
    assert [o["name"] for o in res.get_response()["outputs"]] == ["masks_png"]  # only what was asked
    png = base64.b64decode(res.get_response()["outputs"][0]["data"][0])
    assert np.array_equal(png_pixels(png), predicted[f.name])


def test_v2_fp32_tensor_gives_the_logits_of_the_picked_variant(server):
    from segrt.imaging.decode import read_model_input
    from segrt.manifest import Manifest
    from segrt.runtime.session import Session

    export = ROOT / "exported" / "pets"
    x = np.stack([read_model_input(f, Manifest.load(export))[0] for f in images()[:2]])
    client = th.InferenceServerClient(server.host)
    inp = th.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    logits = client.infer("pets", [inp], outputs=[th.InferRequestedOutput("logits")]).as_numpy("logits")
    variant = next(re.search(r"model 'pets': (\S+)", line).group(1) for line in server.lines if "model 'pets'" in line)
    want = Session(export, artifact=variant, provider="openvino" if variant.endswith(".xml") else "cpu").run(x)
    assert logits.shape == want.shape == (2, 3, 288, 288)
    assert np.abs(logits - want).max() < 1e-3


def test_v2_errors_are_one_line_with_the_right_status(server):
    client = th.InferenceServerClient(server.host)
    inp = th.InferInput("image_bytes", [1], "BYTES")
    inp.set_data_from_numpy(np.array([images()[0].read_bytes()], dtype=object))
    with pytest.raises(th.InferenceServerException, match="no model 'nope'") as e:
        client.infer("nope", [inp])
    assert e.value.status() == "404"
    wrong = th.InferInput("image", [1, 3, 8, 8], "INT32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.int32))
    with pytest.raises(th.InferenceServerException, match="datatype FP32") as e:
        client.infer("pets", [wrong])
    assert e.value.status() == "400"
    channels = th.InferInput("image", [1, 2, 8, 8], "FP32")
    channels.set_data_from_numpy(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(th.InferenceServerException, match=r"shape \[N, 3, H, W\]"):
        client.infer("pets", [channels])


def test_plain_predict_body_multipart_and_formats(server, predicted):
    f = images()[1]
    status, headers, body = post(server.url + "/predict", f.read_bytes())
    assert status == 200 and headers["content-type"] == "image/png"
    assert np.array_equal(png_pixels(body), predicted[f.name])
    boundary = "segrtboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + f.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, _, body = post(server.url + "/predict/pets?format=color", form,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    colour = Image.open(io.BytesIO(body))
    assert status == 200 and colour.mode == "P" and np.array_equal(np.asarray(colour), predicted[f.name])
    status, headers, body = post(server.url + "/predict?format=overlay", f.read_bytes())
    overlay = Image.open(io.BytesIO(body))
    assert status == 200 and overlay.format == "JPEG" and overlay.size[::-1] == predicted[f.name].shape
    status, _, body = post(server.url + "/predict?format=json", f.read_bytes())
    summary = json.loads(body)
    assert summary["shape"] == list(predicted[f.name].shape) and summary["classes"] == ["background", "pet", "border"]
    want = np.bincount(predicted[f.name].ravel(), minlength=3) / predicted[f.name].size
    assert np.allclose([summary["share"][c] for c in summary["classes"]], want, atol=1e-6)
    assert "model." in summary["variant"]
    status, _, body = post(server.url + "/predict?format=webp", f.read_bytes())
    assert status == 400 and "unknown format 'webp'" in json.loads(body)["error"]


def test_sixteen_concurrent_clients_are_batched_and_bad_items_fail_alone(server, predicted):
    files = images()
    truncated = files[0].read_bytes()[:2000]
    payloads = [(f.name, f.read_bytes()) for f in files] * 2 + [("garbage", b"not an image"), ("cut", truncated)]

    def one(item):
        return item[0], post(server.url + "/predict", item[1])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, payloads))
    for name, (status, _, body) in results:
        if name in ("garbage", "cut"):
            assert status == 400 and "body:" in json.loads(body)["error"], (name, body)
        else:
            assert status == 200 and np.array_equal(png_pixels(body), predicted[name]), name
    metrics = get(server.url + "/metrics")[1].decode()
    ones = float(re.search(r'segrt_batch_size_bucket\{le="1.0",model="pets"\} (\S+)', metrics).group(1))
    count = float(re.search(r'segrt_batch_size_count\{model="pets"\} (\S+)', metrics).group(1))
    assert count > ones, "some batch held more than one image"
    assert re.search(r'segrt_errors_total\{kind="bad_request",model="pets"\} [2-9]', metrics)
    assert 'segrt_model_variant{model="pets"' in metrics and "segrt_queue_depth" in metrics
    assert get(server.url + "/v2/health/ready")[0] == 200  # still serving


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A server that needs a token and holds at most 2 images."""
    token = tmp_path_factory.mktemp("token") / "token.txt"
    token.write_text("s3cret\n")
    with Server("--token-file", token, "--max-queue", 2, "--max-body-mb", 1) as s:
        yield s


def test_token_required(strict):
    assert get(strict.url + "/v2/health/live")[0] == 200  # health is open
    status, body = get(strict.url + "/v2/models/pets")
    assert status == 401 and "bearer token" in json.loads(body)["error"]
    assert get(strict.url + "/v2/models/pets", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(strict.url + "/v2/models/pets", {"Authorization": "Bearer s3cret"})[0] == 200


def _large_photo() -> bytes:
    """A 12-megapixel JPEG under 1 MB: slow enough to decode that concurrent requests overlap."""
    y, x = np.mgrid[0:3000, 0:4000]
    rgb = np.stack([(x // 16) % 256, (y // 12) % 256, ((x + y) // 28) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=80)
    assert len(buf.getvalue()) < 2**20
    return buf.getvalue()


def test_full_queue_is_503_with_retry_after_and_large_bodies_413(strict):
    auth = {"Authorization": "Bearer s3cret"}
    status, _, body = post(strict.url + "/predict", b"\0" * (2 * 2**20), auth)
    assert status == 413 and "--max-body-mb 1" in json.loads(body)["error"]
    data = _large_photo()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(strict.url + "/predict", data, auth), range(8)))
    codes = sorted(r[0] for r in results)
    assert codes.count(200) >= 1 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    busy = next(r for r in results if r[0] == 503)
    assert busy[1]["retry-after"] == "1" and "--max-queue 2" in json.loads(busy[2])["error"]


def test_sigterm_answers_requests_in_flight_and_exits_0(strict):
    """A request whose body is still arriving when SIGTERM comes is read to its end and answered."""
    import http.client
    import time

    data = images()[0].read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=60)
    conn.putrequest("POST", "/predict")
    conn.putheader("Authorization", "Bearer s3cret")
    conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    conn.send(data[:len(data) // 2])
    time.sleep(0.5)  # received and being read
    strict.proc.terminate()
    time.sleep(0.5)
    conn.send(data[len(data) // 2:])
    response = conn.getresponse()
    assert response.status == 200 and response.read().startswith(b"\x89PNG")
    assert strict.stop(timeout=60) == 0
    assert any(line.startswith("stopped after") for line in strict.lines)
