"""The methods beyond the explicit tableaus: Adams, and the implicit family for stiff problems.

Convergence orders on a non-autonomous problem with a closed form, stiff problems against their
closed form and scipy's Radau, the user Jacobian against autograd's, gradients by backprop
(implicit function theorem) and by the adjoint against dopri5 and finite differences, the
torchdiffeq peer for the methods both have, and the bad-input errors.
"""

import math

import numpy as np
import pytest
import scipy.integrate
import torch
import torchdiffeq
from torch import nn

from genmodels.integrate import SolverStats, odeint, odeint_adjoint
from genmodels.integrate.implicit import IMPLICIT_TABLEAUS, NewtonConvergenceError
from genmodels.integrate.multistep import adams_bashforth_coefficients, adams_moulton_coefficients

F64 = torch.float64


def _rotation(t, y):
    """y' = t J y, y(0) = (1, 0): y = (cos(t^2/2), -sin(t^2/2))."""
    return torch.stack([t * y[1], -t * y[0]])


def _slope(method, ns, T=1.0, **opts):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, T], dtype=F64)
    exact = np.array([math.cos(T * T / 2), -math.sin(T * T / 2)])
    errs = []
    with torch.no_grad():
        for n in ns:
            y = odeint(_rotation, y0, t, method=method, rtol=1e-13, atol=1e-13,
                       options=dict(step_size=T / n, **opts))  # fmt: skip
            errs.append(np.abs(y[-1].numpy() - exact).max())
    assert all(1e-12 < e < 1e-1 for e in errs), errs
    return np.polyfit(np.log([T / n for n in ns]), np.log(errs), 1)[0]


_NS = {1: [32, 64, 128, 256], 2: [16, 32, 64, 128], 3: [8, 16, 32, 64], 4: [4, 8, 16, 32]}


@pytest.mark.parametrize("name", sorted(IMPLICIT_TABLEAUS))
def test_implicit_convergence_order(name):
    order = IMPLICIT_TABLEAUS[name].order
    slope = _slope(name, _NS.get(order, [2, 4, 8, 16]))
    assert abs(slope - order) < 0.3, (name, slope)


@pytest.mark.parametrize(
    "method, opts, order",
    [
        ("explicit_adams", dict(max_order=5), 4),  # 4-step Adams–Bashforth after rk4 start-up
        ("explicit_adams", dict(max_order=3), 4),  # below 4: every step is rk4 (warns)
        ("implicit_adams", dict(max_order=4, max_iters=50), 4),  # AB3 + Adams–Moulton 4
        ("fixed_adams", dict(max_order=4, max_iters=50), 4),
    ],
)
def test_adams_convergence_order(method, opts, order):
    with pytest.warns(UserWarning, match="rk4") if opts["max_order"] < 4 else _nothing():
        slope = _slope(method, [16, 32, 64, 128], **opts)
    assert abs(slope - order) < 0.3, (method, slope)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_adams_coefficients_are_the_textbook_ones():
    """Hairer, Nørsett & Wanner I, Tables III.1.1 and III.1.2."""
    np.testing.assert_allclose(adams_bashforth_coefficients(4), np.array([55, -59, 37, -9]) / 24)
    np.testing.assert_allclose(adams_moulton_coefficients(4), np.array([9, 19, -5, 1]) / 24)
    for k in range(1, 13):  # consistency: the weights integrate a constant exactly
        assert abs(sum(adams_bashforth_coefficients(k)) - 1) < 1e-12
        assert abs(sum(adams_moulton_coefficients(k)) - 1) < 1e-12


@pytest.mark.parametrize("method", ["implicit_adams", "explicit_adams"])
def test_adams_matches_torchdiffeq(method):
    """Same start-up, same orders, same corrector: torchdiffeq's numbers to round-off."""
    A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)

    def f(t, y):
        return y @ A.T + torch.sin(t)

    y0 = torch.tensor([[1.0, 0.5]], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    opts = dict(step_size=0.05, max_order=5)
    ours = odeint(f, y0, t, method=method, options=opts)
    theirs = torchdiffeq.odeint(f, y0, t, method=method, options=opts)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2"])
def test_adaptive_low_order_pairs_take_torchdiffeqs_steps(method):
    A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
    counts = {}

    def field(name):
        def f(t, y):
            counts[name] = counts.get(name, 0) + 1
            return y @ A.T + torch.sin(t)

        return f

    y0 = torch.tensor([[1.0, 0.5]], dtype=F64)
    t = torch.linspace(0, 5, 11, dtype=F64)
    with torch.no_grad():
        ref = odeint(field("ref"), y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
        ours = odeint(field("ours"), y0, t, rtol=1e-5, atol=1e-7, method=method)
        theirs = torchdiffeq.odeint(field("tdq"), y0, t, rtol=1e-5, atol=1e-7, method=method)
    assert counts["ours"] == counts["tdq"]
    e_ours, e_tdq = (ours - ref).abs().max().item(), (theirs - ref).abs().max().item()
    assert e_ours < 1.5 * e_tdq and e_ours < 1e-2


LAM = 1e8


def _stiff_exact(t: float) -> float:
    """y' = -LAM (y - cos t), y(0) = 0."""
    d = LAM**2 + 1
    return LAM * (LAM * math.cos(t) + math.sin(t)) / d - LAM**2 / d * math.exp(-LAM * t)


@pytest.mark.parametrize("method", ["radauIIA5", "radauIIA3", "sdirk2", "trbdf2", "implicit_euler"])
def test_very_stiff_linear_problem_is_solved_not_crawled(method):
    t = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=F64)
    stats = SolverStats()
    with torch.no_grad():
        y = odeint(lambda t, y: -LAM * (y - torch.cos(t)), torch.zeros(1, dtype=F64), t,
                   rtol=1e-6, atol=1e-9, method=method, stats=stats)  # fmt: skip
    exact = np.array([_stiff_exact(ti) for ti in t.tolist()])
    rel = np.abs(y[1:, 0].numpy() - exact[1:]) / np.abs(exact[1:])
    assert rel.max() < 1e-5, rel
    # an explicit method needs ~1e8 evaluations here; these take 1e3-1e4 (order 1: the most)
    assert stats.nfe < 20000 and stats.n_accepted < 2000


def _robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2]
    )


