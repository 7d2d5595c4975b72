"""Every default gate, in one place: what an artifact must agree with its reference to be listed.

fp32 artifacts: mask IoU agreement >= FP32_MASK_IOU and max |logit difference| <= FP32_MAX_LOGIT_DIFF
(export's parity gate, `--gate-iou` / `--gate-logit`). Reduced precisions: mask IoU agreement on
held-out photos >= DEFAULT_IOU_GATES[precision] (`--quant-gate`). How agreement is counted against
a gate (classes with support, pixel agreement, how far one class may trail) is the metric's, in
segrt/imaging/metrics.py (MIN_CLASS_SHARE, CLASS_IOU_MARGIN), which the runtime's re-check shares.
"""

__all__ = ["FP32_MASK_IOU", "FP32_MAX_LOGIT_DIFF", "DEFAULT_IOU_GATES", "AGAINST_PIPELINE"]

FP32_MASK_IOU = 0.999
FP32_MAX_LOGIT_DIFF = 1e-3
DEFAULT_IOU_GATES = {"fp32": FP32_MASK_IOU, "fp16": 0.995, "bf16": 0.995, "int8": 0.98}
AGAINST_PIPELINE = 0.99  # segrt's masks vs the user's own pipeline (parity --against): resize kernels differ at edges
