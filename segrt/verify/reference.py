"""The reference an export is checked against: eager PyTorch, its checkpoint's U-Net (with the
export's TTA), or, where checkpoint.pt is not in the copy, a U-Net rebuilt from the fp32 ONNX's
weights and refused unless it reproduces the ONNX; without torch, the fp32 ONNX. torch is imported
where a model is built."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from segrt.errors import CheckpointError, SegrtError
from segrt.manifest import Manifest
from segrt.progress import progress
from segrt.verify.compare import Batch
from segrt.verify.thresholds import FP32_MAX_LOGIT_DIFF

__all__ = ["eager_model", "export_checkpoint", "eager_runner", "eager_logits", "reference_runner", "reference_logits"]


def _rebuild_from_onnx(onnx_path: str | os.PathLike, manifest) -> dict:
    """A checkpoint dict (as load_checkpoint gives) whose U-Net computes what an export's fp32 ONNX
    computes, from the ONNX's weights: the exporter folded each BatchNorm into the convolution before
    it (weight W', bias b'), so the conv gets W' and the BatchNorm becomes the identity plus b'. For
    an export shipped without checkpoint.pt (the bundle keeps one fp32 copy of the weights); refused
    unless the rebuilt model reproduces the ONNX on a probe input."""
    import onnx
    import torch
    from onnx import numpy_helper

    from segrt.model.checkpoint import FORMAT
    from segrt.model.unet import UNet, UNetConfig

    where = f"{onnx_path} (rebuilding its U-Net)"
    inits = {"unet." + i.name.split("unet.", 1)[1]: numpy_helper.to_array(i)  # names under any TTA wrapper
             for i in onnx.load(str(onnx_path)).graph.initializer if "unet." in i.name}
    try:
        model = UNet(UNetConfig(**manifest.model_config)).eval()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: the manifest's model_config does not build a U-Net ({exc})") from None
    state, modules = model.state_dict(), dict(model.named_modules())
    for name, module in modules.items():
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            continue
        weight = inits.get(f"unet.{name}.weight")
        if weight is None or tuple(weight.shape) != tuple(module.weight.shape):
            raise CheckpointError(f"{where}: no weights for {name} of shape {tuple(module.weight.shape)}")
        state[f"{name}.weight"] = torch.from_numpy(weight.copy())
        folded = inits.get(f"unet.{name}.weight_bias")
        if module.bias is not None:
            state[f"{name}.bias"] = torch.from_numpy(inits[f"unet.{name}.bias"].copy())
        elif folded is not None:  # the BatchNorm after it: the identity, plus the folded bias
            parent, index = name.rsplit(".", 1)
            bn = f"{parent}.{int(index) + 1}"
            eps = modules[bn].eps
            state.update({f"{bn}.weight": torch.ones_like(state[f"{bn}.weight"]),
                          f"{bn}.bias": torch.from_numpy(folded.copy()),
                          f"{bn}.running_mean": torch.zeros_like(state[f"{bn}.running_mean"]),
                          f"{bn}.running_var": torch.full_like(state[f"{bn}.running_var"], 1.0 - eps)})
    model.load_state_dict(state)
    _check_rebuilt(model, onnx_path, manifest, where)
    return {"format": FORMAT, "model_config": dict(manifest.model_config), "state_dict": model.state_dict(),
            "classes": list(manifest.classes), "normalization": {"mean": manifest.mean, "std": manifest.std},
            "input_size": manifest.input_size, "crop_size": manifest.crop_size, "epoch": 0, "metrics": {},
            "path": where}


def _check_rebuilt(model, onnx_path, manifest, where: str) -> None:
    import onnxruntime as ort
    import torch

    from segrt.model.unet import with_tta

    m = manifest.size_multiple
    x = np.random.default_rng(0).standard_normal((1, manifest.channels, 2 * m, 3 * m)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]

    with torch.inference_mode():
        got = with_tta(model, manifest.tta)(torch.from_numpy(x)).numpy()

    if got.shape != want.shape or not np.allclose(got, want, atol=FP32_MAX_LOGIT_DIFF):
        raise CheckpointError(f"{where}: the rebuilt model does not reproduce the ONNX (max |diff| "
                              f"{float(np.abs(got - want).max()) if got.shape == want.shape else 'shape'}); "
                              "restore checkpoint.pt")


def eager_model(checkpoint: str | os.PathLike | dict, manifest: Manifest):
    """The eager PyTorch reference of an export: the checkpoint's U-Net (a file, or a checkpoint
    dict), with the export's TTA; for your own model, its torch.export program (TTA included)."""
    from segrt.model.checkpoint import load_checkpoint, model_from_checkpoint
    from segrt.model.unet import with_tta

    if not isinstance(checkpoint, dict) and Path(checkpoint).suffix == ".ts":
        import torch

        from segrt.model.foreign import Outputs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation: export said it
            return Outputs(torch.jit.load(str(checkpoint), map_location="cpu")).eval()
    if not isinstance(checkpoint, dict) and Path(checkpoint).suffix == ".pt2":
        import torch

        from segrt.model.foreign import Outputs
        from segrt.runtime.backends.torch import static_batch

        program = torch.export.load(str(checkpoint))
        return Outputs(program.module(), fixed_batch=static_batch(program) == 1)

    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    return with_tta(model_from_checkpoint(ckpt), manifest.tta)


