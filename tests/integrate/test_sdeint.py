"""sdeint: strong convergence orders against exact solutions on the same Brownian path,
weak order against the closed form of the Euler–Maruyama chain, Stratonovich Heun,
reverse time, agreement with torchsde, and clear errors."""

import math

import numpy as np
import pytest
import torch

from genmodels.integrate.brownian import BrownianMotion
from genmodels.integrate.sdeint import METHODS, sdeint

F64 = torch.float64


def _slope(dts, errs):
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


class GBM:
    """dy = μ y dt + σ y dW (Itô): y(T) = y0 exp((μ - σ²/2) T + σ W(T))."""

    sde_type = "ito"

    def __init__(self, noise_type="diagonal", mu=1.0, sigma=1.0):
        self.noise_type, self.mu, self.sigma = noise_type, mu, sigma

    def f(self, t, y):
        return self.mu * y

    def g(self, t, y):
        g = self.sigma * y
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)


class OU:
    """dy = -θ y dt + σ dW (additive noise)."""

    noise_type, sde_type = "additive", "ito"

    def __init__(self, theta=2.0, sigma=0.8):
        self.theta, self.sigma = theta, sigma

    def f(self, t, y):
        return -self.theta * y

    def g(self, t, y):
        return torch.full((*y.shape, 1), self.sigma, dtype=y.dtype)


# --- strong orders on the same path ------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options, noise_type, order",
    [
        ("euler", None, "diagonal", 0.5),
        ("milstein", None, "diagonal", 1.0),
        ("milstein", {"grad_free": True}, "diagonal", 1.0),
        ("milstein", None, "scalar", 1.0),
    ],
)
def test_gbm_strong_order(method, options, noise_type, order):
    # mean |y_h(T) - y(T)| ~ C h^order, y(T) the exact solution on the same Brownian path
    n, T = 2000, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=0, dtype=F64)  # d = 1: one channel either way
    sde = GBM(noise_type)
    y0 = torch.ones(n, 1, dtype=F64)
    exact = y0 * torch.exp((sde.mu - sde.sigma**2 / 2) * T + sde.sigma * bm(0.0, T))
    dts = [T / 2**k for k in range(3, 9)]
    errs = []
    for dt in dts:
        y = sdeint(sde, y0, [0.0, T], bm=bm, method=method, dt=dt, options=options)[-1]
        errs.append((y - exact).abs().mean().item())
    assert abs(_slope(dts, errs) - order) < 0.15, errs


def test_ou_euler_strong_order_one_and_srk_order_one_and_a_half():
    # additive noise: Euler–Maruyama is strong order 1. Reference: SRA1 with 2^10 steps on the
    # same path (error ~ 2^-15, far below the coarse errors; more accurate than 2^12 EM steps)
    n, T = 1000, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=2, dtype=F64, levy_area=True)
    y0 = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = sdeint(OU(), y0, [0.0, T], bm=bm, method="srk", dt=T / 2**10)[-1]
    dts = [T / 2**k for k in range(3, 8)]
    errs = [
        (sdeint(OU(), y0, [0.0, T], bm=bm, method="euler", dt=dt)[-1] - ref).abs().mean()
        for dt in dts
    ]
    assert abs(_slope(dts, [e.item() for e in errs]) - 1.0) < 0.15


class NonlinearAdditive:
    """dy = sin(2y) dt + (1 + t) dW: nonlinear drift, time-dependent additive noise."""

    noise_type, sde_type = "additive", "ito"

    def f(self, t, y):
        return torch.sin(2 * y)

    def g(self, t, y):
        return (1 + t).expand(*y.shape, 1)


def test_srk_strong_order_one_and_a_half_on_additive_noise():
    # Rößler's SRA1; on a linear drift it is even exact to higher order, so take a nonlinear one
    n, T = 1000, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=2, dtype=F64, levy_area=True)
    y0 = torch.randn(n, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    sde = NonlinearAdditive()
    ref = sdeint(sde, y0, [0.0, T], bm=bm, method="srk", dt=T / 2**10)[-1]
    dts = [T / 2**k for k in range(3, 8)]
    errs = [
        (sdeint(sde, y0, [0.0, T], bm=bm, method="srk", dt=dt)[-1] - ref).abs().mean().item()
        for dt in dts
    ]
    assert abs(_slope(dts, errs) - 1.5) < 0.2, errs


class CoupledScalar:
    """Scalar noise whose g couples the coordinates: g(y) = (sin y₂, cos y₁), so the Milstein
    term ½ (∂g/∂y) g (ΔW² - h) needs the full Jacobian-vector product."""

    noise_type, sde_type = "scalar", "ito"

    def f(self, t, y):
        return -0.5 * y

    def g(self, t, y):
        return torch.stack([torch.sin(y[..., 1]), torch.cos(y[..., 0])], -1).unsqueeze(-1)


def test_milstein_strong_order_one_with_coupled_scalar_noise():
    n, T = 500, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=4, dtype=F64)
    y0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = sdeint(CoupledScalar(), y0, [0.0, T], bm=bm, method="milstein", dt=T / 2**10)[-1]
    dts = [T / 2**k for k in range(3, 7)]
    errs = [
        (sdeint(CoupledScalar(), y0, [0.0, T], bm=bm, method="milstein", dt=dt)[-1] - ref)
        .abs()
        .mean()
        .item()
        for dt in dts
    ]
    assert abs(_slope(dts, errs) - 1.0) < 0.15, errs


