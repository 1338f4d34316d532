"""Events (``event_fn``, ``odeint_event``) against closed forms and finite differences, forwards
and backwards in time, with backprop and the adjoint; ``odeint_dense``."""

import math

import pytest
import torch

from genmodels.integrate import odeint, odeint_adjoint, odeint_dense, odeint_event

F64 = torch.float64


class Decay(torch.nn.Module):
    """y' = -k y: y(t) = y0 e^{-k (t - t0)}."""

    def __init__(self, k=1.0):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k, dtype=F64))

    def forward(self, t, y):
        return -self.k * y


@pytest.mark.parametrize(
    "method,options",
    [("dopri5", None), ("tsit5", None), ("bosh3", None), ("dopri8", None),
     ("rk4", dict(step_size=0.01, interp="cubic")), ("midpoint", dict(step_size=0.001))],
)  # fmt: skip
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_event_time_and_state_match_the_closed_form(method, options, direction):
    """Forwards: y' = -y from 1 hits y = 1/2 at ln 2; backwards: y grows, hits 2 at -ln 2."""
    level = 0.5 if direction > 0 else 2.0
    t = torch.tensor([0.0, direction], dtype=F64)
    te, ys = odeint(Decay(), torch.ones(1, dtype=F64), t, method=method, options=options,
                    event_fn=lambda t, y: y[0] - level)  # fmt: skip
    # the event is polished on the method's own steps: as accurate as the solution (dopri8's
    # cubic Hermite interpolant alone gave 1.6e-5 here)
    tol = {"dopri8": 1e-9, "rk4": 1e-9}.get(method, 1e-6)
    assert te.dtype == F64 and te.shape == ()
    assert abs(te.item() - direction * math.log(2)) < tol
    assert ys.shape == (2, 1) and ys[0, 0] == 1.0 and abs(ys[1, 0].item() - level) < 1e-12


def test_vector_event_stops_at_the_first_component_to_cross():
    te, ys = odeint(Decay(), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                    event_fn=lambda t, y: torch.stack([y[0] - 0.25, t - 0.5]))  # fmt: skip
    assert abs(te.item() - 0.5) < 1e-8


