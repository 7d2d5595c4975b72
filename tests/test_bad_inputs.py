"""The error contract, one case per kind of bad input: exit code, one line naming the file or option,
no traceback, the other images written, no temp files left, inputs unchanged."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import PETS, ROOT, one_line_error, train_args
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from synthetic import conv_onnx

import segrt
from segrt.cli import main
from segrt.errors import CheckpointError, SegrtError
from segrt.runtime.session import Session

pytestmark = pytest.mark.slow
IMAGES = PETS / "images"


def run(*args, timeout=180):
    """`segrt ARGS` in a fresh process (a hang is a failure, not a stuck suite)."""
    return subprocess.run([sys.executable, "-m", "segrt.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def temp_files(folder):
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def two_pets(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("Abyssinian_11", "Bengal_133"):
        shutil.copy(IMAGES / f"{name}.jpg", folder)
    return folder


# 1. folder walk ------------------------------------------------------------------------------------
def test_loops_fifos_and_devices_fail_alone(exported, tmp_path):
    src = two_pets(tmp_path / "in")
    os.symlink("loop.jpg", src / "loop.jpg")
    os.mkfifo(src / "pipe.jpg")
    os.symlink("/dev/zero", src / "zero.jpg")
    before = sorted(p.name for p in src.iterdir())
    res = run("predict", src, "--model", exported, "--out", tmp_path / "out", "--provider", "cpu")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3
    assert any("loop.jpg: symbolic link loop" in e for e in errors)
    assert any("pipe.jpg: not a regular file (a FIFO)" in e for e in errors)
    assert any("zero.jpg: not a regular file (a character device)" in e for e in errors)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["written"] == 2 and summary["failed"] == 3
    assert sorted(p.name for p in src.iterdir()) == before and not temp_files(tmp_path)
    res = run("predict", "/dev/zero", "--model", exported, "--out", tmp_path / "o2", "--provider", "cpu")
    one_line_error(res, "/dev/zero: not a regular file (a character device)", code=1)


# 2. output file modes -------------------------------------------------------------------------------
def test_outputs_get_the_modes_of_a_plain_write(exported, tiny_run, tmp_path):
    from segrt.fsutil import umask

    file_mode, dir_mode = 0o666 & ~umask(), 0o777 & ~umask()
    out = tmp_path / "out"
    res = run("predict", two_pets(tmp_path / "in"), "--model", exported, "--out", out, "--overlay", "--provider", "cpu")
    assert res.returncode == 0, res.stderr
    for p in out.rglob("*"):
        assert p.stat().st_mode & 0o777 == (dir_mode if p.is_dir() else file_mode), p
    res = CliRunner().invoke(main, ["export", str(tiny_run / "last.pt"), "--out", str(tmp_path / "exp"), "--formats", "onnx"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp").stat().st_mode & 0o777 == dir_mode
    for p in (tmp_path / "exp").iterdir():
        assert p.stat().st_mode & 0o777 == file_mode, p
    for name in ("last.pt", "best.pt", "curves.png"):
        assert (tiny_run / name).stat().st_mode & 0o777 == file_mode, name


# 3. options -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--workers", "-2"], "'--workers': -2 is not in the range 0<=x<="),
    (["--threads", "-3"], "'--threads': -3 is not in the range 0<=x<="),
    (["--threads", "100000"], "'--threads': 100000 is not in the range 0<=x<="),
    (["--writers", "100000"], "'--writers': 100000 is not in the range 0<=x<="),
    (["--max-pixels", "-5"], "'--max-pixels': -5 is not in the range x>=0"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--mean", "a,b,c"], "'--mean': expected comma-separated numbers, got 'a,b,c'"),
    (["--std", "0,0,0"], "'--std': values must be > 0"),
    (["--std", "nan,1,1"], "'--std': values must be finite"),
    (["--std", "inf,1,1"], "'--std': values must be finite"),
])
def test_bad_predict_options(exported, tmp_path, args, fragment):
    res = CliRunner().invoke(main, ["predict", str(IMAGES), "--model", str(exported), "--out", str(tmp_path / "o"), *args])
    one_line_error(res, fragment)
    assert not (tmp_path / "o").exists()


def test_overrides_must_fit_the_model(exported, tmp_path):
    res = CliRunner().invoke(main, ["predict", str(IMAGES), "--model", str(exported), "--classes", "a", "--out",
                                    str(tmp_path / "o")])
    one_line_error(res, "--classes is for a bare .onnx file")
    shutil.copy(exported / "model.onnx", tmp_path / "m.onnx")
    for args, fragment in ((["--classes", "a"], "has 3 classes, got 1"),
                           (["--std", "0.2,0.2"], "has 3 input channels, got 2")):
        res = CliRunner().invoke(main, ["predict", str(IMAGES), "--model", str(tmp_path / "m.onnx"), *args, "--out",
                                        str(tmp_path / "o")])
        one_line_error(res, fragment)


@pytest.mark.parametrize("mask_map,fragment", [
    ("foo", "--mask-map: expected VALUE:CLASS pairs"),
    ("0:x", "--mask-map: expected VALUE:CLASS pairs"),
    ("2:0,1:1,3:5", "--mask-map: class 5 in '3:5' does not exist; there are 3 classes"),
])
def test_bad_training_options(tmp_path, mask_map, fragment):
    res = subprocess.run([sys.executable, "-m", "segrt.training", *train_args(tmp_path / "run", "--epochs", "1"),
                          "--mask-map", mask_map], capture_output=True, text=True, cwd=ROOT, timeout=300)
    one_line_error(res, fragment)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--sizes", "0"], "'--sizes': expected comma-separated integers >= 1"),
    (["--batch-sizes", "0"], "'--batch-sizes': expected comma-separated integers >= 1"),
    (["--runs", "0"], "'--runs': 0 is not in the range x>=1"),
    (["--artifact", "nope.onnx"], "--artifact nope.onnx: not a runnable artifact"),
])
def test_bad_bench_options(exported, args, fragment):
    res = CliRunner().invoke(main, ["bench", str(exported), "--provider", "cpu", "--runs", "1", "--sizes", "64",
                                    "--batch-sizes", "1", *args])
    one_line_error(res, fragment)


# 4. foreign ONNX models -------------------------------------------------------------------------------
def test_foreign_models(tmp_path):
    two = tmp_path / "two.onnx"
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), two)
    res = run("predict", IMAGES, "--model", two, "--out", tmp_path / "o")
    one_line_error(res, "two.onnx: the model has 2 inputs (a, b)")

    fixed = conv_onnx(tmp_path / "fixed.onnx", in_shape=[1, 3, 64, 64], out_shape=[1, 2, 64, 64])
    s = Session(fixed, provider="cpu")
    assert s.manifest.input_size == [64, 64] and s.manifest.fixed_size == [64, 64]
    assert s.run(np.zeros((3, 3, 64, 64), np.float32)).shape == (3, 2, 64, 64)  # fixed batch 1: chunked
    res = run("predict", IMAGES, "--model", fixed, "--out", tmp_path / "f", "--batch-size", "4", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["written"] == 32 and json.loads(res.stdout)["mode"] == "resize 64x64"
    mask = np.array(Image.open(tmp_path / "f" / "Bengal_133.png"))
    assert mask.shape == np.array(Image.open(IMAGES / "Bengal_133.jpg")).shape[:2]
    res = run("predict", IMAGES, "--model", fixed, "--out", tmp_path / "n", "--native")
    one_line_error(res, "fixed 64x64 input, so --native cannot apply")

    symbolic = conv_onnx(tmp_path / "sym.onnx", in_shape=["n", 3, "h", "w"], out_shape=["n", "classes", "h", "w"], classes=4)
    assert Session(symbolic, provider="cpu").manifest.num_classes == 4  # found by a probe run

    failing = conv_onnx(tmp_path / "fail.onnx", in_shape=["n", 3, "h", "w"], out_shape=["n", 2, 8, 8], extra=[])
    model = onnx.load(failing)  # logits reshaped to a fixed size: fails on any other input
    model.graph.node[0].output[0] = "conv"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 8, 8], np.int64), "shape"))
    model.graph.node.append(helper.make_node("Reshape", ["conv", "shape"], ["logits"]))
    onnx.save(model, failing)
    with pytest.raises(SegrtError, match=r"fail.onnx: ONNX Runtime failed on an input of shape \[1, 3, 32, 32\]"):
        Session(failing, provider="cpu").run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(SegrtError, match=r"a Conv2d is not an export: .* segrt.run_export\(model, OUT"):
        Session(torch.nn.Conv2d(3, 2, 1))  # an nn.Module: says what to do, not a TypeError
    with pytest.raises(SegrtError, match=r"a Conv2d is not an export"):
        segrt.run_parity(torch.nn.Conv2d(3, 2, 1))


# 5. integrity -----------------------------------------------------------------------------------------
def test_predict_refuses_a_modified_model(exported, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(exported, exp)
    data = bytearray((exp / "model.onnx").read_bytes())
    data[-100] ^= 1  # one weight byte
    (exp / "model.onnx").write_bytes(bytes(data))
    res = run("predict", IMAGES, "--model", exp, "--out", tmp_path / "o", "--provider", "cpu")
    one_line_error(res, "model.onnx: sha256 does not match manifest.json")
    assert not (tmp_path / "o").exists()


# 6. output folder -------------------------------------------------------------------------------------
def test_output_folder_rules(exported, tmp_path):
    src = two_pets(tmp_path / "in")
    res = run("predict", src, "--model", exported, "--out", src, "--provider", "cpu")
    one_line_error(res, "is an input folder")
    assert sorted(p.name for p in src.iterdir()) == ["Abyssinian_11.jpg", "Bengal_133.jpg"]
    shutil.copy(IMAGES / "Abyssinian_11.jpg", src / "old.overlay.jpg")  # earlier outputs left in the folder
    Image.new("P", (8, 8)).save(src / "old.color.png")
    res = run("predict", src, "--model", exported, "--out", tmp_path / "o", "--provider", "cpu", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["inputs"] == 2
    Image.open(IMAGES / "Bengal_133.jpg").save(src / "Bengal_133.png")
    res = run("predict", src, "--model", exported, "--out", tmp_path / "o2", "--provider", "cpu")
    one_line_error(res, "Bengal_133.jpg and", "Bengal_133.png would both write")


# 7. interrupts ------------------------------------------------------------------------------------------
def test_ctrl_c_writes_a_summary_and_exits_130(exported, tmp_path, monkeypatch):
    import segrt.predict.pipeline as PL

    real, calls = PL._Run._submit, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(PL._Run, "_submit", interrupted)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict", str(IMAGES), "--model", str(exported), "--out", str(out),
                                    "--batch-size", "2", "--provider", "cpu"])
    assert res.exit_code == 130 and "INTERRUPTED" in res.output and "--skip-existing" in res.output
    summary = json.loads((out / "summary.json").read_text())
    masks = [p for p in out.glob("*.png") if not p.name.endswith(".color.png")]
    colors = list(out.glob("*.color.png"))
    # what the summary counts is on disk, whole (mask and colour mask), and nothing after the interrupt
    assert summary["interrupted"] and summary["written"] == len(masks) == len(colors) <= 4 and not temp_files(out)


def test_export_removes_temp_folders_of_killed_exports(tiny_ckpt, tmp_path):
    stale = tmp_path / ".exp.999999.abc123.tmp"  # pid 999999 is not running
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"partial")
    busy = tmp_path / f".exp.{os.getpid()}.def456.tmp"  # a live process's work is left alone
    busy.mkdir()
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(tmp_path / "exp"), "--formats", "onnx"])
    assert res.exit_code == 0 and f"removed {stale}, left by an earlier export that was killed" in res.output
    assert not stale.exists() and busy.exists()


# 8. checkpoints ---------------------------------------------------------------------------------------
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_messages(tiny_ckpt, tmp_path):
    torch.save({"format": "segrt-checkpoint/1", "x": Evil()}, tmp_path / "evil.pt")
    res = CliRunner().invoke(main, ["export", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "e")])
    line = one_line_error(res, "evil.pt: refused: it needs posix.system to load")
    assert "False" not in line and "pwned" not in res.output
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["model_config"]["base_channels"] = 16
    torch.save(ckpt, tmp_path / "wrong.pt")
    res = CliRunner().invoke(main, ["export", str(tmp_path / "wrong.pt"), "--out", str(tmp_path / "w")])
    one_line_error(res, "wrong.pt: its weights do not fit its model config", "size mismatch")
    with pytest.raises(CheckpointError):
        from segrt.model.checkpoint import load_checkpoint, model_from_checkpoint

        model_from_checkpoint(load_checkpoint(tmp_path / "wrong.pt"))


# 9. memory --------------------------------------------------------------------------------------------
def test_batches_that_do_not_fit_in_memory(exported, tmp_path, monkeypatch):
    import segrt.cpuinfo

    monkeypatch.setattr(segrt.cpuinfo, "available_memory", lambda: 20_000_000)  # budget 16 MB
    res = CliRunner().invoke(main, ["predict", str(IMAGES), "--model", str(exported), "--out", str(tmp_path / "o"),
                                    "--batch-size", "100", "--provider", "cpu"])
    one_line_error(res, "--batch-size 100 at 64x64 needs ~0.0 GB", "use --batch-size 13 or less")
    src = tmp_path / "in"
    src.mkdir()
    Image.open(IMAGES / "Bengal_133.jpg").resize((800, 800)).save(src / "big.jpg")  # ~180 MB at native size
    for name in ("a", "b"):
        Image.open(IMAGES / "Bengal_133.jpg").resize((64, 64)).save(src / f"{name}.jpg")
    monkeypatch.setattr(segrt.cpuinfo, "available_memory", lambda: 100_000_000)
    res = CliRunner().invoke(main, ["predict", str(src), "--model", str(exported), "--out", str(tmp_path / "n"),
                                    "--native", "--provider", "cpu"])
    assert res.exit_code == 1 and "big.jpg: needs ~0.2 GB at its native 800x800" in res.output
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["written"] == 2


# 10. progress ----------------------------------------------------------------------------------------
def test_long_work_shows_progress_on_a_terminal(exported, monkeypatch, capsys):
    import segrt.progress
    from segrt.bench.bench import run_bench
    from segrt.verify.parity import run_parity

    monkeypatch.setattr(segrt.progress.sys.stderr, "isatty", lambda: True, raising=False)
    run_bench(exported, provider="cpu", batch_sizes=[1], sizes=[64], warmup=0, runs=1, artifacts=["model.onnx"])
    run_parity(exported, images=IMAGES, limit=8)
    err = capsys.readouterr().err
    assert "bench" in err and "model.onnx" in err and "eager" in err and "%" in err
