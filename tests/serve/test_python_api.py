"""segrt.serve.create_app mounted in a user's own Starlette service, served by uvicorn in this process."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from serve_helpers import ROOT, images

pytestmark = pytest.mark.slow


def test_create_app_mounts_in_your_own_service():
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    import segrt.serve
    from segrt.serve.app import ServeOptions
    from segrt.serve.run import bind

    inner = segrt.serve.create_app([ROOT / "exported" / "pets" / "model.int8.onnx", ROOT / "exported" / "isbi"],
                                   ServeOptions(max_batch=2), provider="cpu")
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Mount("/segment", app=inner)]), log_level="warning"))
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/segment/predict?format=json"
        req = urllib.request.Request(url, data=images()[0].read_bytes(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.load(r)
        assert answer["model"] == "pets" and answer["variant"].startswith("model.int8.onnx (onnx int8)")
        with urllib.request.urlopen(url.replace("predict?format=json", "v2/models"), timeout=30) as r:
            assert json.load(r)["models"] == ["pets", "isbi"]  # several models, each under its export name
        slice_ = next((ROOT / "tests" / "data" / "isbi" / "images").iterdir())
        req = urllib.request.Request(url.replace("/predict?", "/predict/isbi?"), data=slice_.read_bytes(), method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.load(r)
        assert answer["model"] == "isbi" and answer["classes"] == ["membrane", "interior"]
    finally:
        server.should_exit = True
        thread.join(30)
