"""cdeint: a CDE is an ODE with vector field f(z) dX/dt; checked against closed forms and
torchcde."""

import pytest
import torch
import torchcde
from torch import nn

from genmodels.integrate import SolverStats, cdeint


class LinearPath:
    """Piecewise-linear interpolation of (knots, values): the test's own control path."""

    def __init__(self, knots, values):
        self.knots, self.values = knots, values  # (K,), (..., K, C)

    def _piece(self, t):
        return int(torch.clamp(torch.searchsorted(self.knots, t.reshape(1), right=True) - 1,
                               0, len(self.knots) - 2))  # fmt: skip

    def evaluate(self, t):
        i = self._piece(t)
        w = (t - self.knots[i]) / (self.knots[i + 1] - self.knots[i])
        return self.values[..., i, :] + w * (self.values[..., i + 1, :] - self.values[..., i, :])

    def derivative(self, t):
        i = self._piece(t)
        dv = self.values[..., i + 1, :] - self.values[..., i, :]
        return dv / (self.knots[i + 1] - self.knots[i])


def test_constant_field_tracks_the_path():
    """f(z) = M constant: z(t) = z0 + M (X(t) - X(t0)) exactly."""
    g = torch.Generator().manual_seed(0)
    knots = torch.tensor([0.0, 0.3, 1.0, 1.5], dtype=torch.float64)
    values = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    X = LinearPath(knots, values)
    M = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z0 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    z = cdeint(X, lambda t, z: M.expand(2, 5, 3), z0, t, options=dict(jump_t=knots[1:-1]))
    for i, ti in enumerate(t):
        expected = z0 + (X.evaluate(ti) - X.evaluate(t[0])) @ M.T
        assert torch.allclose(z[i], expected, atol=1e-10)


def test_linear_cde_closed_form():
    """dz = A z dX with scalar X: z(t) = exp(A (X(t) - X(0))) z0."""
    knots = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    values = torch.tensor([[0.0], [1.0], [0.2]], dtype=torch.float64)
    X = LinearPath(knots, values)
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    z0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    z = cdeint(X, lambda t, z: (A @ z).unsqueeze(-1), z0, t, rtol=1e-10, atol=1e-10,
               options=dict(jump_t=[0.5]))  # fmt: skip
    for i in range(3):
        expected = torch.linalg.matrix_exp(A * values[i, 0]) @ z0
        assert torch.allclose(z[i], expected, atol=1e-8)


class CDEFunc(nn.Module):
    def __init__(self, hidden=4, channels=3):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(hidden, hidden * channels).double()
        self.hidden, self.channels = hidden, channels

    def forward(self, t, z):
        return torch.tanh(self.lin(z)).view(*z.shape[:-1], self.hidden, self.channels)


@pytest.mark.parametrize("adjoint", [False, True])
def test_agrees_with_torchcde(adjoint):
    g = torch.Generator().manual_seed(1)
    obs_t = torch.linspace(0, 2, 7, dtype=torch.float64)
    x = torch.cat([obs_t.expand(2, 7).unsqueeze(-1),
                   torch.randn(2, 7, 2, generator=g, dtype=torch.float64)], -1)  # fmt: skip
    coeffs = torchcde.natural_cubic_coeffs(x, t=obs_t)
    X = torchcde.CubicSpline(coeffs, t=obs_t)
    func = CDEFunc()
    z0 = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    kw = dict(rtol=1e-9, atol=1e-9, method="dopri5")
    stats = SolverStats()
    ours = cdeint(X, func, z0, obs_t, adjoint=adjoint, stats=stats, **kw)
    theirs = torchcde.cdeint(X, func, z0, obs_t, adjoint=adjoint, **kw).transpose(0, 1)
    assert ours.shape == (7, 2, 4)
    assert torch.allclose(ours, theirs, atol=1e-7)
    go = torch.autograd.grad(ours[-1].sum(), [z0, *func.parameters()])
    gt = torch.autograd.grad(theirs[-1].sum(), [z0, *func.parameters()])
    for a, b in zip(go, gt):
        assert torch.allclose(a, b, atol=1e-6)
    assert stats.nfe > 0 and (stats.nfe_backward > 0) == adjoint


def test_bad_field_shape():
    X = LinearPath(torch.tensor([0.0, 1.0]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="hidden=2, input_channels=3"):
        cdeint(X, lambda t, z: torch.ones(2, 2), torch.zeros(2), torch.tensor([0.0, 1.0]))


def test_cdeint_on_our_natural_cubic_spline():
    """The lecture's Neural CDE pipeline: a natural cubic spline of the observations drives
    the CDE. With a constant field, z(t_k) = z0 + M (x_k - x_0) at every knot (the spline
    interpolates the knots), whatever the path does in between."""
    from genmodels.integrate import NaturalCubicSpline

    g = torch.Generator().manual_seed(1)
    knots = torch.linspace(0, 2, 9, dtype=torch.float64)
    x = torch.randn(3, 9, 2, generator=g, dtype=torch.float64)
    X = NaturalCubicSpline(knots, x)
    M = torch.randn(4, 2, generator=g, dtype=torch.float64)
    z0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    z = cdeint(X, lambda t, z: M.expand(*z.shape, 2), z0, knots, rtol=1e-10, atol=1e-12)
    expected = z0 + torch.einsum("hc,bkc->kbh", M, x - x[:, :1])
    assert torch.allclose(z, expected, atol=1e-7)
