"""sdeint as a torchsde drop-in: the methods added for it (srk on diagonal/scalar noise,
euler_heun, log_ode), adaptive steps, logqp, resumable solves, fused SDE methods and the
positional signature. Strong orders on a shared Brownian path against exact solutions, weak
orders against the closed-form mean of each scheme's chain, adaptive error against a fine
reference, logqp against the closed-form KL between two Ornstein–Uhlenbeck processes."""

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

from genmodels.integrate.brownian import BrownianMotion
from genmodels.integrate.sdeint import METHODS, sdeint

F64 = torch.float64


def _slope(dts, errs):
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


class GBM:
    """dy = μ y dt + σ y dW (Itô), per coordinate: y(T) = y0 exp((μ - σ²/2) T + σ W(T))."""

    sde_type = "ito"

    def __init__(self, noise_type, mu, sigma):
        self.noise_type, self.mu, self.sigma = noise_type, mu, sigma

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        g = self.sigma * y
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)

    def exact(self, y0, T, w):
        return y0 * torch.exp((self.mu - self.sigma**2 / 2) * T + self.sigma * w)


class StratLinear(GBM):
    """dy = a y dt + b y ∘ dW (Stratonovich): y(T) = y0 exp(a T + b W(T))."""

    sde_type = "stratonovich"

    def exact(self, y0, T, w):
        return y0 * torch.exp(self.mu * T + self.sigma * w)


MU = torch.tensor([1.0, 0.5], dtype=F64)
SIG = torch.tensor([1.0, 0.6], dtype=F64)


def _errors(sde, method, noise_type, bm, n, T=1.0, ks=range(3, 9)):
    y0 = torch.ones(n, 2, dtype=F64)
    exact = sde.exact(y0, T, bm(0.0, T))
    dts = [T / 2**k for k in ks]
    errs = [
        (sdeint(sde, y0, [0.0, T], bm, method=method, dt=dt)[-1] - exact).abs().mean().item()
        for dt in dts
    ]
    return dts, errs


# --- strong orders -----------------------------------------------------------------------------


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar"])
def test_srk_strong_order_one_and_a_half_on_diagonal_and_scalar_noise(noise_type):
    # Rößler's SRI2 on geometric Brownian motion, exact solution on the same path (two
    # coordinates with different μ, σ; scalar noise: both driven by one W)
    m = 2 if noise_type == "diagonal" else 1
    bm = BrownianMotion(0.0, 1.0, size=(2000, m), seed=0, dtype=F64, levy_area=True)
    dts, errs = _errors(GBM(noise_type, MU, SIG), "srk", noise_type, bm, 2000)
    assert abs(_slope(dts, errs) - 1.5) < 0.15, errs


@pytest.mark.parametrize("method", ["euler_heun", "log_ode"])
@pytest.mark.parametrize("noise_type", ["diagonal", "scalar"])
def test_stratonovich_methods_strong_order_one(method, noise_type):
    torchsde = pytest.importorskip("torchsde")  # log_ode needs Davie/Foster Lévy areas
    m = 2 if noise_type == "diagonal" else 1
    if method == "log_ode":
        bm = torchsde.BrownianInterval(
            0.0, 1.0, size=(2000, m), dtype=F64, levy_area_approximation="foster", entropy=5
        )
    else:
        bm = BrownianMotion(0.0, 1.0, size=(2000, m), seed=1, dtype=F64)
    sde = StratLinear(noise_type, torch.tensor([0.5, -0.2], dtype=F64), SIG)
    dts, errs = _errors(sde, method, noise_type, bm, 2000)
    assert abs(_slope(dts, errs) - 1.0) < 0.15, errs
    assert errs[-1] < 0.02  # the Stratonovich solution, not the Itô one


B = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[0.5, 0.0], [0.0, -0.5]]], dtype=F64)


class NonCommuting:
    """dy = -0.1 y dt + B₁ y ∘ dW₁ + B₂ y ∘ dW₂ with B₁B₂ ≠ B₂B₁: general noise whose Lévy
    area matters (the strong order of any scheme that ignores it is 0.5)."""

    noise_type, sde_type = "general", "stratonovich"

    def f(self, t, y):
        return -0.1 * y

    def g(self, t, y):
        return torch.einsum("kij,...j->...ik", B, y)


