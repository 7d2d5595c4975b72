"""Reduced-precision variants (INT8, FP16, bf16, uint8 input), each gated before it is written."""
