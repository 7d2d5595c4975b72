"""Images and masks: decode and pre/post-processing, masks and palettes, metrics, TIFF stacks, split
files (numpy + Pillow, no torch)."""

__all__ = []
