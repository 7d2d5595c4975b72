"""Past one machine: Ray Data batch inference and Triton model repositories."""

__all__ = []