def test_log_ode_uses_the_levy_area_on_general_noise():
    torchsde = pytest.importorskip("torchsde")
    n = 300
    bm = torchsde.BrownianInterval(
        0.0, 1.0, size=(n, 2), dtype=F64, levy_area_approximation="foster", entropy=1
    )
    y0 = torch.ones(n, 2, dtype=F64)
    ref = sdeint(NonCommuting(), y0, [0.0, 1.0], bm, method="log_ode", dt=2**-9)[-1]
    dts = [2.0**-k for k in range(2, 6)]
    err = {
        m: [
            (sdeint(NonCommuting(), y0, [0.0, 1.0], bm, method=m, dt=h)[-1] - ref).abs().mean()
            for h in dts
        ]  # fmt: skip
        for m in ("log_ode", "heun")
    }
    assert abs(_slope(dts, err["heun"]) - 0.5) < 0.15  # no area: order 0.5
    assert _slope(dts, err["log_ode"]) > 0.65
    assert err["log_ode"][-1] < 0.6 * err["heun"][-1]


# --- weak orders: each scheme's chain in closed form on linear SDEs ---------------------------


@pytest.mark.parametrize(
    "method, factor",
    [
        # y₁ = y (1 + a h + b ΔW + ½ b² ΔW²)  →  E[y₁ | y] = y (1 + a h + b² h / 2)
        ("euler_heun", lambda a, b, h: 1 + a * h + 0.5 * b * b * h),
        # y₁ = y [1 + (a h + b ΔW)(1 + a h/2 + b ΔW/2)]  →  1 + (a + b²/2) h + a² h² / 2
        ("log_ode", lambda a, b, h: 1 + (a + 0.5 * b * b) * h + 0.5 * a * a * h * h),
    ],
)
def test_stratonovich_weak_order_one(method, factor):
    a, b, y0, T = 0.5, 0.8, 1.0, 1.0
    exact = y0 * math.exp((a + 0.5 * b * b) * T)  # E y(T) of the Stratonovich SDE
    hs = [2.0**-k for k in range(2, 8)]
    errs = [abs(y0 * factor(a, b, h) ** round(T / h) - exact) for h in hs]
    assert abs(_slope(hs, errs) - 1.0) < 0.1
    # and sdeint's scheme is that chain: the sample mean matches it within 5 standard errors
    n, h = 200_000, 0.25
    sde = StratLinear("diagonal", a, b)
    y = sdeint(
        sde, torch.full((n, 1), y0, dtype=F64), [0.0, T], method=method, dt=h,
        generator=torch.Generator().manual_seed(3),
    )[-1]  # fmt: skip
    want = y0 * factor(a, b, h) ** round(T / h)
    assert abs(y.mean().item() - want) < 5 * y.std().item() / math.sqrt(n)
    assert abs(want - exact) > 10 * y.std().item() / math.sqrt(n)  # the test sees the O(h) bias


def test_srk_weak_moments_of_gbm():
    # E y(T) = y0 e^{μT}, E y(T)² = y0² e^{(2μ + σ²) T}; SRI2 at h = 1/16 on the drawn noise
    mu, sig, n = 1.0, 0.5, 200_000
    y = sdeint(
        GBM("diagonal", mu, sig), torch.ones(n, 1, dtype=F64), [0.0, 1.0], method="srk",
        dt=1 / 16, generator=torch.Generator().manual_seed(4),
    )[-1]  # fmt: skip
    se1 = y.std().item() / math.sqrt(n)
    se2 = (y * y).std().item() / math.sqrt(n)
    assert abs(y.mean().item() - math.exp(mu)) < 5 * se1
    assert abs((y * y).mean().item() - math.exp(2 * mu + sig**2)) < 5 * se2


# --- adaptive steps ----------------------------------------------------------------------------


class Counted(GBM):
    def __init__(self, *args):
        super().__init__(*args)
        self.nfe = 0

    def f(self, t, y):
        self.nfe += 1
        return super().f(t, y)


