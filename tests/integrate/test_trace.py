"""Trace estimators: exact = trace of the autograd Jacobian; Hutchinson unbiased with the
variance theory gives; fixed noise per solve; no_grad; differentiable with create_graph."""

import math

import pytest
import torch

from genmodels.integrate import (
    divergence_exact,
    divergence_hutchinson,
    dynamics_with_divergence,
    hutchinson_noise,
    odeint,
    odeint_adjoint,
)

F64 = torch.float64


def _field(D, seed=0):
    """A nonlinear, row-wise vector field f(t, z) with parameters W, b (float64)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, D, generator=g, dtype=F64).requires_grad_(True)
    b = torch.randn(D, generator=g, dtype=F64)

    def f(t, z):
        return torch.tanh(z @ W.T + b) + torch.sin(z) * z.roll(1, dims=-1) * (1.0 + t)

    return f, W, b


def _jacobian_traces(f, t, z):
    rows = [
        torch.autograd.functional.jacobian(lambda x: f(t, x[None])[0], z[i]).trace()
        for i in range(z.shape[0])
    ]
    return torch.stack(rows)


def _sym(D, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(D, D, generator=g, dtype=F64)
    return (M + M.T) / 2


@pytest.mark.parametrize("method", ["exact", "exact_batched"])
def test_exact_is_the_trace_of_the_autograd_jacobian(method):
    f, _, _ = _field(4)
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor(0.3, dtype=F64)
    want = _jacobian_traces(f, t, z)
    dz, div = dynamics_with_divergence(f, t, z, method=method)
    assert div.shape == (6,) and dz.shape == z.shape
    # Both sides sum 4 O(1) terms: round-off ~1e-15, the tolerance is far above it.
    torch.testing.assert_close(div, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(dz, f(t, z), rtol=0, atol=1e-12)
    assert not div.equal(torch.zeros_like(div))


@pytest.mark.parametrize(
    ("kind", "variance"),
    [
        # Hutchinson (1990); Avron & Toledo (2011): Var[εᵀAε] for symmetric A.
        ("gaussian", lambda A: 2 * (A**2).sum()),
        ("rademacher", lambda A: 2 * (A**2).sum() - 2 * (A.diagonal() ** 2).sum()),
    ],
)
def test_hutchinson_is_unbiased_with_the_theoretical_variance(kind, variance):
    D, n = 5, 20000
    A = _sym(D, seed=2)
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(3), dtype=F64)
    eps = hutchinson_noise((n, D), kind, generator=torch.Generator().manual_seed(4), dtype=F64)
    _, est = dynamics_with_divergence(lambda t, x: x @ A.T, 0.0, z, method="hutchinson", noise=eps)
    var = float(variance(A))
    se = math.sqrt(var / n)
    assert abs(float(est.mean()) - float(A.trace())) < 4 * se  # unbiased: within 4 std. errors
    # The sample variance of 20000 draws has a relative std. error of ~1-3% here.
    assert abs(float(est.var()) / var - 1.0) < 0.10


def test_rademacher_is_exact_for_a_diagonal_field_and_gaussian_is_not():
    # εᵀ diag(a) ε = Σ a_i ε_i² = Σ a_i when ε_i = ±1: the Rademacher variance formula's zero.
    a = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    z = torch.randn(100, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    g = torch.Generator().manual_seed(1)
    for kind, exact in (("rademacher", True), ("gaussian", False)):
        eps = hutchinson_noise(z.shape, kind, generator=g, dtype=F64)
        _, est = dynamics_with_divergence(
            lambda t, x: x * a, 0.0, z, method="hutchinson", noise=eps
        )
        assert ((est + 0.5).abs() < 1e-12).all() == exact


def test_noise_is_drawn_from_the_generator_and_fixed_per_solve():
    kw = dict(dtype=F64)
    e1 = hutchinson_noise((8, 3), "gaussian", generator=torch.Generator().manual_seed(5), **kw)
    e2 = hutchinson_noise((8, 3), "gaussian", generator=torch.Generator().manual_seed(5), **kw)
    e3 = hutchinson_noise((8, 3), "gaussian", generator=torch.Generator().manual_seed(6), **kw)
    assert e1.equal(e2) and not e1.equal(e3)
    r = hutchinson_noise((1000,), "rademacher", generator=torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    f, _, _ = _field(3)
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
    # Same noise, same operations in the same order: bit-for-bit the same estimate.
    _, d1 = dynamics_with_divergence(f, 0.1, z, method="hutchinson", noise=e1)
    _, d2 = dynamics_with_divergence(f, 0.1, z, method="hutchinson", noise=e1.clone())
    _, d3 = dynamics_with_divergence(f, 0.1, z, method="hutchinson", noise=e3)
    assert d1.equal(d2) and not torch.allclose(d1, d3)


def test_cnf_log_density_change_of_a_linear_flow():
    """d log p/dt = -tr(A) for dz/dt = Az: over [0, 1] log p changes by exactly -tr(A); with a
    fixed ε the Hutchinson ODE integrates -εᵀAε, one fixed number per row."""
    A = torch.tensor([[0.3, -1.0], [0.5, -0.8]], dtype=F64)
    z0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    eps = hutchinson_noise(
        z0.shape, "gaussian", generator=torch.Generator().manual_seed(1), dtype=F64
    )
    for method, want in (
        ("exact", -A.trace().expand(5)),
        ("hutchinson", -((eps @ A.T) * eps).sum(1)),
    ):

        def aug(t, state, method=method):
            dz, div = dynamics_with_divergence(
                lambda s, x: x @ A.T, t, state[0], method=method, noise=eps
            )
            return dz, -div

        zt, dlogp = odeint(aug, (z0, torch.zeros(5, dtype=F64)), torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(dlogp[-1], want, rtol=0, atol=1e-6)
        torch.testing.assert_close(zt[-1], z0 @ torch.linalg.matrix_exp(A).T, rtol=0, atol=1e-6)


@pytest.mark.parametrize("z_requires_grad", [False, True])
@pytest.mark.parametrize("method", ["exact", "exact_batched", "hutchinson"])
def test_works_under_no_grad_and_returns_detached(method, z_requires_grad):
    f, _, _ = _field(3)
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    eps = hutchinson_noise(z.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    _, want = dynamics_with_divergence(f, 0.0, z, method=method, noise=eps, create_graph=True)
    z.requires_grad_(z_requires_grad)
    with torch.no_grad():
        dz, div = dynamics_with_divergence(f, 0.0, z, method=method, noise=eps)
    assert not dz.requires_grad and not div.requires_grad
    torch.testing.assert_close(div, want.detach(), rtol=0, atol=1e-12)
    # create_graph=False with grad enabled: detached too.
    dz, div = dynamics_with_divergence(f, 0.0, z, method=method, noise=eps, create_graph=False)
    assert not dz.requires_grad and not div.requires_grad


@pytest.mark.parametrize("method", ["exact", "exact_batched", "hutchinson"])
def test_create_graph_differentiates_the_divergence(method):
    """∂/∂W and ∂/∂z of Σ_b div_b against autograd of the closed form: for f = tanh(Wz + b),
    ∂f/∂z = diag(1 - tanh²(u)) W with u = Wz + b, so the trace is Σ_i (1 - tanh²(u_i)) W_ii
    and Hutchinson's estimate is Σ_i (1 - tanh²(u_i)) ε_i (Wε)_i."""
    g = torch.Generator().manual_seed(0)
    D = 4
    W = torch.randn(D, D, generator=g, dtype=F64).requires_grad_(True)
    b = torch.randn(D, generator=g, dtype=F64)
    z = torch.randn(5, D, generator=g, dtype=F64).requires_grad_(True)
    eps = hutchinson_noise(z.shape, "gaussian", generator=g, dtype=F64)

    def f(t, x):
        return torch.tanh(x @ W.T + b)

    _, div = dynamics_with_divergence(f, 0.0, z, method=method, noise=eps, create_graph=True)
    got = torch.autograd.grad(div.sum(), (W, z))
    s = 1 - torch.tanh(z @ W.T + b) ** 2
    closed = (s * (eps @ W.T) * eps).sum(1) if method == "hutchinson" else s @ W.diagonal()
    torch.testing.assert_close(div, closed, rtol=0, atol=1e-12)
    want = torch.autograd.grad(closed.sum(), (W, z))
    for a, w in zip(got, want, strict=True):
        assert w.abs().max() > 0.1
        torch.testing.assert_close(a, w, rtol=0, atol=1e-10)