class StratLinear:
    """dY = a Y dt + b Y ∘ dW (Stratonovich): Y(T) = Y0 exp(a T + b W(T))."""

    noise_type, sde_type = "diagonal", "stratonovich"
    a, b = 0.5, 1.0

    def f(self, t, y):
        return self.a * y

    def g(self, t, y):
        return self.b * y


@pytest.mark.parametrize("method", ["heun", "midpoint", "milstein"])
def test_stratonovich_strong_order_one(method):
    n, T = 2000, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=3, dtype=F64)
    sde = StratLinear()
    y0 = torch.ones(n, 1, dtype=F64)
    exact = y0 * torch.exp(sde.a * T + sde.b * bm(0.0, T))
    dts = [T / 2**k for k in range(3, 9)]
    errs = [
        (sdeint(sde, y0, [0.0, T], bm=bm, method=method, dt=dt)[-1] - exact).abs().mean().item()
        for dt in dts
    ]
    assert abs(_slope(dts, errs) - 1.0) < 0.15, errs
    # and it converges to the Stratonovich solution, not the Itô one (which has a - b²/2)
    assert errs[-1] < 0.05


# --- weak order: the Euler–Maruyama chain in closed form ----------------------------------------


def _em_chain_moments(theta, sigma, y0, T, h):
    """EM on OU is the AR(1) chain y_{k+1} = a y_k + σ √h Z, a = 1 - θh: after n steps
    E = aⁿ y0, Var = σ² h (1 - a²ⁿ) / (1 - a²)."""
    n = round(T / h)
    a = 1 - theta * h
    return a**n * y0, sigma**2 * h * (1 - a ** (2 * n)) / (1 - a**2)


