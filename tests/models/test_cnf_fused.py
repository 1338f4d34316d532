"""The fused exact divergence of FFJORD's concat MLP against the vector-Jacobian products."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from genmodels.distributions import standard_normal_log_prob
from genmodels.integrate import dynamics_with_divergence
from genmodels.models.cnf import CNF, ConcatField, _FusedConcatMLP, time_features

D64 = torch.float64
OPTIONS = list(
    itertools.product(("tanh", "elu", "softplus"), (0, 3), ("every", "first"))
)  # activation, time_freqs, time_input


class _Plain(nn.Module):
    """The same field seen only through ``forward``: the CNF takes the vjp path for it."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.inner = field

    def forward(self, t, z):
        return self.inner(t, z)


def _field(act="tanh", freqs=0, time_input="every", d=2, hidden=8, depth=3, dtype=D64, seed=0):
    torch.manual_seed(seed)
    f = ConcatField(d, hidden, depth, act, "concat", freqs, time_input).to(dtype)
    for p in f.parameters():  # the last layer starts at zero: make the field non-trivial
        nn.init.normal_(p, std=0.6)
    return f


@pytest.mark.parametrize("act,freqs,time_input", OPTIONS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_values_equal_the_vjp_path(act, freqs, time_input, dtype, tol):
    f = _field(act, freqs, time_input, dtype=dtype, hidden=16)
    assert f.fused
    z = torch.randn(33, 2, dtype=dtype) * 1.5
    t = torch.tensor(0.37, dtype=dtype)
    with torch.no_grad():
        got = f.with_divergence(t, z, frobenius=True)
        want = dynamics_with_divergence(f, t, z, frobenius=True)
        got2 = f.with_divergence(t, z)
    assert len(got2) == 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    torch.testing.assert_close(got2[1], want[1], rtol=tol, atol=tol)
    assert want[1].abs().mean() > 0.1 and want[2].mean() > 0.1  # a non-trivial Jacobian


@pytest.mark.parametrize("d,depth", [(1, 1), (3, 2), (2, 0)])
def test_values_equal_the_vjp_path_for_other_shapes(d, depth):
    f = _field("tanh", 2, "every", d=d, depth=depth)
    z, t = torch.randn(5, d, dtype=D64), torch.tensor(0.8, dtype=D64)
    with torch.no_grad():
        for a, b in zip(
            f.with_divergence(t, z, frobenius=True),
            dynamics_with_divergence(f, t, z, frobenius=True),
        ):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("act,freqs,time_input", OPTIONS)
@pytest.mark.parametrize("mode", ["plain", "frobenius", "flat"])
def test_gradcheck_wrt_state_time_features_and_every_parameter(act, freqs, time_input, mode):
    # elu's second derivative jumps at 0: with these draws no pre-activation lies within
    # gradcheck's step (1e-6) of 0, so the finite differences see a smooth function.
    # "flat": the node on the flat CNF state [z, l] -> [f, div] (odeint's fast path)
    f = _field(act, freqs, time_input, hidden=5, seed=1)
    n = 4 * 3 if mode == "flat" else 4
    z = torch.randn(n, *(() if mode == "flat" else (2,)), dtype=D64, requires_grad=True)
    t = torch.tensor(0.6, dtype=D64)
    tau = time_features(t, f.time_freqs, f.T, D64).requires_grad_(True)
    params = [p for layer in f.layers for p in (layer.weight, layer.bias)]
    spec = (act, tuple(f.extra), mode == "frobenius", mode == "flat")

    def fn(z, tau, *ps):
        return _FusedConcatMLP.apply(z, tau, spec, *ps)

    assert torch.autograd.gradcheck(fn, (z, tau, *params), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("act,freqs,time_input", [("tanh", 0, "every"), ("elu", 3, "first")])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_one_evaluation_backward_equals_autograd_through_the_vjp_path(
    act, freqs, time_input, dtype, tol
):
    f = _field(act, freqs, time_input, hidden=16, seed=2, dtype=dtype)
    z0 = torch.randn(20, 2, dtype=dtype)
    t = torch.tensor(0.25, dtype=dtype, requires_grad=True)
    g = [
        torch.randn(20, 2, dtype=dtype),
        torch.randn(20, dtype=dtype),
        torch.randn(20, dtype=dtype),
    ]
    grads = []
    for fused in (True, False):
        z = z0.clone().requires_grad_(True)
        if fused:
            out = f.with_divergence(t, z, frobenius=True)
        else:
            out = dynamics_with_divergence(f, t, z, frobenius=True)
        inputs = (z, t, *f.parameters())
        grads.append(torch.autograd.grad(out, inputs, g))
    for a, b in zip(*grads):  # entries near 0 come from cancellation: scale atol by the size
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))


