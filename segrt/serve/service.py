"""What a request asks of a served model, apart from HTTP: images -> masks through predict's stages
(decode on threads, a batch on the engine, masks on threads), tensors -> logits, and the outputs
each input kind has. Used by the ASGI routes (segrt.serve.app), locally and on Ray Serve alike."""

from __future__ import annotations

import asyncio

import numpy as np

from segrt.errors import ImageError, SegrtError
from segrt.imaging import decode, masks
from segrt.serve.model import IMAGE_INPUT, ServedModel
from segrt.serve.v2 import ProtocolError, Tensor

__all__ = ["Service", "IMAGE_OUTPUTS", "PAD"]

IMAGE_OUTPUTS = ["masks", "mask_shapes", "masks_png"]
PAD = 255  # masks of a request's smaller images are padded with this (not a class id)


class Service:
    """One model behind its batcher (``batch``: await batch(items) -> logits, the local Batcher or Ray
    Serve's @serve.batch)."""

    def __init__(self, model: ServedModel, batch, admit):
        self.model, self.batch, self.admit = model, batch, admit
        self.name, self.manifest = model.name, model.manifest

    async def _threads(self, pool, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def masks(self, images: list[tuple[str, bytes]]) -> tuple[list[np.ndarray], list[str]]:
        """(name, encoded bytes) items -> (HW uint8 masks at each image's size, decoding notes). A bad
        item raises ImageError naming it, after every item of the request is decoded."""
        with self.admit(len(images)):
            results = await asyncio.gather(*(self._threads(self.model.decoders, self.model.decode, name, data)
                                             for name, data in images), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r if isinstance(r, ImageError) else ImageError(f"{type(r).__name__}: {r}")
            logits = await self.batch(results)
            found = await asyncio.gather(*(self._threads(self.model.post, self.model.mask, out, item.geometry)
                                           for out, item in zip(logits, results)))
        return list(found), [n for item in results for n in item.notes]

    async def logits(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 normalized (the Triton repository's input) -> NCHW float32 logits."""
        items = [self.model.tensor_item(row) for row in x]
        with self.admit(len(items)):
            return np.stack(await self.batch(items)) if items else np.zeros((0, self.manifest.num_classes, 0, 0),
                                                                             np.float32)

    # -- the Open Inference Protocol's view ------------------------------------------------
    def metadata(self) -> dict:
        m = self.manifest
        hw = list(m.fixed_size) if m.fixed_size else [-1, -1]
        return {"name": self.name, "versions": ["1"], "platform": "segrt",
                "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                           {"name": m.input_name, "datatype": "FP32", "shape": [-1, m.channels, *hw]}],
                "outputs": [{"name": "masks", "datatype": "UINT8", "shape": [-1, -1, -1]},
                            {"name": "mask_shapes", "datatype": "INT32", "shape": [-1, 2]},
                            {"name": "masks_png", "datatype": "BYTES", "shape": [-1]},
                            {"name": m.output_name, "datatype": "FP32", "shape": [-1, m.num_classes, *hw]}],
                "parameters": {"classes": list(m.classes), "variant": self.model.variant,
                               "chosen": self.model.session.auto_note or ""}}

    def outputs_for(self, tensor: Tensor) -> list[str]:
        """The outputs of the input a request sends (400 for an input the model does not have)."""
        if tensor.name == IMAGE_INPUT:
            if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
                raise ProtocolError(f"input {IMAGE_INPUT!r}: datatype BYTES and shape [N] expected, got "
                                    f"{tensor.datatype} {tensor.shape}")
            return IMAGE_OUTPUTS
        if tensor.name == self.manifest.input_name:
            if tensor.datatype != "FP32" or len(tensor.shape) != 4:
                raise ProtocolError(f"input {tensor.name!r}: datatype FP32 and shape [N, {self.manifest.channels}, "
                                    f"H, W] expected, got {tensor.datatype} {tensor.shape}")
            return [self.manifest.output_name]
        raise ProtocolError(f"model {self.name!r} has no input {tensor.name!r}; send {IMAGE_INPUT!r} (encoded images, "
                            f"BYTES) or {self.manifest.input_name!r} (FP32 NCHW, normalized)")

    async def infer(self, tensor: Tensor, names: list[str]) -> list[Tensor]:
        """One input tensor -> the named outputs."""
        if tensor.name != IMAGE_INPUT:
            try:
                out = await self.logits(tensor.data)
            except SegrtError as exc:
                raise ProtocolError(str(exc)) from None
            return [Tensor(self.manifest.output_name, "FP32", list(out.shape), out)]
        found, _ = await self.masks([(f"item {i}", data) for i, data in enumerate(tensor.data)])
        shapes = np.array([m.shape for m in found], np.int32).reshape(-1, 2)
        h, w = shapes.max(axis=0) if len(found) else (0, 0)
        stacked = np.full((len(found), h, w), PAD, np.uint8)
        for i, m in enumerate(found):
            stacked[i, :m.shape[0], :m.shape[1]] = m
        made = {"masks": lambda: Tensor("masks", "UINT8", list(stacked.shape), stacked),
                "mask_shapes": lambda: Tensor("mask_shapes", "INT32", list(shapes.shape), shapes)}
        out = [made[n]() for n in names if n in made]
        if "masks_png" in names:
            pngs = await asyncio.gather(*(self._threads(self.model.post, self.png, m) for m in found))
            out.insert(names.index("masks_png"), Tensor("masks_png", "BYTES", [len(pngs)], list(pngs)))
        return out

    # -- plain HTTP ------------------------------------------------------------------------
    def png(self, mask: np.ndarray, colour: bool = False) -> bytes:
        """The class-id PNG predict writes as NAME.png (``colour``: NAME.color.png)."""
        grey, color = masks.encode_mask_pngs(mask, self.manifest.colors)
        return color if colour else grey

    def overlay(self, name: str, data: bytes, mask: np.ndarray) -> bytes:
        """NAME.overlay.jpg of predict: the photo at full size with the classes blended over it."""
        image = decode.decode_image(name, 3, self.model.opts.max_pixels, data=data)[0]
        return masks.overlay_jpeg(image, mask, self.model.predictor.skip_class, self.manifest.colors)

    def summary(self, mask: np.ndarray, notes: list[str]) -> dict:
        """?format=json: the mask's shape, the pixel share of each class, the variant that ran."""
        counts = np.bincount(mask.reshape(-1), minlength=len(self.manifest.classes))
        share = {name: round(float(c) / mask.size, 6) for name, c in zip(self.manifest.classes, counts)}
        return {"model": self.name, "shape": list(mask.shape), "classes": list(self.manifest.classes),
                "share": share, "variant": self.model.variant, "notes": notes}

    async def plain(self, name: str, data: bytes, fmt: str) -> tuple[bytes | dict, str]:
        """POST /predict: (body, media type) of one image in ``fmt`` (png, color, overlay, json)."""
        (mask,), notes = await self.masks([(name, data)])
        if fmt == "json":
            return self.summary(mask, notes), "application/json"
        if fmt == "overlay":
            return await self._threads(self.model.post, self.overlay, name, data, mask), "image/jpeg"
        return await self._threads(self.model.post, self.png, mask, fmt == "color"), "image/png"

