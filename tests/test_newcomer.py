"""A newcomer's own data (issue 26): defaults that follow the data, not the bundled pets. Tiny
synthetic gray folders, a tiny real training run, the synthetic export of test_edges."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, one_line_error
from PIL import Image
from test_edges import photos, tiny_export

from segrt.cli import main
from segrt.errors import SegrtError
from segrt.records import GateRecord, Gates, SpeedRecord


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def gray_folders(root, n=8, size=32, rgb=0):
    """n grayscale images (bright disc on dark) with 0/255 masks; the first ``rgb`` saved as RGB."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        disc = (yy - size / 2 - i % 3) ** 2 + (xx - size / 2) ** 2 < (size / 4 + i % 4) ** 2
        img = Image.fromarray(np.where(disc, 200, 40).astype(np.uint8) + np.uint8(i))
        (img.convert("RGB") if i < rgb else img).save(root / "images" / f"s{i:02d}.png")
        Image.fromarray(np.where(disc, 255, 0).astype(np.uint8)).save(root / "masks" / f"s{i:02d}.png")
    return root


def train_gray(root, out, *extra):
    return subprocess.run([sys.executable, "-m", "segrt.training", "--images", root / "images", "--masks",
                           root / "masks", "--classes", "membrane,interior", "--mask-map", "0:0,255:1", "--out", out,
                           "--size", "32", "--base-channels", "4", "--depth", "2", "--epochs", "1", "--batch-size", "2",
                           "--quiet", *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gray")
    res = train_gray(gray_folders(root / "data"), root / "run")
    assert res.returncode == 0, res.stderr
    return root / "run", res.stdout


@pytest.mark.slow  # trains or runs the CLI in subprocesses
def test_gray_folders_train_a_one_channel_model_and_save_the_split(gray_run):
    import torch

    run, stdout = gray_run
    assert "all 8 image files are grayscale: a 1-channel model" in stdout and "--native" in stdout
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["model_config"]["in_channels"] == 1 and ckpt["normalization"] == {"mean": [0.5], "std": [0.25]}
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == [f"s{i:02d}" for i in range(8)] and len(split["val"]) == 2
    assert not set(split["train"]) & set(split["val"])


@pytest.mark.slow  # trains or runs the CLI in subprocesses
def test_mixed_folders_say_they_are_read_as_rgb(tmp_path):
    res = train_gray(gray_folders(tmp_path / "data", rgb=3), tmp_path / "run")
    assert res.returncode == 0 and "5 of 8 image files are grayscale: all are read as RGB" in res.stdout, res.stderr


@pytest.mark.slow  # trains or runs the CLI in subprocesses
def test_export_beside_the_run_carries_the_split_and_gates_on_held_out_images(gray_run, tmp_path):
    run, _ = gray_run
    data = gray_folders(tmp_path / "data")
    res = cli("export", run / "best.pt", "--formats", "onnx", "--quantize", "fp16", "--val-images", data / "images")
    assert res.exit_code == 0, res.output
    from segrt.manifest import Manifest

    manifest = Manifest.load(run / "export")
    split = json.loads((run / "split.json").read_text())
    assert manifest.split["train"] == split["train"] and "no gate uses a training image" in res.output
    report = next(ln for ln in res.output.splitlines() if ln.startswith("gate report: "))
    assert os.path.isfile(report.split()[2]) and str(run / "export") in report  # the final path, not the temp one
    res = cli("export", run / "best.pt", "--formats", "onnx")
    assert res.exit_code == 0 and f"{run / 'export'} exists: writing {run / 'export-2'}" in res.output
    res = cli("parity", run / "export", "--images", data / "images")
    assert "images scored: INCLUDES 6 training image(s) of 8" in res.output, res.output
    val = tmp_path / "val"
    val.mkdir()
    for stem in split["val"]:
        (val / f"{stem}.png").write_bytes((data / "images" / f"{stem}.png").read_bytes())
    res = cli("parity", run / "export", "--images", val)
    assert "images scored: the model's validation split" in res.output, res.output


def test_int8_without_calibration_is_refused_before_any_work(gray_run, tmp_path):
    run, _ = gray_run
    t0 = time.perf_counter()
    res = cli("export", run / "best.pt", "--out", tmp_path / "e", "--quantize", "int8")
    one_line_error(res, "--quantize int8 needs calibration images")
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "e").exists()
    one_line_error(cli("export", run / "best.pt", "--out", tmp_path / "e", "--quantize", "int8", "--calib-images",
                       tmp_path / "nowhere"), "--calib-images", "no such folder")


def test_gates_never_use_training_images(tmp_path):
    from segrt.options import QuantizeOptions
    from segrt.verify.imagesets import split_paths

    folder = photos(tmp_path / "calib", "a.jpg", "b.jpg", "c.jpg", "d.jpg")
    calib, held = split_paths(QuantizeOptions(calib_images=folder), train=["a", "b"])
    assert [p.name for p in calib] == ["a.jpg", "b.jpg"] and [p.name for p in held] == ["c.jpg", "d.jpg"]
    with pytest.raises(SegrtError, match="all 4 calibration images trained this model"):
        split_paths(QuantizeOptions(calib_images=folder), train=["a", "b", "c", "d"])
    with pytest.raises(SegrtError, match="1 of them trained this model"):
        split_paths(QuantizeOptions(calib_images=folder, val_images=photos(tmp_path / "v", "a.jpg", "x.jpg")),
                    train=["a"])
    calib, held = split_paths(QuantizeOptions(calib_images=folder))  # no split known: a seeded share
    assert len(held) == 1 and len(calib) == 3


def test_the_bundled_model_is_named_and_runs_never_mix(tmp_path):
    src = photos(tmp_path / "in", "a.jpg")
    first = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", str(src), "--provider", "cpu"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines()[0].startswith("no --model: the bundled pets demo model (background, pet, border)")
    second = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", str(src), "--provider", "cpu"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 0 and "outputs in predictions-2/" in second.stdout, second.stdout
    assert (tmp_path / "predictions" / "a.png").is_file() and (tmp_path / "predictions-2" / "a.png").is_file()


def test_gray_photos_into_an_rgb_model_are_said_once(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    src = photos(tmp_path / "in", "a.jpg", "b.jpg")
    for name in ("g1.png", "g2.png"):
        Image.open(src / "a.jpg").convert("L").save(src / name)
    res = cli("predict", src, "--model", exp, "--out", tmp_path / "o", "--provider", "cpu")
    said = [ln for ln in res.output.splitlines() if "a grayscale image into a 3-channel model" in ln]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert res.exit_code == 0 and len(said) == 1 and "said once" in said[0]
    assert sum("converted" in n for n in summary["notes"]) == 2


@pytest.mark.slow  # trains or runs the CLI in subprocesses
def test_tiles_are_not_held_to_the_pixel_limit(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    (tmp_path / "in").mkdir()
    Image.new("L", (8200, 8000), 90).save(tmp_path / "in" / "mosaic.png")  # 65.6 MP, above the 64 MP default
    res = cli("predict", tmp_path / "in", "--model", exp, "--out", tmp_path / "o", "--provider", "cpu")
    assert res.exit_code == 1 and "above the limit of 64,000,000" in res.output
    res = cli("predict", tmp_path / "in", "--model", exp, "--out", tmp_path / "t", "--provider", "cpu",
              "--tile", "2048")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "t" / "mosaic.png").size == (8200, 8000)


def stack(path, pages, dtype=np.uint16, size=(40, 48), seed=0):
    rng = np.random.default_rng(seed)
    high = 65535 if dtype == np.uint16 else 255
    frames = [Image.fromarray(rng.integers(0, high, size).astype(dtype)) for _ in range(pages)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return [np.asarray(f) for f in frames]


def test_tiff_stacks_are_predicted_page_by_page(tmp_path):
    exp = tiny_export(tmp_path / "exp")
    (tmp_path / "in").mkdir()
    frames = stack(tmp_path / "in" / "em.tif", 3)
    res = cli("predict", tmp_path / "in", "--model", exp, "--out", tmp_path / "o", "--provider", "cpu")
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "o" / "em.tif")
    assert out.n_frames == 3 and not list((tmp_path / "o").glob("*.color.png"))
    single = tmp_path / "pages"  # each page alone, as 8 bits the way training reads 16-bit pages
    single.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(np.clip(np.rint(f / 257.0), 0, 255).astype(np.uint8)).save(single / f"p{i}.png")
    assert cli("predict", single, "--model", exp, "--out", tmp_path / "s", "--provider", "cpu").exit_code == 0
    for i in range(3):
        out.seek(i)
        assert (np.asarray(out) == np.asarray(Image.open(tmp_path / "s" / f"p{i}.png"))).all()
    res = cli("predict", tmp_path / "in", "--model", exp, "--out", tmp_path / "pp", "--provider", "cpu", "--per-page")
    assert res.exit_code == 0 and sorted(p.name for p in (tmp_path / "pp").glob("em.p*.color.png")) == [
        "em.p0000.color.png", "em.p0001.color.png", "em.p0002.color.png"]
    summary = json.loads((tmp_path / "pp" / "summary.json").read_text())
    assert summary["written"] == 1 and summary["stacks"] == {"files": 1, "pages": 3}
    assert not any("only the first was read" in n for n in summary["notes"])


@pytest.mark.slow  # trains or runs the CLI in subprocesses
def test_training_reads_stacks_page_by_page(tmp_path):
    import torch

    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    for name in ("a", "b"):
        stack(tmp_path / "data" / "images" / f"{name}.tif", 4, np.uint8, (32, 32))
        masks = [Image.fromarray(np.where(np.arange(32 * 32).reshape(32, 32) % (i + 2) == 0, 255, 0).astype(np.uint8))
                 for i in range(4)]
        masks[0].save(tmp_path / "data" / "masks" / f"{name}.tif", save_all=True, append_images=masks[1:])
    res = train_gray(tmp_path / "data", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == [f"{n}[{i}]" for n in "ab" for i in range(4)]
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model_config"]["in_channels"] == 1
    (tmp_path / "data" / "masks" / "b.tif").unlink()
    Image.new("L", (32, 32)).save(tmp_path / "data" / "masks" / "b.tif")
    one_line_error(train_gray(tmp_path / "data", tmp_path / "run2"), "b.tif: 4 page(s) but its mask b.tif has 1")


def test_speeds_are_timed_at_the_size_predict_runs(tmp_path):
    from segrt.bench.speeds import speed_size
    from segrt.cpuinfo import cpu_info
    from segrt.manifest import Artifact, Manifest
    from segrt.runtime.select import choose_cpu_variant

    native = Manifest(name="em", classes=["a", "b"], mean=[0.5], std=[0.25], channels=1, size_multiple=16,
                      input_size=None, crop_size=[128, 128])
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, (w, h) in enumerate([(500, 500), (512, 520), (600, 480)]):
        Image.new("L", (w, h)).save(folder / f"{i}.png")
    assert speed_size(native, folder) == ((512, 512), f"native size: the median of 3 images in {folder}")
    assert speed_size(native) == ((128, 128), "native size unknown (no images given): the training crop")
    resized = Manifest(name="p", classes=["a", "b"], mean=[0.5] * 3, std=[0.2] * 3, channels=3, size_multiple=32,
                       input_size=[288, 288])
    assert speed_size(resized, folder) == ((288, 288), "the working size predict resizes to")
    native.artifacts = [Artifact(file="m.onnx", kind="onnx"), Artifact(file="m.int8.onnx", kind="onnx",
                                                                       precision="int8")]
    native.parity = {a.name: GateRecord(passed=True, mask_iou=1.0, gates=Gates(0.98)) for a in native.artifacts}
    native.speed = SpeedRecord(cpu=cpu_info(), input=[1, 1, 512, 512], size_from="native size: the median of 3 images",
                               ms_per_image={"m.onnx": 9.0, "m.int8.onnx": 4.0})
    art, note = choose_cpu_variant(native)
    assert art.name == "m.int8.onnx" and "4.0 ms/image at 512x512 (native size: the median of 3 images)" in note


def test_help_texts_say_what_they_mean():
    for command, missing in (("quantize", "%%"), ("parity", "--shard"), ("export", "%%")):
        res = cli(command, "--help")
        assert res.exit_code == 0 and missing not in res.output, (command, missing)
    res = cli("train", "--help")
    assert "[default: 20; x>=1]" in res.output and "[default: 0.2]" in res.output
    one_line_error(cli("train", "--out", "r", "--epoch", "3"), "No such option '--epoch'", "Did you mean")


def test_bf16_without_photos_is_refused_up_front(gray_run, tmp_path):
    run, _ = gray_run
    one_line_error(cli("export", run / "best.pt", "--out", tmp_path / "e", "--formats", "onnx,openvino",
                       "--quantize", "bf16"), "--quantize bf16 is gated on real photos")
    assert not (tmp_path / "e").exists()
