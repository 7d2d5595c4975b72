import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import PETS, ROOT, one_line_error

from segrt.cli import main
from segrt.manifest import Manifest, sha256_file
from segrt.model.checkpoint import load_checkpoint, model_from_checkpoint
from segrt.runtime.session import Session

pytestmark = pytest.mark.slow


def test_onnx_dynamic_and_checked(exported):
    model = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert model.graph.input[0].name == "image" and model.graph.output[0].name == "logits"
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["segrt.classes"]) == ["background", "pet", "border"]
    assert json.loads(props["segrt.size_multiple"]) == 8
    assert json.loads(props["segrt.mask_values"]) == {"2": 0, "1": 1, "3": 2}


# (1, 8, 8) and (3, 8, 16): a side of exactly one size multiple, where the bottleneck is 1 pixel wide
@pytest.mark.parametrize("n,h,w", [(1, 64, 96), (2, 96, 64), (1, 40, 120), (2, 128, 72), (1, 8, 8), (3, 8, 16)])
def test_ort_runs_non_square_and_matches_eager(exported, tiny_ckpt, n, h, w):
    eager = model_from_checkpoint(load_checkpoint(tiny_ckpt))
    x = np.random.default_rng(0).standard_normal((n, 3, h, w)).astype(np.float32)
    ref = eager(torch.from_numpy(x)).detach().numpy()
    sess = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"image": x})[0]
    assert out.shape == (n, 3, h, w)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    for art in ("model.ts", "model.pt2"):
        np.testing.assert_allclose(Session(exported, artifact=art, provider="cpu").run(x), ref, atol=1e-5)


def test_predict_pt2_on_one_size_multiple(exported, tmp_path):
    """The bug this guards: torch.export assumed sizes >= 2 and guarded the 1x1 bottleneck."""
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "tiny.png")
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "tiny.png"), "--model", str(exported), "--kind", "pt2",
                                    "--native", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert np.asarray(Image.open(tmp_path / "out" / "tiny.png")).shape == (8, 8)
    from segrt.verify.parity import random_inputs

    assert "random 1x3x8x8" in [b.label for b in random_inputs(Manifest.load(exported))]  # gated at export


def test_run_failure_is_a_failed_gate(tiny_ckpt, tmp_path, monkeypatch):
    """A .pt2 exported with 0/1 specialisation (the old bug) cannot run an 8x8 input: parity names the
    artifact and the input in one line and fails, instead of a traceback."""
    import contextlib

    import segrt.export.torch_export

    monkeypatch.setattr(segrt.export.torch_export, "size_oblivious", contextlib.nullcontext)
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--formats", "pt2", "--out", str(tmp_path / "e")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "model.pt2: " in res.output and "failed on an input of shape [1, 3, 8, 8]" in res.output


