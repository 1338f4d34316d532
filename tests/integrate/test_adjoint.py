"""odeint_adjoint: gradients equal backprop, finite differences and torchdiffeq; seminorm."""

import pytest
import torch
import torchdiffeq
from torch import nn

from genmodels.integrate import SolverStats, odeint, odeint_adjoint


class Field(nn.Module):
    """A small non-autonomous neural vector field."""

    def __init__(self, d=2, width=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, d)).double()

    def forward(self, t, y):
        return self.net(y) * torch.cos(t)


def _grads(solve, f, y0, t, tol=1e-10, **kw):
    y0 = y0.clone().requires_grad_(True)
    y = solve(f, y0, t, rtol=tol, atol=tol, **kw)
    loss = (y**2).sum() + y[-1].sin().sum()
    inputs = (y0, *f.parameters()) + ((t,) if t.requires_grad else ())
    return torch.autograd.grad(loss, inputs)


def _close(a, b, tol):
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=tol, atol=tol), (x - y).abs().max()


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_adjoint_equals_backprop(method):
    f = Field()
    y0 = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    _close(_grads(odeint_adjoint, f, y0, t, method=method), _grads(odeint, f, y0, t, method=method),
           1e-6)  # fmt: skip


def test_adjoint_equals_finite_differences():
    f = Field(d=1, width=4)
    y0 = torch.tensor([[0.3]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    g = _grads(odeint_adjoint, f, y0, t)
    w = f.net[0].weight

    def loss():
        with torch.no_grad():
            y = odeint(f, y0, t, rtol=1e-12, atol=1e-12)
            return ((y**2).sum() + y[-1].sin().sum()).item()

    eps = 1e-6
    with torch.no_grad():
        w[0, 0] += eps
        up = loss()
        w[0, 0] -= 2 * eps
        down = loss()
        w[0, 0] += eps
    assert abs(g[1][0, 0].item() - (up - down) / (2 * eps)) < 1e-6
    y0p, y0m = y0 + eps, y0 - eps
    fd = []
    for z in (y0p, y0m):
        with torch.no_grad():
            y = odeint(f, z, t, rtol=1e-12, atol=1e-12)
            fd.append(((y**2).sum() + y[-1].sin().sum()).item())
    assert abs(g[0].item() - (fd[0] - fd[1]) / (2 * eps)) < 1e-6


def test_time_gradients_backprop_adjoint_and_finite_differences():
    f = Field(width=8)
    y0 = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0.1, 0.5, 1.2], dtype=torch.float64, requires_grad=True)
    g_bp = _grads(odeint, f, y0, t)[-1]
    g_adj = _grads(odeint_adjoint, f, y0, t)[-1]
    assert torch.allclose(g_bp, g_adj, atol=1e-7)
    eps, fd = 1e-6, []
    for i in range(3):
        vals = []
        for sgn in (1, -1):
            tt = t.detach().clone()
            tt[i] += sgn * eps
            with torch.no_grad():
                y = odeint(f, y0, tt, rtol=1e-12, atol=1e-12)
                vals.append(((y**2).sum() + y[-1].sin().sum()).item())
        fd.append((vals[0] - vals[1]) / (2 * eps))
    assert torch.allclose(g_bp, torch.tensor(fd, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("seminorm", [False, True])
def test_adjoint_agrees_with_torchdiffeq(seminorm):
    f = Field(width=8)
    y0 = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    kw = dict(adjoint_options=dict(norm="seminorm")) if seminorm else {}
    ours = _grads(odeint_adjoint, f, y0, t, **kw)
    theirs = _grads(torchdiffeq.odeint_adjoint, f, y0, t, **kw)
    _close(ours, theirs, 1e-7)  # includes dL/dt


def test_seminorm_same_gradients_fewer_backward_evaluations():
    f = Field(width=32)
    y0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    full, semi = SolverStats(), SolverStats()
    g_full = _grads(odeint_adjoint, f, y0, t, tol=1e-8, stats=full)
    g_semi = _grads(odeint_adjoint, f, y0, t, tol=1e-8, stats=semi,
                    adjoint_options=dict(norm="seminorm"))  # fmt: skip
    _close(g_full, g_semi, 1e-5)
    assert semi.nfe_backward < full.nfe_backward
    assert semi.nfe == full.nfe  # the forward pass is the same


def test_adjoint_tuple_state_float32_and_options():
    f = Field().float()

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = f

        def forward(self, t, y):
            a, b = y
            return (self.f(t, a), -b * a.sum())

    m = Pair()
    a0 = torch.randn(2, 2, requires_grad=True)
    b0 = torch.ones(3, requires_grad=True)
    t = torch.tensor([1.0, 0.0])  # decreasing
    ya, yb = odeint_adjoint(m, (a0, b0), t, rtol=1e-6, atol=1e-6,
                            adjoint_options=dict(max_num_steps=10_000))  # fmt: skip
    assert ya.dtype == torch.float32 and yb.shape == (2, 3)
    ga = torch.autograd.grad(ya.sum() + yb.sum(), (a0, b0, *m.parameters()))
    yra, yrb = odeint(m, (a0, b0), t, rtol=1e-6, atol=1e-6)
    gb = torch.autograd.grad(yra.sum() + yrb.sum(), (a0, b0, *m.parameters()))
    _close(ga, gb, 1e-3)


def test_adjoint_needs_parameters():
    with pytest.raises(TypeError, match="nn.Module"):
        odeint_adjoint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]))


def test_custom_adjoint_norm_gets_torchdiffeq_layout():
    """A callable adjoint norm receives (t, *y, *a, *dL/dtheta) in their own shapes, t 0-d."""
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.abs().max() for p in parts if p.numel())

    params = (torch.rand(7, requires_grad=True), torch.rand((), requires_grad=True))
    y0 = (torch.tensor(1.0), torch.full((2, 2), 0.5))
    ys = odeint_adjoint(lambda t, y: (-y[0], y[1] * params[1]), y0, torch.tensor([0.0, 1.0]),
                        adjoint_params=params, adjoint_options=dict(norm=norm))  # fmt: skip
    ys[0].sum().backward()
    assert seen and seen[0] == ((), (), (2, 2), (), (2, 2), (7,), ())


@pytest.mark.parametrize("seminorm", [False, True])
def test_backward_norm_on_the_graph_node_like_torchdiffeq(seminorm):
    """xs.grad_fn.adjoint_options['norm'] is the backward norm on (t, y, adj_y, *adj_params);
    a replacement put there is the one the backward pass uses."""
    params = (torch.rand(7, requires_grad=True), torch.rand((), requires_grad=True))
    kw = dict(adjoint_options=dict(norm="seminorm")) if seminorm else {}
    xs = odeint_adjoint(lambda t, x: x * params[1], torch.full((2, 2), 1.0),
                        torch.tensor([0.0, 1.0]), adjoint_params=params, **kw)  # fmt: skip
    default = xs.grad_fn.adjoint_options["norm"]
    calls = []

    def spy(parts):
        t, y, a, p1, p2 = parts
        want = max(t.abs(), y.pow(2).mean().sqrt(), a.pow(2).mean().sqrt())
        if not seminorm:
            want = max(want, p1.pow(2).mean().sqrt(), p2.abs())
        got = default(parts)
        calls.append(float((got - want).abs()))
        return got

    xs.grad_fn.adjoint_options["norm"] = spy
    xs.sum().backward()
    assert calls and max(calls) < 1e-6
