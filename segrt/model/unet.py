"""The classic U-Net (Ronneberger et al. 2015) with batch norm, built from a frozen config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from segrt.imaging.prepare import round_up

__all__ = ["UNetConfig", "Up", "UNet", "TTA_MODES", "with_tta", "build_model", "count_parameters"]

_UPSAMPLING_MODES = ("transpose", "bilinear")


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a UNet; stored in checkpoints as a plain dict."""

    in_channels: int = 3
    num_classes: int = 2
    base_channels: int = 64
    depth: int = 4
    upsampling: str = "transpose"

    def __post_init__(self):
        if self.upsampling not in _UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {_UPSAMPLING_MODES}, not {self.upsampling!r}")
        if self.depth < 1 or self.base_channels < 1 or self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(f"invalid UNetConfig: {self}")

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (one halving per level)."""
        return 2**self.depth

    @property
    def widths(self) -> list[int]:
        """Channels per level, input level first: base, 2*base, ..., 2**depth * base (the bottleneck)."""
        return [self.base_channels * 2**i for i in range(self.depth + 1)]

    def to_dict(self) -> dict:
        return asdict(self)


class _DoubleConv(nn.Sequential):
    """(conv 3x3 => BN => ReLU) * 2"""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class _Down(nn.Sequential):
    """maxpool 2x2 => DoubleConv"""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(nn.MaxPool2d(2), _DoubleConv(in_ch, out_ch))


class Up(nn.Module):
    """upsample x2 (halving channels) => concat with skip => DoubleConv"""

    def __init__(self, in_ch: int, out_ch: int, mode: str):
        super().__init__()
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, in_ch // 2, kernel_size=1),
            )
        self.conv = _DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # N, in/2, 2H, 2W == skip's H, W
        return self.conv(torch.cat([skip, x], dim=1))  # N, out, 2H, 2W


class UNet(nn.Module):
    """NCHW float32 normalized image -> NCHW float32 logits (num_classes channels), same H, W.

    H and W must be multiples of ``config.size_multiple``; there is no padding in forward.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        self.inc = _DoubleConv(config.in_channels, widths[0])
        self.downs = nn.ModuleList(_Down(widths[i], widths[i + 1]) for i in range(config.depth))
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], config.upsampling) for i in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(widths[0], config.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input_size(tuple(x.shape), self.config)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: torch.Tensor) -> torch.Tensor:
        """forward without the size check (used by exporters, whose dynamic dims carry the rule)."""
        skips = [self.inc(x)]  # N, base, H, W
        for down in self.downs:
            skips.append(down(skips[-1]))  # N, base*2^i, H/2^i, W/2^i
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)  # N, num_classes, H, W


TTA_MODES = ("hflip",)


class _FlipAveraged(nn.Module):
    """Horizontal-flip test-time augmentation inside the graph: the mean of the logits of the image
    and of its mirror image (mirrored back). Twice the compute."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (self.net(image) + self.net(image.flip(-1)).flip(-1)) * 0.5


def with_tta(net: nn.Module, tta: str | None) -> nn.Module:
    """``net`` as exported with ``--tta`` (None: unchanged)."""
    if tta is None:
        return net
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {', '.join(TTA_MODES)}")
    return _FlipAveraged(net)


def _check_input_size(shape: tuple, config: UNetConfig) -> None:
    """Raise ValueError unless shape is (N, in_channels, H, W) with H, W multiples of 2**depth."""
    if len(shape) != 4 or shape[1] != config.in_channels:
        raise ValueError(f"expected input of shape (N, {config.in_channels}, H, W), got {tuple(shape)}")
    m = config.size_multiple
    h, w = shape[2], shape[3]
    if h % m or w % m:
        raise ValueError(
            f"input height and width must be multiples of {m} (2**depth, depth={config.depth}); "
            f"got {h}x{w}: resize or pad to e.g. {round_up(h, m)}x{round_up(w, m)}"
        )


def build_model(config: UNetConfig | dict) -> UNet:
    if isinstance(config, dict):
        config = UNetConfig(**config)
    return UNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
