"""Scalar (0-d) states in every method and the adjoint; ``jump_t`` and ``perturb`` in float32
and float64; ``min_step``/``max_step``."""

import math

import pytest
import torch

from genmodels.integrate import EXTRA_SOLVERS, TABLEAUS, SolverStats, odeint, odeint_adjoint

F64 = torch.float64
FIXED = [name for name, tab in TABLEAUS.items() if not tab.adaptive]
ADAPTIVE = [name for name, tab in TABLEAUS.items() if tab.adaptive]


def decay(t, y):
    return -y


def _options(method):
    adams = method in ("explicit_adams", "implicit_adams", "fixed_adams")
    return dict(step_size=0.01) if method in FIXED or adams else None


@pytest.mark.parametrize("method", [*FIXED, *ADAPTIVE, *sorted(EXTRA_SOLVERS)])
def test_scalar_state_equals_the_one_element_state(method):
    """A 0-d y0 gives the (T,) solution of the (T, 1) one, close to e^-t, in every method."""
    t = torch.linspace(0, 1, 5, dtype=F64)
    kw = dict(method=method, options=_options(method), rtol=1e-8, atol=1e-10)
    y = odeint(decay, torch.tensor(1.0, dtype=F64), t, **kw)
    y1 = odeint(decay, torch.ones(1, dtype=F64), t, **kw)
    assert y.shape == (5,)
    assert torch.allclose(y, y1[:, 0], rtol=1e-12, atol=1e-14)
    # (the Adams and implicit methods' accuracy is tested in test_ode_methods.py; here the
    # scalar state gives the same solution as the one-element state)
    if method in FIXED:  # global error ~ h^order at h = 0.01
        assert abs(y[-1].item() - math.exp(-1)) < max(2 * 0.01 ** TABLEAUS[method].order, 1e-9)
    elif method in ADAPTIVE or method == "scipy_solver":
        assert abs(y[-1].item() - math.exp(-1)) < 1e-6


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_scalar_state_gradients_backprop_and_adjoint(method):
    """d y(1) / d y0 = e^{-k} and d y(1) / dk = -e^{-k} for y' = -k y, y0 = 1, with a 0-d y0."""
    k = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = k

        def forward(self, t, y):
            return -self.k * y

    t = torch.tensor([0.0, 1.0], dtype=F64)
    for solve in (odeint, odeint_adjoint):
        y0 = torch.tensor(1.0, dtype=F64, requires_grad=True)
        y = solve(Field(), y0, t, method=method, options=_options(method), rtol=1e-9, atol=1e-12)
        assert y.shape == (2,)
        gy0, gk = torch.autograd.grad(y[-1], (y0, k))
        assert abs(gy0.item() - math.exp(-1)) < 1e-5
        assert abs(gk.item() + math.exp(-1)) < 1e-5


def test_scalar_states_in_a_tuple():
    t = torch.linspace(0, 1, 3, dtype=F64)
    y0 = (torch.tensor(1.0, dtype=F64), torch.ones(2, dtype=F64))
    a, b = odeint(lambda t, y: (-y[0], y[1]), y0, t)
    assert a.shape == (3,) and b.shape == (3, 2)
    assert abs(a[-1].item() - math.exp(-1)) < 1e-7 and abs(b[-1, 0].item() - math.e) < 1e-6


class _JumpF:
    """x' = -x/2 for t < 1/2, x' = x^2 after: a jump in the field at t = 1/2."""

    def __init__(self):
        self.nfe = 0

    def __call__(self, t, x):
        self.nfe += 1
        return -0.5 * x if t < 0.5 else x**2


