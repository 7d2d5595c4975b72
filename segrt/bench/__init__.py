"""Timing: bench tables, the speed records --provider auto reads."""

__all__ = []
