"""A U-Net in the shape of milesial/Pytorch-UNet (its package layout, class names and relative imports),
written here for the tests: segrt reading a model as that repository's users have it."""

from .unet_model import UNet

__all__ = ["UNet"]
