"""The runtimes behind one protocol (base.py): ONNX Runtime (ort.py), OpenVINO (openvino.py), torch (torch.py);
each imported only when its artifact is used."""

__all__ = []
