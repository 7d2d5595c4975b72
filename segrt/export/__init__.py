"""Export: a checkpoint becomes artifacts (ONNX, TorchScript, torch.export, OpenVINO IR) and a manifest,
gated for parity."""

__all__ = []