# adaptive dopri5 for the smooth activations; elu's second derivative jumps at 0, so an
# adaptive solve rejects steps at round-off-sensitive places (measured: 2108 vs 2066
# evaluations at rtol 1e-8, gradients 0.4% apart): there dopri5 takes fixed steps
SOLVES = {"tanh": dict(rtol=1e-8, atol=1e-8), "softplus": dict(rtol=1e-8, atol=1e-8),
          "elu": dict(step_size=0.1)}  # fmt: skip


@pytest.mark.parametrize(
    "act,freqs,time_input", [("tanh", 0, "every"), ("softplus", 3, "first"), ("elu", 3, "first")]
)
@pytest.mark.parametrize("regularised", [False, True])
def test_cnf_loss_gradient_through_dopri5_equals_the_vjp_path(act, freqs, time_input, regularised):
    x = torch.randn(6, 2, dtype=D64)
    results = []
    for fused in (True, False):
        f = _field(act, freqs, time_input, hidden=8, seed=3)
        f.layers[-1].weight.data.mul_(0.3)  # a gentle field: few solver steps
        cnf = CNF(f if fused else _Plain(f), method="dopri5", **SOLVES[act])
        if regularised:
            z, ladj, k, j = cnf.regularised(x)
            loss = -(standard_normal_log_prob(z) + ladj).mean() + 0.1 * k.mean() + 0.2 * j.mean()
        else:
            z, ladj = cnf(x)
            loss = -(standard_normal_log_prob(z) + ladj).mean()
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in f.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("regularised", [False, True])
def test_adjoint_gradients_equal_backprop_for_fourier_features_at_the_first_layer(regularised):
    x = torch.randn(5, 2, dtype=D64)
    grads = []
    for adjoint in (False, True):
        f = _field("softplus", 3, "first", hidden=8, seed=4)
        f.layers[-1].weight.data.mul_(0.3)
        cnf = CNF(f, adjoint=adjoint, rtol=1e-9, atol=1e-9)
        if regularised:  # the adjoint's one vjp takes the Frobenius norm's cotangent too
            z, ladj, k, j = cnf.regularised(x)
            (standard_normal_log_prob(z) + ladj + 0.1 * k + 0.2 * j).sum().backward()
        else:
            z, ladj = cnf(x)
            (standard_normal_log_prob(z) + ladj).sum().backward()
        grads.append([p.grad.clone() for p in f.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_cnf_uses_the_fused_trace_for_exact_only(monkeypatch):
    f = _field(hidden=8)
    calls = []
    fused = ConcatField.with_divergence

    def counted(self, t, z, frobenius=False):
        calls.append(torch.is_grad_enabled())
        return fused(self, t, z, frobenius)

    monkeypatch.setattr(ConcatField, "with_divergence", counted)
    x = torch.randn(4, 2, dtype=D64)
    CNF(f, step_size=0.5, method="rk4")(x)
    assert calls and all(calls)  # training: fused, with grad
    calls.clear()
    with torch.no_grad():  # log_prob: the cheap forward only
        CNF(f, step_size=0.5, method="rk4")(x)
    assert calls and not any(calls)
    calls.clear()
    CNF(f, trace="hutchinson", step_size=0.5, method="rk4")(x, generator=torch.Generator())
    assert not calls  # Hutchinson keeps its one vector-Jacobian product


def test_concatsquash_falls_back_to_the_vjp_path():
    torch.manual_seed(5)
    f = ConcatField(2, 8, 2, layer="concatsquash").double()
    for p in f.parameters():
        nn.init.normal_(p, std=0.5)
    assert not f.fused
    z, t = torch.randn(6, 2, dtype=D64), torch.tensor(0.1, dtype=D64)
    with torch.no_grad():
        for a, b in zip(
            f.with_divergence(t, z, frobenius=True),
            dynamics_with_divergence(f, t, z, frobenius=True),
        ):
            torch.testing.assert_close(a, b)


def test_double_backward_and_bad_state_are_clear_errors():
    f = _field(hidden=4)
    z = torch.randn(3, 2, dtype=D64, requires_grad=True)
    _, div = f.with_divergence(torch.tensor(0.0), z)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(div.sum(), z, create_graph=True)
    v = torch.randn(3, dtype=D64, requires_grad=True)  # a cotangent that carries a graph
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(div, z, v, create_graph=True)
    with pytest.raises(ValueError, match=r"z must be a \(batch, 2\) tensor"):
        f.with_divergence(torch.tensor(0.0), torch.randn(3, 3, dtype=D64))
    with pytest.raises(ValueError, match=r"z must be a \(batch, 2\) tensor"):
        f.with_divergence(torch.tensor(0.0), torch.randn(3, dtype=D64))


def test_a_replaced_parameter_and_a_float_time_are_seen():
    # with_divergence reads the layers' parameters at every call (no cached list): a weight
    # the user replaces, or a layer swapped for another, is what the fused node uses
    f = _field("elu", 1, hidden=6, depth=2)
    z, t = torch.randn(5, 2, dtype=D64), 0.3
    with torch.no_grad():
        got = f.with_divergence(t, z)  # t as a Python float
        want = dynamics_with_divergence(f, torch.tensor(t, dtype=D64), z)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        f.layers[1].weight = nn.Parameter(torch.randn_like(f.layers[1].weight))
        f.layers[0] = nn.Linear(f.layers[0].in_features, 6).to(D64)
        again = f.with_divergence(t, z)
        want2 = dynamics_with_divergence(f, torch.tensor(t, dtype=D64), z)
    assert not torch.allclose(again[0], got[0])
    for a, b in zip(again, want2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("act", ["tanh", "elu", "softplus"])
def test_flat_divergence_is_with_divergence_on_the_flat_state(act):
    f = _field(act, 1, hidden=8, dtype=torch.float32)
    z, l = torch.randn(7, 2), torch.randn(7)
    t = torch.tensor(0.4)
    y = torch.cat([z.reshape(-1), l]).requires_grad_(True)
    out = f.flat_divergence(t, y)
    dz, div = f.with_divergence(t, y[:14].view(7, 2))
    assert torch.equal(out, torch.cat([dz.reshape(-1), div]))  # the same numbers, bit for bit
    g = torch.randn(21)
    (g_flat,) = torch.autograd.grad(out, y, g)
    (g_ref,) = torch.autograd.grad(torch.cat([dz.reshape(-1), div]), y, g)
    assert torch.equal(g_flat, g_ref) and torch.equal(g_flat[14:], torch.zeros(7))
    with pytest.raises(ValueError, match=r"y must be a flat \(batch \* 3,\) state"):
        f.flat_divergence(t, torch.randn(8))
    with pytest.raises(ValueError, match=r"y must be a flat"):
        f.flat_divergence(t, torch.randn(3, 3))
    with pytest.raises(ValueError, match="needs concat layers"):
        ConcatField(2, 4, 1, layer="concatsquash").flat_divergence(t, y)


def test_odeint_takes_the_flat_path_of_a_fused_cnf_with_the_same_numbers(monkeypatch):
    # a CNF's (z, l) dynamics with the fused exact trace hand odeint their flat_forward: every
    # evaluation after the checked first one goes through it, and the solve (values, step
    # counts, gradients) is what the structured path computes, bit for bit
    from genmodels.integrate import SolverStats
    from genmodels.models import cnf as cnf_mod

    f = _field("elu", 1, hidden=8, dtype=torch.float32)
    x = torch.randn(16, 2)
    runs = {}
    for path in ("flat", "structured"):
        if path == "structured":  # the dynamics without their flat_forward
            init = cnf_mod._Augmented.__init__

            def no_flat(self, *a, init=init, **k):
                init(self, *a, **k)
                self.flat_forward = None

            monkeypatch.setattr(cnf_mod._Augmented, "__init__", no_flat)
        calls, stats = [], SolverStats()
        real = ConcatField.flat_divergence

        def counted(self, t, y, real=real, calls=calls):
            calls.append(1)
            return real(self, t, y)

        monkeypatch.setattr(ConcatField, "flat_divergence", counted)
        orig = cnf_mod.odeint
        monkeypatch.setattr(
            cnf_mod, "odeint", lambda *a, orig=orig, stats=stats, **k: orig(*a, stats=stats, **k)
        )
        cnf = CNF(f, rtol=1e-4, atol=1e-4)
        z, ladj = cnf(x)
        grads = torch.autograd.grad(z.square().sum() + ladj.sum(), list(f.parameters()))
        runs[path] = (z, ladj, grads, stats.nfe, len(calls))
        monkeypatch.undo()
    (z1, l1, g1, n1, c1), (z2, l2, g2, n2, c2) = runs["flat"], runs["structured"]
    assert c1 == n1 - 1 and c2 == 0  # every evaluation but the checked first one
    assert n1 == n2 and torch.equal(z1, z2) and torch.equal(l1, l2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
