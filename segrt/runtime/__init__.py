"""Serving: open an artifact for a provider and run batches (and tiles). Never imports torch."""

__all__ = []
