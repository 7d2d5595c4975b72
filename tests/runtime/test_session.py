"""Session on a synthetic ONNX model and export: what it runs, what it refuses, what it says."""

import numpy as np
import pytest
from synthetic import conv_onnx, conv_weights, tiny_export

from segrt.errors import ProviderError, SegrtError
from segrt.runtime.backends.base import SessionOptions, finished, open_backend, run_failed
from segrt.runtime.session import Session

X = np.random.default_rng(1).standard_normal((2, 3, 8, 12)).astype(np.float32)


def test_a_bare_onnx_runs_its_conv(tmp_path):
    path = conv_onnx(tmp_path / "m.onnx", classes=3)
    s = Session(path, provider="cpu")
    want = np.einsum("kc,nchw->nkhw", conv_weights(path), X)
    assert np.allclose(s.run(X), want, atol=1e-5) and s.provider == "cpu" and s.kind == "onnx"
    assert (s.run_masks(X) == want.argmax(1)).all() and s.submit(X).result().shape == (2, 3, 8, 12)
    assert s.manifest.classes == ["class0", "class1", "class2"] and s.describe().startswith("m.onnx (onnx fp32)")


def test_an_export_is_verified_and_named(tmp_path):
    folder = tiny_export(tmp_path / "e")
    s = Session(folder, provider="cpu")
    assert s.artifact.name == "model.onnx" and s.describe().startswith("model.onnx (onnx fp32) on")
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"x")
    with pytest.raises(SegrtError, match="sha256 does not match"):
        Session(folder, provider="cpu")


def test_unknown_or_unavailable_providers_are_errors(tmp_path):
    path = conv_onnx(tmp_path / "m.onnx")
    with pytest.raises(ProviderError, match="unknown provider 'gpu'"):
        Session(path, provider="gpu")
    with pytest.raises(ProviderError):  # no CUDA here: never a quiet CPU fallback
        Session(path, provider="cuda")


def test_one_output_channel_is_a_sigmoid(tmp_path):
    s = Session(conv_onnx(tmp_path / "one.onnx", classes=1), provider="cpu")
    logits = s.run(X)
    assert s.manifest.classes[0] == "background" and logits.shape[1] == 2 and (logits[:, 0] == 0).all()
    assert "read as a sigmoid" in s.auto_note
    assert (s.run_masks(X) == (logits[:, 1] > 0)).all()


def test_a_fixed_batch_model_is_run_in_chunks(tmp_path):
    path = conv_onnx(tmp_path / "b1.onnx", in_shape=[1, 3, 8, 12], out_shape=[1, 2, 8, 12])
    s = Session(path, provider="cpu")
    x = np.concatenate([X, X[:1]])
    assert s.run(x).shape == (3, 2, 8, 12) and np.allclose(s.run(x)[2], s.run(X[:1])[0])


def test_backend_helpers(tmp_path):
    fut = finished(lambda x: x * 2, np.ones(2))
    assert fut.done() and (fut.result() == 2).all() and fut.span[0] <= fut.span[1]
    assert finished(lambda x: 1 / 0, np.ones(2)).exception() is not None
    err = run_failed(tmp_path / "m.onnx", "ONNX Runtime", X, ValueError("bad\nmore"))
    assert str(err) == f"{tmp_path / 'm.onnx'}: ONNX Runtime failed on an input of shape [2, 3, 8, 12] (bad)"
    s = Session(conv_onnx(tmp_path / "m.onnx"), provider="cpu")
    with pytest.raises(SegrtError, match="cannot run an artifact of kind 'weird'"):
        open_backend(s.path, type("A", (), {"kind": "weird"})(), "cpu", SessionOptions(), s.manifest)