@pytest.mark.parametrize("method", ["milstein", "srk"])
def test_adaptive_steps_meet_the_tolerance(method):
    # GBM on a fixed path: the adaptive solution's error against the exact one is of the
    # order of the tolerance and shrinks with it, while the work grows
    n, T = 200, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=0, dtype=F64, levy_area=True)
    y0 = torch.ones(n, 1, dtype=F64)
    sde_args = ("diagonal", 1.0, 0.8)
    exact = GBM(*sde_args).exact(y0, T, bm(0.0, T))
    errs, nfes = [], []
    for tol in (1e-2, 1e-3, 1e-4):
        sde = Counted(*sde_args)
        ys = sdeint(sde, y0, [0.0, 0.3, T], bm, method=method, dt=0.1, adaptive=True,
                    rtol=tol, atol=tol)  # fmt: skip
        rel = ((ys[-1] - exact) / (tol + tol * exact.abs())).square().mean().sqrt().item()
        assert rel < 20, (tol, rel)  # global error within 20 tolerances (rms, scaled)
        errs.append((ys[-1] - exact).abs().mean().item())
        nfes.append(sde.nfe)
    assert errs[0] > 3 * errs[1] > 9 * errs[2], errs
    assert nfes[0] < nfes[1] < nfes[2]


def test_adaptive_matches_a_fine_fixed_step_reference_and_runs_backwards():
    # nonlinear additive-noise SDE; bm=None: a ForwardBrownian drawn from the generator
    class Nonlinear:
        noise_type, sde_type = "additive", "ito"

        def f(self, t, y):
            return 3 * torch.sin(2 * y)

        def g(self, t, y):
            return (1 + t).expand(*y.shape, 1)

    n = 100
    bm = BrownianMotion(0.0, 1.0, size=(n, 1), seed=3, dtype=F64, levy_area=True)
    y0 = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ref = sdeint(Nonlinear(), y0, ts, bm, method="srk", dt=2**-12)
    ys = sdeint(Nonlinear(), y0, ts, bm, method="srk", dt=0.1, adaptive=True, rtol=1e-4,
                atol=1e-4)  # fmt: skip
    assert (ys - ref).abs().max() < 0.05 and (ys - ref).abs().mean() < 2e-3
    back = sdeint(Nonlinear(), ys[-1], ts.flip(0), bm, method="srk", dt=0.1, adaptive=True,
                  rtol=1e-4, atol=1e-4)  # fmt: skip
    assert back.shape == ys.shape
    g = torch.Generator().manual_seed(1)
    a = sdeint(Nonlinear(), y0, ts, dt=0.1, adaptive=True, generator=g.manual_seed(1))
    b = sdeint(Nonlinear(), y0, ts, dt=0.1, adaptive=True, generator=g.manual_seed(1))
    assert torch.equal(a, b)  # the internal path is drawn from the generator


