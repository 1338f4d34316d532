"""Image flow layers: masks, squeeze, logit, conv couplings, the multi-scale split.

Every layer: ``inverse(forward(x)) = x`` and log|det J| = the log-determinant of the autograd
Jacobian of the flattened map (float64), in both directions.
"""

from __future__ import annotations

import math

import pytest
import torch

from genmodels.distributions import (
    ElementwiseScale,
    FactorOut,
    ImageAdditiveCoupling,
    ImageAffineCoupling,
    ImageSplineCoupling,
    Logit,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    multi_scale,
)

SHAPE = (2, 4, 4)
SMALL = dict(hidden_channels=4, blocks=1)


def _perturb(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Move every parameter off its (identity) initialisation; weights by std/sqrt(fan_in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = math.prod(p.shape[1:]) if p.ndim > 1 else 1
            p.add_(torch.randn(p.shape, generator=g) * std / math.sqrt(fan_in))
    return module


def _layers():
    return {
        "squeeze": lambda: Squeeze(),
        "logit": lambda: Logit(-1.0, 1.25, 0.05),
        "affine-checkerboard": lambda: ImageAffineCoupling(SHAPE, "checkerboard", 0, **SMALL),
        "affine-channel": lambda: ImageAffineCoupling(SHAPE, "channel", 1, **SMALL),
        "additive-checkerboard": lambda: ImageAdditiveCoupling(SHAPE, "checkerboard", 1, **SMALL),
        "additive-channel": lambda: ImageAdditiveCoupling(SHAPE, "channel", 0, **SMALL),
        "spline-checkerboard": lambda: ImageSplineCoupling(
            SHAPE, "checkerboard", 0, bins=4, bound=2.0, **SMALL
        ),
        "spline-channel": lambda: ImageSplineCoupling(
            SHAPE, "channel", 1, bins=4, bound=2.0, **SMALL
        ),
        "factor-out": lambda: FactorOut(ImageAffineCoupling((1, 4, 4), "checkerboard", 0, **SMALL)),
        "elementwise-scale": lambda: ElementwiseScale(SHAPE),
        "multi-scale-affine": lambda: multi_scale(
            SHAPE, ImageAffineCoupling, scales=1, couplings=2, actnorm=True, **SMALL
        ),
        "multi-scale-additive": lambda: multi_scale(
            SHAPE, ImageAdditiveCoupling, scales=1, couplings=1, **SMALL
        ),
        "multi-scale-spline": lambda: multi_scale(
            SHAPE, ImageSplineCoupling, scales=2, couplings=1, bins=4, bound=2.0, **SMALL
        ),
    }


NAMES = list(_layers())


def _make(name: str, dtype=torch.float64):
    layer = _perturb(_layers()[name]()).to(dtype)
    for m in layer.modules():  # ActNorm: a fixed non-trivial state, not a data init
        if hasattr(m, "initialized"):
            m.initialized.fill_(1)
    return layer


def _x(name: str, n: int, dtype=torch.float64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "logit":  # inside the domain [-1, 1.25)
        return (-1 + 2.25 * torch.rand(n, *SHAPE, generator=g)).to(dtype)
    return (1.5 * torch.randn(n, *SHAPE, generator=g)).to(dtype)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_float64(name):
    layer = _make(name)
    x = _x(name, 5)
    z, ladj = layer(x)
    back, ladj_inv = layer.inverse(z)
    assert not torch.equal(z, x) or name == "identity"
    torch.testing.assert_close(back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_float32(name):
    layer = _make(name, torch.float32)
    x = _x(name, 5, torch.float32)
    back = layer.inverse(layer(x)[0])[0]
    assert ((back - x).abs() <= 1e-4 * x.abs().clamp_min(1)).all()


def _flat_map(fn, shape):
    return lambda v: fn(v.view(1, *shape))[0].reshape(-1)


@pytest.mark.parametrize("name", NAMES)
def test_log_det_matches_autograd_jacobian(name):
    layer = _make(name)
    x = _x(name, 2)
    ladj = layer(x)[1]
    for i in range(2):
        jac = torch.autograd.functional.jacobian(_flat_map(layer, SHAPE), x[i].reshape(-1))
        assert jac.shape == (32, 32)
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_log_det_matches_autograd_jacobian(name):
    layer = _make(name)
    z = layer(_x(name, 2))[0].detach()  # points in the range of forward (logit: inside)
    zshape = tuple(z.shape[1:])
    ladj = layer.inverse(z)[1]
    for i in range(2):
        jac = torch.autograd.functional.jacobian(_flat_map(layer.inverse, zshape), z[i].reshape(-1))
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=1e-9)


def test_masks_partition_the_image():
    a, b = checkerboard_mask(3, 4, 0), checkerboard_mask(3, 4, 1)
    assert torch.equal(a, ~b) and int(a.sum()) == 6
    assert not (a[:, 1:] & a[:, :-1]).any() and not (a[1:] & a[:-1]).any()  # no two neighbours
    assert torch.equal(channel_mask(5, 0), torch.tensor([1, 1, 0, 0, 0]).bool())
    assert torch.equal(channel_mask(5, 1), torch.tensor([0, 0, 0, 1, 1]).bool())
    with pytest.raises(ValueError, match="2 channels"):
        channel_mask(1, 0)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).view(1, 2, 4, 6)
    y, ladj = Squeeze()(x)
    assert y.shape == (1, 8, 2, 3) and float(ladj) == 0.0
    for c in range(2):
        for a in range(2):
            for b in range(2):
                torch.testing.assert_close(y[0, 4 * c + 2 * a + b], x[0, c, a::2, b::2])


def test_logit_maps_the_domain_to_the_logit_of_alpha():
    t = Logit(-1.0, 1.5, alpha=0.05)
    y = t(torch.tensor([[-1.0, 1.5]], dtype=torch.float64))[0]
    edge = math.log(0.05 / 0.95)
    torch.testing.assert_close(y, torch.tensor([[edge, -edge]], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        Logit(alpha=0.5)


def test_couplings_keep_the_conditioning_half_exactly():
    x = _x("affine", 3)
    cb = _make("affine-checkerboard")
    keep = checkerboard_mask(4, 4, 0).expand(3, *SHAPE)
    z = cb(x)[0]
    assert torch.equal(z[keep], x[keep]) and not torch.allclose(z[~keep], x[~keep])
    ch = _make("spline-channel")  # parity 1 keeps the last channel
    z = ch(x)[0]
    assert torch.equal(z[:, 1], x[:, 1]) and not torch.allclose(z[:, 0], x[:, 0])


def test_fresh_couplings_are_the_identity():
    x = _x("affine", 3, torch.float32)
    for cls in (ImageAffineCoupling, ImageAdditiveCoupling, ImageSplineCoupling):
        for mask in ("checkerboard", "channel"):
            z, ladj = cls(SHAPE, mask, 0, **SMALL)(x)
            torch.testing.assert_close(z, x, atol=1e-5, rtol=0)
            assert float(ladj.detach().abs().max()) < 1e-4


def test_affine_soft_clamp_bounds_the_log_scale():
    layer = ImageAffineCoupling(SHAPE, "channel", 0, scale_clamp=0.5, **SMALL).double()
    with torch.no_grad():
        layer.net.last.bias.fill_(100.0)  # raw log-scale 100 everywhere
    ladj = layer(_x("affine", 2))[1]
    want = torch.full((2,), 0.5 * 16, dtype=torch.float64)  # 16 transformed values at s = c
    torch.testing.assert_close(ladj, want, rtol=1e-6, atol=0)


def test_multi_scale_keeps_the_shape_and_factors_out_half():
    flow = multi_scale((1, 8, 8), ImageAffineCoupling, scales=2, couplings=1, **SMALL)
    x = torch.randn(2, 1, 8, 8)
    assert flow(x)[0].shape == x.shape
    outer = [m for m in flow.modules() if isinstance(m, FactorOut)]
    assert len(outer) == 2  # one split per scale: 8x8 -> 4x4 -> 2x2
    tiny = multi_scale((1, 4, 4), ImageAffineCoupling, scales=3, couplings=1, **SMALL)
    assert sum(isinstance(m, FactorOut) for m in tiny.modules()) == 1  # no 1x1 stage


def test_bad_shapes_raise_naming_the_argument():
    with pytest.raises(ValueError, match="x must be an image batch"):
        Squeeze()(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="even height"):
        Squeeze()(torch.zeros(2, 1, 3, 4))
    layer = ImageAffineCoupling(SHAPE, "checkerboard", 0, **SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, 4, 4\)"):
        layer(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="mask must be one of"):
        ImageAffineCoupling(SHAPE, "stripes", 0)
