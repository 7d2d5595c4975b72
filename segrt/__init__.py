"""segrt: U-Net semantic segmentation, from training to a verified ONNX Runtime deployment."""

__version__ = "0.1.0"
