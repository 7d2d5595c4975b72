"""The INT8 fallback search, a pure function over a ``build(excluded nodes) -> GateResult`` callable:
both quantizers (ONNX Runtime, OpenVINO) run it."""

from __future__ import annotations

from typing import Callable

from segrt.progress import progress
from segrt.verify.gate import GateResult

__all__ = ["fallback_search"]


def fallback_search(build: Callable[[list[str]], GateResult], candidates: list[str], gate: float,
                    max_fraction: float, log) -> tuple[GateResult, list[dict]]:
    """All nodes INT8 first; below the gate, rank nodes by how much excluding each alone helps (the gate
    score: mean, pixel agreement and each class with support, GateResult.score) and exclude the worst greedily (at most ``max_fraction`` of them) until the gate passes.
    -> (best result, the search as [{excluded, mask_iou, ms_per_image}])."""
    full = build([])
    best, search = full, [{"excluded": [], "mask_iou": full.mask_iou, "ms_per_image": full.ms_per_image}]
    log(f"  all nodes int8: mask IoU {full.mask_iou:.5f}")
    if full.passes(gate):
        return best, search
    budget = max(1, int(len(candidates) * max_fraction))
    log(f"  below the gate: scanning {len(candidates)} nodes for sensitivity (fallback may exclude {budget})")
    scores = [(build([n]).score, n) for n in progress(candidates, desc="sensitivity scan", unit="node")]
    excluded = []
    for _, n in sorted(scores, key=lambda s: -s[0])[:budget]:
        excluded.append(n)
        r = build(list(excluded))
        log(f"  excluded {len(excluded)} node(s) (+{n}): mask IoU {r.mask_iou:.5f}")
        search.append({"excluded": list(excluded), "mask_iou": r.mask_iou, "ms_per_image": r.ms_per_image})
        if r.passes(gate) or (r.score > best.score and not best.passes(gate)):
            best = r
        if r.passes(gate):
            break
    return best, search