def _jump_exact(x0, t):
    xh = x0 * math.exp(-0.25)
    return 1.0 / (1.0 / xh - (t - 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", ["bosh3", "tsit5", "dopri5"])
def test_jump_t_saves_evaluations(dtype, method):
    """Stepping onto the discontinuity (last stage one ulp before it, in the state's dtype)
    takes fewer evaluations than stepping over it, in float32 as in float64."""
    x0 = torch.tensor([1.0, 2.0], dtype=dtype)
    t = torch.tensor([0.0, 1.0])
    plain, jump = _JumpF(), _JumpF()
    odeint(plain, x0, t, rtol=1e-6, atol=1e-6, method=method)
    y = odeint(jump, x0, t, rtol=1e-6, atol=1e-6, method=method, options=dict(jump_t=[0.5]))
    assert jump.nfe < 0.85 * plain.nfe, (jump.nfe, plain.nfe)
    exact = torch.tensor([_jump_exact(1.0, 1.0), _jump_exact(2.0, 1.0)], dtype=dtype)
    assert torch.allclose(y[-1], exact, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", [*FIXED, "explicit_adams", "implicit_adams", "implicit_euler"])
def test_perturb_moves_the_field_off_the_grid_times(dtype, method):
    """perturb=True: the field never sees a grid time itself (the one-ulp shift is taken in
    the state's dtype); perturb=False: it does."""
    grid_times = {0.0, 0.5, 1.0}
    for perturb in (True, False):
        seen = []

        def f(t, x, seen=seen):
            assert t.dtype == dtype
            seen.append(t.item())
            return -x

        odeint(f, torch.ones(2, dtype=dtype), torch.tensor([0.0, 1.0]), method=method,
               options=dict(step_size=0.5, perturb=perturb))  # fmt: skip
        hit = grid_times & set(seen)
        if perturb:
            assert not hit, hit
            assert any(0.5 < s < 0.5 + 1e-6 for s in seen)  # the second step's first stage
            if method in TABLEAUS and TABLEAUS[method].c[-1] == 1.0:  # a last stage at the end
                assert any(0.5 - 1e-6 < s < 0.5 for s in seen)
        else:
            assert {0.0, 0.5} <= hit


def test_perturb_in_the_adjoints_backward_pass():
    seen = []

    def f(t, x):
        seen.append(t.item())
        return -x

    x0 = torch.ones(2, requires_grad=True)
    y = odeint_adjoint(f, x0, torch.tensor([0.0, 1.0]), method="rk4",
                       options=dict(step_size=0.5, perturb=True), adjoint_params=())  # fmt: skip
    seen.clear()
    y.sum().backward()
    assert seen and not ({0.0, 0.5, 1.0} & set(seen))


class _Steps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dts = []

    def forward(self, t, y):
        return torch.sin(10 * t) * y

    def callback_accept_step(self, t0, y0, dt):
        self.dts.append(dt.item())

    def callback_step(self, t0, y0, dt):
        pass

    def callback_reject_step(self, t0, y0, dt):
        pass


def test_max_step_bounds_every_step():
    f = _Steps()
    y = odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 3.0], dtype=F64),
               options=dict(max_step=0.05))  # fmt: skip
    assert max(f.dts) <= 0.05 + 1e-15 and len(f.dts) >= 60
    exact = math.exp((1 - math.cos(30.0)) / 10)
    assert abs(y[-1, 0].item() - exact) < 1e-6


def test_min_step_accepts_large_steps_whatever_their_error():
    f, s = _Steps(), SolverStats()
    odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 3.0], dtype=F64),
           options=dict(min_step=0.5), stats=s)  # fmt: skip
    assert min(f.dts[:-1]) >= 0.5 and s.n_rejected == 0 and len(f.dts) <= 7
    with pytest.raises(ValueError, match="min_step"):
        odeint(decay, torch.ones(1), torch.tensor([0.0, 1.0]), options=dict(min_step=2, max_step=1))
    with pytest.raises(ValueError, match="max_step"):
        odeint(decay, torch.ones(1), torch.tensor([0.0, 1.0]), options=dict(max_step=0))


def test_time_tensors_are_shared_but_never_stale():
    """The field's time tensors are reused between evaluations and solves (a fixed grid asks for
    the same times again): one the field modifies in place is replaced, so the next solve sees
    the right times; one made under inference mode can still be saved for backward later."""
    seen = []

    def vandal(t, y):
        seen.append(float(t))
        t.add_(100.0)  # in place: must not leak into the next evaluation at this time
        return -y

    opts = dict(step_size=0.25)
    for _ in range(2):
        seen.clear()
        odeint(vandal, torch.ones(2), torch.tensor([0.0, 1.0]), method="euler", options=opts)
        assert seen == [0.0, 0.25, 0.5, 0.75]
    w = torch.tensor(2.0, dtype=F64, requires_grad=True)
    field = lambda t, y: -w * t * y  # noqa: E731  y(1) = e^{-w/2}
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with torch.inference_mode():
        odeint(field, torch.ones(1, dtype=F64), t, method="rk4", options=dict(step_size=0.01))
    y = odeint(field, torch.ones(1, dtype=F64), t, method="rk4", options=dict(step_size=0.01))
    (g,) = torch.autograd.grad(y[-1, 0], w)
    assert abs(g.item() + 0.5 * math.exp(-1.0)) < 1e-8
