import argparse

import pytest
import torch

from segrt.errors import CheckpointError
from segrt.model.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint, save_checkpoint
from segrt.model.unet import UNet, UNetConfig


@pytest.fixture
def saved(tmp_path):
    model = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=8, depth=2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.pt", model=model, classes=["a", "b", "c"],
                           normalization={"mean": [0.5] * 3, "std": [0.2] * 3}, input_size=(32, 32),
                           epoch=4, metrics={"val_miou": 0.5}, optimizer=opt)
    return path, model, opt


def test_roundtrip_weights_only(saved):
    path, model, opt = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["epoch"] == 4 and raw["classes"] == ["a", "b", "c"]
    assert raw["model_config"] == {"in_channels": 3, "num_classes": 3, "base_channels": 8, "depth": 2,
                                   "upsampling": "transpose"}
    assert raw["optimizer"]["state"][0]["exp_avg"].shape == next(model.parameters()).shape
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(rebuilt(x), model(x))
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temp file left


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable segrt checkpoint"):
        load_checkpoint(bad)


def test_truncated(saved, tmp_path):
    path = saved[0]
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(cut)


def test_arbitrary_pickle_refused(tmp_path):
    p = tmp_path / "evil.pt"  # e.g. an argparse Namespace pickled beside the weights
    torch.save({"format": FORMAT, "args": argparse.Namespace(lr=1)}, p)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(p)


def test_wrong_format_and_missing(tmp_path):
    p = tmp_path / "old.pt"
    torch.save({"format": "segrt-checkpoint/0"}, p)
    with pytest.raises(CheckpointError, match="not supported"):
        load_checkpoint(p)
    torch.save({"state_dict": {}}, p)
    with pytest.raises(CheckpointError, match="no 'format' key"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
