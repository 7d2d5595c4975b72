"""Predict: folders of images become masks on disk and a summary (torch-free)."""

__all__ = []
