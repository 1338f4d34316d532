"""The nn/ factory: which network for which data shape, and the defaults its tables state."""

from __future__ import annotations

import pytest
import torch

from genmodels.distributions import AffineCoupling, ImageAffineCoupling, alternating_mask
from genmodels.nn import (
    FlatTimeNetwork,
    NetworkChoice,
    TimeMLP,
    UNet,
    conditioner_choice,
    conditioner_options,
    time_network,
    time_network_choice,
)


@pytest.mark.parametrize(
    "shape, want",
    [
        ((2,), NetworkChoice("mlp", 128, 3)),
        ((1, 8, 8), NetworkChoice("mlp", 512, 4)),
        ((1, 16, 16), NetworkChoice("mlp", 512, 4)),  # 256 pixels: still the MLP
        ((1, 17, 16), NetworkChoice("unet", 16, 1)),
        ((1, 28, 28), NetworkChoice("unet", 16, 1)),
    ],
)
def test_time_network_defaults_follow_the_shape(shape, want):
    assert time_network_choice(shape) == want
    net = time_network(shape, emb_dim=16)
    x = torch.randn(3, *shape)
    assert net(x, torch.tensor([0, 5, 9])).shape == x.shape
    if want.net == "unet":
        assert isinstance(net, UNet) and net.stem.out_channels == want.width
    else:
        mlp = net.net if len(shape) == 3 else net
        assert isinstance(net, FlatTimeNetwork if len(shape) == 3 else TimeMLP)
        assert mlp.inp.out_features == want.width and len(mlp.hidden) == want.depth - 1


def test_time_network_width_depth_and_forced_net():
    assert time_network_choice((1, 8, 8), "unet", width=8) == NetworkChoice("unet", 8, 1)
    assert time_network_choice((1, 28, 28), "mlp", depth=2) == NetworkChoice("mlp", 512, 2)
    unet = time_network((1, 8, 8), net="unet", width=8, depth=2, mults=(1, 2), emb_dim=16)
    assert len(unet.down) == 2 * 2  # depth = residual blocks per level, two levels
    with pytest.raises(ValueError, match="needs images"):
        time_network_choice((2,), "unet")
    with pytest.raises(ValueError, match="net must be"):
        time_network_choice((2,), "transformer")
    with pytest.raises(ValueError, match=r"event_shape must be \(d,\)"):
        time_network_choice((4, 4))


def test_conditioner_options_build_the_stated_networks():
    assert conditioner_choice((2,)) == NetworkChoice("mlp", 64, 2)
    assert conditioner_choice((1, 8, 8)) == NetworkChoice("conv-resnet", 32, 1)
    assert conditioner_options((5,), width=16, depth=3) == {"hidden_features": (16, 16, 16)}
    layer = AffineCoupling(4, alternating_mask(4, 0), **conditioner_options((4,)))
    assert [m.out_features for m in layer.net.layers] == [64, 64, 4]
    opts = conditioner_options((1, 4, 4), width=8, depth=2)
    img = ImageAffineCoupling((1, 4, 4), "checkerboard", 0, **opts)
    assert img.net.first.out_channels == 8 and len(img.net.blocks) == 2
