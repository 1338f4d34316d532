"""Variational inference: the ELBO, its analytic-KL form, the IWAE bound, and a fitter.

The lecture's section 1 (Variational Inference)::

    q* = argmin_{q ∈ Q} KL[q(θ) || p(θ|D)]
    KL[q(θ) || p(θ|D)] = E_q[log q(θ)] - E_q[log p(θ, D)] + log p(D)
    log p(D) ≥ ELBO(q) = E_q[log p(θ, D)] - E_q[log q(θ)]

(*Lecture slip*: the slide writes the bound's left side as log p(x); it is the
evidence log p(D).) Maximising the ELBO over q minimises the KL to the posterior;
the gap log p(D) - ELBO(q) is exactly KL[q || p(θ|D)].

Estimators (all in nats, all use the reparameterisation θ = μ + Lε of Kingma &
Welling 2014, so their gradients flow into q's parameters):

- :func:`elbo`: Monte Carlo, (1/S) Σ_s [log p(θ_s, D) - log q(θ_s)].
- :func:`elbo_analytic_kl`: E_q[log p(D|θ)] - KL(q || p(θ)) with the KL in closed
  form (torch.distributions.kl_divergence), when the prior allows it.
- :func:`iwae_bound`: the importance-weighted bound of Burda et al. 2016,
  L_K = E[log (1/K) Σ_k p(θ_k, D)/q(θ_k)]; L_1 = ELBO ≤ L_K ≤ L_{K+1} ≤ log p(D).

Shapes: ``log_joint`` (and ``log_likelihood``) take θ of shape
``(*sample_shape, *batch_shape, *event_shape)`` and return
``(*sample_shape, *batch_shape)``; for a plain parameter vector that is
``(S, d) -> (S,)``. A batch shape lets one call bound many data points at once
(an amortised q(z|x) in a VAE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from .families import as_distribution, rsample

__all__ = ["elbo", "elbo_analytic_kl", "iwae_bound", "fit_vi", "VIResult"]

LogDensity = Callable[[Tensor], Tensor]


def _check_n(n: int, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _call(f: LogDensity, theta: Tensor, dist: Distribution, lead: tuple[int, ...], name: str):
    out = f(theta)
    want = torch.Size(lead) + dist.batch_shape
    if not isinstance(out, Tensor) or out.shape != want:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out)
        raise ValueError(
            f"{name}(θ) must return shape {tuple(want)} (sample and batch dims) for θ of shape "
            f"{tuple(theta.shape)}, got {got}"
        )
    return out


def _as_mvn(d: Distribution) -> Distribution:
    """A diagonal Gaussian Independent(Normal, 1) as the equal MultivariateNormal."""
    if (
        isinstance(d, Independent)
        and d.reinterpreted_batch_ndims == 1
        and isinstance(d.base_dist, Normal)
    ):
        return MultivariateNormal(d.base_dist.loc, scale_tril=torch.diag_embed(d.base_dist.scale))
    return d


def _kl(q: Distribution, p: Distribution) -> Tensor:
    """Closed-form KL(q || p); mixes of diagonal and full Gaussians are allowed."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    try:
        return kl_divergence(_as_mvn(q), _as_mvn(p))
    except NotImplementedError as e:
        raise TypeError(
            f"no closed-form KL({type(q).__name__} || {type(p).__name__}); use elbo()"
        ) from e


def elbo(
    log_joint: LogDensity,
    q: Distribution | nn.Module,
    n_samples: int = 1,
    *,
    generator: torch.Generator | None = None,
    reduce: bool = True,
) -> Tensor:
    r"""Monte-Carlo ELBO: ``(1/S) Σ_s log p(θ_s, D) - log q(θ_s)``, θ_s ~ q (nats).

    Args:
        log_joint: θ ``(S, *batch, *event) -> (S, *batch)``, log p(θ, D) in nats.
        q: a Distribution with rsample, or a module with ``distribution()``.
        n_samples: S ≥ 1.
        generator: source of ε.
        reduce: average over the S samples (shape ``batch_shape``); else ``(S, *batch)``.

    Example::

        >>> from torch.distributions import Normal, Independent
        >>> q = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
        >>> float(elbo(q.log_prob, q, 4))  # q equals the unnormalised target: log Z = 0
        0.0
    """
    _check_n(n_samples, "n_samples")
    dist = as_distribution(q)
    theta = rsample(dist, (n_samples,), generator)
    vals = _call(log_joint, theta, dist, (n_samples,), "log_joint") - dist.log_prob(theta)
    return vals.mean(0) if reduce else vals


def elbo_analytic_kl(
    log_likelihood: LogDensity,
    q: Distribution | nn.Module,
    prior: Distribution,
    n_samples: int = 1,
    *,
    generator: torch.Generator | None = None,
    reduce: bool = True,
) -> Tensor:
    r"""ELBO with the KL in closed form: ``(1/S) Σ_s log p(D|θ_s) - KL(q || p(θ))`` (nats).

    Same expectation as :func:`elbo`, usually lower variance. Needs a registered
    ``kl_divergence(q, prior)`` (Gaussian/Gaussian and many more).

    Args:
        log_likelihood: θ ``(S, *batch, *event) -> (S, *batch)``, log p(D|θ) in nats.
        q: the variational distribution (or a module with ``distribution()``).
        prior: p(θ), a Distribution whose KL from q is known in closed form.
        n_samples, generator, reduce: as in :func:`elbo`.

    Example::

        >>> from torch.distributions import Normal, Independent
        >>> q = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
        >>> float(elbo_analytic_kl(lambda t: torch.zeros(t.shape[:-1]), q, q, 3))
        0.0
    """
    _check_n(n_samples, "n_samples")
    dist = as_distribution(q)
    kl = _kl(dist, prior)
    theta = rsample(dist, (n_samples,), generator)
    vals = _call(log_likelihood, theta, dist, (n_samples,), "log_likelihood") - kl
    return vals.mean(0) if reduce else vals


