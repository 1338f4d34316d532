"""Point estimates: maximum likelihood (MLE) and maximum a posteriori (MAP).

The lecture's section 1 (Frequentist & MLE, Bayesians & MAP)::

    θ̂_mle = argmax_θ p(D|θ) = argmax_θ Σ_i log p(x_i|θ)
    θ̂_map = argmax_θ p(θ|D) = argmax_θ p(D|θ)p(θ) = argmax_θ log p(D|θ) + log p(θ)

MAP is MLE plus the log-prior, which acts as a regulariser: a Gaussian prior
N(0, τ²I) adds -|θ|²/(2τ²), i.e. ridge (L2) regularisation; a Laplace prior adds
an L1 penalty. (*Lecture slip*: the slide of the MLE line writes the estimate as
θ̂_map; here the MLE is :func:`mle` and the MAP is :func:`map_estimate`.)

Both are solved by gradient ascent (L-BFGS with a strong-Wolfe line search by
default, or Adam) on the user's log-likelihood and log-prior, which take a
parameter tensor ``theta`` of any shape and return a scalar in nats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PointEstimate", "mle", "map_estimate", "maximise"]


@dataclass
class PointEstimate:
    """The result of :func:`mle` / :func:`map_estimate`.

    Attributes:
        theta: the estimate, shape of ``theta0`` (detached).
        objective: the maximised objective at ``theta`` in nats
            (log p(D|θ) for MLE, log p(D|θ) + log p(θ) for MAP).
        n_iter: optimiser iterations taken.
        grad_norm: Euclidean norm of the objective's gradient at ``theta``.
        converged: whether ``grad_norm <= tol`` was reached.
    """

    theta: Tensor
    objective: float
    n_iter: int
    grad_norm: float
    converged: bool


def _objective_and_grad(f: Callable[[Tensor], Tensor], theta: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        t = theta.detach().requires_grad_(True)
        v = f(t)
        (g,) = torch.autograd.grad(v, t)
    return v.detach(), g.detach()


def maximise(
    objective: Callable[[Tensor], Tensor],
    theta0: Tensor,
    *,
    method: str = "lbfgs",
    steps: int = 200,
    lr: float | None = None,
    tol: float = 1e-8,
) -> PointEstimate:
    """Maximise a scalar ``objective(theta)`` by gradient ascent from ``theta0``.

    Args:
        objective: ``theta -> ()`` differentiable scalar (nats).
        theta0: starting point, any shape, floating point.
        method: ``"lbfgs"`` (strong-Wolfe line search; ``steps`` outer iterations of up
            to 20 inner ones) or ``"adam"`` (``steps`` Adam steps).
        steps: iteration budget (≥ 1).
        lr: step size (default 1.0 for L-BFGS, 1e-2 for Adam).
        tol: stop when the gradient norm is ≤ tol.

    Example::

        >>> r = maximise(lambda t: -((t - 3.0) ** 2).sum(), torch.zeros(2, dtype=torch.float64))
        >>> r.theta
        tensor([3., 3.], dtype=torch.float64)
    """
    if not isinstance(theta0, Tensor) or not theta0.is_floating_point():
        raise TypeError("theta0 must be a floating-point Tensor")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if method not in ("lbfgs", "adam"):
        raise ValueError(f"method must be 'lbfgs' or 'adam', got {method!r}")
    v0 = objective(theta0.detach())
    if not isinstance(v0, Tensor) or v0.dim() != 0:
        raise ValueError("the objective must return a scalar (0-d) tensor: the summed log-density")
    theta = torch.nn.Parameter(theta0.detach().clone())
    n_iter = 0
    if method == "lbfgs":
        opt = torch.optim.LBFGS(
            [theta],
            lr=1.0 if lr is None else lr,
            max_iter=20,
            tolerance_grad=tol,
            tolerance_change=0.0,
            history_size=50,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            loss = -objective(theta)
            loss.backward()
            return loss

        for n_iter in range(1, steps + 1):  # noqa: B007
            opt.step(closure)
            _, g = _objective_and_grad(objective, theta.detach())
            if g.norm() <= tol:
                break
    else:
        opt = torch.optim.Adam([theta], lr=1e-2 if lr is None else lr)
        for n_iter in range(1, steps + 1):  # noqa: B007
            opt.zero_grad()
            loss = -objective(theta)
            loss.backward()
            if theta.grad.norm() <= tol:
                break
            opt.step()
    value, g = _objective_and_grad(objective, theta.detach())
    if not torch.isfinite(value):
        raise FloatingPointError(f"the objective is not finite at the end ({float(value)})")
    gn = float(g.norm())
    return PointEstimate(theta.detach().clone(), float(value), n_iter, gn, gn <= tol)


def mle(
    log_likelihood: Callable[[Tensor], Tensor],
    theta0: Tensor,
    **options,
) -> PointEstimate:
    """Maximum likelihood: ``θ̂ = argmax_θ log p(D|θ) = argmax_θ Σ_i log p(x_i|θ)``.

    Args:
        log_likelihood: ``theta -> ()`` the summed log-likelihood of the data (nats).
        theta0: starting point.
        **options: ``method``, ``steps``, ``lr``, ``tol`` of :func:`maximise`.

    Example (the MLE of a Gaussian mean is the sample mean)::

        >>> x = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
        >>> ll = lambda m: torch.distributions.Normal(m, 1.0).log_prob(x).sum()
        >>> round(float(mle(ll, torch.tensor(0.0, dtype=torch.float64)).theta), 6)
        3.0
    """
    return maximise(log_likelihood, theta0, **options)


def map_estimate(
    log_likelihood: Callable[[Tensor], Tensor],
    log_prior: Callable[[Tensor], Tensor],
    theta0: Tensor,
    **options,
) -> PointEstimate:
    """Maximum a posteriori: ``θ̂ = argmax_θ log p(D|θ) + log p(θ)``.

    The evidence p(D) does not depend on θ and drops out; the log-prior is the
    regulariser (a N(0, τ²I) prior on linear-regression weights with noise σ gives
    ridge regression with λ = σ²/τ²).

    Args:
        log_likelihood: ``theta -> ()`` summed log-likelihood (nats).
        log_prior: ``theta -> ()`` log-prior density (nats).
        theta0: starting point.
        **options: ``method``, ``steps``, ``lr``, ``tol`` of :func:`maximise`.

    Example::

        >>> x = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
        >>> ll = lambda m: torch.distributions.Normal(m, 1.0).log_prob(x).sum()
        >>> lp = lambda m: torch.distributions.Normal(0.0, 1.0).log_prob(m)
        >>> round(float(map_estimate(ll, lp, torch.tensor(0.0, dtype=torch.float64)).theta), 6)
        2.25
    """
    return maximise(lambda t: log_likelihood(t) + log_prior(t), theta0, **options)