def _robertson_np(t, y):
    return [
        -0.04 * y[0] + 1e4 * y[1] * y[2],
        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
        3e7 * y[1] ** 2,
    ]


def _robertson_jacobian(t, y):
    y1, y2, y3 = y.tolist()
    return torch.tensor(
        [
            [-0.04, 1e4 * y3, 1e4 * y2],
            [0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2],
            [0.0, 6e7 * y2, 0.0],
        ],
        dtype=y.dtype,
    )


_ROB_T = np.array([0.0, 0.4, 4.0, 40.0, 400.0, 4e3, 4e4, 1e5])


@pytest.fixture(scope="module")
def robertson_reference():
    return scipy.integrate.solve_ivp(
        _robertson_np, (0, 1e5), [1, 0, 0], method="Radau", t_eval=_ROB_T, rtol=1e-11, atol=1e-16
    ).y.T


def test_robertson_to_1e5_against_scipy_radau(robertson_reference):
    stats = SolverStats()
    with torch.no_grad():
        y = odeint(_robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor(_ROB_T),
                   rtol=1e-8, atol=1e-14, method="radauIIA5", stats=stats)  # fmt: skip
    ref = robertson_reference
    rel = np.abs(y.numpy() - ref)[1:] / np.abs(ref)[1:]
    assert rel.max() < 1e-7, rel.max(0)
    assert stats.n_accepted < 500
    torch.testing.assert_close(y.sum(1), torch.ones(len(_ROB_T), dtype=F64), atol=1e-12, rtol=0)


def test_user_jacobian_gives_the_autograd_solution(robertson_reference):
    calls = []

    def jac(t, y):
        calls.append(t.item())
        return _robertson_jacobian(t, y)

    y0, t = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor(_ROB_T[:5])
    s_auto, s_user = SolverStats(), SolverStats()
    with torch.no_grad():
        ya = odeint(_robertson, y0, t, rtol=1e-8, atol=1e-14, method="radauIIA5", stats=s_auto)
        yu = odeint(_robertson, y0, t, rtol=1e-8, atol=1e-14, method="radauIIA5", stats=s_user,
                    options=dict(jacobian=jac))  # fmt: skip
    assert len(calls) == s_user.extra["n_jac"] > 0
    torch.testing.assert_close(yu, ya, rtol=1e-12, atol=1e-18)
    # the same steps, less the evaluations autograd's Jacobian costs
    assert s_user.n_steps == s_auto.n_steps and s_user.nfe < s_auto.nfe


