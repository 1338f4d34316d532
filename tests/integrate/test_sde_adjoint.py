"""sdeint_adjoint: gradients equal backprop through sdeint on the same Brownian path (to the
discretisation error, converging at the adjoint method's order; reversible Heun to round-off),
memory constant in the number of steps, reversible Heun's strong order, clear errors."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from genmodels.integrate.brownian import BrownianMotion
from genmodels.integrate.sde_adjoint import sdeint_adjoint
from genmodels.integrate.sdeint import METHODS, sdeint

F64 = torch.float64


class NeuralSDE(nn.Module):
    """Small MLP drift and diffusion of every noise type. Diagonal noise is a shared network
    applied coordinate-wise (g_i depends on y_i only, as the diagonal noise type assumes)."""

    def __init__(self, d, m, noise_type, sde_type):
        super().__init__()
        self.noise_type, self.sde_type, self.d, self.m = noise_type, sde_type, d, m
        self.f_net = nn.Sequential(nn.Linear(d + 1, 8), nn.Tanh(), nn.Linear(8, d))
        if noise_type == "diagonal":
            self.g_net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())
        else:
            n_in = 1 if noise_type == "additive" else d + 1
            self.g_net = nn.Sequential(
                nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, d * m), nn.Sigmoid()
            )

    def f(self, t, y):
        return self.f_net(torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1))

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.g_net(torch.stack([y, t.expand_as(y)], dim=-1)).squeeze(-1)
        tt = t.expand(*y.shape[:-1], 1)
        x = tt if self.noise_type == "additive" else torch.cat([y, tt], dim=-1)
        return self.g_net(x).view(*y.shape, self.m)


def _channels(noise_type, d):
    return {"diagonal": d, "scalar": 1, "additive": 2, "general": 2}[noise_type]


def _grads(solve, sde, y0, weight):
    """Output and d(Σ weight · ys)/d(y0, params), flattened."""
    y0 = y0.clone().requires_grad_()
    ys = solve(y0)
    params = list(sde.parameters())
    gs = torch.autograd.grad((ys * weight).sum(), [y0, *params], allow_unused=True)
    flat = [
        (torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, [y0, *params])
    ]
    return ys.detach(), torch.cat(flat)


def _compare(sde_type, noise_type, method, adjoint_method, dt, n_ts=3, seed=0, reverse=False):
    torch.manual_seed(seed)
    d, b = 3, 8
    m = _channels(noise_type, d)
    sde = NeuralSDE(d, m, noise_type, sde_type).double()
    y0 = torch.randn(b, d, dtype=F64) * 0.3
    ts = torch.linspace(0.0, 1.0, n_ts, dtype=F64)
    ts = ts.flip(0) if reverse else ts
    bm = BrownianMotion(0.0, 1.0, size=(b, m), seed=seed, dtype=F64, levy_area=method == "srk")
    weight = torch.randn(n_ts, b, d, dtype=F64)
    ys_bp, g_bp = _grads(lambda y: sdeint(sde, y, ts, bm=bm, method=method, dt=dt), sde, y0, weight)
    ys_adj, g_adj = _grads(
        lambda y: sdeint_adjoint(
            sde, y, ts, bm=bm, method=method, adjoint_method=adjoint_method, dt=dt
        ),
        sde,
        y0,
        weight,
    )
    assert torch.equal(ys_bp, ys_adj)  # the forward pass is sdeint's, on the same path
    return ((g_adj - g_bp).abs().max() / g_bp.abs().max()).item()


# (sde type, noise, forward method, adjoint method, strong order of the adjoint solve)
CASES = [
    ("ito", "diagonal", "milstein", None, 1.0),  # default adjoint: Milstein
    ("ito", "diagonal", "euler", "euler", 0.5),
    ("ito", "scalar", "milstein", None, 0.5),  # default adjoint: Euler
    ("ito", "general", "euler", None, 0.5),
    ("ito", "additive", "srk", None, 1.0),  # Euler, additive noise: order 1
    ("stratonovich", "diagonal", "heun", None, 1.0),  # default adjoint: midpoint
    ("stratonovich", "diagonal", "milstein", "milstein", 1.0),
    ("stratonovich", "scalar", "midpoint", "heun", 1.0),
    ("stratonovich", "general", "midpoint", None, 1.0),
    ("stratonovich", "general", "reversible_heun", "midpoint", 1.0),
]


@pytest.mark.parametrize("sde_type, noise_type, method, adjoint_method, order", CASES)
def test_adjoint_gradients_converge_to_backprop(
    sde_type, noise_type, method, adjoint_method, order
):
    # Both gradients converge to the pathwise derivative; their gap is the discretisation error
    # of the adjoint solve, C dt^order. Checked: small at dt = 2^-8 (2e-2 for order 1/2, 5e-3
    # for order 1, relative to the largest gradient entry; measured 8e-3..1.1e-2 and
    # 3e-5..2.2e-3), and shrinking by about 4^order per step from dt = 2^-4 to 2^-6 to 2^-8
    # (slope of the log-log fit, margin 0.25 for the order-1/2 noise; measured 0.55..1.17).
    dts = [2.0**-4, 2.0**-6, 2.0**-8]
    errs = [_compare(sde_type, noise_type, method, adjoint_method, dt) for dt in dts]
    slope = float(np.polyfit(np.log(dts), np.log(errs), 1)[0])
    assert errs[-1] < (2e-2 if order == 0.5 else 5e-3), errs
    assert slope > order - 0.25, (slope, errs)


@pytest.mark.parametrize(
    "sde_type, noise_type, method, order",
    [("ito", "diagonal", "milstein", 1.0), ("ito", "general", "euler", 0.5),
     ("stratonovich", "general", "midpoint", 1.0)],
)  # fmt: skip
def test_adjoint_backwards_in_time(sde_type, noise_type, method, order):
    # decreasing ts (a reverse-time solve, as sdeint allows): the drift term of the adjoint step
    # takes the signed step h < 0, the Itô corrections |h|; same bounds as forwards in time
    dts = [2.0**-4, 2.0**-8]
    errs = [_compare(sde_type, noise_type, method, None, dt, reverse=True) for dt in dts]
    assert errs[-1] < (2e-2 if order == 0.5 else 5e-3), errs
    assert errs[-1] < errs[0] * 16.0 ** (-(order - 0.25)), errs


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar", "additive", "general"])
def test_reversible_heun_adjoint_is_exact(noise_type):
    # adjoint_reversible_heun inverts each step algebraically: the gradients of the discrete
    # solve itself, to round-off, at any step size (here coarse, and with 5 output times)
    sde_type = "stratonovich"  # additive too: sdeint checks the SDE type as torchsde
    for dt in (2.0**-3, 0.01):
        err = _compare(sde_type, noise_type, "reversible_heun", None, dt, n_ts=5, seed=1)
        assert err < 1e-11, (dt, err)


def test_reversible_heun_adjoint_backwards_in_time():
    # a decreasing ts (reverse-time solve) is inverted just as well
    torch.manual_seed(2)
    sde = NeuralSDE(2, 2, "general", "stratonovich").double()
    y0 = torch.randn(4, 2, dtype=F64)
    ts = torch.tensor([1.0, 0.6, 0.0], dtype=F64)
    bm = BrownianMotion(0.0, 1.0, size=(4, 2), seed=3, dtype=F64)
    w = torch.randn(3, 4, 2, dtype=F64)
    kw = dict(bm=bm, method="reversible_heun", dt=0.05)
    _, g1 = _grads(lambda y: sdeint(sde, y, ts, **kw), sde, y0, w)
    _, g2 = _grads(lambda y: sdeint_adjoint(sde, y, ts, **kw), sde, y0, w)
    torch.testing.assert_close(g2, g1, rtol=1e-11, atol=1e-12)


def test_default_brownian_path_gradient_matches_finite_differences():
    # bm=None: the path is regenerated from a seed in the backward pass. With the seed fixed by
    # the generator, the function y0 -> ys is deterministic, and reversible Heun's exact
    # adjoint equals its central finite differences.
    torch.manual_seed(4)
    sde = NeuralSDE(2, 2, "diagonal", "stratonovich").double()
    y0 = torch.randn(3, 2, dtype=F64)

    def solve(y):
        gen = torch.Generator().manual_seed(7)
        return sdeint_adjoint(sde, y, [0.0, 0.5, 1.0], method="reversible_heun", dt=0.02,
                              generator=gen)  # fmt: skip

    y = y0.clone().requires_grad_()
    (solve(y)[1:] ** 2).sum().backward()
    eps, fd = 1e-6, torch.zeros_like(y0)
    with torch.no_grad():
        for i in range(y0.numel()):
            e = torch.zeros_like(y0).view(-1)
            e[i] = eps
            e = e.view_as(y0)
            fd.view(-1)[i] = ((solve(y0 + e)[1:] ** 2).sum() - (solve(y0 - e)[1:] ** 2).sum()) / (
                2 * eps
            )
    torch.testing.assert_close(y.grad, fd, rtol=1e-6, atol=1e-8)


def test_default_brownian_path_has_the_right_law():
    # dy = dW (additive, m = 1) from 0: y(t) = W(t) on the default path; Var = t, and the
    # increments over [0, 0.5], [0.5, 1] are uncorrelated (5 standard errors, 20000 paths)
    class Noise(nn.Module):
        noise_type, sde_type = "additive", "ito"

        def f(self, t, y):
            return torch.zeros_like(y)

        def g(self, t, y):
            return torch.ones(*y.shape, 1, dtype=y.dtype)

    n = 20000
    ys = sdeint_adjoint(Noise(), torch.zeros(n, 1, dtype=F64), [0.0, 0.5, 1.0], dt=0.05,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    w1, w2 = ys[1, :, 0], ys[2, :, 0] - ys[1, :, 0]
    se_var = math.sqrt(2.0 / n)  # of a sample variance of N(0, 1), relative
    assert abs(ys[2, :, 0].var().item() - 1.0) < 5 * se_var
    assert abs(w1.var().item() / 0.5 - 1.0) < 5 * se_var
    assert abs(torch.corrcoef(torch.stack([w1, w2]))[0, 1].item()) < 5 / math.sqrt(n)


# --- memory: constant in the number of steps ----------------------------------------------------


class _LiveSaved:
    """Bytes of tensors autograd holds for backward, live at once (peak), through
    ``saved_tensors_hooks``: a packed tensor counts until autograd frees it."""

    def __init__(self):
        self.live = self.peak = 0

    def _pack(self, t):
        box = _Box(t, self)
        self.live += box.nbytes
        self.peak = max(self.peak, self.live)
        return box

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda box: box.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


class _Box:
    def __init__(self, t, owner):
        self.t, self.owner, self.nbytes = t, owner, t.numel() * t.element_size()

    def __del__(self):
        self.owner.live -= self.nbytes


def _peak_saved_bytes(solver, method, steps):
    torch.manual_seed(0)
    sde = NeuralSDE(2, 2, "diagonal", "stratonovich").double()
    y0 = torch.randn(16, 2, dtype=F64, requires_grad=True)
    bm = BrownianMotion(0.0, 1.0, size=(16, 2), seed=0, dtype=F64)
    with _LiveSaved() as mem:
        ys = solver(sde, y0, [0.0, 1.0], bm=bm, method=method, dt=1.0 / steps)
        ys[-1].sum().backward()
    return mem.peak


@pytest.mark.parametrize("method", ["heun", "reversible_heun"])
def test_memory_is_constant_in_the_number_of_steps(method):
    # peak bytes autograd keeps alive, forward and backward, at 32 and 256 steps: identical for
    # the adjoint (the outputs, and one step's graph in the backward pass); growing ~8x for
    # backprop through sdeint (the measure can fail)
    adj = [_peak_saved_bytes(sdeint_adjoint, method, n) for n in (32, 256)]
    bp = [_peak_saved_bytes(sdeint, method, n) for n in (32, 256)]
    assert adj[0] == adj[1], adj
    assert bp[1] > 6 * bp[0] and bp[0] > adj[0], (bp, adj)


# --- reversible Heun: strong order on a closed form ------------------------------------------


class StratGBM:
    """dy = a y dt + b y ∘ dW (Stratonovich): y(T) = y0 exp(a T + b W(T))."""

    noise_type, sde_type = "diagonal", "stratonovich"
    a, b = 0.5, 0.8

    def f(self, t, y):
        return self.a * y

    def g(self, t, y):
        return self.b * y


def test_reversible_heun_strong_order_one_on_gbm():
    # mean |y_h(T) - y(T)| on the same path. Kidger et al. 2021 prove order 1/2 in general and
    # 1 for additive noise; on this commutative (scalar-channel) problem it is order 1 too
    # (measured slope 0.96 over dt = 2^-3 .. 2^-9); asserted: 1 ± 0.15
    n, T = 2000, 1.0
    bm = BrownianMotion(0.0, T, size=(n, 1), seed=3, dtype=F64)
    sde = StratGBM()
    y0 = torch.ones(n, 1, dtype=F64)
    exact = y0 * torch.exp(sde.a * T + sde.b * bm(0.0, T))
    dts = [T / 2**k for k in range(3, 9)]
    errs = [
        (sdeint(sde, y0, [0.0, T], bm=bm, method="reversible_heun", dt=dt)[-1] - exact)
        .abs()
        .mean()
        .item()
        for dt in dts
    ]
    slope = float(np.polyfit(np.log(dts), np.log(errs), 1)[0])
    assert abs(slope - 1.0) < 0.15, (slope, errs)


def test_reversible_heun_in_method_table():
    spec = METHODS["reversible_heun"]
    assert spec.sde_types == ("stratonovich",)
    assert set(spec.noise_types) == {"diagonal", "scalar", "additive", "general"}


# --- parameters and errors -----------------------------------------------------------------------


def test_adjoint_params_and_unused_parameters():
    # explicit adjoint_params restricts the gradients; parameters that do not require grad stay
    # untouched; unused parameters get a zero gradient
    torch.manual_seed(5)
    sde = NeuralSDE(2, 2, "general", "stratonovich").double()
    sde.unused = nn.Parameter(torch.ones(3, dtype=F64))
    for p in sde.g_net.parameters():
        p.requires_grad_(False)
    y0 = torch.randn(4, 2, dtype=F64, requires_grad=True)
    ys = sdeint_adjoint(sde, y0, [0.0, 1.0], dt=0.1, generator=torch.Generator().manual_seed(0))
    ys.sum().backward()
    assert all(p.grad is None for p in sde.g_net.parameters())
    assert torch.equal(sde.unused.grad, torch.zeros(3, dtype=F64))
    assert all(p.grad is not None for p in sde.f_net.parameters())
    sde.zero_grad(set_to_none=True)
    first = sde.f_net[0].weight
    ys = sdeint_adjoint(sde, y0, [0.0, 1.0], dt=0.1, adjoint_params=[first],
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    ys.sum().backward()
    assert first.grad is not None and sde.f_net[2].weight.grad is None


def test_errors_are_clear():
    class Plain:
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return torch.ones_like(y)

    y0 = torch.ones(2, 2)
    with pytest.raises(TypeError, match="adjoint_params"):
        sdeint_adjoint(Plain(), y0, [0.0, 1.0])
    ok = dict(adjoint_params=())
    with pytest.raises(ValueError, match="adjoint_reversible_heun.*reversible_heun"):
        sdeint_adjoint(
            Plain(), y0, [0.0, 1.0], method="heun", adjoint_method="adjoint_reversible_heun", **ok
        )
    with pytest.raises(ValueError, match="unknown adjoint_method"):
        sdeint_adjoint(Plain(), y0, [0.0, 1.0], adjoint_method="rk4", **ok)
    with pytest.raises(ValueError, match="'euler' solves ito"):
        sdeint_adjoint(Plain(), y0, [0.0, 1.0], adjoint_method="euler", **ok)
    with pytest.raises(ValueError, match="ts must not require grad"):
        sdeint_adjoint(Plain(), y0, torch.tensor([0.0, 1.0], requires_grad=True), **ok)
    with pytest.raises(ValueError, match="logqp"):
        sdeint_adjoint(Plain(), y0, [0.0, 1.0], logqp=True, **ok)
    with pytest.raises(ValueError, match="grad_free"):
        sdeint_adjoint(Plain(), y0, [0.0, 1.0], adjoint_method="milstein",
                       adjoint_options={"grad_free": True}, **ok)  # fmt: skip
    general = NeuralSDE(2, 2, "general", "ito")
    with pytest.raises(ValueError, match="'milstein' does not support noise_type 'general'"):
        sdeint_adjoint(general, y0, [0.0, 1.0], method="euler", adjoint_method="milstein")
    with pytest.raises(ValueError, match="monotone"):
        sdeint_adjoint(Plain(), y0, [0.0, 1.0, 0.5], **ok)


class _ParamsOnly(nn.Module):
    """dy = p dt + sigmoid(p) dW: coefficients depend on a parameter but not on y, so
    y(T) = y0 + p T + sigmoid(p) W(T) exactly, and d Σ y(T) / dp = Σ (T + sigmoid'(p) W(T))."""

    sde_type = "ito"

    def __init__(self, noise_type):
        super().__init__()
        self.noise_type = noise_type
        self.p = nn.Parameter(torch.tensor(0.3, dtype=F64))

    def f(self, t, y):
        return self.p + torch.zeros_like(y)

    def g(self, t, y):
        g = torch.sigmoid(self.p) + torch.zeros_like(y)
        return g if self.noise_type == "diagonal" else g.unsqueeze(-1)


@pytest.mark.parametrize("noise_type", ["diagonal", "scalar"])
@pytest.mark.parametrize("solver", [sdeint, sdeint_adjoint])
def test_diffusion_depending_on_parameters_only(noise_type, solver):
    # Milstein's ∂g/∂y · g is zero here (not an autograd error), forward and adjoint
    sde = _ParamsOnly(noise_type)
    m = 2 if noise_type == "diagonal" else 1
    bm = BrownianMotion(0.0, 1.0, size=(3, m), seed=0, dtype=F64)
    y0 = torch.ones(3, 2, dtype=F64, requires_grad=True)
    ys = solver(sde, y0, [0.0, 1.0], bm=bm, method="milstein", dt=0.1)
    gy, gp = torch.autograd.grad(ys[-1].sum(), [y0, sde.p])
    s = torch.sigmoid(sde.p.detach())
    w = bm(0.0, 1.0).expand(3, 2)
    torch.testing.assert_close(gy, torch.ones_like(y0))
    torch.testing.assert_close(gp, (1.0 + s * (1 - s) * w).sum(), rtol=1e-10, atol=1e-12)


PEER_CASES = [
    ("ito", "diagonal", "milstein", None),
    ("ito", "diagonal", "euler", "euler"),
    ("ito", "scalar", "euler", None),
    ("ito", "general", "euler", None),
    ("ito", "additive", "euler", None),
    ("stratonovich", "diagonal", "midpoint", None),
    ("stratonovich", "general", "midpoint", None),
    ("stratonovich", "scalar", "heun", "heun"),
    ("stratonovich", "diagonal", "milstein", "milstein"),
    ("stratonovich", "general", "reversible_heun", None),
]


@pytest.mark.parametrize("sde_type, noise_type, method, adjoint_method", PEER_CASES)
def test_same_adjoint_gradients_as_torchsde(sde_type, noise_type, method, adjoint_method):
    # the same adjoint SDE, discretised by the same scheme on the same BrownianInterval:
    # torchsde.sdeint_adjoint's gradients to round-off (measured ≤ 1.4e-15 relative at dt 2^-6)
    torchsde = pytest.importorskip("torchsde")
    torch.manual_seed(0)
    d, b = 3, 4
    m = _channels(noise_type, d)
    sde = NeuralSDE(d, m, noise_type, sde_type).double()
    y0 = torch.randn(b, d, dtype=F64) * 0.3
    ts = torch.linspace(0, 1, 3, dtype=F64)
    w = torch.randn(3, b, d, dtype=F64)
    out = []
    for solver in (sdeint_adjoint, torchsde.sdeint_adjoint):
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(b, m), dtype=F64, entropy=5)
        solve = lambda y, solver=solver, bm=bm: solver(  # noqa: E731
            sde, y, ts, bm=bm, method=method, adjoint_method=adjoint_method, dt=2**-4
        )
        out.append(_grads(solve, sde, y0, w))
    (ys, g), (ys_peer, g_peer) = out
    torch.testing.assert_close(ys, ys_peer, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(g, g_peer, rtol=1e-10, atol=1e-12)


def test_backward_sweep_asks_a_given_path_in_forward_ordered_blocks():
    # the backward pass asks bm for each step's increment again, in blocks of 32 steps each
    # taken in forward order (cheap for torchsde's BrownianInterval), never more than one
    # block held; the gradients are those of the same path asked step by step in reverse
    torch.manual_seed(5)
    sde = NeuralSDE(2, 2, "diagonal", "stratonovich").double()
    y0 = torch.randn(3, 2, dtype=F64)
    calls = []

    class Spy:
        shape = (3, 2)

        def __init__(self):
            self.bm = BrownianMotion(0.0, 1.0, size=(3, 2), seed=1, dtype=F64)

        def __call__(self, ta, tb, return_U=False):
            calls.append((float(ta), float(tb)))
            return self.bm(ta, tb, return_U=return_U)

    ts = torch.tensor([0.0, 1.0], dtype=F64)
    w = torch.randn(2, 3, 2, dtype=F64)
    kw = dict(method="midpoint", dt=0.01)  # 100 steps: blocks 96-99, 64-95, 32-63, 0-31
    _, g_adj = _grads(lambda y: sdeint_adjoint(sde, y, ts, Spy(), **kw), sde, y0, w)
    backward = calls[100:]
    starts = [round(a * 100) for a, _ in backward]
    assert starts == [*range(96, 100), *range(64, 96), *range(32, 64), *range(0, 32)]
    _, g_bp = _grads(lambda y: sdeint(sde, y, ts, Spy().bm, **kw), sde, y0, w)
    assert (g_adj - g_bp).abs().max() < 1e-3  # the adjoint's discretisation error at dt=0.01


class _WithPrior(NeuralSDE):
    """NeuralSDE with a prior drift h (an Ornstein–Uhlenbeck pull to 0) for logqp."""

    def h(self, t, y):
        return -y


@pytest.mark.parametrize(
    "sde_type, noise_type, method, order",
    [("ito", "diagonal", "milstein", 1.0), ("ito", "general", "euler", 0.5),
     ("stratonovich", "scalar", "midpoint", 1.0)],
)  # fmt: skip
def test_logqp_through_the_adjoint_equals_sdeint_and_its_gradients(
    sde_type, noise_type, method, order
):
    """logqp=True: the same (ys, log_ratio) as sdeint(logqp=True) on the same path, and the
    gradients of a loss on both (the latent-SDE ELBO's shape: data term + KL) equal backprop
    through sdeint to the adjoint solve's discretisation error, shrinking with dt."""
    torch.manual_seed(0)
    d, b, n_ts = 3, 8, 3
    m = _channels(noise_type, d)
    sde = _WithPrior(d, m, noise_type, sde_type).double()
    y0 = torch.randn(b, d, dtype=F64) * 0.3
    ts = torch.linspace(0.0, 1.0, n_ts, dtype=F64)
    channels = d + 1 if noise_type == "diagonal" else m  # L takes one more diagonal channel
    bm = BrownianMotion(0.0, 1.0, size=(b, channels), seed=0, dtype=F64)
    wy, wl = torch.randn(n_ts, b, d, dtype=F64), torch.randn(n_ts - 1, b, dtype=F64)

    def grads(solve):
        y = y0.clone().requires_grad_()
        ys, lr = solve(y)
        params = list(sde.parameters())
        gs = torch.autograd.grad((ys * wy).sum() + (lr * wl).sum(), [y, *params],
                                 allow_unused=True)  # fmt: skip
        flat = [(torch.zeros_like(p) if g is None else g).reshape(-1)
                for g, p in zip(gs, [y, *params])]  # fmt: skip
        return ys.detach(), lr.detach(), torch.cat(flat)

    errs = []
    for dt in (2.0**-4, 2.0**-7):
        ys_bp, lr_bp, g_bp = grads(
            lambda y, dt=dt: sdeint(sde, y, ts, bm=bm, method=method, dt=dt, logqp=True)
        )
        ys_adj, lr_adj, g_adj = grads(
            lambda y, dt=dt: sdeint_adjoint(sde, y, ts, bm=bm, method=method, dt=dt, logqp=True)
        )
        assert lr_adj.shape == (n_ts - 1, b) and ys_adj.shape == (n_ts, b, d)
        torch.testing.assert_close(ys_adj, ys_bp, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lr_adj, lr_bp, rtol=1e-10, atol=1e-12)
        assert float(lr_bp.abs().max()) > 1e-3  # the KL term is not trivially zero
        errs.append(((g_adj - g_bp).abs().max() / g_bp.abs().max()).item())
    # measured: diagonal milstein 7.8e-2 -> 9.2e-3, general euler 2.3e-1 -> 3.0e-2,
    # Stratonovich scalar midpoint 6.6e-4 -> 5.5e-5; an 8x smaller dt shrinks the gap by at
    # least 8^order >= 2.8 for a converging adjoint solve
    assert errs[-1] < (6e-2 if order == 0.5 else 2e-2), errs
    assert errs[0] / errs[-1] > 2.5, errs


def test_logqp_adjoint_needs_a_prior_drift_and_names_are_checked():
    sde = NeuralSDE(2, 2, "diagonal", "ito").double()
    y0 = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="prior drift"):
        sdeint_adjoint(sde, y0, [0.0, 1.0], dt=0.1, logqp=True)
    with pytest.raises(ValueError, match="names may map"):
        sdeint_adjoint(_WithPrior(2, 2, "diagonal", "ito").double(), y0, [0.0, 1.0], dt=0.1,
                       logqp=True, names={"drift_and_diffusion": "fg"})  # fmt: skip
    ys, lr = sdeint_adjoint(_WithPrior(2, 2, "diagonal", "ito").double(), y0, [0.0, 0.5, 1.0],
                            dt=0.1, logqp=True, names={"prior_drift": "h"})  # fmt: skip
    assert ys.shape == (3, 4, 2) and lr.shape == (2, 4)
