"""The one Runge–Kutta step function and the checks odeint and sdeint share."""

import math

import pytest
import torch

from genmodels.integrate import (
    NonFiniteSolutionError,
    ODESolverError,
    get_tableau,
    odeint,
    runge_kutta_step,
    sdeint,
)
from genmodels.integrate.odeint import StageBuffers

METHODS = ["euler", "midpoint", "heun2", "heun3", "rk4", "rk4_classic", "bosh3", "dopri5",
           "tsit5", "dopri8", "adaptive_heun", "fehlberg2"]  # fmt: skip


def _stability_poly(tab, z: float) -> float:
    """R(z) = 1 + z b^T (I - z A)^-1 1 for the explicit method (Hairer & Wanner II, IV.2)."""
    s = tab.stages
    A = torch.zeros(s, s, dtype=torch.float64)
    for i, row in enumerate(tab.a):
        A[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
    b = torch.tensor(tab.b, dtype=torch.float64)
    v = torch.linalg.solve(torch.eye(s, dtype=torch.float64) - z * A, torch.ones(s, dtype=A.dtype))
    return float(1 + z * b @ v)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("autograd", [True, False])
def test_step_on_linear_ode_is_the_stability_polynomial(method, autograd):
    # y' = lam y: one step multiplies y by R(h lam), in both ways of holding the stages
    tab = get_tableau(method)
    lam, h = -1.7, 0.3
    y = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def f(t, y, out=None):
        r = lam * y
        return r if out is None else out.copy_(r)

    work = None if autograd else StageBuffers(f, tab, y)
    k0 = f(0.0, y)
    y1, K, err = runge_kutta_step(f, 0.0, y, h, k0, tab, work=work, error=tab.adaptive)
    torch.testing.assert_close(y1, y * _stability_poly(tab, h * lam), rtol=1e-13, atol=0)
    if tab.adaptive:
        emb = tab.embedded()
        want = y * (_stability_poly(tab, h * lam) - _stability_poly(emb, h * lam))
        torch.testing.assert_close(err, want, rtol=1e-6, atol=1e-13)  # err ~ 1e-7


def test_step_evaluates_nodes_at_their_times():
    # y' = t on a step from 0.2 with h = 0.5: exact for any method of order >= 2
    tab = get_tableau("rk4")
    seen = []

    def f(t, y):
        seen.append(t)
        return torch.full_like(y, t)

    y = torch.zeros(1, dtype=torch.float64)
    y1, _, _ = runge_kutta_step(f, 0.2, y, 0.5, f(0.2, y), tab)
    assert seen == pytest.approx([0.2 + c * 0.5 for c in tab.c])
    assert float(y1) == pytest.approx((0.7**2 - 0.2**2) / 2, rel=1e-14)


def test_autograd_and_buffered_solves_agree():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    net = net.double()
    y0 = torch.randn(5, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    for method, opts in (("rk4", dict(step_size=0.1)), ("dopri5", None)):
        with torch.no_grad():
            a = odeint(lambda t, y: net(y), y0, t, method=method, options=opts)
        b = odeint(lambda t, y: net(y), y0.requires_grad_(), t, method=method, options=opts)
        y0.requires_grad_(False)
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)


def test_odeint_and_sdeint_share_the_time_check_and_errors():
    class Sde:
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return y

        def g(self, t, y):
            return torch.ones_like(y)

    bad = torch.tensor([0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match=r"odeint: t must be strictly increasing.*t\[1\]=1.0"):
        odeint(lambda t, y: y, torch.ones(2), bad)
    with pytest.raises(ValueError, match=r"sdeint: ts must be strictly increasing.*ts\[1\]=1.0"):
        sdeint(Sde(), torch.ones(1, 2), bad, dt=0.1)
    for solve in (
        lambda: odeint(lambda t, y: y, torch.ones(2), torch.tensor([0.0, math.nan])),
        lambda: sdeint(Sde(), torch.ones(1, 2), [0.0, math.inf], dt=0.1),
    ):
        with pytest.raises(ValueError, match="NaN or infinite times"):
            solve()

    class Blowup(Sde):
        def f(self, t, y):
            return y * 1e300

    with pytest.raises(NonFiniteSolutionError) as e:
        sdeint(Blowup(), torch.ones(1, 2, dtype=torch.float64), [0.0, 1.0], dt=0.1)
    assert isinstance(e.value, ODESolverError) and isinstance(e.value, FloatingPointError)
    assert e.value.t == 0.0
