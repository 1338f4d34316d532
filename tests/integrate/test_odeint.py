"""odeint: convergence orders, agreement with scipy and closed forms, dense output, options."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

from genmodels.integrate import TABLEAUS, SolverStats, odeint


def _rotation(t, y):
    """y' = t J y, y(0) = (1, 0): y = (cos(t^2/2), -sin(t^2/2)) (non-autonomous)."""
    return torch.stack([t * y[1], -t * y[0]])


def _rotation_exact(t):
    return np.array([math.cos(t * t / 2), -math.sin(t * t / 2)])


def _order_slope(method):
    """Slope of log error vs log step over the 6 finest steps with error in (1e-12, 1e-3),
    stopping once 6 steps are in the asymptotic range (error < 1e-9)."""
    T = 1.0 if method.order <= 2 else 3.0
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, T], dtype=torch.float64)
    hs, errs = [], []
    for n in (round(2 * 1.3**k) for k in range(40)):
        if n > 5000 or sum(e < 1e-9 for e in errs) >= 6:
            break
        y = odeint(_rotation, y0, t, method=method, options=dict(step_size=T / n))
        err = np.abs(y[-1].numpy() - _rotation_exact(T)).max()
        if err < 1e-12:
            break
        if err < 1e-3:
            hs.append(T / n)
            errs.append(err)
    assert len(hs) >= 4, f"too few step sizes in the error window for {method.name}: {errs}"
    return np.polyfit(np.log(hs[-6:]), np.log(errs[-6:]), 1)[0]


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_convergence_order(name):
    tab = TABLEAUS[name]
    slope = _order_slope(tab)
    assert abs(slope - tab.order) < 0.3, (name, slope)


@pytest.mark.parametrize("name", [n for n, t in TABLEAUS.items() if t.adaptive])
def test_embedded_error_estimate_order(name):
    tab = TABLEAUS[name].embedded()
    slope = _order_slope(tab)
    assert abs(slope - tab.order) < 0.3, (name, slope)


@pytest.mark.parametrize("name", ["dopri5", "bosh3", "tsit5"])
def test_dense_output_order(name):
    """One step of size h, output at its middle: local error O(h^(q+1)), q = 4 (dopri5's
    quartic) or 3 (cubic Hermite)."""
    q = 4 if TABLEAUS[name].c_mid is not None else 3
    y0 = torch.tensor([math.cos(0.125), -math.sin(0.125)], dtype=torch.float64)
    hs, errs = [], []
    for h in [0.4, 0.3, 0.2, 0.15, 0.1, 0.075]:
        t = torch.tensor([0.5, 0.5 + h / 2, 0.5 + h], dtype=torch.float64)
        stats = SolverStats()
        # huge tolerances: the first step (of size h) is accepted and interpolated at h/2
        y = odeint(_rotation, y0, t, method=name, rtol=1e6, atol=1e6,
                   options=dict(first_step=h), stats=stats)  # fmt: skip
        assert stats.n_steps == 1
        hs.append(h)
        errs.append(np.abs(y[1].numpy() - _rotation_exact(0.5 + h / 2)).max())
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert slope > q + 1 - 0.3, (name, slope)


def _vdp(t, y, mu=1.0):
    return [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]]


def _lv(t, y):
    return [1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]]


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3"])
@pytest.mark.parametrize("problem", ["vdp", "lotka_volterra"])
def test_against_scipy(method, problem):
    rhs, y0, T = {"vdp": (_vdp, [2.0, 0.0], 8.0), "lotka_volterra": (_lv, [1.0, 1.0], 6.0)}[problem]
    t_eval = np.linspace(0, T, 9)
    ref = scipy.integrate.solve_ivp(
        rhs, (0, T), y0, method="DOP853", t_eval=t_eval, rtol=1e-12, atol=1e-12
    ).y.T

    def f(t, y):
        return torch.stack(rhs(t, y))

    tol = 1e-8 if method != "bosh3" else 1e-6
    stats = SolverStats()
    y = odeint(
        f,
        torch.tensor(y0, dtype=torch.float64),
        torch.tensor(t_eval),
        rtol=tol,
        atol=tol,
        method=method,
        stats=stats,
    )
    assert np.abs(y.numpy() - ref).max() < 2000 * tol * (1 + np.abs(ref).max())
    assert stats.n_accepted > 5 and stats.nfe > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "dopri8", "bosh3", "rk4"])
def test_linear_system_matrix_exponential(dtype, method):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.5
    y0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 2, 11, dtype=torch.float64)
    exact = np.stack([y0.numpy() @ scipy.linalg.expm(ti * A.numpy()).T for ti in t.numpy()])
    Ad = A.to(dtype)
    opts = dict(step_size=0.01) if method == "rk4" else None
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    y = odeint(lambda t, y: y @ Ad.T, y0.to(dtype), t.to(dtype), rtol=tol, atol=tol,
               method=method, options=opts)  # fmt: skip
    assert y.dtype == dtype and y.shape == (11, 3, 4)
    bound = {torch.float64: 1e-6, torch.float32: 1e-3}[dtype]
    assert np.abs(y.double().numpy() - exact).max() < bound


