"""A torchdiffeq-style script runs unchanged with only the import swapped, same results."""

import torch
import torchdiffeq
from torch import nn

import genmodels.integrate


class Lorenzish(nn.Module):
    """A tuple-state field written the torchdiffeq way."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, state):
        x, v = state
        return v, -x + 0.1 * torch.tanh(self.lin(v)) * torch.sin(t)


def script(lib):
    """What a user script does; ``lib`` plays ``torchdiffeq``."""
    torch.manual_seed(0)
    func = Lorenzish()
    x0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    v0 = torch.zeros(5, 3, dtype=torch.float64)
    t = torch.linspace(2.0, 0.0, 6, dtype=torch.float64)  # decreasing
    xs, vs = lib.odeint(func, (x0, v0), t, rtol=1e-6, atol=1e-8, method="dopri5",
                        options=dict(max_num_steps=1000, first_step=0.01))  # fmt: skip
    fixed = lib.odeint(func, (x0, v0), t, method="rk4", options=dict(step_size=0.05))
    mid = lib.odeint(
        func,
        (x0, v0),
        t,
        method="midpoint",
        options=dict(grid_constructor=lambda f, y0, t: torch.linspace(2, 0, 41)),
    )
    xa, va = lib.odeint_adjoint(func, (x0, v0), t, rtol=1e-6, atol=1e-8,
                                adjoint_options=dict(norm="seminorm"))  # fmt: skip
    grads = torch.autograd.grad(xa[-1].sum() + va[-1].pow(2).sum(), [x0, *func.parameters()])
    return [xs, vs, *fixed, *mid, xa, va, *grads]


def test_script_runs_unchanged_and_agrees():
    ours = script(genmodels.integrate)
    theirs = script(torchdiffeq)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a - b).abs().max()


def test_default_method_and_tolerances_match():
    f = lambda t, y: torch.stack([y[1], -torch.sin(y[0])])
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    a = genmodels.integrate.odeint(f, y0, t)
    b = torchdiffeq.odeint(f, y0, t)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
