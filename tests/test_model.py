import pytest
import torch

from segrt.model.unet import UNet, UNetConfig, count_parameters


@pytest.mark.parametrize("depth,base,up,hw", [
    (1, 4, "transpose", (32, 48)),
    (2, 8, "bilinear", (64, 64)),
    (3, 8, "transpose", (64, 96)),
    (4, 8, "transpose", (96, 64)),
    (4, 4, "bilinear", (16, 32)),
])
def test_output_shape(depth, base, up, hw):
    cfg = UNetConfig(in_channels=3, num_classes=5, base_channels=base, depth=depth, upsampling=up)
    out = UNet(cfg).eval()(torch.randn(2, 3, *hw))
    assert out.shape == (2, 5, *hw)
    assert torch.isfinite(out).all()


def test_grayscale_input():
    out = UNet(UNetConfig(in_channels=1, num_classes=2, base_channels=8, depth=2))(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 2, 64, 64)


def test_classic_parameter_count():
    n = count_parameters(UNet(UNetConfig(in_channels=3, num_classes=2, base_channels=64, depth=4)))
    assert round(n / 1e6, 1) == 31.0


@pytest.mark.parametrize("hw", [(60, 64), (64, 72), (17, 16)])
def test_bad_size_names_the_multiple(hw):
    model = UNet(UNetConfig(base_channels=8, depth=4))
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 3, *hw))


def test_wrong_channels():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        UNet(UNetConfig(base_channels=8, depth=2))(torch.randn(1, 1, 64, 64))


def test_config_validation():
    with pytest.raises(ValueError, match="upsampling"):
        UNetConfig(upsampling="nearest")
    assert UNetConfig(depth=3).size_multiple == 8
