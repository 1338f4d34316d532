"""Markov chain Monte Carlo: unadjusted Langevin (ULA), MALA and HMC.

The lecture (section 1) contrasts variational inference with MCMC, which draws
samples from an *unnormalised* posterior; section 6 uses Langevin dynamics to
sample from a density known only through its score ∇log p. This module is the
library's one home of those samplers: plain functions vectorised over many
independent chains, with explicit randomness (``generator=``).

One argument order for all three: ``sampler(x0, step_size, n_steps, *, target...)``
with the target given by keyword, exactly one of

- ``log_prob=``: ``x -> (chains,)``, log p up to an additive constant (nats);
- ``energy=``: ``x -> (chains,)``, an energy E with p ∝ e^{-E/T} (the lecture's
  Boltzmann distribution);
- ``score=`` (:func:`ula` only, which needs no density values): ``x -> ∇log p(x)`` of
  the shape of ``x``, e.g. a trained score network;

and ``temperature=T`` (default 1) targets p^{1/T}: e^{-E/T} for an energy, log p / T and
∇log p / T for a log-density or a score. Shapes: ``x0`` is ``(chains, *event_shape)``.
Every sampler returns an :class:`MCMCResult`.

Example::

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> log_p = lambda x: -0.5 * (x**2).sum(-1)
    >>> r = mala(torch.zeros(100, 2), step_size=0.5, n_steps=50, log_prob=log_p, generator=g)
    >>> r.x.shape, r.chain.shape
    (torch.Size([100, 2]), torch.Size([50, 100, 2]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MCMCResult", "ula", "mala", "hmc", "NonFiniteError"]

LogProb = Callable[[Tensor], Tensor]
Score = Callable[[Tensor], Tensor]
Energy = Callable[[Tensor], Tensor]


class NonFiniteError(FloatingPointError, ValueError):
    """The log-density or its gradient was NaN or infinite during sampling."""


@dataclass
class MCMCResult:
    """What a sampler returns.

    Attributes:
        x: final states, ``(chains, *event_shape)``.
        chain: the kept states, ``(n_steps // thin, chains, *event_shape)``, or ``None``
            when ``keep_chain=False``.
        accept_rate: fraction of accepted proposals per chain, ``(chains,)``
            (all ones for ULA, which never rejects).
        mean_accept_prob: mean Metropolis–Hastings acceptance probability
            ``min(1, ratio)`` over chains and steps (1.0 for ULA).
        n_evals: evaluations of the log-density/score (each with its gradient) per chain,
            including the initial one.
    """

    x: Tensor
    chain: Tensor | None
    accept_rate: Tensor
    mean_accept_prob: float
    n_evals: int


# ---------------------------------------------------------------------------
# checks and helpers


def _check_x0(x0: Tensor) -> None:
    if not isinstance(x0, Tensor):
        raise TypeError(f"x0 must be a Tensor of shape (chains, *event_shape), got {type(x0)}")
    if x0.dim() < 2:
        raise ValueError(
            f"x0 must have shape (chains, *event_shape) with at least one event dimension, "
            f"got shape {tuple(x0.shape)}; use x0[:, None] for scalar targets"
        )
    if not x0.is_floating_point():
        raise TypeError(f"x0 must be a floating-point tensor, got dtype {x0.dtype}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or infinite values")


def _check_steps(n_steps: int, thin: int) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
        raise ValueError(f"thin must be a positive integer, got {thin!r}")


def _step_size(step_size: float | Tensor, x0: Tensor, name: str = "step_size") -> Tensor:
    """A positive step size as a tensor broadcastable to x0: scalar or one per chain."""
    eps = torch.as_tensor(step_size, dtype=x0.dtype, device=x0.device)
    if eps.dim() == 0:
        eps = eps.reshape(1)
    if eps.dim() != 1 or eps.shape[0] not in (1, x0.shape[0]):
        raise ValueError(
            f"{name} must be a positive number or a tensor of shape (chains,) = "
            f"({x0.shape[0]},), got shape {tuple(eps.shape)}"
        )
    if not torch.isfinite(eps).all() or (eps <= 0).any():
        raise ValueError(f"{name} must be positive and finite, got {step_size!r}")
    return eps.reshape(-1, *([1] * (x0.dim() - 1)))


def _sum_event(t: Tensor) -> Tensor:
    """Sum over all but the chain dimension: (chains, *event) -> (chains,)."""
    return t.reshape(t.shape[0], -1).sum(-1)


def _check_value(lp: Tensor, x: Tensor, step: int, what: str = "log_prob") -> None:
    if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
        shape = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp)
        raise ValueError(
            f"{what}(x) must return one value per chain, shape ({x.shape[0]},), got {shape} "
            f"for x of shape {tuple(x.shape)}"
        )
    if not torch.isfinite(lp).all():
        bad = int((~torch.isfinite(lp)).sum())
        raise NonFiniteError(
            f"{what} returned NaN or infinite values for {bad} of {x.shape[0]} chains at step "
            f"{step}; reduce the step size or check the log-density's support"
        )


def _value_and_grad(log_prob: LogProb, x: Tensor, step: int) -> tuple[Tensor, Tensor]:
    """log p(x) (chains,) and ∇log p(x) (chains, *event), both detached."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_prob(xg)
        _check_value(lp, x, step)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    if not torch.isfinite(grad).all():
        raise NonFiniteError(f"the gradient of log_prob is NaN or infinite at step {step}")
    return lp.detach(), grad.detach()


def _score_of(score: Score, x: Tensor, step: int) -> Tensor:
    s = score(x)
    if not isinstance(s, Tensor) or s.shape != x.shape:
        shape = tuple(s.shape) if isinstance(s, Tensor) else type(s)
        raise ValueError(f"score(x) must return the shape of x {tuple(x.shape)}, got {shape}")
    if not torch.isfinite(s).all():
        raise NonFiniteError(f"score returned NaN or infinite values at step {step}")
    return s.detach()


def _target(
    name: str,
    x0,
    log_prob: LogProb | None,
    energy: Energy | None,
    score: Score | None,
    temperature: float,
) -> tuple[LogProb | None, Score | None]:
    """The tempered target as ``(log_prob, score)``, one of them None (see the module)."""
    if callable(x0):
        raise TypeError(
            f"{name}(x0, step_size, n_steps, *, log_prob=|energy=|score=...): the first "
            f"argument is the initial state; give the target by keyword"
        )
    given = (("log_prob", log_prob), ("energy", energy), ("score", score))
    given = [k for k, v in given if v is not None]
    allowed = "log_prob=, energy= or score=" if name == "ula" else "log_prob= or energy="
    if len(given) != 1:
        raise ValueError(f"{name}: give exactly one of {allowed}; got {given or 'none'}")
    T = temperature
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not 0 < T < float("inf"):
        raise ValueError(f"{name}: temperature must be a positive finite number, got {T!r}")
    T = float(T)
    if energy is not None:
        return (lambda x: energy(x) / -T), None
    if log_prob is not None:
        return (log_prob if T == 1.0 else (lambda x: log_prob(x) / T)), None
    return None, (score if T == 1.0 else (lambda x: score(x) / T))


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


def _uniform(n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, dtype=x.dtype, device=x.device, generator=generator)


class _Recorder:
    def __init__(self, x0: Tensor, n_steps: int, thin: int, keep: bool):
        self.thin, self.keep = thin, keep
        n = n_steps // thin
        self.chain = x0.new_empty((n, *x0.shape)) if keep else None
        self.accepted = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        self.prob_sum = 0.0

    def record(self, t: int, x: Tensor) -> None:
        if self.keep and (t + 1) % self.thin == 0:
            self.chain[(t + 1) // self.thin - 1] = x

    def result(self, x: Tensor, n_steps: int, n_evals: int) -> MCMCResult:
        denom = max(n_steps, 1)
        mean_p = self.prob_sum / denom if n_steps else float("nan")
        return MCMCResult(x, self.chain, self.accepted / denom, mean_p, n_evals)


# ---------------------------------------------------------------------------
# the samplers


@torch.no_grad()
def ula(
    x0: Tensor,
    step_size: float | Tensor,
    n_steps: int,
    *,
    log_prob: LogProb | None = None,
    energy: Energy | None = None,
    score: Score | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    thin: int = 1,
    keep_chain: bool = True,
) -> MCMCResult:
    r"""Unadjusted Langevin algorithm: ``x' = x + (ε/2) ∇log p(x) + √ε z``, z ~ N(0, I).

    The Euler–Maruyama discretisation of the Langevin diffusion
    dx = ½∇log p(x) dt + dW, whose stationary law is p (Roberts & Tweedie 1996;
    used for sampling with a learned score by Song & Ermon 2019). For the Boltzmann
    target p ∝ e^{-E/T} of an ``energy`` at ``temperature`` T this is the physicists'
    overdamped Langevin step x' = x - Δt ∇E(x) + √(2TΔt) z with Δt = εT/2.

    *Lecture slips* (section 6): the slides write x_{t+Δt} = x_t - Δt ∇E + Δt R and
    x_{t+Δt} = x_t - Δt ∇log p + Δt R. The second drops the sign (it climbs *down*
    the density) and both drop the square root on the noise scale (with Δt R the
    noise vanishes faster than the drift as Δt → 0 and the chain collapses onto a
    mode instead of sampling p). This function implements the correct form above.

    ULA never rejects, so its stationary law is biased by O(ε): for a Gaussian target
    N(0, P⁻¹) it is N(0, (P(I - εP/4))⁻¹) for ε < 4/λ_max(P). Use :func:`mala` for an
    exact (Metropolis-adjusted) chain.

    Args:
        x0: initial states, ``(chains, *event_shape)``.
        step_size: ε > 0, a number or a ``(chains,)`` tensor.
        n_steps: number of updates.
        log_prob: ``x -> (chains,)`` unnormalised log-density (its autograd gradient is used),
        energy: or ``x -> (chains,)`` an energy, p ∝ e^{-E/T},
        score: or ``x -> ∇log p(x)`` of the shape of x (e.g. a trained score network);
            give exactly one of the three.
        temperature: T > 0; the chain targets p^{1/T} (e^{-E/T} for an energy).
        generator: source of the Gaussian noise.
        thin: keep every ``thin``-th state in ``chain``.
        keep_chain: store the trajectory (set False for large images).

    Returns:
        :class:`MCMCResult` (``accept_rate`` is all ones).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> r = ula(torch.zeros(1000, 2), 0.1, 100, score=lambda x: -x, generator=g)
        >>> r.x.shape
        torch.Size([1000, 2])
    """
    log_prob, score = _target("ula", x0, log_prob, energy, score, temperature)
    _check_x0(x0)
    _check_steps(n_steps, thin)
    eps = _step_size(step_size, x0)
    rec = _Recorder(x0, n_steps, thin, keep_chain)

    def grad_at(x: Tensor, step: int) -> Tensor:
        if score is not None:
            return _score_of(score, x, step)
        return _value_and_grad(log_prob, x, step)[1]

    x = x0.detach().clone()
    for t in range(n_steps):
        g = grad_at(x, t)
        x = x + 0.5 * eps * g + eps.sqrt() * _randn_like(x, generator)
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"ula: the state became NaN or infinite at step {t}")
        rec.record(t, x)
    rec.accepted += n_steps
    rec.prob_sum = float(n_steps)
    return rec.result(x, n_steps, n_steps)


@torch.no_grad()
def mala(
    x0: Tensor,
    step_size: float | Tensor,
    n_steps: int,
    *,
    log_prob: LogProb | None = None,
    energy: Energy | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    thin: int = 1,
    keep_chain: bool = True,
) -> MCMCResult:
    r"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996).

    Propose with one ULA step, y = x + (ε/2)∇log p(x) + √ε z, and accept with
    probability

        α = min(1, p(y) q(x|y) / (p(x) q(y|x))),
        q(y|x) = N(y; x + (ε/2)∇log p(x), εI),

    so that p is exactly invariant whatever ε.

    Args:
        x0: initial states, ``(chains, *event_shape)``.
        step_size: ε > 0, a number or a ``(chains,)`` tensor.
        n_steps: number of Metropolis–Hastings steps.
        log_prob, energy, temperature: the target, as in :func:`ula` (no ``score``: the
            acceptance ratio needs density values).
        generator: source of the proposals and the accept/reject uniforms.
        thin, keep_chain: as in :func:`ula`.

    Returns:
        :class:`MCMCResult`; ``n_evals = n_steps + 1`` (one gradient evaluation per step).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> r = mala(torch.zeros(500, 3), 0.8, 100, energy=lambda x: 0.5 * (x**2).sum(-1),
        ...          generator=g)
        >>> 0.5 < r.mean_accept_prob < 1.0
        True
    """
    log_prob, _ = _target("mala", x0, log_prob, energy, None, temperature)
    _check_x0(x0)
    _check_steps(n_steps, thin)
    eps = _step_size(step_size, x0)
    rec = _Recorder(x0, n_steps, thin, keep_chain)

    x = x0.detach().clone()
    lp, grad = _value_and_grad(log_prob, x, 0)
    for t in range(n_steps):
        mean_fwd = x + 0.5 * eps * grad
        y = mean_fwd + eps.sqrt() * _randn_like(x, generator)
        lp_y, grad_y = _value_and_grad(log_prob, y, t)
        mean_bwd = y + 0.5 * eps * grad_y
        eps_flat = eps.reshape(-1)
        log_q_fwd = -_sum_event((y - mean_fwd) ** 2) / (2 * eps_flat)  # log q(y|x) + c
        log_q_bwd = -_sum_event((x - mean_bwd) ** 2) / (2 * eps_flat)  # log q(x|y) + c
        log_ratio = lp_y + log_q_bwd - lp - log_q_fwd
        accept = torch.log(_uniform(x.shape[0], x, generator)) < log_ratio
        rec.accepted += accept
        rec.prob_sum += float(log_ratio.clamp(max=0).exp().mean())
        mask = accept.reshape(-1, *([1] * (x.dim() - 1)))
        x = torch.where(mask, y, x)
        lp = torch.where(accept, lp_y, lp)
        grad = torch.where(mask, grad_y, grad)
        rec.record(t, x)
    return rec.result(x, n_steps, n_steps + 1)


@torch.no_grad()
def hmc(
    x0: Tensor,
    step_size: float | Tensor,
    n_steps: int,
    *,
    log_prob: LogProb | None = None,
    energy: Energy | None = None,
    temperature: float = 1.0,
    n_leapfrog: int = 10,
    generator: torch.Generator | None = None,
    thin: int = 1,
    keep_chain: bool = True,
) -> MCMCResult:
    r"""Hamiltonian Monte Carlo with an identity mass matrix (Neal 2011, "MCMC using
    Hamiltonian dynamics").

    With potential U(x) = -log p(x) and momentum r ~ N(0, I), each step runs
    ``n_leapfrog`` leapfrog updates of H(x, r) = U(x) + |r|²/2,

        r ← r - (ε/2)∇U(x);  x ← x + ε r;  r ← r - (ε/2)∇U(x)

    and accepts the end point with probability min(1, exp(H(x, r) - H(x', r'))).
    Leapfrog is volume preserving and reversible, so p is exactly invariant.

    Args:
        x0: initial states, ``(chains, *event_shape)``.
        step_size: leapfrog step ε > 0, a number or a ``(chains,)`` tensor.
        n_steps: number of HMC transitions.
        log_prob, energy, temperature: the target, as in :func:`mala`.
        n_leapfrog: leapfrog steps per transition (L ≥ 1).
        generator: source of the momenta and the accept/reject uniforms.
        thin, keep_chain: as in :func:`ula`.

    Returns:
        :class:`MCMCResult`; ``n_evals = n_steps * n_leapfrog + 1``.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> r = hmc(torch.zeros(500, 3), 0.3, 20, log_prob=lambda x: -0.5 * (x**2).sum(-1),
        ...         n_leapfrog=5, generator=g)
        >>> r.accept_rate.shape
        torch.Size([500])
    """
    log_prob, _ = _target("hmc", x0, log_prob, energy, None, temperature)
    _check_x0(x0)
    _check_steps(n_steps, thin)
    if isinstance(n_leapfrog, bool) or not isinstance(n_leapfrog, int) or n_leapfrog < 1:
        raise ValueError(f"n_leapfrog must be a positive integer, got {n_leapfrog!r}")
    eps = _step_size(step_size, x0)
    rec = _Recorder(x0, n_steps, thin, keep_chain)

    x = x0.detach().clone()
    lp, grad = _value_and_grad(log_prob, x, 0)
    for t in range(n_steps):
        r0 = _randn_like(x, generator)
        y, lp_y, grad_y = x, lp, grad
        r = r0 + 0.5 * eps * grad_y
        for i in range(n_leapfrog):
            y = y + eps * r
            lp_y, grad_y = _value_and_grad(log_prob, y, t)
            r = r + (eps if i < n_leapfrog - 1 else 0.5 * eps) * grad_y
        h0 = -lp + 0.5 * _sum_event(r0**2)
        h1 = -lp_y + 0.5 * _sum_event(r**2)
        log_ratio = h0 - h1
        accept = torch.log(_uniform(x.shape[0], x, generator)) < log_ratio
        rec.accepted += accept
        rec.prob_sum += float(log_ratio.clamp(max=0).exp().mean())
        mask = accept.reshape(-1, *([1] * (x.dim() - 1)))
        x = torch.where(mask, y, x)
        lp = torch.where(accept, lp_y, lp)
        grad = torch.where(mask, grad_y, grad)
        rec.record(t, x)
    return rec.result(x, n_steps, n_steps * n_leapfrog + 1)
