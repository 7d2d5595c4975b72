"""Verification: do two models agree (parity, gates), how well each matches ground truth, the reports."""

__all__ = []
