"""--init into a wider U-Net: Net2WiderNet (Chen et al., 2016), a function-preserving widening.

Each new channel copies an old one; the next layer divides the weights it reads from a copied
channel by the number of copies, so the wider net computes what the narrow one did. A little noise
then breaks the symmetry between copies, or they would get equal gradients and stay equal.
"""

from __future__ import annotations

import torch

from segrt.model.unet import UNetConfig

__all__ = ["can_widen", "widen"]


def can_widen(old: UNetConfig, new: UNetConfig) -> bool:
    """The same U-Net but with more base channels."""
    same = {**old.to_dict(), "base_channels": new.base_channels} == new.to_dict()
    return same and new.base_channels > old.base_channels


def widen(state: dict, old: UNetConfig, new: UNetConfig, generator: torch.Generator, noise: float = 0.01) -> dict:
    """A state dict of ``old`` -> one of ``new`` (see can_widen) computing the same function, plus
    Gaussian noise of ``noise`` times each conv weight's std."""
    w = _Widener(state, new.base_channels / old.base_channels, generator)
    widths = old.widths
    ident = torch.arange(old.in_channels), torch.ones(old.in_channels)
    skips = [w.double_conv("inc", ident, widths[0])]
    for i in range(old.depth):
        skips.append(w.double_conv(f"downs.{i}.1", skips[-1], widths[i + 1]))
    x = skips.pop()
    for j, i in enumerate(reversed(range(old.depth))):
        up = w.up(f"ups.{j}.up", x, widths[i], transpose=old.upsampling == "transpose")
        (gs, cs), (gu, cu) = skips.pop(), up
        x = w.double_conv(f"ups.{j}.conv", (torch.cat([gs, gu + widths[i]]), torch.cat([cs, cu])), widths[i])
    w.conv("head", x, (torch.arange(old.num_classes), None))  # the classes are not widened
    for value in w.new.values():
        if value.dim() == 4 and noise:
            value.add_(torch.randn(value.shape, generator=generator) * (value.std() * noise))
    return w.new


class _Widener:
    """Builds the wide state dict layer by layer; a mapping is (new -> old channel index, copies of
    each old channel)."""

    def __init__(self, state: dict, factor: float, generator: torch.Generator):
        self.old, self.factor, self.gen, self.new = state, factor, generator, {}

    def mapping(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        extra = torch.randint(0, width, (round(width * self.factor) - width,), generator=self.gen)
        index = torch.cat([torch.arange(width), extra])
        return index, torch.bincount(index, minlength=width).float()

    def conv(self, key: str, inp, out, transposed: bool = False) -> None:
        """Conv weight (out, in, kh, kw), or (in, out, kh, kw) when transposed: select the copied
        output channels, select and share out the input ones."""
        weight = self.old[f"{key}.weight"]
        if transposed:
            weight = weight.transpose(0, 1)
        weight = weight[out[0]]
        if f"{key}.bias" in self.old:
            self.new[f"{key}.bias"] = self.old[f"{key}.bias"][out[0]].clone()
        weight = weight[:, inp[0]] / inp[1][inp[0]].view(1, -1, 1, 1)
        self.new[f"{key}.weight"] = (weight.transpose(0, 1) if transposed else weight).contiguous()

    def batch_norm(self, key: str, out) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.new[f"{key}.{name}"] = self.old[f"{key}.{name}"][out[0]].clone()
        self.new[f"{key}.num_batches_tracked"] = self.old[f"{key}.num_batches_tracked"].clone()

    def double_conv(self, key: str, inp, width: int):
        for conv, bn in ((0, 1), (3, 4)):
            out = self.mapping(width)
            self.conv(f"{key}.{conv}", inp, out)
            self.batch_norm(f"{key}.{bn}", out)
            inp = out
        return inp

    def up(self, key: str, inp, width: int, transpose: bool):
        out = self.mapping(width)
        self.conv(key if transpose else f"{key}.1", inp, out, transposed=transpose)
        return out
