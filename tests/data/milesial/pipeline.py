"""The user's own pipeline, as milesial/Pytorch-UNet's predict.py runs it: the photo scaled by a factor
with PIL's bicubic (int() of each side), pixels / 255, the net, its logits upsampled (bilinear) to the
photo's size, argmax. ``segment(path)`` is what `segrt parity --against` calls; the checkpoint and the
net's arguments come from the environment (SEGRT_MILESIAL_CKPT, SEGRT_MILESIAL_ARGS)."""

import functools
import json
import os

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from unet import UNet

__all__ = ["preprocess", "predict_img", "segment", "nearest_segment"]
SCALE = 0.25


def preprocess(pil_img, scale):
    w, h = pil_img.size
    img = np.asarray(pil_img.resize((int(scale * w), int(scale * h)), resample=Image.BICUBIC))
    img = img.transpose((2, 0, 1))
    return img / 255.0 if (img > 1).any() else img


@functools.lru_cache(maxsize=1)
def _net():
    state = torch.load(os.environ["SEGRT_MILESIAL_CKPT"], map_location="cpu", weights_only=True)
    state.pop("mask_values", None)
    net = UNet(**json.loads(os.environ["SEGRT_MILESIAL_ARGS"]))
    net.load_state_dict(state)
    return net.eval()


def predict_img(net, full_img, scale_factor=SCALE):
    img = torch.from_numpy(preprocess(full_img, scale_factor)).unsqueeze(0).float()
    with torch.no_grad():
        output = net(img)
        output = F.interpolate(output, (full_img.size[1], full_img.size[0]), mode="bilinear")
        return output.argmax(dim=1)[0].numpy()


def segment(path):
    return predict_img(_net(), Image.open(path).convert("RGB"))


def nearest_segment(path):
    """The same net, but the mask (not the logits) resized back, with PIL's nearest."""
    full = Image.open(path).convert("RGB")
    img = torch.from_numpy(preprocess(full, SCALE)).unsqueeze(0).float()
    with torch.no_grad():
        small = _net()(img).argmax(dim=1)[0].numpy().astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(full.size, Image.NEAREST))
