import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PETS, ROOT, train_args
from PIL import Image

from segrt.model.checkpoint import load_checkpoint
from segrt.model.unet import UNet, UNetConfig
from segrt.training.__main__ import main
from segrt.training.widen import can_widen, widen


def rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_real_run_learns(tmp_path):
    assert main(train_args(tmp_path, "--epochs", "6")) == 0
    r = rows(tmp_path)
    assert [int(x["epoch"]) for x in r] == list(range(1, 7))
    assert float(r[-1]["train_loss"]) < float(r[0]["train_loss"])
    assert max(float(x["val_miou"]) for x in r[1:]) > float(r[0]["val_miou"])
    best, last = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(tmp_path / "last.pt")
    assert best["metrics"]["val_miou"] == pytest.approx(max(float(x["val_miou"]) for x in r))
    assert last["classes"] == ["background", "pet", "border"] and last["epoch"] == 6
    assert set(last["metrics"]["val"]["iou"]) == {"background", "pet", "border"}
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    torch.load(tmp_path / "best.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--ema", "0.9")])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, extra):
    """Also with --ema: the average and the raw weights both continue exactly."""
    import segrt.training.train as T

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(train_args(a, "--epochs", "3", *extra)) == 0
    real_plot = T.plot_curves

    def interrupt_after_epoch_2(csv_path, png_path):  # Ctrl-C once epoch 2 is saved
        real_plot(csv_path, png_path)
        if len(rows(csv_path.parent)) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "plot_curves", interrupt_after_epoch_2)
    assert main(train_args(b, "--epochs", "3", *extra)) == 130
    saved = load_checkpoint(b / "last.pt")
    assert saved["epoch"] == 2
    monkeypatch.setattr(T, "plot_curves", real_plot)
    assert main(train_args(b, "--epochs", "3", "--resume", str(b / "last.pt"), *extra)) == 0
    assert [int(x["epoch"]) for x in rows(b)] == [1, 2, 3]
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert cb["epoch"] == 3
    for key in ("state_dict", "raw_state_dict") if extra else ("state_dict",):
        for k, v in ca[key].items():
            torch.testing.assert_close(cb[key][k], v, msg=k)
    if extra:  # the checkpoint holds the average; the raw weights differ from it
        assert not torch.equal(ca["state_dict"]["head.weight"], ca["raw_state_dict"]["head.weight"])
        assert "val_miou_raw" in rows(a)[0]
    steps = lambda c: int(c["optimizer"]["state"][0]["step"])
    assert steps(cb) == steps(ca) and steps(saved) == 2 * steps(ca) // 3
    for k, v in ca["optimizer"]["state"][0].items():
        torch.testing.assert_close(cb["optimizer"]["state"][0][k], v, msg=k)


