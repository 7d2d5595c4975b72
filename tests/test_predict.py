import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import PETS, ROOT
from onnx import TensorProto, helper
from PIL import Image

from segrt.errors import ImageError, ProviderError, SegrtError
from segrt.imaging import decode, masks
from segrt.predict.options import PredictOptions
from segrt.predict.run import run_predict
from segrt.runtime.session import Session

pytestmark = pytest.mark.slow


def predict(inputs, model, out, **kw):
    opts = PredictOptions(out=out, progress=False, **{k: kw.pop(k) for k in list(kw) if hasattr(PredictOptions, k)})
    logs = []
    summary = run_predict([str(i) for i in inputs], model, provider="cpu", opts=opts, log=logs.append, **kw)
    return summary, logs


def cli(*args):
    return subprocess.run([sys.executable, "-m", "segrt.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.fixture
def folder(tmp_path):
    """A few real pets in nested folders."""
    src = tmp_path / "in"
    (src / "cats").mkdir(parents=True)
    (src / "dogs").mkdir()
    for name in ("Abyssinian_11", "Bengal_133"):
        shutil.copy(PETS / "images" / f"{name}.jpg", src / "cats")
    shutil.copy(PETS / "images" / "american_bulldog_10.jpg", src / "dogs")
    return src


def test_masks_are_class_ids_at_original_size(exported, folder, tmp_path):
    out = tmp_path / "out"
    summary, _ = predict([folder], exported, out, overlay=True, save_probs=True)
    assert summary["written"] == 3 and summary["failed"] == 0 and summary["provider"] == "cpu"
    sess = Session(exported, provider="cpu")
    src = folder / "cats" / "Abyssinian_11.jpg"
    image = decode.load_image(src)
    mask = np.array(Image.open(out / "cats" / "Abyssinian_11.png"))
    assert mask.shape == image.shape[:2]
    x, geo = decode.read_model_input(src, sess.manifest)
    expected = masks.to_mask(sess.run(x[None])[0], geo)
    assert (mask == expected).all()
    color = Image.open(out / "cats" / "Abyssinian_11.color.png")
    assert color.mode == "P" and (np.array(color) == mask).all()
    assert Image.open(out / "cats" / "Abyssinian_11.overlay.jpg").size == image.shape[1::-1]
    probs = np.load(out / "cats" / "Abyssinian_11.probs.npy")
    assert probs.shape == (3, *image.shape[:2]) and np.allclose(probs.sum(0), 1, atol=1e-2)
    assert (out / "dogs" / "american_bulldog_10.png").exists()
    written = json.loads((out / "summary.json").read_text())
    assert written["inputs"] == 3 and set(written["timings_s"]) == {"wall", "startup", "decode", "inference", "write", "wait_decode",
                                                                   "wait_inference"}
    assert 0 < written["timings_s"]["startup"] < 60 and "thread" in written["runtime"]
    assert written["images_per_s"] > 0


def test_native_mode_pads_and_crops(exported, folder, tmp_path):
    summary, _ = predict([folder / "cats" / "Bengal_133.jpg"], exported, tmp_path / "o", native=True)
    assert summary["written"] == 1 and summary["mode"] == "native+pad"
    w, h = Image.open(folder / "cats" / "Bengal_133.jpg").size
    assert Image.open(tmp_path / "o" / "Bengal_133.png").size == (w, h)


def test_list_file_and_skip_existing(exported, folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\nin/cats/Abyssinian_11.jpg\n" + str(folder / "dogs" / "american_bulldog_10.jpg") + "\n")
    out = tmp_path / "o"
    assert predict([listing], exported, out)[0]["written"] == 2
    (out / "Abyssinian_11.png").unlink()
    summary, _ = predict([listing], exported, out, skip_existing=True)
    assert summary["written"] == 1 and summary["skipped_existing"] == 1


def test_bounded_batches_and_torchscript(exported, folder, tmp_path):
    summary, _ = predict([folder], exported, tmp_path / "o", batch_size=2, kind="torchscript")
    assert summary["written"] == 3 and summary["kind"] == "torchscript"


def make_bad_inputs(d):
    """Every kind of bad or awkward input; returns {filename: expected outcome}."""
    rgb = np.asarray(Image.open(PETS / "images" / "Bengal_133.jpg").convert("RGB"))
    d.mkdir()
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.png").write_text("not an image at all")
    good = (PETS / "images" / "Abyssinian_11.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "dangling.jpg").symlink_to(d / "nowhere.jpg")
    Image.new("F", (40, 40)).save(d / "float32.tif")
    big = Image.new("L", (2200, 2000))
    big.save(d / "huge.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(d / "sixteen.png")
    Image.fromarray(rgb).convert("P").save(d / "palette.png")
    Image.fromarray(rgb).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(rgb).convert("L").save(d / "gray.jpg")
    Image.fromarray(rgb[:5, :7]).save(d / "tiny.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    Image.fromarray(rgb[:48, :80]).save(d / "rotated.jpg", exif=exif.tobytes())
    return {"zero.jpg": "empty file", "text.png": "not an image", "truncated.jpg": "truncated",
            "dangling.jpg": "no such file", "float32.tif": "32-bit float", "huge.png": "--max-pixels"}


def test_bad_inputs_each_one_line_rest_completes(exported, tmp_path):
    bad = make_bad_inputs(tmp_path / "bad")
    out = tmp_path / "o"
    res = cli("predict", tmp_path / "bad", "--model", exported, "--out", out, "--max-pixels", "4000000", "--provider", "cpu")
    assert res.returncode == 1
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in res.stderr and len(err) == len(bad)
    for name, reason in bad.items():
        assert sum(name in ln and reason in ln for ln in err) == 1, (name, res.stderr)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == len(bad) and summary["written"] == 7
    assert {f["file"].split("/")[-1] for f in summary["failures"]} == set(bad)
    sizes = {n: Image.open(out / f"{n}.png").size for n in ("cmyk", "sixteen", "palette", "rgba", "gray", "tiny")}
    assert set(sizes.values()) == {(7, 5)} | {Image.open(PETS / "images" / "Bengal_133.jpg").size}
    assert Image.open(out / "rotated.png").size == (48, 80)  # EXIF orientation honoured
    assert list(out.rglob("*.tmp*")) == []


def test_sixteen_bit_and_modes_decode_correctly(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(ramp).save(tmp_path / "r.png")
    got = decode.load_image(tmp_path / "r.png", channels=1)[:, :, 0]
    np.testing.assert_array_equal(got, np.clip(np.rint(ramp / 257), 0, 255).astype(np.uint8))
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert decode.load_image(tmp_path / "red.png", channels=1).shape == (4, 4, 1)  # RGB for a gray model
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert (decode.load_image(tmp_path / "g.png", channels=3) == 200).all()  # gray for an RGB model


def test_unreadable_file(exported, folder, tmp_path, monkeypatch):
    from pathlib import Path

    target = folder / "cats" / "Bengal_133.jpg"
    real = Path.open

    def deny(self, *args, **kwargs):
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    summary, logs = predict([folder], exported, tmp_path / "o")
    assert summary["written"] == 2 and summary["failed"] == 1
    assert logs == [f"error: {target}: cannot read (Permission denied)"]


def test_outputs_never_overwrite_inputs(exported, tmp_path):
    src = tmp_path / "pngs"
    src.mkdir()
    Image.open(PETS / "images" / "Bengal_133.jpg").save(src / "a.png")
    before = (src / "a.png").read_bytes()
    with pytest.raises(SegrtError, match="is an input folder"):
        predict([src], exported, src)
    with pytest.raises(SegrtError, match="would overwrite the input"):
        predict([src / "a.png"], exported, src)
    assert (src / "a.png").read_bytes() == before
    # an output folder inside the input folder is fine when nothing collides, and is never re-read
    assert predict([src], exported, src / "pred")[0]["written"] == 1
    assert predict([src], exported, src / "pred")[0]["inputs"] == 1


def onnx_model(path, out_shape, in_channels=3, extra_props=None):
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", in_channels, "H", "W"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["p"]), helper.make_node("Flatten", ["p"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [inp], [out]), opset_imports=[helper.make_opsetid("", 17)])
    for k, v in (extra_props or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def test_wrong_models_fail_before_any_image(exported, folder, tmp_path):
    clf = onnx_model(tmp_path / "classifier.onnx", ["N", 3])
    res = cli("predict", folder, "--model", clf, "--out", tmp_path / "o1")
    assert res.returncode == 2 and "not a segmentation model" in res.stderr and not (tmp_path / "o1").exists()
    model = onnx.load(str(exported / "model.onnx"))
    for p in model.metadata_props:
        if p.key == "segrt.channels":
            p.value = "1"
        if p.key in ("segrt.mean", "segrt.std"):
            p.value = "[0.5]"
    onnx.save(model, str(tmp_path / "gray_meta.onnx"))
    res = cli("predict", folder, "--model", tmp_path / "gray_meta.onnx", "--out", tmp_path / "o2")
    assert res.returncode == 2 and "3 input channels" in res.stderr and "says 1" in res.stderr
    assert not (tmp_path / "o2").exists() and "Traceback" not in res.stderr
    for p in model.metadata_props:  # metadata that contradicts itself is refused before the model is opened
        if p.key == "segrt.mean":
            p.value = "[0.485, 0.456, 0.406]"
    onnx.save(model, str(tmp_path / "bad_meta.onnx"))
    res = cli("predict", folder, "--model", tmp_path / "bad_meta.onnx", "--out", tmp_path / "o3")
    assert res.returncode == 2 and "normalization.mean must be 1 finite number(s)" in res.stderr
    assert not (tmp_path / "o3").exists() and "Traceback" not in res.stderr


def test_bare_onnx_uses_metadata_or_documented_defaults(exported, folder, tmp_path):
    shutil.copy(exported / "model.onnx", tmp_path / "m.onnx")
    s = Session(tmp_path / "m.onnx", provider="cpu")
    assert s.manifest.classes == ["background", "pet", "border"] and s.manifest.input_size == [64, 64]
    model = onnx.load(str(exported / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    s = Session(tmp_path / "foreign.onnx", provider="cpu", classes=["a", "b", "c"])
    assert s.manifest.classes == ["a", "b", "c"] and s.manifest.size_multiple == 32 and s.manifest.input_size is None
    summary, _ = predict([folder], tmp_path / "foreign.onnx", tmp_path / "o")
    assert summary["written"] == 3 and summary["mode"] == "native+pad"


def test_provider_strictness(exported, monkeypatch):
    with pytest.raises(ProviderError, match="'cuda'.*not available.*available: cpu"):
        Session(exported, provider="cuda")
    s = Session(exported, provider="auto")  # no GPU: the fastest gated CPU variant, and why
    assert s.provider == "cpu" and s.auto_note.startswith("provider auto -> model.onnx (onnx fp32; gate: mask IoU")
    assert "the fastest gated variant" in s.auto_note and "measured on this CPU" in s.auto_note
    # a provider that is installed but silently falls back to CPU is refused
    import onnxruntime as ort

    import segrt.runtime.backends.ort as ORT

    real = ort.InferenceSession

    class FallsBack(real):
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ORT, "available_ort_providers", lambda: ["cuda", "cpu"])
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, so, providers: FallsBack(path, so, providers=["CPUExecutionProvider"]))
    with pytest.raises(ProviderError, match="installed but unusable.*fell back to CPUExecutionProvider"):
        Session(exported, provider="cuda")
    with pytest.raises(ProviderError, match="torch sees no CUDA"):
        Session(exported, provider="cuda", kind="torchscript")


def test_cli_cuda_clear_error(exported, folder, tmp_path):
    res = cli("predict", folder, "--model", exported, "--provider", "cuda", "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "provider 'cuda'" in res.stderr and "available: cpu" in res.stderr


def test_predict_never_imports_torch(exported, folder, tmp_path):
    """Block torch entirely: the ONNX path must still work, and no module may have loaded it."""
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import segrt.runtime.session, segrt.predict.run\n"
        "from segrt.cli import main\n"
        "try:\n"
        f"    main(['predict', {str(folder)!r}, '--model', {str(exported)!r}, '--out', {str(tmp_path / 'o')!r}, '--quiet'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('torch-free ok', sorted(m for m in sys.modules if m.startswith('torch')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "torch-free ok ['torch']" in res.stdout  # only our None placeholder
    assert (tmp_path / "o" / "cats" / "Abyssinian_11.png").exists()
    res = subprocess.run([sys.executable, "-c", code.replace("'--quiet'", "'--quiet', '--kind', 'torchscript'")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode != 0 and "needs torch" in res.stderr


def test_write_failure_fails_one_image_not_the_run(exported, folder, tmp_path, monkeypatch):
    import segrt.predict.run as PR

    real = PR.Predictor.write

    def flaky(self, job, logits):
        if job.path.name == "Bengal_133.jpg":
            raise ImageError(f"{job.path}: corrupt or truncated image data (simulated)")
        return real(self, job, logits)

    monkeypatch.setattr(PR.Predictor, "write", flaky)
    summary, logs = predict([folder], exported, tmp_path / "o")
    assert summary["written"] == 2 and summary["failed"] == 1
    assert logs == [f"error: {folder / 'cats' / 'Bengal_133.jpg'}: corrupt or truncated image data (simulated)"]
