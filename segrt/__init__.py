"""segrt: U-Net semantic segmentation, from training to a verified ONNX Runtime deployment.

The entry points a library user needs, each loaded on first use (``import segrt`` stays light and
torch-free; run_export needs segrt[torch]):

    segrt.Session(export_dir, provider="auto")   # open an export, run batches (segrt.runtime.session)
    segrt.run_predict(inputs, export_dir, ...)    # folders of images -> masks + summary.json
    segrt.run_export(checkpoint, out, ...)        # checkpoint -> gated artifacts + manifest
    segrt.run_parity(export_dir, images=...)      # every artifact against eager PyTorch
    segrt.run_quantize(export_dir, "int8", opts)  # add a gated variant
    segrt.Manifest.load(export_dir)               # the contract between them
"""

import importlib

__version__ = "0.1.0"
__all__ = ["Manifest", "Session", "run_export", "run_parity", "run_predict", "run_quantize"]
_HOMES = {"Manifest": "segrt.manifest", "Session": "segrt.runtime.session", "run_export": "segrt.export.run",
          "run_parity": "segrt.verify.parity", "run_predict": "segrt.predict.run", "run_quantize": "segrt.quantize"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'segrt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
