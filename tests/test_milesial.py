"""A model as milesial/Pytorch-UNet's users have it (tests/data/milesial: its package with relative imports,
a state_dict saved with its mask_values, predict.py's scale-0.25 bicubic pipeline): exported without a
workaround, and segrt's masks equal to that pipeline's on real photos, shown by `segrt parity --against`."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import PETS, ROOT

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
MILESIAL = ROOT / "tests" / "data" / "milesial"
ARGS = {"n_channels": 3, "n_classes": 3, "base": 8}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A few hundred steps of their training recipe (photos scaled by 0.25, trimap value - 1 as the class),
    saved as their train.py saves it: the state_dict with mask_values in it."""
    sys.path.insert(0, str(MILESIAL))
    from pipeline import preprocess
    from unet import UNet

    torch.manual_seed(0)
    net = UNet(**ARGS)
    photos = sorted((PETS / "images").glob("*.jpg"))[:24]
    data = []
    for p in photos:
        img = Image.open(p).convert("RGB")
        mask = Image.open(PETS / "masks" / f"{p.stem}.png")
        size = (int(0.25 * img.size[0]), int(0.25 * img.size[1]))
        data.append((torch.from_numpy(preprocess(img, 0.25)).float()[None],
                     torch.from_numpy(np.asarray(mask.resize(size, Image.NEAREST)).astype(np.int64) - 1)[None]))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for step in range(240):
        x, y = data[step % len(data)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    state = net.state_dict()
    state["mask_values"] = [1, 2, 3]
    path = tmp_path_factory.mktemp("milesial") / "checkpoint_epoch1.pth"
    torch.save(state, path)
    os.environ["SEGRT_MILESIAL_CKPT"], os.environ["SEGRT_MILESIAL_ARGS"] = str(path), json.dumps(ARGS)
    return path


def export(checkpoint, out, *extra):
    from segrt.cli import main

    return CliRunner().invoke(main, ["export", str(checkpoint), "--out", str(out), "--formats", "onnx",
                                     "--arch", str(MILESIAL / "unet" / "unet_model.py") + ":UNet",
                                     "--arch-args", json.dumps(ARGS), "--mean", "0", "--std", "1",
                                     "--size-multiple", "1", "--classes", "pet,background,border", *extra])


def test_their_checkpoint_exports_and_matches_their_pipeline(checkpoint, tmp_path):
    from segrt.cli import main

    res = export(checkpoint, tmp_path / "exp", "--resize", "scale:0.25", "--resize-filter", "bicubic")
    assert res.exit_code == 0, res.output
    assert "its state_dict also holds mask_values=[1, 2, 3]: set aside" in res.output
    assert "images scaled by 0.25 (bicubic)" in res.output
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["input"]["resize"] == {"scale": 0.25, "filter": "bicubic"}
    assert manifest["labels"]["mask_values"] == {"1": 0, "2": 1, "3": 2}
    res = CliRunner().invoke(main, ["parity", str(tmp_path / "exp"), "--images", str(PETS / "images"), "--against",
                                    str(MILESIAL / "pipeline.py") + ":segment", "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["agreement"] >= 0.99 and report["images"] == 32, res.output
    assert "worst first:" in res.output
    # predict writes their mask values when asked (their predict.py writes mask_values[class])
    res = CliRunner().invoke(main, ["predict", str(PETS / "images"), "--model", str(tmp_path / "exp"), "--out",
                                    str(tmp_path / "pred"), "--write-values", "--quiet", "--no-color"])
    assert res.exit_code == 0, res.output
    values = set(np.unique(np.asarray(Image.open(next((tmp_path / "pred").glob("*.png"))))).tolist())
    assert values <= {1, 2, 3} and len(values) > 1


def test_a_wrong_policy_is_seen_and_the_closest_named(checkpoint, tmp_path):
    """Exported at segrt's defaults (a fixed working size, bilinear), their pipeline disagrees; parity
    --against says so and names the change that brings it back."""
    from segrt.cli import main

    res = export(checkpoint, tmp_path / "exp", "--resize", "scale:0.25")  # bilinear where they use bicubic
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["parity", str(tmp_path / "exp"), "--images", str(PETS / "images"), "--against",
                                    str(MILESIAL / "pipeline.py") + ":nearest_segment", "--limit", "8"])
    assert "closest to your pipeline: --upsample mask" in res.output, res.output


def test_upsample_mask_equals_a_nearest_mask_pipeline(checkpoint, tmp_path):
    from segrt.cli import main

    res = export(checkpoint, tmp_path / "exp", "--resize", "scale:0.25", "--resize-filter", "bicubic", "--upsample",
                 "mask")
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["parity", str(tmp_path / "exp"), "--images", str(PETS / "images"), "--against",
                                    str(MILESIAL / "pipeline.py") + ":nearest_segment", "--limit", "12",
                                    "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a.json").read_text())["agreement"] >= 0.999


def test_a_package_module_by_file_and_the_hint_for_relative_imports(tmp_path):
    from segrt.model.arch import import_arch

    assert import_arch(str(MILESIAL / "unet" / "unet_model.py") + ":UNet").__name__ == "UNet"
    (tmp_path / "lone.py").write_text("from .parts import X\n")
    from segrt.errors import SegrtError

    with pytest.raises(SegrtError, match="relative import.*use package.module:NAME"):
        import_arch(str(tmp_path / "lone.py") + ":X")


def test_a_program_with_symbolic_sizes_exports_and_torchscript_is_skipped_in_one_line(tmp_path):
    """A torch.export program whose sides are written 4*H: ONNX and OpenVINO carry it; TorchScript
    cannot trace it, which is one line, never a traceback."""
    from torch.export import Dim

    from segrt.cli import main

    sys.path.insert(0, str(MILESIAL))
    from unet import UNet

    H, W = Dim("H", min=4, max=256), Dim("W", min=4, max=256)
    program = torch.export.export(UNet(**ARGS).eval(), (torch.randn(1, 3, 64, 96),),
                                  dynamic_shapes={"x": {2: 4 * H, 3: 4 * W}})
    torch.export.save(program, tmp_path / "unet.pt2")
    res = CliRunner().invoke(main, ["export", str(tmp_path / "unet.pt2"), "--out", str(tmp_path / "exp"), "--mean", "0",
                                    "--std", "1", "--formats", "onnx,openvino,torchscript"])
    assert res.exit_code == 0, res.output
    assert "note: torchscript skipped: torch.jit.trace cannot trace this model" in res.output
    assert "Traceback" not in res.output and "model.ts is written" not in res.output
    assert {p.name for p in (tmp_path / "exp").iterdir()} >= {"model.onnx", "model.xml", "model.pt2"}
    assert not (tmp_path / "exp" / "model.ts").exists()