def test_adaptive_warnings_and_dt_min():
    sde = GBM("diagonal", 1.0, 0.8)
    y0 = torch.ones(10, 1, dtype=F64)
    with pytest.warns(UserWarning, match="Euler"):
        sdeint(sde, y0, [0.0, 0.1], method="euler", adaptive=True, dt=0.05,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    with pytest.warns(UserWarning, match="dt_min"):
        sdeint(sde, y0, [0.0, 0.1], method="milstein", adaptive=True, dt=0.05, rtol=1e-12,
               atol=1e-12, dt_min=0.01, generator=torch.Generator().manual_seed(0))  # fmt: skip


class Logged(StratLinear):
    """Records (t, a copy of y) of every drift and diffusion call."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = {"f": [], "g": []}

    def f(self, t, y):
        self.calls["f"].append((float(t), y.detach().clone()))
        return super().f(t, y)

    def g(self, t, y):
        self.calls["g"].append((float(t), y.detach().clone()))
        return super().g(t, y)


def _repeats(calls) -> int:
    """How many calls repeat an earlier call's (t, y)."""
    return sum(
        any(t == t2 and torch.equal(y, y2) for t2, y2 in calls[:k])
        for k, (t, y) in enumerate(calls)
    )


def test_adaptive_heun_evaluates_each_point_once():
    # step doubling: the whole step, the first half step and a retry after a rejection all
    # start at (t, y); f and g are evaluated there once. With grad mode off the shape check's
    # evaluation at (t0, y0) is the first attempt's too; with it on, that one is repeated (the
    # check runs without a graph). The values are the same either way, bit for bit.
    y0 = torch.ones(8, 2, dtype=F64)
    kw = dict(method="heun", dt=0.5, adaptive=True, rtol=1e-4, atol=1e-4)
    sde = Logged("diagonal", MU, SIG)
    with torch.no_grad():
        ys = sdeint(sde, y0, [0.0, 1.0], generator=torch.Generator().manual_seed(0), **kw)
    for calls in sde.calls.values():
        times = [t for t, _ in calls]
        assert times.count(0.0) == 1  # (t0, y0) once, although ...
        assert 0.5 in times and min(t for t in times if t > 0) < 0.25  # ... dt=0.5 was rejected
        assert _repeats(calls) == 0
    sde = Logged("diagonal", MU, SIG)
    grad = sdeint(sde, y0, [0.0, 1.0], generator=torch.Generator().manual_seed(0), **kw)
    assert [_repeats(c) for c in sde.calls.values()] == [1, 1]  # only (t0, y0) again
    assert torch.equal(grad, ys)


def test_adaptive_raises_when_the_state_blows_up():
    # dy = y² dt (y(t) = 1 / (1 - t) from y0 = 1): the error norm of an attempt becomes NaN
    # or inf, which the solver reports as non-finite, naming the output interval
    class Blowup:
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return y * y * 1e3

        def g(self, t, y):
            return 0.1 * y

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dt_min is reached on the way
        with pytest.raises(FloatingPointError, match="non-finite.*output 1 of 3"):
            gen = torch.Generator().manual_seed(0)
            sdeint(Blowup(), torch.ones(4, 1), [0.0, 0.5, 1.0], method="heun", dt=1e-3,
                   adaptive=True, dt_min=1e-4, generator=gen)  # fmt: skip


class NonlinearStrat:
    """A Stratonovich SDE with state-dependent drift and noise of each type (1 channel for
    additive, 2 for general)."""

    sde_type = "stratonovich"

    def __init__(self, noise_type):
        self.noise_type = noise_type

    def f(self, t, y):
        return torch.sin(3 * y) - 0.5 * y * (1 + t)

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return 0.4 * torch.cos(y) + 0.3
        if self.noise_type == "scalar":
            return (0.4 * torch.cos(y) + 0.3).unsqueeze(-1)
        if self.noise_type == "additive":
            return (0.5 * (1 + t)).expand(*y.shape, 1)
        return torch.stack([0.4 * torch.cos(y) + 0.3, 0.2 * torch.sin(y)], dim=-1)


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_adaptive_heun_fused_path_equals_the_generic_steps(noise_type):
    # an SDE with f and g takes the fused step-doubling path (_heun_double: one call for the
    # whole step and the halves, noise products fused into addcmul; general noise with 2
    # channels keeps the matrix product); the same SDE given as f_and_g takes the generic one
    # (three _heun_step calls on G ΔW products). The two differ by rounding only: on the
    # internal forward path (drawn where the steps ask) they take the same steps and agree to
    # round-off. (On a fixed BrownianMotion a rounding change moves the step times by ~1e-14,
    # which the path's increments amplify; the solutions then agree to the tolerance only.)
    sde = NonlinearStrat(noise_type)
    calls = {"f": 0}

    class Plain:
        noise_type, sde_type = sde.noise_type, sde.sde_type

        def f(self, t, y):
            calls["f"] += 1
            return sde.f(t, y)

        def g(self, t, y):
            return sde.g(t, y)

    class Fused:
        noise_type, sde_type = sde.noise_type, sde.sde_type

        def f_and_g(self, t, y):
            return sde.f(t, y), sde.g(t, y)

    y0 = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    ts = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    kw = dict(method="heun", dt=0.1, adaptive=True, rtol=1e-3, atol=1e-3)
    gen = torch.Generator()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            a = sdeint(Plain(), y0, ts, generator=gen.manual_seed(3), **kw)
            b = sdeint(Fused(), y0, ts, generator=gen.manual_seed(3), **kw)
        assert (a - b).abs().max() < 1e-12
    assert calls["f"] > 100  # dozens of attempts


def test_error_ratio_is_the_scaled_rms():
    from genmodels.integrate.sdeint import _error_ratio

    gen = torch.Generator().manual_seed(0)
    y1 = torch.randn(300, 4, dtype=F64, generator=gen)
    y2 = y1 + 1e-3 * torch.randn(300, 4, dtype=F64, generator=gen)
    y1[0, 0] = y2[0, 0] = 0.0  # a zero state: the scale is atol (or its floor) there
    for rtol, atol in ((1e-3, 1e-3), (1e-2, 0.0), (0.0, 1e-4), (1e-5, 1e-9), (0.0, 0.0)):
        scale = (atol + rtol * torch.maximum(y1.abs(), y2.abs())).clamp_min(1e-7)
        want = float(((y1 - y2) / scale).square().mean().sqrt())
        assert _error_ratio(y1, y2, rtol, atol) == pytest.approx(want, rel=1e-12)
    y2[1, 1] = float("nan")
    assert math.isnan(_error_ratio(y1, y2, 1e-3, 1e-3))


# --- logqp -------------------------------------------------------------------------------------


class OUPair:
    """Posterior dy = -θ_q y dt + σ dW with prior drift h = -θ_p y."""

    sde_type = "ito"

    def __init__(self, noise_type, theta_q=1.0, theta_p=2.5, sigma=0.7):
        self.noise_type, self.tq, self.tp, self.s = noise_type, theta_q, theta_p, sigma

    def f(self, t, y):
        return -self.tq * y

    def h(self, t, y):
        return -self.tp * y

    def g(self, t, y):
        g = torch.full_like(y, self.s)
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)

    def kl(self, y0, T):
        """KL(Q ‖ P) on [0, T] = (θ_p - θ_q)² / (2σ²) ∫ E y_t² dt, with E y_t² =
        y0² e^{-2θt} + σ²/(2θ) (1 - e^{-2θt}) under Q (θ = θ_q)."""
        th, s = self.tq, self.s
        e = (1 - math.exp(-2 * th * T)) / (2 * th)
        m2 = y0**2 * e + s**2 / (2 * th) * (T - e)
        return (self.tp - self.tq) ** 2 / (2 * s**2) * m2


