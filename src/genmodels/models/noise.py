"""Noise processes of diffusion models over continuous time t ∈ [0, 1], and the ε/score/x̂_0 maps.

A variance-preserving noise process corrupts data as

    x_t = sqrt(ᾱ(t)) x_0 + σ(t) ε,   σ(t) = sqrt(1 - ᾱ(t)),   ε ~ N(0, I),

with ᾱ(0) = 1 (clean data) decreasing in t. Its rate β(t) = -d log ᾱ/dt makes it the
VP SDE dx = -½ β(t) x dt + sqrt(β(t)) dw (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations", eq. 11), whose marginals are the
ones above. Every process here is one :class:`NoiseProcess`:

- :class:`NoiseSchedule`: the lecture's discrete DDPM schedule β_1..β_T (Ho et al. 2020).
  As a process on [0, 1] it puts step i at t_i = i/T (ᾱ(t_i) = ᾱ_i = Π_{s≤i} (1-β_s)
  exactly, ᾱ(0) = 1) and interpolates log ᾱ linearly in between, so β(t) is piecewise
  constant: β(t) = -T log(1 - β_i) on ((i-1)/T, i/T) (≈ T β_i). A VP SDE over a trained
  DDPM is this same object.
- :class:`LinearVP`: Song et al.'s linear VP schedule β(t) = β_min + t (β_max - β_min),
  log ᾱ(t) = -β_min t - ½ (β_max - β_min) t² (β_min = 0.1, β_max = 20: the continuous
  limit of DDPM's linear β from 1e-4 to 0.02 at T = 1000; √ᾱ differs from the discrete
  schedule's by at most 9.9e-4 at the T grid points, ``tests/test_noise.py``).

Times and coefficients are float64 tensors (solver time in float64, DESIGN.md).

The conversions between the three things a network may predict, for x_t = a x_0 + σ ε
(a = sqrt(ᾱ(t)) the mean coefficient), are written once here:

    score = ∇ log q(x_t) = -ε / σ        (eps_to_score, score_to_eps)
    x̂_0  = (x_t - σ ε) / a              (eps_to_x0, x0_to_eps)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "NoiseProcess",
    "NoiseSchedule",
    "LinearVP",
    "ddim_timesteps",
    "eps_to_score",
    "score_to_eps",
    "eps_to_x0",
    "x0_to_eps",
]

Coef = float | Tensor


# ---------------------------------------------------------------------------
# ε, score and x̂_0.
# ---------------------------------------------------------------------------


def eps_to_score(eps: Tensor, sigma: Coef) -> Tensor:
    """The score ∇_x log q_t(x) = -ε / σ(t) of a noise prediction ε (Song et al. 2021)."""
    return eps / -sigma


def score_to_eps(score: Tensor, sigma: Coef) -> Tensor:
    """The noise prediction ε = -σ(t) score implied by a score."""
    return score * -sigma


def eps_to_x0(x: Tensor, eps: Tensor, mean_coef: Coef, sigma: Coef) -> Tensor:
    """x̂_0 = (x_t - σ(t) ε) / sqrt(ᾱ(t)) (Ho et al. 2020, eq. 15)."""
    return (x - sigma * eps) / mean_coef


def x0_to_eps(x: Tensor, x0: Tensor, mean_coef: Coef, sigma: Coef) -> Tensor:
    """ε = (x_t - sqrt(ᾱ(t)) x̂_0) / σ(t): the noise an x̂_0 prediction implies."""
    return (x - mean_coef * x0) / sigma


# ---------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------


def _time(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseProcess:
    """A variance-preserving noise process on t ∈ [0, 1] (the base of every schedule).

    A subclass defines :meth:`log_alpha_bar` and :meth:`beta`; the rest follows. Methods
    take a float or a tensor of times and return float64 tensors of the same shape.

    The network's time input: :meth:`net_time` maps t to what the ε-network was trained
    on (t itself here; the DDPM's integer steps for :class:`NoiseSchedule`).
    """

    def log_alpha_bar(self, t) -> Tensor:
        """log ᾱ(t)."""
        raise NotImplementedError

    def beta(self, t) -> Tensor:
        """β(t) = -d log ᾱ(t)/dt, the VP SDE's rate."""
        raise NotImplementedError

    def alpha_bar(self, t) -> Tensor:
        """ᾱ(t), the signal fraction of x_t's variance."""
        return self.log_alpha_bar(t).exp()

    def mean_coef(self, t) -> Tensor:
        """sqrt(ᾱ(t)), the coefficient of x_0 in x_t."""
        return (0.5 * self.log_alpha_bar(t)).exp()

    def sigma(self, t) -> Tensor:
        """σ(t) = sqrt(1 - ᾱ(t)), the noise's standard deviation in x_t."""
        return (-torch.expm1(self.log_alpha_bar(t))).sqrt()

    def time_at(self, log_alpha_bar) -> Tensor:
        """The inverse of :meth:`log_alpha_bar`: the t ∈ [0, 1] with log ᾱ(t) = the argument
        (clamped to [0, 1] outside ᾱ's range), float64, the argument's shape.

        Here by bisection (log ᾱ decreases in t; 60 halvings of [0, 1]); subclasses with a
        closed form override it. The probability flow ODE in σ̄ = σ/sqrt(ᾱ) coordinates
        (:func:`~genmodels.models.samplers.ode`) reads the network's time through it.
        """
        target = _time(log_alpha_bar)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            above = self.log_alpha_bar(mid) > target  # mid is still before the target
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def net_time(self, t) -> Tensor:
        """The ε-network's time input for process time ``t``: t itself."""
        return _time(t)

    def grid(self, steps: int | None = None, spacing: str | None = None) -> Tensor:
        """A decreasing time grid 1 = t_0 > ... > t_steps = 0 for a sampler, float64.

        ``steps=None``: 1000 steps; ``spacing``: ``"uniform"`` (the only one here).
        """
        steps = 1000 if steps is None else steps
        if spacing not in (None, "uniform"):
            raise ValueError(
                f"spacing must be 'uniform' for {type(self).__name__}, got {spacing!r}"
            )
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


class LinearVP(NoiseProcess):
    """Song et al. (2021)'s VP SDE with a linear rate: β(t) = β_min + t (β_max - β_min).

    log ᾱ(t) = -β_min t - ½ (β_max - β_min) t²; defaults β_min = 0.1, β_max = 20.

    Example::

        >>> float(LinearVP().alpha_bar(1.0)) < 1e-4
        True
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 <= beta_min <= beta_max or beta_max <= 0:
            raise ValueError(
                f"need 0 <= beta_min <= beta_max, beta_max > 0; got {beta_min}, {beta_max}"
            )
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def log_alpha_bar(self, t) -> Tensor:
        t = _time(t)
        return -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t

    def beta(self, t) -> Tensor:
        return self.beta_min + _time(t) * (self.beta_max - self.beta_min)

    def time_at(self, log_alpha_bar) -> Tensor:
        """t = -2L / (β_min + sqrt(β_min² - 2 (β_max - β_min) L)) for L = log ᾱ: the root
        in [0, 1] of ½ (β_max - β_min) t² + β_min t + L = 0 (in the form without
        cancellation), clamped to [0, 1]."""
        L = _time(log_alpha_bar).clamp(max=0.0)
        d = self.beta_max - self.beta_min
        t = -2 * L / (self.beta_min + (self.beta_min**2 - 2 * d * L).sqrt())
        return t.nan_to_num(0.0).clamp(0.0, 1.0)  # 0/0 only at L = 0 with β_min = 0

    def __repr__(self) -> str:
        return f"LinearVP(beta_min={self.beta_min}, beta_max={self.beta_max})"


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> list[int]:
    """The decreasing sub-sequence of DDPM steps (indices ``0..T-1``) a sampler visits.

    ``"leading"``: ``[0, r, 2r, ...]`` with ``r = T // steps`` (diffusers' default);
    ``"trailing"``: ``T-1, T-1-r', ...`` with ``r' = T / steps``;
    ``"linspace"``: ``round(linspace(0, T-1, steps))``.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}")
    if spacing == "leading":
        r = T // steps
        ts = [k * r for k in range(steps)]
    elif spacing == "trailing":
        r = T / steps
        ts = sorted({max(round(T - k * r) - 1, 0) for k in range(steps)})
    elif spacing == "linspace":
        ts = sorted({round(v) for v in torch.linspace(0, T - 1, steps).tolist()})
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    return ts[::-1]