def test_low_level_functions_and_a_field_independent_of_z():
    z = torch.randn(3, 2, dtype=F64, requires_grad=True)
    eps = hutchinson_noise(z.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = torch.stack([z[:, 0] * z[:, 1], z[:, 1] ** 2], 1)
    torch.testing.assert_close(divergence_exact(out, z), 3 * z[:, 1].detach(), rtol=0, atol=1e-12)
    est = divergence_hutchinson(out, z, eps)
    want = eps[:, 0] ** 2 * z[:, 1] + eps[:, 0] * eps[:, 1] * z[:, 0] + 2 * eps[:, 1] ** 2 * z[:, 1]
    torch.testing.assert_close(est, want.detach(), rtol=0, atol=1e-12)
    # dz/dt = c(t) does not depend on z: the divergence is 0
    _, div = dynamics_with_divergence(lambda t, x: torch.ones_like(x) * t, 2.0, z.detach())
    assert div.equal(torch.zeros(3, dtype=F64))


def test_bad_input():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="method"):
        dynamics_with_divergence(lambda t, x: x, 0.0, z, method="trace")
    with pytest.raises(ValueError, match="noise"):
        dynamics_with_divergence(lambda t, x: x, 0.0, z, method="hutchinson")
    with pytest.raises(ValueError, match="kind"):
        hutchinson_noise((2, 3), "uniform")
    with pytest.raises(ValueError, match="graph"):
        divergence_exact(z * 2, z)
    with pytest.raises(ValueError, match="shape"):
        divergence_hutchinson(z.requires_grad_() * 2, z, torch.zeros(3))


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_cnf_gradients_adjoint_equal_backprop(method):
    """A CNF's augmented dynamics with the default create_graph (= grad mode): the adjoint's
    backward pass re-evaluates them with grad enabled and the same fixed ε, so its parameter
    gradient equals backprop through the solver (both solves at rtol = atol = 1e-10)."""

    class Aug(torch.nn.Module):
        def __init__(self, eps):
            super().__init__()
            self.A = torch.nn.Parameter(torch.tensor([[0.3, -1.0], [0.5, -0.8]], dtype=F64))
            self.eps = eps

        def forward(self, t, state):
            def f(s, x):
                return torch.tanh(x @ self.A.T)

            dz, div = dynamics_with_divergence(f, t, state[0], method=method, noise=self.eps)
            return dz, -div

    z0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    eps = hutchinson_noise(
        z0.shape, "gaussian", generator=torch.Generator().manual_seed(1), dtype=F64
    )
    aug = Aug(eps)
    grads = []
    for solve in (odeint, odeint_adjoint):
        zt, dlogp = solve(
            aug,
            (z0, torch.zeros(5, dtype=F64)),
            torch.tensor([0.0, 1.0], dtype=F64),
            rtol=1e-10,
            atol=1e-10,
        )
        (dlogp[-1].sum() + zt[-1].sum()).backward()
        grads.append(aug.A.grad.clone())
        aug.A.grad = None
    assert grads[0].abs().max() > 0.1
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-6)
