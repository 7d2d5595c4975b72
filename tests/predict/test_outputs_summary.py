"""What one input writes, the --skip-existing rule, the run's counts and its summary line."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segrt.predict.options import PredictOptions
from segrt.predict.outputs import mask_files, output_paths, outputs_exist
from segrt.predict.summary import Stats, format_summary, summary_name
from segrt.runtime.tiling import TileSpec


def test_options_are_built_once_and_never_change():
    opts = PredictOptions(out="somewhere")
    assert opts.out == Path("somewhere")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.batch_size = 8
    assert dataclasses.replace(opts, batch_size=8).batch_size == 8 and opts.batch_size == 4


def test_output_names_follow_the_options(tmp_path):
    opts = PredictOptions(out=tmp_path)
    assert set(output_paths(tmp_path, Path("sub/a"), opts)) == {"mask", "color"}
    full = dataclasses.replace(opts, color=False, overlay=True, save_probs=True)
    paths = output_paths(tmp_path, Path("sub/a"), full)
    assert {k: p.name for k, p in paths.items()} == {"mask": "a.png", "overlay": "a.overlay.jpg",
                                                   "probs": "a.probs.npy"}
    assert output_paths(tmp_path, Path("stack"), opts, pages=3)["mask"].name == "stack.tif"


def test_skip_existing_needs_every_output(tmp_path):
    opts = PredictOptions(out=tmp_path)
    (tmp_path / "a.png").write_bytes(b"")
    assert not outputs_exist(tmp_path, Path("a"), opts)
    (tmp_path / "a.color.png").write_bytes(b"")
    assert outputs_exist(tmp_path, Path("a"), opts)


def test_mask_files_hold_the_class_ids():
    mask = np.random.default_rng(0).integers(0, 3, (7, 9)).astype(np.uint8)
    files = mask_files(mask, {"mask": "m.png", "color": "c.png", "overlay": "o.jpg"})
    assert set(files) == {"m.png", "c.png"}
    for data in files.values():
        assert (np.array(Image.open(io.BytesIO(data))) == mask).all()
    assert Image.open(io.BytesIO(files["c.png"])).mode == "P"


def test_inference_time_is_the_union_of_the_batches():
    stats = Stats(spans=[(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)])
    assert stats.inference_busy_s() == pytest.approx(4.0)


def summary(**kw):
    s = {"written": 3, "inputs": 4, "runtime": "model.onnx (onnx fp32) on cpu", "images_per_s": 1.5,
         "timings_s": {"wall": 2.0, "inference": 1.0, "decode": 0.5, "write": 0.2, "wait_decode": 0.1,
                       "wait_inference": 0.3},
         "skipped_existing": 0, "failed": 0, "interrupted": False, "out": "o"}
    return {**s, **kw}


def test_the_summary_line_says_what_happened():
    assert format_summary(summary()).startswith("3 of 4 image(s) segmented with model.onnx (onnx fp32) on cpu in 2.00s")
    assert "1 FAILED (see o/summary.json)" in format_summary(summary(failed=1))
    line = format_summary(summary(interrupted=True, stopped_by="SIGTERM"))
    assert line.startswith("INTERRUPTED by SIGTERM: ") and "--skip-existing to finish" in line
    assert "summary.shard-1-of-4.json" in format_summary(summary(failed=1, shard=[1, 4]))
    assert summary_name(None) == "summary.json" and summary_name((0, 2)) == "summary.shard-0-of-2.json"


def test_tiles_live_in_the_options():
    spec = TileSpec(tile=64, overlap=0.25, blend="gaussian")
    assert PredictOptions(tile=spec).tile.tile == 64