@pytest.mark.parametrize("noise_type, method", [("diagonal", "milstein"), ("additive", "srk")])
def test_logqp_is_the_closed_form_kl_between_two_ou_processes(noise_type, method):
    n, y0, T = 20_000, 1.5, 1.0
    sde = OUPair(noise_type)
    ts = torch.tensor([0.0, 0.4, T], dtype=F64)
    ys, log_ratio = sdeint(
        sde, torch.full((n, 1), y0, dtype=F64), ts, method=method, dt=0.01, logqp=True,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    assert ys.shape == (3, n, 1) and log_ratio.shape == (2, n)
    total = log_ratio.sum(0)
    se = total.std().item() / math.sqrt(n)
    assert abs(total.mean().item() - sde.kl(y0, T)) < 5 * se + 2e-3 * sde.kl(y0, T)
    first = log_ratio[0].mean().item()  # the increment over [0, 0.4] alone
    assert abs(first - sde.kl(y0, 0.4)) < 5 * log_ratio[0].std().item() / math.sqrt(n) + 1e-3
    # a prior equal to the posterior costs nothing; names= picks the prior by name
    _, zero = sdeint(sde, torch.full((4, 1), y0, dtype=F64), ts, method=method, logqp=True,
                     names={"prior_drift": "f"}, dt=0.1)  # fmt: skip
    assert torch.equal(zero, torch.zeros_like(zero))


@pytest.mark.parametrize(
    "noise_type, method", [("diagonal", "euler"), ("general", "euler"), ("scalar", "heun")]
)
def test_logqp_equals_torchsde_on_the_same_path(noise_type, method):
    torchsde = pytest.importorskip("torchsde")

    class Mixed(torch.nn.Module):
        sde_type = "ito" if method == "euler" else "stratonovich"

        def __init__(self):
            super().__init__()
            self.noise_type = noise_type

        def f(self, t, y):
            return torch.sin(y) - 0.5 * y

        def h(self, t, y):
            return -y

        def g(self, t, y):
            if noise_type == "diagonal":
                return 0.5 * torch.cos(y) + 0.7
            if noise_type == "scalar":
                return (0.5 * torch.cos(y) + 0.7).unsqueeze(-1)
            return torch.stack([torch.cos(y) + 1.5, torch.sin(y), 0.3 * y], dim=-1)

    m = {"diagonal": 3, "scalar": 1, "general": 3}[noise_type]  # diagonal: d + 1 channels
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(6, m), dtype=F64, entropy=3)
    y0 = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ours = sdeint(Mixed(), y0, ts, bm, method=method, dt=2**-6, logqp=True)
    theirs = torchsde.sdeint(Mixed(), y0, ts, bm, method=method, dt=2**-6, logqp=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# --- torchsde's interface ----------------------------------------------------------------------


def test_signature_is_torchsdes():
    names = list(inspect.signature(sdeint).parameters)
    assert names[:15] == [
        "sde", "y0", "ts", "bm", "method", "dt", "adaptive", "rtol", "atol", "dt_min",
        "options", "names", "logqp", "extra", "extra_solver_state",
    ]  # fmt: skip
    p = inspect.signature(sdeint).parameters
    assert (p["dt"].default, p["rtol"].default, p["atol"].default, p["dt_min"].default) == (
        1e-3, 1e-5, 1e-4, 1e-5,
    )  # fmt: skip
    assert p["generator"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    "sde_type, noise_type, method",
    [
        ("ito", "diagonal", "srk"),
        ("ito", "scalar", "srk"),
        ("stratonovich", "diagonal", "euler_heun"),
        ("stratonovich", "general", "euler_heun"),
        ("stratonovich", "general", "log_ode"),
        ("stratonovich", "scalar", "log_ode"),
    ],
)
def test_new_methods_equal_torchsde_on_the_same_path(sde_type, noise_type, method):
    torchsde = pytest.importorskip("torchsde")

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.noise_type, self.sde_type = noise_type, sde_type

        def f(self, t, y):
            return torch.sin(y) - 0.5 * y

        def g(self, t, y):
            if noise_type == "diagonal":
                return 0.5 * torch.cos(y) + 0.2 * t
            if noise_type == "scalar":
                return (0.5 * torch.cos(y) + 0.2 * t).unsqueeze(-1)
            return torch.stack([torch.cos(y), torch.sin(y), 0.3 * y], dim=-1)

    m = {"diagonal": 2, "scalar": 1, "general": 3}[noise_type]
    approx = {"srk": "space-time", "log_ode": "foster"}.get(method, "none")
    bm = torchsde.BrownianInterval(
        0.0, 1.0, size=(6, m), dtype=F64, levy_area_approximation=approx, entropy=3
    )
    y0 = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ours = sdeint(Mixed(), y0, ts, bm, method=method, dt=2**-6)
    theirs = torchsde.sdeint(Mixed(), y0, ts, bm, method=method, dt=2**-6)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


class Fused:
    """One SDE given four ways: f and g; f_and_g; f with g_prod; f_and_g_prod (general noise)."""

    noise_type, sde_type = "general", "stratonovich"
    V = torch.tensor([[1.0, -0.5], [0.3, 0.8], [0.0, 1.0]], dtype=F64)

    def __init__(self, kind):
        self.kind = kind
        if kind in ("f_g", "f_gprod"):
            self.f = lambda t, y: -y
        if kind == "f_g":
            self.g = self._g
        if kind == "f_and_g":
            self.f_and_g = lambda t, y: (-y, self._g(t, y))
        if kind == "f_gprod":
            self.g_prod = lambda t, y, v: (self._g(t, y) @ v.unsqueeze(-1)).squeeze(-1)
        if kind == "f_and_g_prod":
            self.f_and_g_prod = lambda t, y, v: (-y, (self._g(t, y) @ v.unsqueeze(-1)).squeeze(-1))

    def _g(self, t, y):
        return y.unsqueeze(-1).sigmoid() * self.V


def test_fused_sde_methods_are_accepted():
    bm = BrownianMotion(0.0, 1.0, size=(5, 2), seed=2, dtype=F64)
    y0 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = [0.0, 0.5, 1.0]
    for method in ("heun", "midpoint", "euler_heun"):
        want = sdeint(Fused("f_g"), y0, ts, bm, method=method, dt=0.05)
        for kind in ("f_and_g", "f_gprod", "f_and_g_prod"):
            got = sdeint(Fused(kind), y0, ts, bm, method=method, dt=0.05)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="cannot infer the number of Brownian channels"):
        sdeint(Fused("f_gprod"), y0, ts, method="heun", dt=0.05)