def test_ou_euler_weak_order_one():
    theta, sigma, y0, T = 2.0, 0.8, 1.5, 1.0
    exact_mean = y0 * math.exp(-theta * T)
    exact_var = sigma**2 * (1 - math.exp(-2 * theta * T)) / (2 * theta)
    # (1) the chain's moments differ from the SDE's by O(h): weak order 1
    hs = [2.0**-k for k in range(3, 9)]
    errs = []
    for h in hs:
        mean, var = _em_chain_moments(theta, sigma, y0, T, h)
        errs.append(abs(mean - exact_mean) + abs(var - exact_var))
    assert abs(_slope(hs, errs) - 1.0) < 0.1
    # (2) sdeint's Euler–Maruyama is that chain: sample moments match the closed form within
    # 5 standard errors (the default increments, drawn from the generator)
    n, h = 200_000, 0.125
    ys = sdeint(
        OU(theta, sigma),
        torch.full((n, 1), y0, dtype=F64),
        [0.0, T],
        method="euler",
        dt=h,
        generator=torch.Generator().manual_seed(4),
    )[-1]
    mean, var = _em_chain_moments(theta, sigma, y0, T, h)
    assert abs(ys.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(ys.var().item() - var) < 5 * var * math.sqrt(2 / n)
    # and the O(h) bias is resolved by the test: the SDE's exact variance is far outside
    assert abs(ys.var().item() - exact_var) > 20 * var * math.sqrt(2 / n)


def test_default_increments_give_the_right_law():
    # GBM with Milstein: E[y_{k+1} | y_k] = (1 + μh) y_k, so E y(T) = y0 (1 + μh)^n exactly
    n, h = 40_000, 0.02
    gen = torch.Generator().manual_seed(5)
    y0 = torch.ones(n, 1, dtype=F64)
    y = sdeint(GBM(mu=0.5, sigma=0.4), y0, [0.0, 1.0], dt=h, generator=gen)[-1]
    assert abs(y.mean().item() - (1 + 0.5 * h) ** 50) < 5 * y.std().item() / math.sqrt(n)
    # OU with SRA1 (needs the drawn Lévy area J): the SDE's exact variance, weak order 2
    theta, sigma = 2.0, 0.8
    y = sdeint(OU(theta, sigma), 0 * y0, [0.0, 1.0], dt=0.05, generator=gen)[-1]
    var = sigma**2 * (1 - math.exp(-2 * theta)) / (2 * theta)
    assert abs(y.var().item() - var) < 5 * var * math.sqrt(2 / n) + 2e-3


# --- reverse time ------------------------------------------------------------------------------


class ReverseVP:
    """Reverse-time SDE of dx = -x/2 dt + dW started from data N(m, s²) (the lecture's score
    SDE with β = 1): p_t = N(m e^{-t/2}, s² e^{-t} + 1 - e^{-t}), and

        dx = [-x/2 - ∇ log p_t(x)] dt + dW̄,   t from T down to 0."""

    noise_type, sde_type = "additive", "ito"

    def __init__(self, m, s):
        self.m, self.s = m, s

    def moments(self, t):
        e = torch.exp(-t)
        return self.m * torch.sqrt(e), self.s**2 * e + 1 - e

    def f(self, t, x):
        mu, var = self.moments(t)
        score = -(x - mu) / var
        return -0.5 * x - score

    def g(self, t, x):
        return torch.ones(*x.shape, 1, dtype=x.dtype)


@pytest.mark.parametrize("method", ["euler", "srk"])
def test_reverse_time_diffusion_recovers_the_data(method):
    m, s, T, n = 2.0, 0.5, 3.0, 20_000
    sde = ReverseVP(m, s)
    gen = torch.Generator().manual_seed(6)
    mu_T, var_T = sde.moments(torch.tensor(T, dtype=F64))
    x_T = mu_T + var_T.sqrt() * torch.randn(n, 1, generator=gen, dtype=F64)
    ts = torch.tensor([T, 1.0, 0.0], dtype=F64)
    xs = sdeint(sde, x_T, ts, method=method, dt=0.02, generator=gen)
    assert xs.shape == (3, n, 1)
    for i, t in enumerate(ts):
        mu, var = sde.moments(t)
        x = xs[i]
        bias = 0.04 if method == "euler" else 0.01  # weak orders 1 and 2
        assert abs(x.mean().item() - mu.item()) < 5 * math.sqrt(var.item() / n) + bias
        assert abs(x.var().item() / var.item() - 1) < 5 * math.sqrt(2 / n) + bias


def test_backwards_replays_the_forward_path():
    # dy = dW: forwards y(T) = y0 + W(T); backwards on the same path returns to y0 exactly
    class Noise:
        noise_type = "additive"

        def __init__(self, sde_type):
            self.sde_type = sde_type  # the same SDE either way (additive noise)

        def f(self, t, y):
            return torch.zeros_like(y)

        def g(self, t, y):
            return torch.ones(*y.shape, 1, dtype=y.dtype)

    bm = BrownianMotion(0.0, 1.0, size=(5, 1), seed=7, dtype=F64, levy_area=True)
    y0 = torch.randn(5, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(0, 1, 11, dtype=F64)
    for method, kind in [("euler", "ito"), ("srk", "ito"), ("heun", "stratonovich")]:
        fwd = sdeint(Noise(kind), y0, ts, bm=bm, method=method, dt=0.03)
        torch.testing.assert_close(fwd[-1], y0 + bm(0.0, 1.0))
        back = sdeint(Noise(kind), fwd[-1], ts.flip(0), bm=bm, method=method, dt=0.03)
        torch.testing.assert_close(back.flip(0), fwd, rtol=0, atol=1e-12)


# --- agreement with torchsde -------------------------------------------------------------------


class Mixed(torch.nn.Module):
    def __init__(self, noise_type, sde_type):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type

    def f(self, t, y):
        return torch.sin(y) - 0.5 * y

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return 0.5 * torch.cos(y) + 0.2 * t
        if self.noise_type == "scalar":
            # each g_i depends on y_i only: torchsde 0.2.6's scalar-noise Milstein uses
            # (∂g/∂y)ᵀ g where the scheme needs (∂g/∂y) g, so compare on a symmetric Jacobian
            # (the coupled case is checked by its convergence order below)
            return (0.5 * torch.cos(y) + 0.2 * t).unsqueeze(-1)
        if self.noise_type == "additive":
            return (0.5 + t) * torch.ones(*y.shape, 3, dtype=y.dtype)
        return torch.stack([torch.cos(y), torch.sin(y), 0.3 * y], dim=-1)  # general


@pytest.mark.parametrize(
    "sde_type, noise_type, method",
    [
        ("ito", "diagonal", "euler"),
        ("ito", "diagonal", "milstein"),
        ("ito", "scalar", "milstein"),
        ("ito", "general", "euler"),
        ("ito", "additive", "srk"),
        ("stratonovich", "diagonal", "heun"),
        ("stratonovich", "general", "midpoint"),
        ("stratonovich", "scalar", "milstein"),
    ],
)
def test_same_path_as_torchsde(sde_type, noise_type, method):
    # torchsde driven by our BrownianMotion (its protocol) solves to the same numbers
    torchsde = pytest.importorskip("torchsde")
    sde = Mixed(noise_type, sde_type)
    y0 = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    m = {"diagonal": 2, "scalar": 1, "additive": 3, "general": 3}[noise_type]
    bm = BrownianMotion(0.0, 1.0, size=(6, m), seed=8, dtype=F64, levy_area=method == "srk")
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ours = sdeint(sde, y0, ts, bm=bm, method=method, dt=2**-6)
    theirs = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=2**-6)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_torchsde_brownian_interval_drives_our_solver():
    # the bm protocol runs both ways: torchsde's BrownianInterval (with its Lévy area) as bm
    torchsde = pytest.importorskip("torchsde")
    for noise_type, method in [("diagonal", "milstein"), ("additive", "srk")]:
        sde = Mixed(noise_type, "ito")
        y0 = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
        m = 2 if noise_type == "diagonal" else 3
        bm = torchsde.BrownianInterval(
            0.0,
            1.0,
            size=(6, m),
            dtype=F64,
            levy_area_approximation="space-time",
            entropy=3,
        )
        ts = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
        ours = sdeint(sde, y0, ts, bm=bm, method=method, dt=2**-5)
        theirs = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=2**-5)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_same_law_as_torchsde_with_its_own_noise():
    # independent noise sources: mean and variance at T agree within statistical error
    torchsde = pytest.importorskip("torchsde")
    sde = Mixed("diagonal", "ito")
    n = 20_000
    y0 = torch.full((n, 2), 0.3, dtype=F64)
    ours = sdeint(
        sde, y0, [0.0, 1.0], method="euler", dt=0.05, generator=torch.Generator().manual_seed(9)
    )[-1]
    torch.manual_seed(0)
    theirs = torchsde.sdeint(sde, y0, torch.tensor([0.0, 1.0], dtype=F64), method="euler", dt=0.05)[
        -1
    ]
    se_mean = torch.sqrt((ours.var(0) + theirs.var(0)) / n)
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 5 * se_mean).all()
    se_var = torch.sqrt(2 * (ours.var(0) ** 2 + theirs.var(0) ** 2) / n)
    assert ((ours.var(0) - theirs.var(0)).abs() < 5 * se_var).all()


