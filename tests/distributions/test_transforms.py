"""Every flow layer: invertibility, and log|det J| against the autograd Jacobian."""

from __future__ import annotations

import math

import pytest
import torch

from genmodels.distributions import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    DiagonalScale,
    Inverse,
    LULinear,
    Permutation,
    Planar,
    Reverse,
    SplineCoupling,
    Standardize,
    alternating_mask,
    rational_quadratic_spline,
)

D = 3
CTX = 2


def _perturb(module: torch.nn.Module, seed: int = 0, std: float = 0.4) -> torch.nn.Module:
    """Move every parameter away from its (often identity) initialisation (weight matrices by
    ``std / sqrt(fan_in)``, so the conditioners' outputs stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = std / math.sqrt(p.shape[-1]) if p.ndim == 2 else std
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


def _layers():
    odd = torch.tensor([True, False, True])
    return {
        "affine": lambda: AffineCoupling(D, alternating_mask(D, 0)),
        "affine-gather-mask": lambda: AffineCoupling(D, odd),
        "affine-ctx": lambda: AffineCoupling(D, alternating_mask(D, 1), context_features=CTX),
        "additive": lambda: AdditiveCoupling(D, alternating_mask(D, 1)),
        "spline": lambda: SplineCoupling(D, alternating_mask(D, 0), bound=2.0),
        "spline-ctx": lambda: SplineCoupling(D, odd, context_features=CTX, bins=5, bound=2.0),
        "diag-scale": lambda: DiagonalScale(D),
        "actnorm": lambda: ActNorm(D),
        "lu": lambda: LULinear(D, generator=torch.Generator().manual_seed(1)),
        "planar": lambda: Planar(D, generator=torch.Generator().manual_seed(1)),
        "permutation": lambda: Permutation(torch.tensor([2, 0, 1])),
        "reverse": lambda: Reverse(),
        "standardize": lambda: Standardize(
            torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2, 0.5, 3])
        ),
        "compose": lambda: Compose(
            ActNorm(D),
            SplineCoupling(D, alternating_mask(D, 0), bound=2.0),
            LULinear(D),
            AffineCoupling(D, alternating_mask(D, 1)),
        ),
        "inverse-of-affine": lambda: Inverse(AffineCoupling(D, alternating_mask(D, 0))),
    }


LAYERS = _layers()
USES_CONTEXT = {"affine-ctx", "spline-ctx"}


def _make(name: str, dtype: torch.dtype):
    torch.manual_seed(0)
    layer = _perturb(LAYERS[name]()).to(dtype)
    layer.eval()  # ActNorm keeps its (perturbed) parameters
    g = torch.Generator().manual_seed(2)
    # Spread beyond the spline bound so the identity tails are exercised too.
    x = (torch.randn(64, D, generator=g) * 2).to(dtype)
    ctx = torch.randn(64, CTX, generator=g).to(dtype) if name in USES_CONTEXT else None
    return layer, x, ctx


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inverse_float64(name):
    layer, x, ctx = _make(name, torch.float64)
    z, ladj = layer(x, ctx)
    x_back, ladj_inv = layer.inverse(z, ctx)
    assert ladj.shape == (64,) and z.shape == x.shape
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    # log|det dx/dz| at z = T(x) is minus log|det dz/dx| at x.
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inverse_float32(name):
    layer, x, ctx = _make(name, torch.float32)
    z, _ = layer(x, ctx)
    x_back, _ = layer.inverse(z, ctx)
    tol = 1e-4 * x.abs().clamp_min(1)
    assert ((x_back - x).abs() <= tol).all(), (x_back - x).abs().max()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_log_det_matches_autograd_jacobian(name):
    layer, x, ctx = _make(name, torch.float64)
    _, ladj = layer(x, ctx)
    for i in range(0, 64, 8):
        c = None if ctx is None else ctx[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, c=c: layer(v[None], c)[0][0], x[i])
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(ladj[i], logabsdet, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", sorted(n for n in LAYERS if n != "planar"))
def test_inverse_log_det_matches_autograd_jacobian(name):
    layer, x, ctx = _make(name, torch.float64)
    _, ladj = layer.inverse(x, ctx)
    for i in range(0, 64, 16):
        c = None if ctx is None else ctx[i : i + 1]
        jac = torch.autograd.functional.jacobian(
            lambda v, c=c: layer.inverse(v[None], c)[0][0], x[i]
        )
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=0)


def test_fresh_couplings_are_the_identity():
    x = torch.randn(10, 4)
    for layer in (
        AffineCoupling(4, alternating_mask(4, 0)),
        AdditiveCoupling(4, alternating_mask(4, 1)),
        SplineCoupling(4, alternating_mask(4, 0)),
    ):
        z, ladj = layer(x)
        torch.testing.assert_close(z, x, atol=1e-5, rtol=0)
        torch.testing.assert_close(ladj, torch.zeros(10), atol=1e-5, rtol=0)


def test_affine_coupling_is_the_lecture_formula():
    """z_b = exp(s(x_a)) * x_b + t(x_a) with log det = sum s, and x_a unchanged."""
    layer = _perturb(AffineCoupling(2, alternating_mask(2, 0), scale_clamp=None))
    x = torch.randn(5, 2)
    s, t = layer.net(x[:, :1]).chunk(2, dim=1)
    z, ladj = layer(x)
    torch.testing.assert_close(z[:, :1], x[:, :1])
    torch.testing.assert_close(z[:, 1:], torch.exp(s) * x[:, 1:] + t)
    torch.testing.assert_close(ladj, s.sum(1))


def test_affine_soft_clamp_bounds_the_log_scale():
    layer = AffineCoupling(2, alternating_mask(2, 0), scale_clamp=2.0)
    with torch.no_grad():
        layer.net.layers[-1].bias.fill_(100.0)  # a wild conditioner
    _, ladj = layer(torch.randn(7, 2))
    assert torch.isfinite(ladj).all() and (ladj.abs() <= 2.0 + 1e-6).all()


def test_spline_is_identity_outside_bound_and_monotone_inside():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(1, 23, generator=g) * 2
    x = torch.linspace(-4, 4, 2001)
    y, ladj = rational_quadratic_spline(x, raw.expand(len(x), 23), bound=3.0)
    out = x.abs() > 3
    torch.testing.assert_close(y[out], x[out])
    assert (ladj[out] == 0).all()
    assert (y[1:] > y[:-1]).all()  # strictly increasing
    # continuous at the bound and mapping [-B, B] onto itself
    torch.testing.assert_close(y[x.abs() <= 3][[0, -1]], torch.tensor([-3.0, 3.0]))


def test_spline_log_det_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    raw = (torch.randn(1, 3 * 6 - 1, generator=g) * 2).double()
    x = torch.linspace(-1.99, 1.99, 401, dtype=torch.float64)
    y, ladj = rational_quadratic_spline(x, raw.expand(len(x), -1), bound=2.0)
    # Fourth-order central differences with h = 1e-4: truncation O(h⁴) and round-off
    # ~eps·|y|/h ≈ 7e-12 stay ~100x below the tolerance even where dy/dx ≈ 1e-4 (the log
    # divides by it). The former two-point rule with h = 1e-6 had round-off ≈ 1e-6 there,
    # a tenth of the tolerance, so another CPU's rounding could decide the test.
    h = 1e-4

    def y_at(shift):
        return rational_quadratic_spline(x + shift, raw.expand(len(x), -1), bound=2.0)[0]

    fd = ((-y_at(2 * h) + 8 * y_at(h) - 8 * y_at(-h) + y_at(-2 * h)) / (12 * h)).log()
    torch.testing.assert_close(ladj, fd, atol=1e-5, rtol=0)


def test_planar_reparameterisation_keeps_it_invertible():
    layer = Planar(2)
    with torch.no_grad():
        layer.w.copy_(torch.tensor([1.0, 0.5]))
        layer.u.copy_(-10 * layer.w)  # raw w.u = -12.5 would make f non-invertible
    assert float((layer.w @ layer.u_hat()).detach()) > -1
    x = torch.linspace(-5, 5, 200, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 0.5]])
    layer = layer.double()
    z, ladj = layer(x)
    assert torch.isfinite(ladj).all()
    proj = z @ layer.w  # monotone along w: injective
    assert (proj[1:] > proj[:-1]).all()


def test_actnorm_initialises_from_the_first_training_batch_and_only_once():
    layer = ActNorm(2)
    x = torch.tensor([3.0, -1.0]) + torch.tensor([2.0, 0.5]) * torch.randn(4096, 2)
    z, ladj = layer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=1e-4, rtol=0)
    assert int(layer.initialized) == 1 and "initialized" in layer.state_dict()
    before = layer.bias.detach().clone()
    layer(x * 5)
    torch.testing.assert_close(layer.bias.detach(), before)
    # a fresh layer in eval mode is not initialised by a forward pass
    fresh = ActNorm(2).eval()
    fresh(x)
    assert int(fresh.initialized) == 0


def test_actnorm_image_shapes_use_channels_and_pixels():
    layer = _perturb(ActNorm(3)).eval()
    x = torch.randn(2, 3, 4, 4)
    z, ladj = layer(x)
    torch.testing.assert_close(ladj, (layer.log_scale.sum() * 16).expand(2))
    torch.testing.assert_close(layer.inverse(z)[0], x, atol=1e-5, rtol=0)


def test_compose_adds_log_dets_and_inverse_swaps_directions():
    torch.manual_seed(0)
    a = _perturb(AffineCoupling(2, alternating_mask(2, 0)))
    b = _perturb(LULinear(2))
    x = torch.randn(8, 2)
    z, ladj = Compose(a, b)(x)
    za, la = a(x)
    zb, lb = b(za)
    torch.testing.assert_close(z, zb)
    torch.testing.assert_close(ladj, la + lb)
    inv = Inverse(Compose(a, b))
    torch.testing.assert_close(inv(z)[0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(inv.inverse(x)[1], ladj)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="perm"):
        Permutation(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="mask"):
        AffineCoupling(3, torch.tensor([True, True, True]))
    with pytest.raises(ValueError, match="at least 2"):
        alternating_mask(1, 0)


def test_standardize_log_det_is_minus_log_scale():
    t = Standardize(torch.zeros(2), torch.ones(2)).set_(torch.randn(1000, 2) * 3 + 1)
    _, ladj = t(torch.zeros(4, 2))
    torch.testing.assert_close(ladj, -t.scale.log().sum().expand(4))
    assert math.isclose(float(t.scale.mean()), 3.0, rel_tol=0.1)


def test_zero_init_false_gives_a_non_trivial_layer():
    torch.manual_seed(0)
    x = torch.randn(10, 2)
    for cls in (AffineCoupling, AdditiveCoupling, SplineCoupling):
        z, _ = cls(2, alternating_mask(2, 0), zero_init=False)(x)
        assert (z - x).abs().max() > 1e-3
