"""The error contract on the training side (issue 36): one line, exit 2 (a full disk: exit 1), before
the first epoch where it is about the input; nothing half-written; never PyTorch's internal text."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, one_line_error
from PIL import Image

from segrt.errors import CheckpointError

ARGS = ["--size", "32", "--base-channels", "4", "--depth", "2", "--batch-size", "2", "--workers", "0", "--epochs", "1"]


def _train(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "segrt.cli", "train", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def _pairs(folder, n, classes=(0, 1)):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        mask = np.full((32, 32), classes[0], np.uint8)
        mask[16:] = classes[-1]
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / "images" / f"{i}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i}.png")
    return ["--images", folder / "images", "--masks", folder / "masks"]


def test_one_pair_is_one_line_before_any_epoch(tmp_path):
    res = _train(*_pairs(tmp_path / "d", 1), "--classes", "a,b,c", "--out", tmp_path / "run", *ARGS)
    one_line_error(res, "1 image/mask pair(s) in all, 0 to train on and 1 to validate on", "at least 1 of each")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_classes_that_never_appear_are_named(tmp_path):
    res = _train(*_pairs(tmp_path / "d", 4), "--classes", "a,b,c", "--out", tmp_path / "run", *ARGS, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "warning: never in the train masks: c (0 pixels); the model cannot learn them" in res.stdout


def test_a_fifo_among_the_images_is_refused_not_opened(tmp_path):
    args = _pairs(tmp_path / "d", 4)
    os.mkfifo(tmp_path / "d" / "images" / "9.png")
    shutil.copy(tmp_path / "d" / "masks" / "0.png", tmp_path / "d" / "masks" / "9.png")
    res = _train(*args, "--classes", "a,b", "--out", tmp_path / "run", *ARGS, timeout=60)  # a hang fails here
    one_line_error(res, "9.png: not a regular file (a FIFO)")


@pytest.mark.parametrize("content,fragment", [(b"", "truncated, or not a checkpoint"),
                                              (b"PK\x03\x04garbage" * 50, "truncated, or not a checkpoint")])
def test_unreadable_checkpoints_are_plain_words(tmp_path, tiny_ckpt, content, fragment):
    from segrt.model.checkpoint import load_checkpoint

    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_ckpt.read_bytes()[:3000] if not content else content)
    for path in (cut,):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert ("truncated" in text or "not a torch checkpoint" in text or "corrupt" in text), text
        assert "weights_only" not in text and "miniz" not in text and "PytorchStreamReader" not in text, text


def _tmpfs(path, size):
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.decode().strip()[:80]})")


def test_a_full_disk_while_training_and_exporting_is_one_line(tmp_path, tiny_ckpt):
    disk = tmp_path / "disk"
    _tmpfs(disk, "120k")
    try:
        res = _train(*_pairs(tmp_path / "d", 4), "--classes", "a,b", "--out", disk / "run", *ARGS, "--base-channels",
                     "32", "--quiet")
        line = one_line_error(res, "no space left on", "while writing", code=1)
        assert str(disk) in line
        assert not [p for p in (disk / "run").rglob("*") if p.name.endswith(".tmp")]
        res = subprocess.run([sys.executable, "-m", "segrt.cli", "export", str(tiny_ckpt), "--out", str(disk / "exp"),
                              "--formats", "onnx"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        one_line_error(res, "no space left on", code=1)
        assert not (disk / "exp").exists()
    finally:
        subprocess.run(["umount", str(disk)])


_WRITER = """import sys, torch
from segrt.model.checkpoint import save_checkpoint
from segrt.model.unet import UNet, UNetConfig
model = UNet(UNetConfig(base_channels=96, depth=4))
print("writing", flush=True)
while True:
    save_checkpoint(sys.argv[1], model=model, classes=["a", "b"], normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
                    input_size=[64, 64])
"""


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path, tiny_ckpt):
    from segrt.model.checkpoint import load_checkpoint

    target = tmp_path / "last.pt"
    shutil.copy(tiny_ckpt, target)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, cwd=ROOT)
    proc.stdout.readline()
    time.sleep(1.5)  # several large writes are under way: kill one in the middle
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(target)  # the previous checkpoint, or a complete later one: never half of one
    assert ckpt["classes"] in (torch.load(tiny_ckpt, weights_only=True)["classes"], ["a", "b"])