def export_checkpoint(folder: Path, manifest: Manifest, log=None) -> tuple[str | Path | dict, str]:
    """-> (the export's checkpoint: its file, or, where checkpoint.pt is not in this copy, a U-Net
    rebuilt from the fp32 ONNX's weights; what it is). The bundled models ship that way: one fp32
    copy of the weights (rebuild_from_onnx)."""
    ref = next((a for a in manifest.artifacts if a.kind == "checkpoint"), None)
    if ref is not None and (folder / ref.file).is_file():
        return folder / ref.file, f"eager PyTorch ({ref.file})"
    program = manifest.source.get("reference")
    if program:
        if not (folder / program).is_file():
            raise SegrtError(f"{folder}: {program}, the reference of your model, is not in this copy; pass --checkpoint")
        manifest.verify(folder, [program])
        form = "a TorchScript archive" if program.endswith(".ts") else "a torch.export program"
        what = f"your model as {form} ({program}, {manifest.source.get('route', 'its source')})"
        if log:
            log(f"reference: {what}")
        return folder / program, what
    onnx = manifest.artifact("onnx", "fp32")
    if ref is None and not (folder / onnx.file).is_file():
        raise SegrtError(f"{folder}: no checkpoint in the export; pass --checkpoint")
    manifest.verify(folder, [onnx.name])
    what = f"eager PyTorch rebuilt from {onnx.file}'s weights ({ref.file if ref else 'checkpoint.pt'} is not in this copy)"
    if log:
        log(f"reference: {what}")
    return _rebuild_from_onnx(folder / onnx.file, manifest), what


def eager_runner(model) -> Callable[[np.ndarray], np.ndarray]:
    """An eager model as a function NCHW float32 -> logits (numpy), without autograd."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def eager_logits(run, batches: list[Batch], served: bool = False) -> list[np.ndarray | None]:
    """The reference's logits per batch on the images as training read them; ``served``: on the
    served pixels instead, for the batches whose pixels differ (None for the others). ``run``: a
    runner, or an eager model."""
    run = run if not hasattr(run, "eval") else eager_runner(run)
    if served:
        return [run(b.x) if b.trained_x is not None else None for b in batches]
    return [run(b.reference_x) for b in progress(batches, desc="eager", unit="batch")]


def reference_runner(folder: Path, manifest: Manifest) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """Eager PyTorch from the export's checkpoint when torch is here, else the fp32 ONNX (which
    passed parity with eager at export). -> (runner, what it is)."""
    from segrt.runtime.session import Session, torch_available

    ckpt = next((a for a in manifest.artifacts if a.kind == "checkpoint"), None)
    if (ckpt is not None or manifest.source.get("reference")) and torch_available():
        checkpoint, _ = export_checkpoint(folder, manifest)
        return eager_runner(eager_model(checkpoint, manifest)), \
            "eager" if isinstance(checkpoint, Path) else "eager (rebuilt from the fp32 ONNX)"
    return Session(folder, artifact=manifest.artifact("onnx", "fp32").name, provider="cpu").run, "onnx fp32"


def reference_logits(folder: Path, manifest: Manifest, batches: list[Batch]) -> tuple[list[np.ndarray], str]:
    """The reference's logits (reference_runner) on the images as training read them."""
    run, name = reference_runner(folder, manifest)
    return eager_logits(run, batches), name
