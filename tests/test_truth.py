"""Ground-truth values an export cannot map: counted and said, never silently dropped; --mask-map
maps them over the export's own table."""

import numpy as np
import pytest
from synthetic import tiny_export

from segrt.errors import SegrtError
from segrt.manifest import Manifest
from segrt.verify.truth import VOID, Unmapped, truth_lut


def test_unmapped_values_are_counted_and_void_is_not(tmp_path):
    m = Manifest.load(tiny_export(tmp_path / "e", classes=("background", "cat", "dog")))
    seen = Unmapped(m)
    seen.add(np.array([[0, 1], [2, VOID]], np.uint8))  # all known: classes and the ignore label
    assert seen.note("masks") is None
    seen.add(np.array([[3, 3], [0, 1]], np.uint8))
    note = seen.note("masks")
    assert note.startswith("masks: mask value 3 is no class id of this export (in 1 of 2 masks, 25.0% of their")
    mapped = Unmapped(m, {3: 2})
    mapped.add(np.array([[3, 3], [0, 1]], np.uint8))
    assert mapped.note("masks") is None and truth_lut(m, {3: 2})[3] == 2 and truth_lut(m)[3] == VOID
    assert truth_lut(m, {1: VOID})[1] == VOID  # 'ignore'
    with pytest.raises(SegrtError, match=r"--mask-map: class 3 \(for value 9\) does not exist; the export has 3"):
        truth_lut(m, {9: 3})