# --- shapes, reproducibility, gradients, errors ------------------------------------------------


def test_shapes_and_reproducibility():
    sde = Mixed("general", "ito")
    y0 = torch.randn(2, 3, 4)
    ts = torch.linspace(0, 1, 5)
    a = sdeint(sde, y0, ts, generator=torch.Generator().manual_seed(1), dt=0.1)
    b = sdeint(sde, y0, ts, generator=torch.Generator().manual_seed(1), dt=0.1)
    c = sdeint(sde, y0, ts, generator=torch.Generator().manual_seed(2), dt=0.1)
    assert a.shape == (5, 2, 3, 4) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], y0)
    assert sdeint(sde, y0, [0.5]).shape == (1, 2, 3, 4)
    # a float64 path drives a float32 state without promoting it
    bm = BrownianMotion(size=(2, 3, 3), seed=0, dtype=F64)
    assert sdeint(sde, y0, ts, bm=bm, dt=0.1).dtype == torch.float32


def test_general_noise_with_constant_diffusion_is_exact():
    # f = 0, g = G constant: y(T) = y0 + G W(T) for any method (here Euler and Heun)
    G = torch.tensor([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]], dtype=F64)

    class Const:
        noise_type = "general"

        def __init__(self, sde_type):
            self.sde_type = sde_type

        def f(self, t, y):
            return torch.zeros_like(y)

        def g(self, t, y):
            return G.expand(*y.shape[:-1], 3, 2)

    bm = BrownianMotion(size=(4, 2), seed=3, dtype=F64)
    y0 = torch.zeros(4, 3, dtype=F64)
    want = (G @ bm(0.0, 1.0).unsqueeze(-1)).squeeze(-1)
    for sde_type, method in [("ito", "euler"), ("stratonovich", "heun")]:
        y = sdeint(Const(sde_type), y0, [0.0, 0.37, 1.0], bm=bm, method=method, dt=0.1)[-1]
        torch.testing.assert_close(y, want)


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar"])
def test_milstein_backprop_matches_finite_differences(noise_type):
    # the Milstein correction ½ (∂g/∂y) g (ΔW² - h) depends on the parameters too: the
    # gradient through it must be exact (same path, float64, central differences)
    class Net(torch.nn.Module):
        sde_type = "ito"

        def __init__(self):
            super().__init__()
            self.noise_type = noise_type
            self.lin = torch.nn.Linear(2, 2).double()
            self.scale = torch.nn.Parameter(torch.tensor(0.6, dtype=F64))

        def f(self, t, y):
            return torch.tanh(self.lin(y))

        def g(self, t, y):
            if noise_type == "diagonal":
                return self.scale * torch.sin(y) + 0.1
            # scalar noise: g may couple the coordinates (non-diagonal Jacobian)
            return (self.scale * torch.sin(y.flip(-1)) + 0.1 * y).unsqueeze(-1)

    torch.manual_seed(0)
    net = Net()
    m = 2 if noise_type == "diagonal" else 1
    bm = BrownianMotion(size=(4, m), seed=1, dtype=F64)
    y0 = torch.randn(4, 2, dtype=F64)

    def loss():
        return sdeint(net, y0, [0.0, 1.0], bm=bm, method="milstein", dt=0.125)[-1].sum()

    loss().backward()
    eps = 1e-6
    with torch.no_grad():
        net.scale += eps
        up = loss().item()
        net.scale -= 2 * eps
        down = loss().item()
        net.scale += eps
    assert abs(net.scale.grad.item() - (up - down) / (2 * eps)) < 1e-6
    assert net.lin.weight.grad.abs().sum() > 0


