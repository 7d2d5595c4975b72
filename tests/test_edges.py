"""Hostile and careless inputs, fast: on a synthetic export (a 1x1-conv ONNX model with a real
manifest) and an untrained tiny checkpoint. One test per family of issue 25: data loss, the closed
export, integrity, manifest values, the output side, signals and pipes, nothing silent, resources,
training options. Each checks the one-line error, the exit code and that nothing was lost."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import PETS, ROOT
from conftest import one_line_error as one_line
from PIL import Image
from synthetic import conv_onnx, tiny_export

from segrt.cli import main
from segrt.errors import SegrtError
from segrt.manifest import Manifest

PHOTO = PETS / "images" / "Abyssinian_11.jpg"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tiny_checkpoint(path, **fields):
    from segrt.model.checkpoint import save_checkpoint
    from segrt.model.unet import UNet, UNetConfig

    path.parent.mkdir(parents=True, exist_ok=True)
    model = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=4, depth=2))
    save_checkpoint(path, model=model, classes=["a", "b", "c"], normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
                    input_size=(32, 32))
    if fields:
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(fields)
        torch.save(ckpt, path)
    return path


def photos(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.open(PHOTO).resize((48, 40)).save(folder / n)
    return folder


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# 1. data loss ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", ".."])
def test_triton_repo_never_replaces_the_repository(tmp_path, name):
    exp = tiny_export(tmp_path / "exp")
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text("keep me")
    one_line(cli("triton-repo", exp, "--out", repo, "--name", name), "--name", "must be a plain name")
    assert (repo / "other_model" / "config.pbtxt").read_text() == "keep me"
    data = json.loads((exp / "manifest.json").read_text())
    data["name"] = name  # the export's own name is checked the same way
    (exp / "manifest.json").write_text(json.dumps(data))
    one_line(cli("triton-repo", exp, "--out", repo), "the export's name", "must be a plain name")
    assert tree(repo) == ["other_model", "other_model/1", "other_model/config.pbtxt"]


def test_triton_repo_keeps_the_export_and_foreign_folders(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    before = tree(exp)
    one_line(cli("triton-repo", exp, "--out", tmp_path), "contains the export folder")
    one_line(cli("triton-repo", exp, "--out", exp), "is the export folder")
    assert tree(exp) == before
    (tmp_path / "repo" / "tiny").mkdir(parents=True)
    (tmp_path / "repo" / "tiny" / "notes.txt").write_text("mine")
    one_line(cli("triton-repo", exp, "--out", tmp_path / "repo"), "is not a Triton model entry segrt made")
    assert (tmp_path / "repo" / "tiny" / "notes.txt").read_text() == "mine"
    assert cli("triton-repo", exp, "--out", tmp_path / "r2").exit_code == 0
    assert cli("triton-repo", exp, "--out", tmp_path / "r2").exit_code == 0  # its own entry: replaced
    assert tree(tmp_path / "r2") == ["tiny", "tiny/1", "tiny/1/model.onnx", "tiny/config.pbtxt", "tiny/manifest.json"]


def test_export_force_never_deletes_the_run(tmp_path):
    run = tmp_path / "runs" / "x"
    ckpt = tiny_checkpoint(run / "best.pt")
    (run / "metrics.csv").write_text("epoch\n1\n")
    for out in (run, tmp_path / "runs"):
        one_line(cli("export", ckpt, "--out", out, "--force", "--formats", "onnx"), "contains the checkpoint")
    assert tree(run) == ["best.pt", "metrics.csv"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    one_line(cli("export", ckpt, "--out", tmp_path / "mine", "--force", "--formats", "onnx"),
             "is not an export folder segrt made")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_predict_checks_final_output_names(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    src = photos(tmp_path / "in", "a.jpg", "a.color.jpg")
    one_line(cli("predict", src, "--model", exp, "--out", tmp_path / "o", "--provider", "cpu"),
             "would both write", "a.color.png")
    assert not (tmp_path / "o").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "b.png").write_bytes(b"the user's own file")
    one_line(cli("predict", photos(tmp_path / "in2", "b.jpg"), "--model", exp, "--out", mine, "--provider", "cpu"),
             "b.png exists", "holds no summary of a segrt run")
    assert (mine / "b.png").read_bytes() == b"the user's own file"
    out = tmp_path / "o2"  # a folder segrt wrote may be written again
    for _ in range(2):
        assert cli("predict", tmp_path / "in2", "--model", exp, "--out", out, "--provider", "cpu").exit_code == 0


# 2. the closed export ------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["../other.onnx", "ABSOLUTE", "link.onnx"])
def test_manifest_paths_stay_inside_the_export(tmp_path, file):
    from segrt.manifest import sha256_file

    exp = tiny_export(tmp_path / "exp")
    outside = conv_onnx(tmp_path / "other.onnx")
    file = str(outside) if file == "ABSOLUTE" else file
    if file == "link.onnx":
        os.symlink(outside, exp / file)
    data = json.loads((exp / "manifest.json").read_text())
    data["artifacts"][0].update(file=file, name=file, sha256=sha256_file(outside))  # even with a matching hash
    (exp / "manifest.json").write_text(json.dumps(data))
    expect = "symbolic link that leads out" if file == "link.onnx" else "not a relative name inside the export"
    one_line(cli("predict", photos(tmp_path / "in", "a.jpg"), "--model", exp, "--out", tmp_path / "o",
                 "--provider", "cpu"), expect)
    one_line(cli("triton-repo", exp, "--out", tmp_path / "repo"), expect)
    assert not (tmp_path / "repo").exists() and not (tmp_path / "o").exists()


# 3. integrity --------------------------------------------------------------------------------------------
def test_corrupt_or_odd_checkpoints_are_refused(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    with zipfile.ZipFile(ckpt) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor's bytes
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(ckpt.read_bytes())
    for i in range(64):
        data[start + 100 + i] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    one_line(cli("export", tmp_path / "flipped.pt", "--out", tmp_path / "e"), "fails the CRC check")
    assert not (tmp_path / "e").exists()
    cases = {"classes": (["a", "b"], "classes must be one name per model output"),
             "input_size": ("256", "input_size must be null or [height, width]"),
             "normalization": ({"mean": [0.5], "std": [0.2] * 3}, "normalization must be {mean, std} with 3")}
    for key, (value, fragment) in cases.items():
        one_line(cli("export", tiny_checkpoint(tmp_path / f"{key}.pt", **{key: value}), "--out", tmp_path / "e"),
                 fragment)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    state = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    one_line(cli("export", tiny_checkpoint(tmp_path / "nan.pt", state_dict=state), "--out", tmp_path / "e"),
             "holds NaN or infinite values")
    one_line(cli("export", ckpt, "--out", tmp_path / "e", "--opset", "-5"), "--opset -5: choose 13..")
    assert not (tmp_path / "e").exists()


# 4. manifest values --------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,fragment", [
    (lambda d: [d], "a JSON object expected, got list"),
    (lambda d: {**d, "classes": ["a", "b", "c"]}, "num_classes must be the number of classes (3)"),
    (lambda d: {**d, "normalization": {"mean": [0.5] * 3, "std": [0.0] * 3}}, "normalization.std must be > 0"),
    (lambda d: {**d, "normalization": {"mean": [0.5], "std": [0.25] * 3}}, "normalization.mean must be 3 finite"),
    (lambda d: {**d, "input": {**d["input"], "size": "256"}}, "input.size must be null or [height, width]"),
    (lambda d: {**d, "input": {**d["input"], "size_multiple": "32"}}, "input.size_multiple must be an integer"),
])
def test_malformed_manifests_are_one_line(tmp_path, edit, fragment):
    exp = tiny_export(tmp_path / "exp")
    (exp / "manifest.json").write_text(json.dumps(edit(json.loads((exp / "manifest.json").read_text()))))
    one_line(cli("predict", photos(tmp_path / "in", "a.jpg"), "--model", exp, "--out", tmp_path / "o"), fragment)
    (exp / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SegrtError, match="nested too deeply|malformed manifest"):
        Manifest.load(exp)


def test_class_count_must_match_the_model(tmp_path):
    exp = tiny_export(tmp_path / "exp", classes=("a", "b", "c"))
    conv_onnx(exp / "model.onnx", classes=2)  # the file has 2 outputs, the manifest 3 classes
    m = Manifest.load(exp)
    m.add_artifact(exp, m.artifacts[0])
    m.save(exp)
    one_line(cli("predict", photos(tmp_path / "in", "a.jpg"), "--model", exp, "--out", tmp_path / "o",
                 "--provider", "cpu"), "outputs 2 class channels but its metadata lists 3 classes")


# 5. the output side --------------------------------------------------------------------------------------
def test_output_side_failures_are_one_line(tmp_path, monkeypatch):
    exp, src = tiny_export(tmp_path / "exp"), photos(tmp_path / "in", "a.jpg", "b.jpg")
    (tmp_path / "file").write_text("x")
    cpu = ("--provider", "cpu")
    one_line(cli("predict", src, "--model", exp, "--out", tmp_path / "file" / "o", *cpu), "--out",
             "cannot create it (Not a directory)")
    (tmp_path / "o" / "summary.json").mkdir(parents=True)
    one_line(cli("predict", src, "--model", exp, "--out", tmp_path / "o", *cpu),
             "summary.json there is not a regular file")
    import segrt.fsutil

    monkeypatch.setattr(segrt.fsutil, "writable", lambda folder: False)  # root ignores permissions: pretend
    one_line(cli("predict", src, "--model", exp, "--out", tmp_path / "ro", *cpu), "--out", "not writable")
    monkeypatch.undo()
    import errno

    import segrt.predict.pipeline

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segrt.predict.pipeline, "write_bytes_atomic", full)
    res = cli("predict", src, "--model", exp, "--out", tmp_path / "full", "--provider", "cpu")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert sum("No space left on device" in ln and ln.startswith("error:") for ln in res.output.splitlines()) == 2
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["written"] == 0 and not list((tmp_path / "full").rglob("*.tmp*"))


def test_parity_and_quantize_never_write_over_what_they_read(tmp_path, monkeypatch):
    exp = tiny_export(tmp_path / "exp")
    before = (exp / "model.onnx").read_bytes()
    from segrt.verify.parity import check_outputs

    m = Manifest.load(exp)
    for option, target in (("--json", exp / "model.onnx"), ("--report", exp / "manifest.json")):
        with pytest.raises(SegrtError, match="is one of the files it reads"):
            check_outputs(exp, m, None, None, target if option == "--json" else None,
                          target if option == "--report" else None, None)
    with pytest.raises(SegrtError, match="lies inside the images folder"):
        check_outputs(exp, m, str(tmp_path / "in"), None, None, photos(tmp_path / "in", "a.jpg") / "r.html", None)
    assert (exp / "model.onnx").read_bytes() == before
    import segrt.fsutil

    monkeypatch.setattr(segrt.fsutil, "writable", lambda folder: False)
    one_line(cli("quantize", exp, "--calib-images", tmp_path / "in"), "not writable")
    with pytest.raises(SegrtError, match="--record writes the quality into its manifest"):
        check_outputs(exp, m, None, None, None, None, "val")


# 6. signals and pipes ------------------------------------------------------------------------------------
def segrt_process(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "segrt.cli", *map(str, args)], cwd=ROOT, text=True,
                            stderr=subprocess.PIPE, **kw)


def test_sigterm_is_an_interrupt_and_stale_temps_go(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    src = photos(tmp_path / "in", "a.jpg")
    for i in range(3000):
        os.symlink(src / "a.jpg", src / f"p{i:04d}.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    stale = out / ".p0000.png.999999.abcd.tmp.png"  # a SIGKILLed writer's temp (pid 999999 is not running)
    stale.write_bytes(b"partial")
    proc = segrt_process("predict", src, "--model", exp, "--out", out, "--provider", "cpu", "--quiet",
                         stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("p*.png"))) < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert summary["interrupted"] and summary["stopped_by"] == "SIGTERM" and 0 < summary["written"] < 3001
    assert f"removed {stale}" in err and not list(out.rglob("*.tmp*"))


def test_a_closed_stdout_is_not_an_image_failure(tmp_path):
    exp, src = tiny_export(tmp_path / "exp"), photos(tmp_path / "in", "a.jpg", "b.jpg")
    proc = segrt_process("predict", src, "--model", exp, "--out", tmp_path / "o", "--provider", "cpu",
                         stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader went away (`| head -0`)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["written"] == 2


# 7. nothing silent ---------------------------------------------------------------------------------------
def test_folders_that_cannot_be_read_are_named(tmp_path):
    exp, src = tiny_export(tmp_path / "exp"), photos(tmp_path / "in", "a.jpg")
    photos(tmp_path / "elsewhere", "linked.jpg")
    os.symlink(tmp_path / "elsewhere", src / "sub")  # followed
    os.symlink(src, src / "loop")  # followed once: no endless walk
    deep = src
    fd = os.open(src, os.O_RDONLY)
    for _ in range(30):  # a folder path longer than PATH_MAX (4096)
        os.mkdir("d" * 200, dir_fd=fd)
        fd2 = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = fd2
    os.close(fd)
    res = cli("predict", src, "--model", exp, "--out", tmp_path / "o", "--provider", "cpu")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert res.exit_code == 1 and summary["written"] == 2 and (tmp_path / "o" / "sub" / "linked.png").is_file()
    assert summary["failed"] == 1 and "cannot read this folder" in summary["failures"][0]["reason"], summary
    assert "File name too long" in res.output and deep.is_dir()


def test_animated_inputs_say_which_frame_and_one_class_models_threshold(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    src = photos(tmp_path / "in", "a.jpg")
    pages = [Image.open(PHOTO).resize((48, 40)).convert("L").point(lambda v, i=i: (v + 60 * i) % 256)
             for i in range(3)]  # distinct frames (a GIF merges equal ones)
    pages[0].save(src / "anim.gif", save_all=True, append_images=pages[1:])  # TIFF stacks: test_newcomer
    res = cli("predict", src, "--model", exp, "--out", tmp_path / "o", "--provider", "cpu")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert res.exit_code == 0 and f"{src / 'anim.gif'}: 3 pages (or frames); only the first was read" in summary["notes"]
    binary = conv_onnx(tmp_path / "sigmoid.onnx", classes=1)
    res = cli("predict", src / "a.jpg", "--model", binary, "--out", tmp_path / "b", "--provider", "cpu")
    assert res.exit_code == 0 and "read as a sigmoid" in res.output
    from segrt.imaging.decode import load_image
    from segrt.runtime.session import Session

    s = Session(binary, provider="cpu")
    x = np.random.default_rng(1).standard_normal((1, 3, 40, 48)).astype(np.float32)
    logit = s._backend.run(x)[0, 0]
    mask = np.array(Image.open(tmp_path / "b" / "a.png"))
    assert s.manifest.classes == ["background", "class0"] and set(np.unique(mask)) <= {0, 1}
    assert (s.run_masks(x)[0] == (logit > 0)).all() and 0 < (s.run_masks(x)[0]).mean() < 1
    assert mask.shape == load_image(src / "a.jpg").shape[:2]


# 8. resources --------------------------------------------------------------------------------------------
def test_bench_refuses_sizes_that_cannot_fit(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    line = one_line(cli("bench", exp, "--provider", "cpu", "--sizes", "100000"), "--sizes 100000 at batch 8 needs")
    assert "the largest size that fits at batch 8 is" in line
    one_line(cli("bench", exp, "--threads", "100000"), "'--threads': 100000 is not in the range")


# 9. training options -------------------------------------------------------------------------------------
def train(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "segrt.training", "--layout", "pets", "--data", PETS, "--out",
                           tmp_path / "run", "--size", "32", "--base-channels", "4", "--depth", "2", "--epochs", "1",
                           "--quiet", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow  # trains or runs the CLI in subprocesses
def test_training_options_are_checked_before_any_work(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    lacks = tmp_path / "lacks.json"
    lacks.write_text(json.dumps({"train": ["a"]}))
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"train": ["Abyssinian_11", "b"], "val": ["Abyssinian_11"]}))
    weights_only = tiny_checkpoint(tmp_path / "best.pt")
    cases = [(["--val-fraction", "1.5"], "'--val-fraction': must be a finite number in (0, 1)"),
             (["--crop-scale", "nan"], "'--crop-scale': must be a finite number in (0, 1]"),
             (["--dice-weight", "-1"], "'--dice-weight': must be a finite number >= 0"),
             (["--weight-decay", "nan"], "'--weight-decay': must be a finite number"),
             (["--grad-clip", "nan"], "'--grad-clip': must be a finite number > 0"),
             (["--threads", "100000"], "'--threads': 100000 is not in the range 0<=x<="),
             (["--class-weights", "1,2"], "--class-weights: expected 3 values (one per class)"),
             (["--split-file", bad], "not a readable JSON split"),
             (["--split-file", lacks], 'needs "train" and "val" lists'),
             (["--split-file", both], "1 image(s) are in both train and val"),
             (["--resume", weights_only], "holds no optimizer or scheduler state")]
    for args, fragment in cases:
        t0 = time.perf_counter()
        res = train(tmp_path, *args)
        one_line(res, fragment)
        assert time.perf_counter() - t0 < 60 and not (tmp_path / "run" / "last.pt").exists()