def test_dense_output_is_free_and_accurate():
    """A fine output grid costs no extra evaluations and matches the exact solution."""
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    coarse, fine = SolverStats(), SolverStats()
    t2 = torch.tensor([0.0, 10.0], dtype=torch.float64)
    tf = torch.linspace(0, 10, 1001, dtype=torch.float64)
    odeint(lambda t, y: A @ y, y0, t2, rtol=1e-8, atol=1e-8, stats=coarse)
    y = odeint(lambda t, y: A @ y, y0, tf, rtol=1e-8, atol=1e-8, stats=fine)
    assert fine.nfe == coarse.nfe
    exact = torch.stack([torch.cos(tf), -torch.sin(tf)], 1)
    assert (y - exact).abs().max() < 1e-6


def test_tuple_state_and_decreasing_time():
    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([[0.0, 2.0]], dtype=torch.float64))

    def f(t, y):
        a, b = y
        return (-a, b * torch.cos(t))

    t = torch.tensor([1.0, 0.5, -0.5], dtype=torch.float64)
    ya, yb = odeint(f, y0, t, rtol=1e-10, atol=1e-10)
    assert ya.shape == (3, 1) and yb.shape == (3, 1, 2)
    assert torch.allclose(ya[:, 0], torch.exp(-(t - 1)), rtol=1e-8)
    assert torch.allclose(yb[:, 0, 1], 2 * torch.exp(torch.sin(t) - math.sin(1.0)), rtol=1e-8)


def test_reverse_solve_inverts_forward():
    f = lambda t, y: torch.sin(y) + t
    y0 = torch.tensor([0.3, -1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.5], dtype=torch.float64)
    y1 = odeint(f, y0, t, rtol=1e-11, atol=1e-11)[-1]
    back = odeint(f, y1, t.flip(0), rtol=1e-11, atol=1e-11)[-1]
    assert torch.allclose(back, y0, atol=1e-8)


def test_backprop_through_solver_matches_closed_form_gradient():
    """d y(T) / d y0 for y' = a y is exp(a T); d/da is T y0 exp(a T)."""
    a = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    y = odeint(lambda t, y: a * y, y0, torch.tensor([0.0, 1.3], dtype=torch.float64),
               rtol=1e-10, atol=1e-10)  # fmt: skip
    gy0, ga = torch.autograd.grad(y[-1].sum(), (y0, a))
    assert torch.allclose(gy0, torch.exp(-0.7 * torch.tensor(1.3, dtype=torch.float64)), rtol=1e-7)
    assert torch.allclose(ga, 1.3 * 2.0 * torch.exp(torch.tensor(-0.91, dtype=torch.float64)),
                          rtol=1e-7)  # fmt: skip


def test_fixed_step_grid_options():
    f = lambda t, y: -y
    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    s1, s2 = SolverStats(), SolverStats()
    ya = odeint(f, y0, t, method="rk4", options=dict(step_size=0.1), stats=s1)
    yb = odeint(f, y0, t, method="rk4",
                options=dict(grid_constructor=lambda f, y0, t: torch.linspace(0, 1, 11)),
                stats=s2)  # fmt: skip
    assert torch.allclose(ya, yb) and s1.nfe == s2.nfe == 40
    # outputs between grid points: linear interpolation, or cubic Hermite with interp="cubic"
    yc = odeint(f, y0, t, method="rk4", options=dict(step_size=0.1, interp="cubic"))
    exact = torch.exp(-t)
    assert (yc[1] - exact[1]).abs() < (ya[1] - exact[1]).abs() < 1e-3


def test_step_t_and_jump_t():
    """A discontinuous field: landing on the jump recovers the accuracy."""
    f = lambda t, y: torch.where(t < 0.5, torch.ones_like(y), -torch.ones_like(y))
    y0 = torch.zeros(1, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with_jump, without = SolverStats(), SolverStats()
    yj = odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=dict(jump_t=[0.5]), stats=with_jump)
    ys = odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=dict(step_t=[0.5]))
    odeint(f, y0, t, rtol=1e-9, atol=1e-9, stats=without)
    assert abs(yj[-1].item()) < 1e-12 and abs(ys[-1].item()) < 1e-6
    assert with_jump.nfe < without.nfe


def test_perturb_evaluates_inside_the_interval():
    seen = []

    def f(t, y):
        seen.append(t.item())
        return torch.zeros_like(y)

    odeint(f, torch.zeros(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
           method="euler", options=dict(step_size=0.5, perturb=True))  # fmt: skip
    assert all(0.0 < s < 1.0 for s in seen) and len(seen) == 2


def test_time_is_float64_for_float32_state():
    """Steps of 1e-9 at t = 1 are resolved although float32 cannot represent 1 + 1e-9."""
    y = odeint(lambda t, y: torch.ones_like(y), torch.zeros(1), torch.tensor([1.0, 1.0 + 1e-6],
               dtype=torch.float64), method="euler", options=dict(step_size=1e-9))  # fmt: skip
    assert y.dtype == torch.float32 and abs(y[-1].item() - 1e-6) < 1e-9


def test_custom_norm_receives_structure():
    calls = []

    def norm(x):
        calls.append(type(x))
        return torch.stack([xi.abs().max() for xi in x]).max()

    y0 = (torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    odeint(lambda t, y: (-y[0], -y[1]), y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
           options=dict(norm=norm))  # fmt: skip
    assert calls and all(c is tuple for c in calls)