def test_adjoint_event_matches_backprop_event():
    f = Decay(0.7)
    y0 = torch.tensor([1.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    ev = lambda t, y: y[0] - 0.5  # noqa: E731
    te_a, ys_a = odeint_adjoint(f, y0, t, event_fn=ev, rtol=1e-10, atol=1e-12)
    te_b, ys_b = odeint(f, y0, t, event_fn=ev, rtol=1e-10, atol=1e-12)
    assert abs(te_a.item() - math.log(3) / 0.7) < 1e-8 and abs(te_a.item() - te_b.item()) < 1e-12
    # the event time's gradient (implicit function theorem): t* = ln(y0 / c) / k
    ga = torch.autograd.grad(te_a, (y0, f.k))
    gb = torch.autograd.grad(te_b, (y0, f.k))
    exact = (1 / (0.7 * 1.5), -math.log(3) / 0.7**2)
    for g in (ga, gb):
        assert abs(g[0].item() - exact[0]) < 1e-6 and abs(g[1].item() - exact[1]) < 1e-6


class Oscillator(torch.nn.Module):
    """A damped nonlinear oscillator, x'' = -w^2 sin x - c x'."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.3, dtype=F64))
        self.c = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))

    def forward(self, t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, -(self.w**2) * torch.sin(x) - self.c * v], -1)


def _loss(te, ys):
    return 2.0 * te + ys[-1, 1] ** 2 + ys[-1, 0]


@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
@pytest.mark.parametrize("reverse", [False, True])
def test_odeint_event_gradients_match_finite_differences(interface, reverse):
    """L = 2 t* + v(t*)^2 + x(t*), the first zero of x: gradients w.r.t. y0 and the parameters
    by odeint_event (both interfaces, both directions) equal central differences."""
    solve = odeint if interface == "odeint" else odeint_adjoint
    kw = dict(rtol=1e-11, atol=1e-12, reverse_time=reverse, odeint_interface=solve)
    ev = lambda t, y: y[0]  # noqa: E731
    f = Oscillator()
    y0 = torch.tensor([0.8, 0.1], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.0, dtype=F64)
    te, ys = odeint_event(f, y0, t0, event_fn=ev, **kw)
    assert (te.item() > 0) != reverse and abs(ys[-1, 0].item()) < 1e-8
    grads = torch.autograd.grad(_loss(te, ys), (y0, f.w, f.c))

    def value(y0v, w, c):
        g = Oscillator()
        with torch.no_grad():
            g.w.fill_(w)
            g.c.fill_(c)
            te, ys = odeint_event(g, y0v, t0, event_fn=ev, **kw)
        return _loss(te, ys).item()

    eps = 1e-6
    base = [y0.detach().clone(), 1.3, 0.2]
    fd_y0 = []
    for i in range(2):
        d = torch.zeros(2, dtype=F64)
        d[i] = eps
        fd_y0.append((value(base[0] + d, 1.3, 0.2) - value(base[0] - d, 1.3, 0.2)) / (2 * eps))
    fd_w = (value(base[0], 1.3 + eps, 0.2) - value(base[0], 1.3 - eps, 0.2)) / (2 * eps)
    fd_c = (value(base[0], 1.3, 0.2 + eps) - value(base[0], 1.3, 0.2 - eps)) / (2 * eps)
    assert torch.allclose(grads[0], torch.tensor(fd_y0, dtype=F64), rtol=1e-4, atol=1e-6)
    assert abs(grads[1].item() - fd_w) < 1e-4 * max(1, abs(fd_w))
    assert abs(grads[2].item() - fd_c) < 1e-4 * max(1, abs(fd_c))


def test_odeint_event_with_a_tuple_state():
    f = lambda t, y: (-y[0], -2 * y[1])  # noqa: E731
    y0 = (torch.tensor(1.0, dtype=F64, requires_grad=True), torch.ones(2, dtype=F64))
    te, (a, b) = odeint_event(f, y0, torch.tensor(0.0, dtype=F64),
                              event_fn=lambda t, y: y[0] - 0.5)  # fmt: skip
    assert abs(te.item() - math.log(2)) < 1e-7 and a.shape == (2,) and b.shape == (2, 2)
    (g,) = torch.autograd.grad(te, y0[0])
    assert abs(g.item() - 1.0) < 1e-6  # t* = ln(a0 / 0.5)


ADAMS = [
    ("explicit_adams", dict(max_order=5)),  # higher Adams–Bashforth orders are unstable at h=0.01
    ("implicit_adams", {}),
    ("fixed_adams", dict(max_order=8)),
]


@pytest.mark.parametrize("method,extra", ADAMS)
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_adams_event_matches_the_closed_form(method, extra, interp, direction):
    """The Adams methods locate the event on each step's interpolant (as torchdiffeq's fixed-grid
    solvers): y' = -y from 1 hits 1/2 at ln 2 (backwards: 2 at -ln 2); the linear interpolant's
    error is O(h^2) ~ 1e-5 at h = 0.01, the cubic Hermite's O(h^4)."""
    level = 0.5 if direction > 0 else 2.0
    t = torch.tensor([0.0, direction], dtype=F64)
    options = dict(step_size=0.01, interp=interp, **extra)
    te, ys = odeint(Decay(), torch.ones(1, dtype=F64), t, method=method, options=options,
                    event_fn=lambda t, y: y[0] - level)  # fmt: skip
    tol = 1e-7 if interp == "cubic" else 3e-5
    assert te.dtype == F64 and te.shape == () and ys.shape == (2, 1)
    assert abs(te.item() - direction * math.log(2)) < tol
    assert abs(ys[1, 0].item() - level) < 1e-8  # the interpolant at the located zero


@pytest.mark.parametrize("method,extra", ADAMS[:2])
@pytest.mark.parametrize("interface", ["odeint", "odeint_adjoint"])
def test_adams_odeint_event_gradients_match_the_closed_form(method, extra, interface):
    """y' = -k y from y0 hits c at t* = ln(y0 / c) / k: dt*/dy0 = 1 / (k y0), dt*/dk = -t*/k,
    through the Adams steps and the interpolant (backprop) or the adjoint."""
    solve = odeint if interface == "odeint" else odeint_adjoint
    f = Decay(0.7)
    y0 = torch.tensor([1.5], dtype=F64, requires_grad=True)
    te, ys = odeint_event(f, y0, torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y[0] - 0.5,
                          method=method, options=dict(step_size=0.01, interp="cubic", **extra),
                          odeint_interface=solve)  # fmt: skip
    t_star = math.log(3.0) / 0.7
    assert abs(te.item() - t_star) < 1e-7
    g_y0, g_k = torch.autograd.grad(te, (y0, f.k))
    assert abs(g_y0.item() - 1 / (0.7 * 1.5)) < 1e-6
    assert abs(g_k.item() + t_star / 0.7) < 1e-6


def test_adams_event_needs_a_step_size():
    with pytest.raises(ValueError, match="step_size"):
        odeint(Decay(), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="implicit_adams", event_fn=lambda t, y: y[0] - 0.5)  # fmt: skip


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_dense_solution_matches_the_closed_form_everywhere(method):
    f = Decay(1.0)
    sol = odeint_dense(f, torch.tensor([1.0, 2.0], dtype=F64), 0.0, 3.0, method=method,
                       rtol=1e-9, atol=1e-12)  # fmt: skip
    tq = torch.linspace(0, 3, 31, dtype=F64)
    exact = torch.exp(-tq)[:, None] * torch.tensor([1.0, 2.0], dtype=F64)
    assert torch.allclose(sol(tq).detach(), exact, rtol=1e-6, atol=1e-9)
    assert abs(sol(1.234).detach()[0].item() - math.exp(-1.234)) < 1e-7
    back = odeint_dense(f, torch.ones(1, dtype=F64), 0.0, -1.0)
    assert abs(back(-0.5).detach().item() - math.exp(0.5)) < 1e-6
    with pytest.raises(ValueError, match="outside"):
        sol(3.5)
    with pytest.raises(ValueError, match="adaptive"):
        odeint_dense(f, torch.ones(1, dtype=F64), 0.0, 1.0, method="rk4")
