"""MLE and MAP against least squares and ridge; the closed-form regression itself vs scipy."""

import numpy as np
import pytest
import torch
from scipy import stats

from genmodels.inference.linear_gaussian import BayesianLinearRegression
from genmodels.inference.point import map_estimate, maximise, mle


def test_closed_forms_agree_with_scipy(blr):
    X, y = blr.X.numpy(), blr.y.numpy()
    cov = blr.noise_std**2 * np.eye(len(y)) + blr.prior_std**2 * X @ X.T
    ref = stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(y)
    assert abs(float(blr.log_evidence()) - ref) < 1e-9
    # Bayes' rule at any θ: log p(θ|D) = log p(θ, D) - log p(D)
    theta = torch.tensor([[0.3, -1.0, 2.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    lhs = blr.posterior().log_prob(theta)
    torch.testing.assert_close(lhs, blr.log_joint(theta) - blr.log_evidence(), rtol=0, atol=1e-9)


def _hessian_min_eig(blr):
    """λ_min of -∇²log p(D|θ) = XᵀX/σ²: the objective's strong-convexity constant."""
    return float(torch.linalg.eigvalsh(blr.X.T @ blr.X).min()) / blr.noise_std**2


def test_mle_is_least_squares(blr):
    # tol is relative to |f| (~44 nats here): converged means |∇f| <= 1e-9 * 44 ≈ 4e-8, far
    # above the gradient's round-off (~1e-14); a line search stalled at the round-off floor of
    # f (it measured 7e-9 on one CPU, 1e-10 on another) ends on the function-change test.
    r = mle(blr.log_likelihood, torch.zeros(3, dtype=torch.float64), tol=1e-9)
    assert r.converged and r.stop in ("gradient", "function change")
    ls = blr.least_squares()
    # Strong convexity (exact for this quadratic): |θ - θ*| <= |∇f(θ)| / λ_min.
    assert float((r.theta - ls).norm()) <= r.grad_norm / _hessian_min_eig(blr) + 1e-12
    torch.testing.assert_close(r.theta, ls, rtol=0, atol=1e-7)
    assert abs(r.objective - float(blr.log_likelihood(ls))) < 1e-9


def test_convergence_is_judged_against_the_objectives_scale(blr):
    """A tolerance below the round-off floor ends on the function-change test within a few
    iterations (not by spending the budget), and scaling the objective by 1e6 (a million times
    the data) does not change the verdict: both fail with an absolute gradient test."""
    ls = blr.least_squares()
    r = mle(blr.log_likelihood, torch.zeros(3, dtype=torch.float64), tol=1e-30, steps=50)
    assert r.converged and r.stop == "function change" and r.n_iter < 50
    torch.testing.assert_close(r.theta, ls, rtol=0, atol=1e-7)
    big = mle(lambda t: 1e6 * blr.log_likelihood(t), torch.zeros(3, dtype=torch.float64))
    assert big.converged and big.grad_norm > 1e-8  # above the default tol 1e-8 in absolute terms
    assert float((big.theta - ls).norm()) <= big.grad_norm / (1e6 * _hessian_min_eig(blr)) + 1e-12
    torch.testing.assert_close(big.theta, ls, rtol=0, atol=1e-7)
    # Adam has no function-change test: an unreachable tolerance spends the budget.
    a = maximise(
        lambda t: -((t - 3.0) ** 2).sum(),
        torch.zeros(2, dtype=torch.float64),
        method="adam",
        steps=5,
        tol=1e-30,
    )
    assert not a.converged and a.stop == "steps" and a.n_iter == 5


def test_map_is_ridge_and_differs_from_mle(blr):
    r = map_estimate(blr.log_likelihood, blr.log_prior, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(r.theta, blr.ridge(), rtol=0, atol=1e-7)
    torch.testing.assert_close(r.theta, blr.posterior().mean, rtol=0, atol=1e-7)
    assert (r.theta - blr.least_squares()).norm() > 0.05  # the prior regularises
    assert r.theta.norm() < blr.least_squares().norm()  # ...towards zero
    want = float(blr.log_likelihood(r.theta) + blr.log_prior(r.theta))
    assert abs(r.objective - want) < 1e-9


def test_adam_reaches_the_same_map(blr):
    r = map_estimate(
        blr.log_likelihood,
        blr.log_prior,
        torch.zeros(3, dtype=torch.float64),
        method="adam",
        steps=3000,
        lr=0.05,
    )
    torch.testing.assert_close(r.theta, blr.ridge(), rtol=0, atol=1e-3)


def test_weak_prior_map_tends_to_mle(blr):
    wide = BayesianLinearRegression(blr.X, blr.y, blr.noise_std, prior_std=1e4)
    r = map_estimate(wide.log_likelihood, wide.log_prior, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(r.theta, blr.least_squares(), rtol=0, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="scalar"):
        maximise(lambda t: -(t**2), torch.zeros(2))
    with pytest.raises(ValueError, match="method"):
        maximise(lambda t: -(t**2).sum(), torch.zeros(2), method="sgd")
    with pytest.raises(ValueError, match="steps"):
        maximise(lambda t: -(t**2).sum(), torch.zeros(2), steps=0)
    with pytest.raises(TypeError):
        maximise(lambda t: -(t**2).sum(), torch.zeros(2, dtype=torch.int64))