@pytest.mark.slow
def test_init_starts_from_a_checkpoints_weights(tmp_path, capsys):
    """--init at another --size: with a vanishing learning rate the weights stay the checkpoint's."""
    assert main(train_args(tmp_path / "a", "--epochs", "1")) == 0
    assert main(train_args(tmp_path / "b", "--epochs", "1", "--size", "96", "--lr", "1e-12",
                           "--init", str(tmp_path / "a" / "last.pt"))) == 0
    start, end = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert end["train_args"]["size"] == 96
    for k, v in start["state_dict"].items():
        if "running_" not in k and "num_batches" not in k:  # parameters; BN statistics move with the data
            torch.testing.assert_close(end["state_dict"][k], v, msg=k)
    capsys.readouterr()
    assert main(train_args(tmp_path / "c", "--epochs", "1", "--base-channels", "12",
                           "--init", str(tmp_path / "a" / "last.pt"))) == 0
    assert "widened from base 8 to 12" in capsys.readouterr().out
    assert main(train_args(tmp_path / "d", "--epochs", "1", "--base-channels", "4",
                           "--init", str(tmp_path / "a" / "last.pt"))) == 2
    err = capsys.readouterr().err.strip()
    assert "last.pt: its weights do not fit this model" in err and "\n" not in err


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_widening_keeps_the_function(upsampling):
    """Net2WiderNet: base 8 -> 12 computes the same logits (trained-looking BN statistics); the noise
    then makes copied channels differ."""
    narrow, wide = UNetConfig(3, 3, 8, 3, upsampling), UNetConfig(3, 3, 12, 3, upsampling)
    torch.manual_seed(0)
    small = UNet(narrow)
    for bn in (m for m in small.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        for t in (bn.weight.data, bn.bias.data, bn.running_mean):
            t.normal_()
        bn.running_var.uniform_(0.5, 2)
    assert can_widen(narrow, wide) and not can_widen(wide, narrow)
    assert not can_widen(narrow, UNetConfig(3, 3, 12, 4, upsampling))
    x = torch.randn(2, 3, 32, 32)
    big = UNet(wide)
    for noise in (0.0, 0.01):
        big.load_state_dict(widen(small.state_dict(), narrow, wide, torch.Generator().manual_seed(0), noise))
        with torch.no_grad():
            diff = (small.eval()(x) - big.eval()(x)).abs().max().item()
        assert (diff < 1e-5) if noise == 0 else (1e-5 < diff < 0.2)
    copies = big.inc[0].weight[8:]  # the extra channels are copies of the first 8, plus noise
    assert not any(torch.equal(c, o) for c in copies for o in big.inc[0].weight[:8])


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "segrt.training", *train_args(tmp_path, "--epochs", "1", "--threads", "1")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["train_args"]["epochs"] == 1
    assert "2 process(es)" in res.stdout


def copy_pets(tmp_path, n=10):
    root = tmp_path / "pets"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for p in sorted((PETS / sub).iterdir())[:n]:
            shutil.copy(p, root / sub)
    return root


def run_cli(args):
    return subprocess.run([sys.executable, "-m", "segrt.training", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("breakage,expected", [
    ("no_mask", "no mask named"),
    ("size", "but its mask"),
    ("values", "not in the class mapping"),
    ("corrupt", "not an image"),
])
@pytest.mark.slow
def test_bad_data_one_line(tmp_path, breakage, expected):
    root = copy_pets(tmp_path)
    first = sorted((root / "images").iterdir())[0]
    mask = root / "masks" / (first.stem + ".png")
    if breakage == "no_mask":
        mask.unlink()
    elif breakage == "size":
        Image.open(mask).resize((10, 10)).save(mask)
    elif breakage == "values":
        m = np.array(Image.open(mask))
        m[0, 0] = 7
        Image.fromarray(m).save(mask)
    else:
        first.write_bytes(b"this is not a jpeg")
    args = train_args(tmp_path / "run", "--epochs", "1", "--batch-size", "4")
    args[args.index("--data") + 1] = str(root)
    res = run_cli(args)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert err.startswith("error: ") and expected in err and first.stem in err
    assert len(err.splitlines()) == 1 and "Traceback" not in res.stderr
    res = run_cli(args + ["--skip-bad"])  # documented flag: skip and count
    assert res.returncode == 0, res.stderr
    assert "skipped 1 bad file" in res.stdout


@pytest.mark.slow
def test_isbi_layout_grayscale(tmp_path):
    from segrt.training import data

    layout = data.isbi_layout(ROOT / "tests" / "data" / "isbi")
    pairs, _ = data.find_pairs(layout)
    image, mask = data.load_pair(pairs[0].image, pairs[0].mask, layout)
    assert image.shape == (512, 512, 1) and set(np.unique(mask).tolist()) == {0, 1}
    raw = np.array(Image.open(pairs[0][1]))
    assert ((raw == 0) == (mask == 0)).all()  # membrane (0) is class 0
    args = ["--layout", "isbi", "--data", str(ROOT / "tests" / "data" / "isbi"), "--out", str(tmp_path),
            "--size", "64", "--base-channels", "4", "--depth", "2", "--batch-size", "2", "--epochs", "1",
            "--workers", "0", "--quiet", "--val-fraction", "0.25"]
    assert main(args) == 0
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["model_config"]["in_channels"] == 1 and ckpt["classes"] == ["membrane", "interior"]
    assert ckpt["normalization"] == {"mean": [0.5], "std": [0.25]}


def test_channels_last_is_the_default_and_steps_like_nchw():
    """segrt train runs NHWC unless --no-channels-last; a step there has NCHW's loss and gradients,
    and its weights load into a plain NCHW model (export, predict)."""
    import copy
    from contextlib import nullcontext

    from segrt.model.checkpoint import cpu_state
    from segrt.model.unet import UNet, UNetConfig
    from segrt.training.cli import parse
    from segrt.training.losses import SegmentationLoss
    from segrt.training.train import train_step

    assert parse(["--out", "r"]).channels_last
    assert not parse(["--out", "r", "--no-channels-last"]).channels_last
    torch.manual_seed(0)
    nchw = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=8, depth=3)).train()
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    loss_fn, scaler = SegmentationLoss(1, 1, None, 255), torch.amp.GradScaler("cuda", enabled=False)
    losses = [train_step(m, xx, y, loss_fn, torch.optim.AdamW(m.parameters(), lr=1e-3), scaler, nullcontext, 1.0)
              for m, xx in ((nchw, x), (nhwc, x.contiguous(memory_format=torch.channels_last)))]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert nhwc.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    grads = [dict(m.named_parameters()) for m in (nchw, nhwc)]
    for k, p in grads[0].items():  # Adam's first step is ~lr * sign(grad): compare the gradients
        torch.testing.assert_close(grads[1][k].grad, p.grad, atol=1e-5, rtol=1e-3, msg=k)
    plain = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=8, depth=3)).eval()
    plain.load_state_dict(cpu_state(nhwc))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), nhwc.eval()(x), atol=1e-4, rtol=1e-4)
