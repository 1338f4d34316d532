"""The Flow distribution: a torch Distribution whose log_prob is the change of variables."""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Normal

from genmodels.distributions import (
    AffineCoupling,
    Compose,
    Flow,
    Inverse,
    Planar,
    SplineCoupling,
    Standardize,
    alternating_mask,
    standard_normal_log_prob,
)


def test_affine_flow_is_the_normal_it_should_be():
    """T(x) = (x - m) / s pushes N(m, s^2) onto N(0, 1): log p must equal Normal's."""
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    flow = Flow(Compose(Standardize(loc, scale)), (2,))
    x = torch.randn(100, 2) * 3
    expected = Normal(loc, scale).log_prob(x).sum(-1)
    torch.testing.assert_close(flow.log_prob(x), expected)
    assert isinstance(flow, Distribution) and flow.has_rsample
    samples = flow.sample((20000,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples.mean(0), loc, atol=0.06, rtol=0)
    torch.testing.assert_close(samples.std(0), scale, atol=0.06, rtol=0)


def test_standard_normal_log_prob():
    z = torch.randn(7, 3)
    torch.testing.assert_close(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def _coupling_flow(context: int = 0) -> Compose:
    torch.manual_seed(0)
    t = Compose(
        AffineCoupling(2, alternating_mask(2, 0), context_features=context),
        SplineCoupling(2, alternating_mask(2, 1), context_features=context, bound=3.0),
    )
    with torch.no_grad():  # a bent but contained density: weights moved by 0.5 / sqrt(fan_in)
        for p in t.parameters():
            p.add_(torch.randn_like(p) * (0.5 / math.sqrt(p.shape[-1]) if p.ndim == 2 else 0.5))
    return t


def test_shapes_generator_and_rsample_gradients():
    flow = Flow(_coupling_flow(), (2,))
    g = torch.Generator().manual_seed(3)
    a = flow.sample((3, 4), generator=g)
    b = flow.sample((3, 4), generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, 4, 2) and torch.equal(a, b)
    assert flow.log_prob(a).shape == (3, 4)
    x = flow.rsample((16,), generator=g)
    x.pow(2).sum().backward()
    assert all(p.grad is not None for p in flow.transform.parameters())


def test_rsample_and_log_prob_agrees_with_log_prob():
    flow = Flow(_coupling_flow(), (2,))
    x, logq = flow.rsample_and_log_prob((50,), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logq, flow.log_prob(x), atol=1e-4, rtol=0)


def test_generative_planar_flow_for_vi():
    """Planar layers used generatively (Inverse): rsample_and_log_prob needs only forward."""
    torch.manual_seed(0)
    t = Inverse(Compose(*(Planar(2) for _ in range(4)))).double()
    flow = Flow(t, (2,))
    x, logq = flow.rsample_and_log_prob((30,), generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float64
    torch.testing.assert_close(logq, flow.log_prob(x), atol=1e-8, rtol=0)  # numerical inverse


def test_conditional_flow_broadcasts_context():
    flow = Flow(_coupling_flow(context=1), (2,), context=torch.tensor([[-1.0], [1.0]]))
    assert flow.batch_shape == (2,)
    x = flow.sample((5,), generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 2, 2)
    lp = flow.log_prob(x)
    assert lp.shape == (5, 2)
    single = Flow(flow.transform, (2,), context=torch.tensor([[1.0]]))
    torch.testing.assert_close(lp[:, 1], single.log_prob(x[:, 1:2])[:, 0])


def test_density_integrates_to_one():
    flow = Flow(_coupling_flow(), (2,))
    n, lim = 401, 8.0
    grid = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * (2 * lim / (n - 1)) ** 2
    assert math.isclose(float(mass), 1.0, rel_tol=0.01)
