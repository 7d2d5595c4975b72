from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PETS = ROOT / "tests" / "data" / "pets"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """OpenVINO's compile cache in a temp folder, not the user's ~/.cache (subprocesses inherit it)."""
    import os

    old = os.environ.get("SEGRT_CACHE_DIR")
    os.environ["SEGRT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("SEGRT_CACHE_DIR", None)
    else:
        os.environ["SEGRT_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def pets_dir() -> Path:
    return PETS


def train_args(out, *extra):
    """Arguments for a tiny, fast real training run on the committed pet slice."""
    return ["--layout", "pets", "--data", str(PETS), "--out", str(out), "--size", "64",
            "--base-channels", "8", "--depth", "3", "--batch-size", "8", "--workers", "0",
            "--lr", "1e-2", "--quiet", "--threads", "2", *extra]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny U-Net trained for 3 epochs on real pets; returns the run folder (best.pt, last.pt)."""
    from segrt.training.__main__ import main

    out = tmp_path_factory.mktemp("tiny_run")
    assert main(train_args(out, "--epochs", "3")) == 0
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    return tiny_run / "last.pt"


@pytest.fixture(scope="session")
def exported(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint exported (onnx, torchscript, pt2) through the CLI."""
    from click.testing import CliRunner

    from segrt.cli import main

    out = tmp_path_factory.mktemp("exp") / "tiny"
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "all gates passed" in res.output and "segrt predict" in res.output
    return out


def one_line_error(res, *fragments, code=2):
    """A CliRunner result or a CompletedProcess: exit ``code``, one 'error:' line holding the
    fragments, no traceback. Returns the line."""
    err = res.stderr if getattr(res, "stderr", None) is not None and hasattr(res, "returncode") else res.output
    got = res.returncode if hasattr(res, "returncode") else res.exit_code
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