def test_manifest_fields_and_hashes(exported, tiny_ckpt):
    data = json.loads((exported / "manifest.json").read_text())
    assert data["format"] == "segrt-manifest/1" and data["num_classes"] == 3
    assert data["input"]["size_multiple"] == 8 and data["input"]["size"] == [64, 64]
    assert data["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    files = {a["file"]: a for a in data["artifacts"]}
    assert set(files) == {"checkpoint.pt", "model.onnx", "model.ts", "model.pt2"}
    for name, a in files.items():
        assert a["sha256"] == sha256_file(exported / name) and a["size"] == (exported / name).stat().st_size
    assert files["model.onnx"]["opset"] == 20 and "torch.export" in files["model.onnx"]["exporter"]
    for name in ("model.onnx", "model.ts", "model.pt2"):
        p = data["parity"][name]
        assert p["passed"] and p["max_abs_logit_diff"] <= 1e-3 and p["mask_iou"] >= 0.999
        assert p["batch_invariance"]["same_mask"]
    assert {"torch", "onnx", "onnxruntime"} <= set(data["versions"])
    torch.load(exported / "checkpoint.pt", weights_only=True)


def test_parity_on_real_images_with_truth(exported, tmp_path):
    report_path = tmp_path / "report.json"
    res = CliRunner().invoke(main, ["parity", str(exported), "--images", str(PETS / "images"),
                                    "--masks", str(PETS / "masks"), "--json", str(report_path)])
    assert res.exit_code == 0, res.output
    report = json.loads(report_path.read_text())
    s = report["artifacts"]["model.onnx"]["summary"]
    assert s["inputs"] == 32 and s["pixel_agreement"] > 0.999
    assert 0 < s["miou_vs_ground_truth"] <= 1
    assert s["miou_vs_ground_truth"] == pytest.approx(s["miou_eager_vs_ground_truth"], abs=1e-3)
    assert len(report["artifacts"]["model.onnx"]["worst"]) == 5
    assert "no class id of this export" not in res.output  # the trimaps' values are all in the export's table


def test_parity_says_what_ground_truth_values_it_cannot_map_and_mask_map_maps_them(exported, tmp_path):
    """Masks labelled otherwise (the trimap's 1, 2, 3 stored as 11, 12, 13): said in one line, not
    silently left out; --mask-map maps them, and mIoU is then the same as on the original masks."""
    from PIL import Image

    (tmp_path / "m").mkdir()
    for p in sorted((PETS / "masks").iterdir())[:4]:
        Image.fromarray(np.asarray(Image.open(p)) + 10).save(tmp_path / "m" / p.name)

    def miou(*extra):
        res = CliRunner().invoke(main, ["parity", str(exported), "--images", str(PETS / "images"), "--limit", "4",
                                        "--masks", str(tmp_path / "m"), "--json", str(tmp_path / "r.json"), *extra])
        assert res.exit_code == 0, res.output
        return res.output, json.loads((tmp_path / "r.json").read_text())["artifacts"]["model.onnx"]["summary"]

    out, s = miou()
    assert "mask values 11, 12, 13 are no class id of this export (in 4 of 4 masks, 100.0% of their pixels)" in out
    assert "--mask-map VALUE:CLASS" in out and np.isnan(s["miou_vs_ground_truth"] or np.nan)
    table = Manifest.load(exported).mask_values  # the trimap's values -> the export's classes
    out, mapped = miou("--mask-map", ",".join(f"{int(raw) + 10}:{cls}" for raw, cls in table.items()))
    assert "no class id" not in out and 0 < mapped["miou_vs_ground_truth"] <= 1
    res = CliRunner().invoke(main, ["parity", str(exported), "--images", str(PETS / "images"), "--limit", "4",
                                    "--masks", str(PETS / "masks"), "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 0, res.output
    original = json.loads((tmp_path / "o.json").read_text())["artifacts"]["model.onnx"]["summary"]
    assert mapped["miou_vs_ground_truth"] == pytest.approx(original["miou_vs_ground_truth"])
    one_line_error(CliRunner().invoke(main, ["parity", str(exported), "--images", str(PETS / "images"), "--masks",
                                             str(tmp_path / "m"), "--mask-map", "11:7"]), "--mask-map: class 7")


def test_perturbed_artifact_fails_parity(exported, tmp_path):
    """Weights changed after export: parity fails (with the hash check bypassed by re-hashing)."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    model = onnx.load(str(broken / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr += np.random.default_rng(0).standard_normal(arr.shape).astype(arr.dtype) * arr.std()
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(broken / "model.onnx"))
    # first the hash check refuses and names the file
    res = CliRunner().invoke(main, ["parity", str(broken)])
    assert res.exit_code == 2 and "model.onnx: sha256 does not match" in res.output
    m = Manifest.load(broken)
    m.add_artifact(broken, m.artifact("onnx"))
    m.save(broken)
    res = CliRunner().invoke(main, ["parity", str(broken), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1, res.output
    assert "FAIL model.onnx" in res.output and "max |logit diff|" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["artifacts"]["model.ts"]["summary"]["passed"]
    assert not report["artifacts"]["model.onnx"]["summary"]["passed"]


def test_failing_gate_leaves_nothing(tiny_ckpt, tmp_path):
    out = tmp_path / "gated"
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(out), "--formats", "onnx",
                                    "--gate-logit", "0"])
    assert res.exit_code == 1
    assert "export refused, nothing written" in res.output and "model.onnx" in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_refuses_existing_out_unless_force(tiny_ckpt, exported):
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(exported)])
    assert res.exit_code == 2 and "already exists" in res.output and "--force" in res.output


@pytest.mark.parametrize("content,expected", [
    (b"", "not a readable segrt checkpoint"),
    (b"garbage" * 100, "not a readable segrt checkpoint"),
])
def test_bad_checkpoint_is_one_line_exit_2(tmp_path, content, expected):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    res = subprocess.run([sys.executable, "-m", "segrt.cli", "export", str(p), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and expected in res.stderr and "Traceback" not in res.stderr


def test_truncated_and_wrong_version(tiny_ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_ckpt.read_bytes()[:20000])
    res = CliRunner().invoke(main, ["export", str(cut)])
    assert res.exit_code == 2 and "cut.pt" in res.output
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt["format"] = "segrt-checkpoint/99"
    torch.save(ckpt, tmp_path / "v99.pt")
    res = CliRunner().invoke(main, ["export", str(tmp_path / "v99.pt")])
    assert res.exit_code == 2 and "not supported" in res.output


def test_unwritable_out(tiny_ckpt, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(blocker / "x"), "--formats", "onnx"])
    assert res.exit_code == 2 and "cannot write" in res.output and "nothing was written" in res.output


def test_disk_full_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full)
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(tmp_path / "x"), "--formats", "onnx"])
    assert res.exit_code == 1 and "no space left on" in res.output and "while writing" in res.output  # issue 36
    assert list(tmp_path.iterdir()) == []


def test_tta_hflip_is_folded_into_the_graph(tiny_ckpt, tmp_path):
    """--tta hflip: the ONNX output is the mean of the logits of x and of its mirror, and parity
    compares it with eager PyTorch doing the same."""
    out = tmp_path / "tta"
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(out), "--formats", "onnx", "--tta", "hflip"])
    assert res.exit_code == 0, res.output
    assert Manifest.load(out).tta == "hflip"
    eager = model_from_checkpoint(load_checkpoint(tiny_ckpt))
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 64, 96)).astype(np.float32))
    with torch.no_grad():
        plain, mirrored = eager(x).numpy(), eager(x.flip(-1)).flip(-1).numpy()
    logits = Session(out, provider="cpu").run(x.numpy())
    np.testing.assert_allclose(logits, (plain + mirrored) / 2, atol=1e-4)
    assert np.abs(logits - plain).max() > 1e-2  # not the plain model
    res = CliRunner().invoke(main, ["parity", str(out)])
    assert res.exit_code == 0 and "all gates passed" in res.output, res.output


def test_parity_record_stores_quality_in_the_manifest(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    res = CliRunner().invoke(main, ["parity", str(copy), "--images", str(PETS / "images"), "--masks",
                                    str(PETS / "masks"), "--record", "slice", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    quality = Manifest.load(copy).quality["slice"]
    assert quality.images == 32 and quality.classes == ["background", "pet", "border"]
    for name, entry in quality.artifacts.items():
        s = report["artifacts"][name]["summary"]
        assert entry["miou"] == s["miou_vs_ground_truth"] and entry["agreement"] == s["mask_iou"]
    Manifest.load(copy).verify(copy)  # recording touches only the manifest
    res = CliRunner().invoke(main, ["parity", str(copy), "--record", "x"])
    assert res.exit_code == 2 and "--record needs both" in res.output


def test_size_sets_the_working_size(tiny_ckpt, tmp_path):
    """--size H,W: the manifest's working size, which predict and parity resize to; a size that is
    not a multiple of the model's is one line, exit 2, nothing written."""
    from segrt.imaging.decode import read_model_input
    from segrt.imaging.files import list_images

    out = tmp_path / "sized"
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(out), "--formats", "onnx", "--size", "96,128"])
    assert res.exit_code == 0, res.output
    manifest = Manifest.load(out)
    assert manifest.input_size == [96, 128] and load_checkpoint(tiny_ckpt)["input_size"] != [96, 128]
    photo = list_images(PETS / "images")[0]
    assert read_model_input(photo, manifest)[0].shape == (3, 96, 128)
    res = CliRunner().invoke(main, ["parity", str(out), "--images", str(photo)])
    assert res.exit_code == 0 and "all gates passed" in res.output, res.output
    res = CliRunner().invoke(main, ["export", str(tiny_ckpt), "--out", str(tmp_path / "bad"), "--size", "90"])
    assert res.exit_code == 2 and not (tmp_path / "bad").exists()
    assert res.output.strip() == "error: --size 90: expected N or H,W, each a multiple of 8 (the model's size multiple)"
