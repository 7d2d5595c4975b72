"""segrt serve --ray: the same application on a local Ray Serve instance answers as the one-process server."""

from __future__ import annotations

import socket
import subprocess
import sys
import numpy as np
import pytest
from PIL import Image
from serve_helpers import ROOT, Server, images

pytestmark = pytest.mark.slow
pytest.importorskip("ray.serve")
th = pytest.importorskip("tritonclient.http")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_masks_equal_predict(tmp_path):
    out = tmp_path / "predicted"
    files = images()[:3]
    res = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", *map(str, files), "--out", str(out), "--quiet",
                          "--no-color"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with Server("--ray", "--replicas", 1, "--port", free_port(), timeout=300) as server:
        client = th.InferenceServerClient(server.host)
        assert client.is_model_ready("pets")
        inp = th.InferInput("image_bytes", [len(files)], "BYTES")
        inp.set_data_from_numpy(np.array([f.read_bytes() for f in files], dtype=object))
        result = client.infer("pets", [inp])
        for f, m, (h, w) in zip(files, result.as_numpy("masks"), result.as_numpy("mask_shapes")):
            assert np.array_equal(m[:h, :w], np.asarray(Image.open(out / f"{f.stem}.png")))
        assert server.stop(timeout=120) == 0, "\n".join(server.lines)
    text = "\n".join(server.lines)
    assert "through Ray Serve" in text and "model 'pets'" in text and "stopped" in text
