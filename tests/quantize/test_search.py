"""The INT8 fallback search as a pure function over a fake ``build`` (no quantizer runs)."""

import pytest

from segrt.quantize.search import fallback_search
from segrt.verify.gate import GateResult

NODES = ["conv1", "conv2", "conv3", "head"]
HARM = {"conv1": 0.001, "conv2": 0.02, "conv3": 0.004, "head": 0.03}  # what keeping a node in INT8 costs


def build(excluded):
    built.append(list(excluded))
    iou = 1.0 - sum(v for n, v in HARM.items() if n not in excluded)
    return GateResult(mask_iou=iou, summary={}, excluded=list(excluded), ms_per_image=1.0 + len(excluded))


@pytest.fixture(autouse=True)
def reset():
    built.clear()


built: list = []


def test_all_int8_is_kept_when_it_passes():
    best, search = fallback_search(build, NODES, gate=0.9, max_fraction=0.5, log=lambda m: None)
    assert best.excluded == [] and built == [[]] and len(search) == 1


def test_the_most_sensitive_nodes_go_first_until_the_gate_passes():
    best, search = fallback_search(build, NODES, gate=0.98, max_fraction=0.5, log=lambda m: None)
    assert best.excluded == ["head", "conv2"] and best.mask_iou >= 0.98
    assert [s["excluded"] for s in search] == [[], ["head"], ["head", "conv2"]]
    assert built[:5] == [[], ["conv1"], ["conv2"], ["conv3"], ["head"]]  # one sensitivity run per node


def test_the_budget_caps_the_fallback_and_the_best_is_returned():
    best, search = fallback_search(build, NODES, gate=0.999, max_fraction=0.25, log=lambda m: None)
    assert best.excluded == ["head"] and len(search) == 2 and best.mask_iou < 0.999