def test_names_select_other_methods():
    class Named:
        noise_type, sde_type = "diagonal", "ito"

        def drift(self, t, y):
            return -y

        def diffusion(self, t, y):
            return torch.zeros_like(y)

    y = sdeint(
        Named(),
        torch.ones(1, 1, dtype=F64),
        [0.0, 1.0],
        method="euler",
        dt=1e-3,
        names={"drift": "drift", "diffusion": "diffusion"},
    )[-1]
    assert abs(y.item() - math.exp(-1)) < 1e-3


def test_errors_are_clear():
    sde = GBM()
    y0 = torch.ones(3, 1)
    with pytest.raises(ValueError, match="unknown method"):
        sdeint(sde, y0, [0.0, 1.0], method="rk4")
    with pytest.raises(ValueError, match="noise_type 'general'"):
        sdeint(Mixed("general", "ito"), y0, [0.0, 1.0], method="srk")
    with pytest.raises(ValueError, match="solves stratonovich"):
        sdeint(sde, y0, [0.0, 1.0], method="heun")
    with pytest.raises(ValueError, match="monotone"):
        sdeint(sde, y0, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="dt must be positive"):
        sdeint(sde, y0, [0.0, 1.0], dt=0.0)
    with pytest.raises(ValueError, match="noise_type must be"):
        sdeint(GBM("weird"), y0, [0.0, 1.0])

    class BadShapes:
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return y.sum(-1)

        def g(self, t, y):
            return y

    with pytest.raises(ValueError, match=r"f\(t, y\) returned shape \(3,\)"):
        sdeint(BadShapes(), y0, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"g\(t, y\) returned shape"):
        sdeint(_bad_g(), y0, [0.0, 1.0])
    with pytest.raises(ValueError, match="levy_area=True"):
        sdeint(OU(), y0, [0.0, 1.0], bm=BrownianMotion(size=(3, 1)), method="srk")
    with pytest.raises(ValueError, match="bm has shape"):
        sdeint(sde, y0, [0.0, 1.0], bm=BrownianMotion(size=(3, 2)))
    with pytest.raises(FloatingPointError, match="t=1"):
        sdeint(
            GBM(mu=1e200),
            torch.ones(3, 1, dtype=F64),
            [0.0, 0.5, 1.0],
            dt=0.5,
            method="euler",
            generator=torch.Generator().manual_seed(0),
        )


def _bad_g():
    class BadG:
        noise_type, sde_type = "scalar", "ito"

        def f(self, t, y):
            return y

        def g(self, t, y):
            return y  # scalar noise needs (..., d, 1)

    return BadG()


def test_method_table_is_consistent():
    for name, spec in METHODS.items():
        assert callable(spec.step) and spec.noise_types and spec.sde_types, name
