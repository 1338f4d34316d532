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

Convergence is judged relative to the objective's scale, as optimisation libraries do
(scipy's L-BFGS-B: a gradient test beside the relative function-change test
``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol``): ``|∇f| <= tol * max(1, |f|)``, or, for
L-BFGS, no relative progress beyond ``ftol`` over an iteration. An absolute gradient
tolerance near the round-off floor of ``f`` makes ``converged`` depend on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PointEstimate", "mle", "map_estimate", "maximise"]


def _gradient_test(value: Tensor, grad: Tensor, tol: float) -> bool:
    """``|∇f| <= tol * max(1, |f|)``: the gradient measured against the objective's scale."""
    return float(grad.norm()) <= tol * max(1.0, abs(float(value)))


def _function_change_test(f_prev: float, f_new: float, ftol: float) -> bool:
    """scipy L-BFGS-B's test on the minimised ``f``: ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1)
    <= ftol``."""
    return (f_prev - f_new) / max(abs(f_prev), abs(f_new), 1.0) <= ftol


@dataclass
class PointEstimate:
    """The result of :func:`mle` / :func:`map_estimate`.

    Attributes:
        theta: the estimate, shape of ``theta0`` (detached).
        objective: the maximised objective at ``theta`` in nats
            (log p(D|θ) for MLE, log p(D|θ) + log p(θ) for MAP).
        n_iter: optimiser iterations taken.
        grad_norm: Euclidean norm of the objective's gradient at ``theta``.
        converged: whether a convergence test of :func:`maximise` passed (see ``stop``).
        stop: why the iteration stopped: ``"gradient"`` (``grad_norm <= tol * max(1,
            |objective|)``), ``"function change"`` (L-BFGS: the relative change of the
            objective over an iteration ``<= ftol``) or ``"steps"`` (budget spent; not
            converged).
    """

    theta: Tensor
    objective: float
    n_iter: int
    grad_norm: float
    converged: bool
    stop: str = "steps"


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
    ftol: float | None = None,
) -> PointEstimate:
    """Maximise a scalar ``objective(theta)`` by gradient ascent from ``theta0``.

    Args:
        objective: ``theta -> ()`` differentiable scalar (nats).
        theta0: starting point, any shape, floating point.
        method: ``"lbfgs"`` (strong-Wolfe line search; ``steps`` outer iterations of up
            to 20 inner ones) or ``"adam"`` (``steps`` Adam steps).
        steps: iteration budget (≥ 1).
        lr: step size (default 1.0 for L-BFGS, 1e-2 for Adam).
        tol: gradient test, relative to the objective's scale: stop (converged) when
            ``|∇f(θ)| <= tol * max(1, |f(θ)|)``. An absolute test would ask for digits that
            do not exist: the gradient of a sum of n log-densities carries round-off
            proportional to the sum's magnitude, and L-BFGS's line search cannot resolve
            changes in ``f`` below ``eps * |f|``, so the smallest gradient it reaches
            depends on the CPU's rounding (a user measured 7e-9 where another machine
            reached 1e-10).
        ftol: L-BFGS only, scipy L-BFGS-B's function-change test: stop (converged) when an
            iteration (up to 20 inner steps) improves the objective by at most
            ``ftol * max(|f_k|, |f_k+1|, 1)``, i.e. when no further progress is possible
            in this precision. Default ``10 * eps`` of ``theta0``'s dtype, scipy's
            ``factr = 10`` ("extremely high accuracy"; scipy's own default is ``factr =
            1e7``). Not used with Adam, whose steps need not decrease ``f``.

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
    if ftol is None:
        ftol = 10 * torch.finfo(theta0.dtype).eps
    theta = torch.nn.Parameter(theta0.detach().clone())
    n_iter = 0
    stop = "steps"
    if method == "lbfgs":
        opt = torch.optim.LBFGS(
            [theta],
            lr=1.0 if lr is None else lr,
            max_iter=20,
            # torch's own tests are absolute; ours (below, after each iteration) decide.
            tolerance_grad=0.0,
            tolerance_change=0.0,
            history_size=50,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            loss = -objective(theta)
            loss.backward()
            return loss

        f_prev = -float(v0.detach())
        for n_iter in range(1, steps + 1):  # noqa: B007
            opt.step(closure)
            v, g = _objective_and_grad(objective, theta.detach())
            if _gradient_test(v, g, tol):
                stop = "gradient"
                break
            if _function_change_test(f_prev, -float(v), ftol):
                stop = "function change"
                break
            f_prev = -float(v)
    else:
        opt = torch.optim.Adam([theta], lr=1e-2 if lr is None else lr)
        for n_iter in range(1, steps + 1):  # noqa: B007
            opt.zero_grad()
            loss = -objective(theta)
            loss.backward()
            if _gradient_test(loss.detach(), theta.grad, tol):
                stop = "gradient"
                break
            opt.step()
    value, g = _objective_and_grad(objective, theta.detach())
    if not torch.isfinite(value):
        raise FloatingPointError(f"the objective is not finite at the end ({float(value)})")
    if stop == "steps" and _gradient_test(value, g, tol):
        stop = "gradient"
    return PointEstimate(
        theta.detach().clone(), float(value), n_iter, float(g.norm()), stop != "steps", stop
    )


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