def iwae_bound(
    log_joint: LogDensity,
    q: Distribution | nn.Module,
    k: int,
    n_samples: int = 1,
    *,
    generator: torch.Generator | None = None,
    reduce: bool = True,
) -> Tensor:
    r"""Importance-weighted bound (Burda et al. 2016), in nats.

        L_K = log (1/K) Σ_{k=1}^K w_k,   w_k = p(θ_k, D) / q(θ_k),   θ_k ~ q

    computed stably with logsumexp. L_1 is the ELBO; E[L_K] increases with K to
    log p(D).

    Args:
        log_joint: θ ``(K, S, *batch, *event) -> (K, S, *batch)``, log p(θ, D) in nats.
        q: the proposal (a Distribution with rsample, or a module with ``distribution()``).
        k: K ≥ 1 importance samples per estimate.
        n_samples: S independent estimates.
        generator: source of ε.
        reduce: average the S estimates (shape ``batch_shape``); else ``(S, *batch)``.

    Example::

        >>> from torch.distributions import Normal, Independent
        >>> q = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
        >>> float(iwae_bound(lambda t: q.log_prob(t) + 1.0, q, 8))  # log Z = 1
        1.0
    """
    _check_n(k, "k")
    _check_n(n_samples, "n_samples")
    dist = as_distribution(q)
    theta = rsample(dist, (k, n_samples), generator)
    log_w = _call(log_joint, theta, dist, (k, n_samples), "log_joint") - dist.log_prob(theta)
    vals = torch.logsumexp(log_w, 0) - math.log(k)
    return vals.mean(0) if reduce else vals


@dataclass
class VIResult:
    """What :func:`fit_vi` returns.

    Attributes:
        q: the fitted family (the module passed in, trained in place).
        history: the objective estimate (nats) at every step.
        n_evals: evaluations of ``log_joint`` at single θ's (steps × samples × K).
    """

    q: nn.Module
    history: list[float] = field(default_factory=list)
    n_evals: int = 0


def fit_vi(
    log_joint: LogDensity,
    q: nn.Module,
    steps: int,
    *,
    n_samples: int = 16,
    objective: str = "elbo",
    k: int = 1,
    lr: float = 1e-2,
    lr_final: float = 1e-3,
    generator: torch.Generator | None = None,
) -> VIResult:
    r"""Fit q by stochastic gradient ascent on the ELBO (or the IWAE bound) with Adam.

    Each step draws ``n_samples`` reparameterised θ ~ q (×K for IWAE), evaluates the
    objective and takes one Adam step; the learning rate decays geometrically from
    ``lr`` to ``lr_final`` over the run, so the iterate settles near the optimum.

    Args:
        log_joint: θ ``(S, d) -> (S,)`` (more leading dims allowed), log p(θ, D) in nats.
        q: a module with ``distribution()`` (:class:`MeanFieldGaussian`,
            :class:`FullRankGaussian`, a flow), trained in place.
        steps: number of Adam steps.
        n_samples: Monte-Carlo samples per step.
        objective: ``"elbo"`` or ``"iwae"`` (then ``k`` importance samples).
        lr, lr_final: the learning-rate schedule's ends.
        generator: source of the noise.

    Example::

        >>> from genmodels.inference.families import MeanFieldGaussian
        >>> g = torch.Generator().manual_seed(0)
        >>> r = fit_vi(lambda t: -0.5 * ((t - 2.0) ** 2).sum(-1), MeanFieldGaussian(2), 300,
        ...            lr=0.05, generator=g)
        >>> bool(((r.q.loc - 2.0).abs() < 0.1).all())
        True
    """
    _check_n(steps, "steps")
    _check_n(n_samples, "n_samples")
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
    _check_n(k, "k")
    if not (lr > 0 and lr_final > 0):
        raise ValueError("lr and lr_final must be positive")
    params = [p for p in q.parameters() if p.requires_grad]
    if not params:
        raise ValueError("q has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    gamma = (lr_final / lr) ** (1.0 / max(steps - 1, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    result = VIResult(q)
    for _ in range(steps):
        opt.zero_grad()
        if objective == "elbo":
            value = elbo(log_joint, q, n_samples, generator=generator)
        else:
            value = iwae_bound(log_joint, q, k, n_samples, generator=generator)
        if value.dim() != 0:
            raise ValueError("fit_vi needs an unbatched q (event shape only)")
        if not torch.isfinite(value):
            raise FloatingPointError(f"the {objective} estimate is not finite at step {_}")
        (-value).backward()
        opt.step()
        sched.step()
        result.history.append(float(value.detach()))
        result.n_evals += n_samples * (k if objective == "iwae" else 1)
    return result