class _Decay(nn.Module):
    """A small nonlinear, mildly stiff field with parameters."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor([2.0, 0.7], dtype=F64))

    def forward(self, t, y):
        return torch.stack([-self.k[0] * (y[0] - torch.cos(t)), -self.k[1] * y[1] * y[0]])


def _grads(solver, **kw):
    f = _Decay()
    y0 = torch.tensor([0.3, 1.0], dtype=F64, requires_grad=True)
    y = solver(f, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), **kw)
    g = torch.autograd.grad((y**2).sum(), (y0, f.k))
    return torch.cat(g)


@pytest.fixture(scope="module")
def reference_gradient():
    return _grads(odeint, method="dopri5", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["radauIIA5", "gl6", "radauIIA3"])
@pytest.mark.parametrize("solver", [odeint, odeint_adjoint])
def test_gradients_through_implicit_solves(method, solver, reference_gradient):
    """Backprop (implicit function theorem at the converged stages) and the adjoint (the same
    method backwards) agree with dopri5's gradient to the solve's accuracy."""
    g = _grads(solver, method=method, rtol=1e-9, atol=1e-11)
    rel = ((g - reference_gradient).abs().max() / reference_gradient.abs().max()).item()
    assert rel < 2e-6, rel


def _decay_jacobian(f):
    def jac(t, y):
        k = f.k.detach()
        return torch.tensor([[-k[0], 0.0], [-k[1] * y[1], -k[1] * y[0]]], dtype=y.dtype)

    return jac


@pytest.mark.parametrize("solver", [odeint, odeint_adjoint])
def test_user_jacobian_in_backprop_and_adjoint(solver, reference_gradient):
    f = _Decay()
    y0 = torch.tensor([0.3, 1.0], dtype=F64, requires_grad=True)
    stats = SolverStats()
    y = solver(f, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), method="radauIIA5", rtol=1e-9,
               atol=1e-11, options=dict(jacobian=_decay_jacobian(f)), stats=stats)  # fmt: skip
    g = torch.cat(torch.autograd.grad((y**2).sum(), (y0, f.k)))
    rel = ((g - reference_gradient).abs().max() / reference_gradient.abs().max()).item()
    assert rel < 2e-6, rel


@pytest.mark.parametrize("method", ["radauIIA3", "gl4", "trbdf2"])
def test_fixed_grid_backprop_is_the_exact_discrete_gradient(method):
    """d y_N / d y0 of the discrete fixed-step map, against central finite differences."""
    f = _Decay()
    opts = dict(step_size=0.1)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.tensor([0.3, 1.0], dtype=F64, requires_grad=True)
    kw = dict(method=method, rtol=1e-13, atol=1e-13, options=opts)
    g = torch.autograd.grad(odeint(f, y0, t, **kw)[-1].sum(), y0)[0]
    eps, fd = 1e-6, []
    with torch.no_grad():
        for i in range(2):
            e = torch.zeros(2, dtype=F64)
            e[i] = eps
            up = odeint(f, y0.detach() + e, t, **kw)[-1].sum()
            dn = odeint(f, y0.detach() - e, t, **kw)[-1].sum()
            fd.append((up - dn).item() / (2 * eps))
    torch.testing.assert_close(g, torch.tensor(fd, dtype=F64), rtol=1e-7, atol=1e-9)


def test_tuple_state_and_decreasing_time_with_an_implicit_method():
    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([[0.0, 2.0]], dtype=F64))
    t = torch.tensor([1.0, 0.5, -0.5], dtype=F64)
    with torch.no_grad():
        ya, yb = odeint(lambda t, y: (-y[0], y[1] * torch.cos(t)), y0, t, rtol=1e-9, atol=1e-12,
                        method="radauIIA5")  # fmt: skip
    assert torch.allclose(ya[:, 0], torch.exp(-(t - 1)), rtol=1e-7)
    assert torch.allclose(yb[:, 0, 1], 2 * torch.exp(torch.sin(t) - math.sin(1.0)), rtol=1e-7)


def test_bad_options_name_the_option():
    f, y0, t = (lambda t, y: -y), torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="max_order"):
        odeint(f, y0, t, method="radauIIA5", options=dict(max_order=3))
    with pytest.raises(ValueError, match="max_order"):
        odeint(f, y0, t, method="implicit_adams", options=dict(max_order=13, step_size=0.1))
    with pytest.raises(ValueError, match="newton_tol"):
        odeint(f, y0, t, method="sdirk2", options=dict(newton_tol=2.0))
    with pytest.raises(TypeError, match="jacobian"):
        odeint(f, y0, t, method="sdirk2", options=dict(jacobian="autograd"))
    with pytest.raises(ValueError, match="jacobian"):
        odeint(f, y0, t, method="sdirk2", options=dict(jacobian=lambda t, y: torch.eye(3)))
    with pytest.raises(ValueError, match="implicit"):
        odeint(f, y0, t, method="explicit_adams", options=dict(implicit=True))
    with pytest.raises(ValueError, match="jacobian.*dopri5"):
        odeint(f, y0, t, method="dopri5", options=dict(jacobian=lambda t, y: -torch.eye(2)))
    with pytest.raises(ValueError, match="unknown method 'radau5'.*radauIIA5"):
        odeint(f, y0, t, method="radau5")


def test_fixed_grid_newton_failure_raises():
    with pytest.raises(NewtonConvergenceError, match="did not converge"), torch.no_grad():
        odeint(lambda t, y: -(y**3) * 50, torch.full((2,), 3.0, dtype=F64),
               torch.tensor([0.0, 1.0], dtype=F64), method="implicit_euler",
               options=dict(step_size=0.5, max_iters=2))  # fmt: skip


@pytest.mark.parametrize("method", ["trbdf2", "radauIIA5", "implicit_adams"])
def test_perturb_keeps_fixed_grid_evaluations_off_the_grid_points(method):
    seen = []

    def f(t, y):
        seen.append(t.item())
        return -y

    y = odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
               options=dict(step_size=0.5, perturb=True))  # fmt: skip
    assert seen and not {0.0, 0.5, 1.0} & set(seen)
    assert abs(y[-1, 0].item() - math.exp(-1)) < 0.05
