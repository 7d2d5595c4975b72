"""The U-Net, assembled from .unet_parts by a relative import (as in that repository); ``base`` (64 there)
lets the tests use a tiny one."""

from torch import nn

from .unet_parts import DoubleConv, Down, OutConv, Up

__all__ = ["UNet"]


class UNet(nn.Module):
    def __init__(self, n_channels, n_classes, bilinear=False, base=64):
        super().__init__()
        self.n_channels, self.n_classes, self.bilinear = n_channels, n_classes, bilinear
        f = 2 if bilinear else 1
        self.inc = DoubleConv(n_channels, base)
        self.down1, self.down2 = Down(base, base * 2), Down(base * 2, base * 4)
        self.down3, self.down4 = Down(base * 4, base * 8), Down(base * 8, base * 16 // f)
        self.up1, self.up2 = Up(base * 16, base * 8 // f, bilinear), Up(base * 8, base * 4 // f, bilinear)
        self.up3, self.up4 = Up(base * 4, base * 2 // f, bilinear), Up(base * 2, base, bilinear)
        self.outc = OutConv(base, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        return self.outc(self.up4(x, x1))
