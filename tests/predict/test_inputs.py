"""Which files a predict run reads and what it may write: folders, path lists, shards, clashes."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segrt.errors import SegrtError
from segrt.predict.inputs import check_no_overwrite, check_out_folder, gather_inputs, parse_shard, select_shard
from segrt.predict.options import PredictOptions


def photo(path, size=(12, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    return path


def test_folders_mirror_their_structure_and_skip_own_outputs(tmp_path):
    photo(tmp_path / "in" / "a.jpg"), photo(tmp_path / "in" / "sub" / "b.png"), photo(tmp_path / "in" / "a.color.png")
    pairs = gather_inputs([tmp_path / "in"], tmp_path / "out")
    assert sorted(rel.as_posix() for _, rel in pairs) == ["a", "sub/b"]
    two = gather_inputs([tmp_path / "in", tmp_path / "in" / "sub"], tmp_path / "out")
    assert {rel.as_posix() for _, rel in two} == {"in/a", "in/sub/b", "sub/b"}  # each input its own prefix


def test_a_text_file_lists_paths_relative_to_itself(tmp_path):
    photo(tmp_path / "p" / "x.jpg")
    (tmp_path / "list.txt").write_text("# photos\np/x.jpg\n\n")
    assert gather_inputs([tmp_path / "list.txt"], None) == [(tmp_path / "p" / "x.jpg", Path("x"))]


def test_missing_inputs_and_name_clashes_are_one_line(tmp_path):
    with pytest.raises(SegrtError, match="nothing.jpg: no such file or folder"):
        gather_inputs([tmp_path / "nothing.jpg"], None)
    photo(tmp_path / "in" / "a.jpg"), photo(tmp_path / "in" / "a.png")
    with pytest.raises(SegrtError, match="would both write a.png"):
        gather_inputs([tmp_path / "in"], None)
    with pytest.raises(SegrtError, match="is an input folder"):
        gather_inputs([tmp_path / "in"], tmp_path / "in")


def test_outputs_never_land_on_inputs_or_on_files_segrt_did_not_write(tmp_path):
    src = photo(tmp_path / "a.png")
    opts = PredictOptions(out=tmp_path)
    with pytest.raises(SegrtError, match="would overwrite the input"):
        check_no_overwrite([(src, Path("a"))], tmp_path, opts)
    out = tmp_path / "out"
    photo(out / "b.png")
    with pytest.raises(SegrtError, match="holds no summary of a segrt run"):
        check_no_overwrite([(photo(tmp_path / "in" / "b.jpg"), Path("b"))], out, opts)
    check_no_overwrite([(tmp_path / "in" / "b.jpg", Path("b"))], out, dataclasses.replace(opts, skip_existing=True))


def test_out_folder_checks(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SegrtError, match="a file is in the way"):
        check_out_folder(tmp_path / "file", "summary.json")
    (tmp_path / "o" / "summary.json").mkdir(parents=True)
    with pytest.raises(SegrtError, match="summary.json there is not a regular file"):
        check_out_folder(tmp_path / "o", "summary.json")


def test_shards_partition_the_inputs_stably():
    pairs = [(Path(f"{i}.jpg"), Path(str(i))) for i in range(200)]
    shards = [select_shard(pairs, (i, 4)) for i in range(4)]
    assert sorted(p for s in shards for p in s) == sorted(pairs) and all(20 < len(s) < 80 for s in shards)
    assert select_shard(pairs[:100], (1, 4)) == [p for p in shards[1] if p in pairs[:100]]  # adding files moves none
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(SegrtError, match="--shard"):
            parse_shard(bad)