def test_extra_state_resumes_a_solve():
    sde = StratLinear("diagonal", 0.3, 0.5)
    bm = BrownianMotion(0.0, 1.0, size=(4, 1), seed=0, dtype=F64)
    y0 = torch.ones(4, 1, dtype=F64)
    whole, state = sdeint(sde, y0, [0.0, 0.5, 1.0], bm, method="heun", dt=0.1, extra=True)
    assert state == ()  # the methods here keep no state between steps
    first, s1 = sdeint(sde, y0, [0.0, 0.5], bm, method="heun", dt=0.1, extra=True)
    second = sdeint(sde, first[-1], [0.5, 1.0], bm, method="heun", dt=0.1,
                    extra_solver_state=s1)  # fmt: skip
    torch.testing.assert_close(second[-1], whole[-1], rtol=0, atol=1e-14)
    bm2 = BrownianMotion(0.0, 1.0, size=(4, 2), seed=0, dtype=F64)  # logqp: d + 1 channels
    ys, lr, st = sdeint(OUPair("diagonal"), y0, [0.0, 1.0], bm2, method="euler", dt=0.1,
                        logqp=True, extra=True)  # fmt: skip
    assert ys.shape == (2, 4, 1) and lr.shape == (1, 4) and st == ()


def test_errors_name_the_problem():
    sde = GBM("diagonal", 1.0, 0.5)
    y0 = torch.ones(3, 1)
    with pytest.raises(ValueError, match="solves stratonovich SDEs"):
        sdeint(sde, y0, [0.0, 1.0], method="euler_heun")
    with pytest.raises(ValueError, match="solves ito SDEs"):
        sdeint(StratLinear("diagonal", 1.0, 0.5), y0, [0.0, 1.0], method="srk")
    with pytest.raises(ValueError, match="Lévy area approximation in \\['davie', 'foster'\\]"):
        sdeint(StratLinear("diagonal", 1.0, 0.5), y0, [0.0, 1.0], BrownianMotion(size=(3, 1)),
               method="log_ode")  # fmt: skip
    with pytest.raises(ValueError, match="prior drift h"):
        sdeint(sde, y0, [0.0, 1.0], logqp=True)
    with pytest.raises(ValueError, match="names may map"):
        sdeint(sde, y0, [0.0, 1.0], names={"drfit": "f"})
    with pytest.raises(ValueError, match="needs the drift f and the diffusion g"):
        sdeint(Fused("f_gprod"), torch.ones(3, 3), [0.0, 1.0], BrownianMotion(size=(3, 2)),
               method="log_ode")  # fmt: skip
    with pytest.raises(ValueError, match="dt_min must be positive"):
        sdeint(sde, y0, [0.0, 1.0], adaptive=True, dt_min=0.0)
    with pytest.raises(ValueError, match="rtol, atol"):
        sdeint(sde, y0, [0.0, 1.0], adaptive=True, rtol=0.0, atol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdeint(sde, y0, [0.0, 1.0], BrownianMotion(size=(3, 1)), method="milstein", dt=0.1)


def test_every_method_has_its_strong_orders():
    for name, spec in METHODS.items():
        assert set(spec.strong_order) == {"diagonal", "scalar", "additive", "general"}, name


def test_adaptive_without_bm_has_the_right_law():
    # bm=None: a ForwardBrownian drawn as the steps ask. OU from 0: the variance at
    # each output time is σ² (1 - e^{-2θt}) / (2θ)
    class OU:
        noise_type, sde_type = "additive", "ito"

        def f(self, t, y):
            return -2.0 * y

        def g(self, t, y):
            return torch.full((*y.shape, 1), 0.8, dtype=y.dtype)

    n = 20_000
    ts = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    ys = sdeint(OU(), torch.zeros(n, 1, dtype=F64), ts, method="srk", dt=0.05, adaptive=True,
                rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(7))  # fmt: skip
    for y, t in zip(ys[1:], ts[1:]):
        var = 0.64 * (1 - math.exp(-4 * float(t))) / 4
        assert abs(y.var().item() / var - 1) < 5 * math.sqrt(2 / n) + 0.01
        assert abs(y.mean().item()) < 5 * math.sqrt(var / n)


def test_reversible_heun_and_its_state_equal_torchsdes():
    torchsde = pytest.importorskip("torchsde")
    sde = StratLinear("diagonal", torch.tensor([0.5, -0.2], dtype=F64), SIG)
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(5, 2), dtype=F64, entropy=2)
    y0 = torch.rand(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) + 0.5
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ours, s1 = sdeint(sde, y0, ts, bm, method="reversible_heun", dt=2**-5, extra=True)
    theirs, s2 = torchsde.sdeint(sde, y0, ts, bm, method="reversible_heun", dt=2**-5, extra=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    for a, b in zip(s1, s2):  # (f(t, z), g(t, z), z), torchsde's order
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