class NoiseSchedule(NoiseProcess):
    """The discrete DDPM schedule β_1..β_T, and the same schedule as a process on [0, 1].

    Discrete attributes (float64 tensors of length T, index i - 1 for step i):
        betas, alphas, alphas_cumprod (ᾱ_i), alphas_cumprod_prev (ᾱ_{i-1}, with ᾱ_0 = 1),
        posterior_variance (β̃_i = β_i (1 - ᾱ_{i-1}) / (1 - ᾱ_i); β̃_1 = 0).

    Continuous time: step i ∈ {1..T} sits at t_i = i/T, where ᾱ(t_i) = ᾱ_i exactly;
    ᾱ(0) = 1; log ᾱ is linear between grid points, so β(t) = -d log ᾱ/dt is the constant
    -T log(1 - β_i) on ((i-1)/T, i/T) (at a grid point t_i, i < T: the value to its right).

    The network's input: the DDPM network was trained on the integer steps 0..T-1
    (diffusers' convention, step i ↔ input i - 1), so :meth:`net_time` maps t to
    ``t·T - 1``: the integer i - 1 (a long tensor) when every t is a grid point t_i,
    otherwise the real number t·T - 1 (float64; a sinusoidal time embedding takes it,
    an embedding table does not).
    """

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        if betas.dim() != 1 or len(betas) < 1:
            raise ValueError(
                f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # log ᾱ at t_i = i/T, i = 0..T (log ᾱ(0) = 0)
        self._log_ab = torch.cat([betas.new_zeros(1), self.alphas_cumprod.log()])

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """The DDPM paper's linear schedule β_t from ``beta_start`` to ``beta_end``."""
        if T < 1:
            raise ValueError(f"timesteps must be >= 1, got {T}")
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008):
        """Nichol & Dhariwal (2021) cosine schedule, β clipped at 0.999."""
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return cls((1 - f[1:] / f[:-1]).clamp(max=0.999))

    def __len__(self) -> int:
        return len(self.betas)

    def sigma2(self, variance: str) -> torch.Tensor:
        """σ_t² of the reverse process: ``"beta_tilde"`` (β̃_t) or ``"beta"`` (β_t)."""
        if variance == "beta_tilde":
            return self.posterior_variance
        if variance == "beta":
            return self.betas
        raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")

    # -- the continuous-time view --------------------------------------------------------

    def _cell(self, t) -> tuple[Tensor, Tensor]:
        # the interval [i/T, (i+1)/T] holding t (i in 0..T-1) and t's position in it
        t = _time(t)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError("t must lie in [0, 1]")
        u = t * len(self)
        i = u.floor().clamp(0, len(self) - 1)
        return i.long(), u - i

    def log_alpha_bar(self, t) -> Tensor:
        i, frac = self._cell(t)
        lo, hi = self._log_ab[i], self._log_ab[i + 1]
        return lo + frac * (hi - lo)

    def beta(self, t) -> Tensor:
        i, _ = self._cell(t)
        return (self._log_ab[i] - self._log_ab[i + 1]) * len(self)

    def time_at(self, log_alpha_bar) -> Tensor:
        """The exact inverse of the piecewise-linear log ᾱ: the cell [i/T, (i+1)/T] whose
        end values bracket L, then linear interpolation in it; clamped to [0, 1]."""
        L = _time(log_alpha_bar)
        neg = -self._log_ab  # increasing: 0 = -log ᾱ_0 < ... < -log ᾱ_T
        j = torch.searchsorted(neg, (-L).reshape(-1).contiguous()).reshape(L.shape)
        i = (j - 1).clamp(0, len(self) - 1)
        lo, hi = self._log_ab[i], self._log_ab[i + 1]
        frac = ((L - lo) / (hi - lo)).clamp(0.0, 1.0)
        return (i + frac) / len(self)

    def net_time(self, t) -> Tensor:
        """``t·T - 1``: the integer DDPM step input at grid points (long), else real."""
        u = _time(t) * len(self) - 1
        k = u.round()
        if bool(((u - k).abs() < 1e-6).all()):
            return k.long()
        return u

    def grid(self, steps: int | None = None, spacing: str | None = None) -> Tensor:
        """Grid points visited by a sampler of ``steps`` network calls, then t = 0.

        ``steps=None`` visits every step: T/T, (T-1)/T, ..., 1/T, 0 (Algorithm 2). Fewer
        steps pick a sub-sequence by :func:`ddim_timesteps`'s ``spacing`` (default
        ``"leading"``, diffusers' default).
        """
        steps = len(self) if steps is None else steps
        idx = ddim_timesteps(len(self), steps, spacing or "leading")
        return torch.tensor([(i + 1) / len(self) for i in idx] + [0.0], dtype=torch.float64)

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={len(self)})"
