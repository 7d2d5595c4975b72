"""segrt serve's start: every problem is one line and exit 2, before anything listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from serve_helpers import ROOT, Server

from conftest import one_line_error

pytestmark = pytest.mark.slow
MODEL = ROOT / "exported" / "pets"


def serve(*args, env=None):
    return subprocess.run([sys.executable, "-m", "segrt.cli", "serve", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(serve("--port", port), f"127.0.0.1:{port} is already in use", "--port")


def test_no_such_export_unavailable_provider_and_duplicate_names(tmp_path):
    one_line_error(serve("--port", 0, "--model", tmp_path / "nope"), "nope")
    one_line_error(serve("--port", 0, "--provider", "cuda"), "cuda")
    one_line_error(serve("--port", 0, "--model", MODEL, "--model", MODEL), "two models are named 'pets'")
    one_line_error(serve("--port", 0, "--replicas", 2), "--replicas needs --ray")
    (tmp_path / "token").write_text("")
    one_line_error(serve("--port", 0, "--token-file", tmp_path / "token"), "--token-file", "nothing")


def test_a_variant_failing_its_gate_here_is_refused(tmp_path):
    """As on an AVX2-only CPU, where the OpenVINO INT8 file agrees 0.984 (test_default_model)."""
    env = {"SEGRT_SIMULATE_ISA": "avx2", "SEGRT_CACHE_DIR": str(tmp_path / "cache")}
    one_line_error(serve("--port", 0, "--model", MODEL / "model.u8.int8.xml", "--provider", "openvino", env=env),
                   "model.u8.int8.xml agrees only", "--allow-below-gate")


def test_another_host_is_said():
    with Server("--host", "0.0.0.0", timeout=120) as s:  # noqa: S104 - the note is what is tested
        assert s.stop() == 0
    assert any("--host 0.0.0.0 is reachable from other machines" in line and "--token-file" in line
               for line in s.lines)
