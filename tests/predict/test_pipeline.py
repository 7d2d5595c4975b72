"""The streaming pipeline and run_predict on a synthetic export: the masks are the model's, a bad
file fails alone, --skip-existing resumes, tiles and batches give the same masks."""

import dataclasses
import json

import numpy as np
from PIL import Image
from synthetic import tiny_export

from segrt.imaging import decode, masks
from segrt.predict.options import PredictOptions
from segrt.predict.pipeline import Predictor
from segrt.predict.run import run_predict
from segrt.predict.summary import Stats
from segrt.runtime.session import Session
from segrt.runtime.tiling import TileSpec


def photos(folder, n=5):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 20 + 3 * i, 30 + 5 * i
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(folder / f"p{i}.png")
    return sorted(folder.iterdir())


def expected(session, path, native=False):
    x, geo = decode.read_model_input(path, session.manifest, native)
    return masks.to_mask(session.run(x[None])[0], geo)


def test_masks_are_the_models_and_a_bad_file_fails_alone(tmp_path):
    export, files = tiny_export(tmp_path / "e"), photos(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    logs = []
    s = run_predict([str(tmp_path / "in")], export, provider="cpu", log=logs.append,
                    opts=PredictOptions(out=tmp_path / "out", batch_size=2, progress=False))
    assert s["written"] == 5 and s["failed"] == 1 and "broken.png" in s["failures"][0]["file"]
    assert any("broken.png" in line for line in logs) and s["mode"] == "resize 32x32"
    session = Session(export, provider="cpu")
    for f in files:
        got = np.array(Image.open(tmp_path / "out" / f"{f.stem}.png"))
        assert got.shape == np.array(Image.open(f)).shape[:2] and (got == expected(session, f)).all()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["written"] == 5


def test_skip_existing_resumes_a_run(tmp_path):
    export, _ = tiny_export(tmp_path / "e"), photos(tmp_path / "in", 3)
    opts = PredictOptions(out=tmp_path / "out", progress=False)
    run_predict([str(tmp_path / "in")], export, provider="cpu", opts=opts, log=lambda m: None)
    (tmp_path / "out" / "p1.png").unlink()
    s = run_predict([str(tmp_path / "in")], export, provider="cpu", log=lambda m: None,
                    opts=dataclasses.replace(opts, skip_existing=True))
    assert s["written"] == 1 and s["skipped_existing"] == 2


def test_batches_and_tiles_give_the_same_masks(tmp_path):
    """A 1x1 conv has no context: native, batched and tiled masks are the same pixels."""
    export, files = tiny_export(tmp_path / "e"), photos(tmp_path / "in", 4)
    session = Session(export, provider="cpu")
    pairs = [(f, f.relative_to(tmp_path / "in").with_suffix("")) for f in files]
    for name, opts in {"native": PredictOptions(out=tmp_path / "n", native=True, batch_size=3, progress=False),
                       "tiled": PredictOptions(out=tmp_path / "t", tile=TileSpec(16, 0.25, "constant"),
                                               progress=False)}.items():
        stats = Predictor(session, opts, log=lambda m: None).run(pairs, Stats())
        assert stats.ok == 4 and not stats.failures, name
        for f in files:
            got = np.array(Image.open(opts.out / f"{f.stem}.png"))
            assert (got == expected(session, f, native=True)).all(), (name, f.name)
