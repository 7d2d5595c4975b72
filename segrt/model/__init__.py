"""The U-Net and its checkpoints (torch; imported only where a model is built or loaded)."""

__all__ = []
