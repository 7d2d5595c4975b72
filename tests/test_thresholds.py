"""The default gates have one home (segrt/verify/thresholds.py): no other module of the package spells them."""

import ast

from conftest import ROOT

from segrt.verify.thresholds import DEFAULT_IOU_GATES, FP32_MASK_IOU, FP32_MAX_LOGIT_DIFF

GATE_VALUES = {FP32_MASK_IOU, FP32_MAX_LOGIT_DIFF, *DEFAULT_IOU_GATES.values()}
# the same numbers meaning something else: the blending window's floor, where number formatting switches
OTHER_MEANINGS = {("tiling.py", FP32_MAX_LOGIT_DIFF), ("report.py", FP32_MAX_LOGIT_DIFF)}


def test_default_gates_are_written_once():
    spelled = []
    for path in sorted((ROOT / "segrt").rglob("*.py")):
        if path.name == "thresholds.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and node.value in GATE_VALUES \
                    and (path.name, node.value) not in OTHER_MEANINGS:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not spelled, spelled
    assert DEFAULT_IOU_GATES["fp32"] == FP32_MASK_IOU and FP32_MASK_IOU > DEFAULT_IOU_GATES["int8"]
