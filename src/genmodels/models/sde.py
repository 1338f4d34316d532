"""Diffusion as stochastic differential equations (the lecture's section 7, "Neural SDE").

Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), "Score-Based Generative Modeling
through Stochastic Differential Equations" (ICLR; "Song et al." below).

From the lecture's update to an SDE
-----------------------------------
NCSN and DDPM both corrupt data by a step of the form (the lecture's slide)::

    x_{t+1} = h(t) x_t + g(t) w,        w ~ N(0, I).

Read it as one step of size Δt = 1 of a continuous process and subtract x_t::

    x_{t+1} - x_t = [h(t) - 1] x_t Δt + g(t) √Δt w.

As Δt → 0 the first term is a drift f(x, t) dt with f(x, t) = (h(t) - 1) x per unit time,
and g(t) √Δt w, a Gaussian of variance g(t)² Δt, is g(t) dw, the increment of a Wiener
process. The limit is the Itô SDE

    dx = f(x, t) dt + g(t) dw.

DDPM's step x_i = sqrt(1 - β_i) x_{i-1} + sqrt(β_i) w with β_i = β(t) Δt gives
h - 1 = sqrt(1 - β(t) Δt) - 1 ≈ -½ β(t) Δt, hence the **VP SDE**
dx = -½ β(t) x dt + sqrt(β(t)) dw (Song et al., eq. 11); NCSN's step x_i = x_{i-1} +
sqrt(σ_i² - σ_{i-1}²) w (h = 1) gives the **VE SDE** dx = sqrt(dσ²/dt) dw (eq. 9).

Each SDE here has an affine drift, so its transition is Gaussian in closed form,
p(x_t | x_0) = N(m(t) x_0, σ(t)² I) with m' = -½β m and (σ²)' = -β σ² + g² (the moment
equations of a linear SDE, Särkkä & Solin 2019, eq. 6.2):

==========  ======================  =========================  ==========  ==================
SDE         f(x, t)                 g(t)²                      m(t)        σ(t)²
==========  ======================  =========================  ==========  ==================
VP          -½ β(t) x               β(t)                       sqrt(ᾱ(t))  1 - ᾱ(t)
sub-VP      -½ β(t) x               β(t) (1 - ᾱ(t)²)           sqrt(ᾱ(t))  (1 - ᾱ(t))²
VE          0                       dσ_ve²/dt                  1           σ_ve(t)² - σ_min²
==========  ======================  =========================  ==========  ==================

with ᾱ(t) = exp(-∫_0^t β), β(t) = β_min + t (β_max - β_min) and σ_ve(t) = σ_min (σ_max/σ_min)^t.
(Song et al.'s code uses σ_ve(t)² for the VE marginal, i.e. data already blurred by σ_min;
the exact transition of the SDE from x_0 is σ_ve(t)² - σ_min², used here: it vanishes at
t = 0 like the others.) The priors are N(0, I) for VP and sub-VP and N(0, σ_max² I) for VE.

Reversing time (Anderson 1982; the lecture's second SDE)::

    dx = [f(x, t) - g(t)² ∇_x log p_t(x)] dt + g(t) dw̄,      t from 1 to 0,

and the probability flow ODE with the same marginals p_t (Song et al., eq. 13)::

    dx/dt = f(x, t) - ½ g(t)² ∇_x log p_t(x).

The samplers (``euler_maruyama``, ``pc``, ``ode``) and the exact likelihood
(``pf_ode_log_prob``) are in :mod:`.samplers`; the models ``subvp`` and ``vesde`` in
:mod:`.score_sde`.

A trained DDPM is a VP SDE
--------------------------
A DDPM's discrete schedule is a :class:`~genmodels.models.noise.NoiseProcess` on t ∈ [0, 1]
(step i at t = i/T, ᾱ exact there, log ᾱ linear in between), and ``VPSDE(process=schedule)``
is the VP SDE with that ᾱ(t) and β(t) = -d log ᾱ/dt. Its network time is the schedule's
``net_time``: continuous t maps to ``t·T - 1``, the integer step input i - 1 at the grid
point t = i/T (the DDPM net was trained on the integers 0..T-1) and the real number in
between, which the sinusoidal time embedding takes. The ε-network's output becomes a score
through ``score = -ε̂ / σ(t)`` (:func:`score_from_eps`), the same for all three SDEs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .noise import LinearVP, NoiseProcess

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "as_sde",
    "score_from_eps",
    "gaussian_mixture_marginal",
    "dequantization_width",
    "uniform_dequantize",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _time(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


def _bcast(c: Tensor, x: Tensor) -> Tensor:
    """A float64 scalar (or (n,)) coefficient as x's dtype, broadcastable to x."""
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim())) if c.dim() else c


class SDE:
    """An Itô SDE dx = f(x, t) dt + g(t) dw on t ∈ [0, 1] with Gaussian transitions.

    Subclasses define :meth:`drift_coef` (f = drift_coef(t)·x), :meth:`diffusion`,
    :meth:`mean_coef`, :meth:`std` and :attr:`prior_std`. Times are floats or float64
    tensors; coefficients come back as float64 tensors.
    """

    prior_std: float = 1.0
    name: str = "sde"

    def drift_coef(self, t) -> Tensor:
        """a(t) of the affine drift f(x, t) = a(t) x."""
        raise NotImplementedError

    def diffusion(self, t) -> Tensor:
        """g(t)."""
        raise NotImplementedError

    def mean_coef(self, t) -> Tensor:
        """m(t): p(x_t | x_0) has mean m(t) x_0."""
        raise NotImplementedError

    def std(self, t) -> Tensor:
        """σ(t): p(x_t | x_0) has covariance σ(t)² I."""
        raise NotImplementedError

    def drift(self, x: Tensor, t) -> Tensor:
        """f(x, t), the shape of ``x``."""
        return _bcast(self.drift_coef(t), x) * x

    def marginal(self, t) -> tuple[Tensor, Tensor]:
        """(m(t), σ(t)) of p(x_t | x_0) = N(m(t) x_0, σ(t)² I)."""
        return self.mean_coef(t), self.std(t)

    def sigma_bar(self, t) -> Tensor:
        """σ̄(t) = σ(t)/m(t), the noise level of x̄ = x/m(t) = x_0 + σ̄ ε (increasing in t).

        In (x̄, σ̄) the probability flow ODE is dx̄/dσ̄ = -σ(t) ∇log p_t(x) = ε(x, t), the
        noise an ε-network predicts (Song, Meng & Ermon 2021, DDIM sec. 4.3; Karras et al.
        2022, EDM; Lu et al. 2022, DPM-Solver): see :func:`~.samplers.ode`.
        """
        return self.std(t) / self.mean_coef(t)

    def time_at_sigma_bar(self, sigma_bar) -> Tensor:
        """The inverse of :meth:`sigma_bar` on [0, 1] (clamped there), float64.

        Here by bisection (60 halvings); the three SDEs below have closed forms.
        """
        target = _time(sigma_bar)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.sigma_bar(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = m(t) x_0 + σ(t) ε for per-row times ``t`` ``(n,)``: a draw of p(x_t | x_0)."""
        return _bcast(self.mean_coef(t), x0) * x0 + _bcast(self.std(t), x0) * noise

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ) -> Tensor:
        """x_1 from the prior N(0, prior_std² I)."""
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return z * self.prior_std

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_std² I) in nats per row, ``(n,)`` (summed over event dims)."""
        d = x[0].numel()
        s = self.prior_std
        sq = (x.flatten(1) / s).square().sum(1)
        return -0.5 * sq - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def net_time(self, t) -> Tensor:
        """The network's time input: 999 t (the range of a DDPM's integer steps 0..999, so
        the same sinusoidal embedding serves both)."""
        return _time(t) * 999.0

    def corrector_alpha(self, t, dt: float) -> float:
        """α_i of Song et al.'s Langevin corrector (1 - β_i for VP/sub-VP, 1 for VE)."""
        return 1.0


class _VPFamily(SDE):
    """VP and sub-VP: the drift -½ β(t) x over a :class:`NoiseProcess` (ᾱ(t), β(t))."""

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        *,
        process: NoiseProcess | None = None,
    ):
        if process is not None and not isinstance(process, NoiseProcess):
            raise TypeError(f"process must be a NoiseProcess, got {type(process).__name__}")
        self.process = process if process is not None else LinearVP(beta_min, beta_max)

    def beta(self, t) -> Tensor:
        """β(t) = -d log ᾱ/dt."""
        return self.process.beta(t)

    def alpha_bar(self, t) -> Tensor:
        return self.process.alpha_bar(t)

    def drift_coef(self, t) -> Tensor:
        return -0.5 * self.beta(t)

    def mean_coef(self, t) -> Tensor:
        return self.process.mean_coef(t)

    def net_time(self, t) -> Tensor:
        # a DDPM's schedule maps t to its integer steps; LinearVP keeps 999 t
        if isinstance(self.process, LinearVP):
            return super().net_time(t)
        return self.process.net_time(t).to(torch.float64)

    def corrector_alpha(self, t, dt: float) -> float:
        return float(torch.exp(-self.beta(t) * abs(dt)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(process={self.process!r})"


class VPSDE(_VPFamily):
    """The variance-preserving SDE dx = -½ β(t) x dt + sqrt(β(t)) dw (Song et al., eq. 11).

    The continuous DDPM: p(x_t | x_0) = N(sqrt(ᾱ(t)) x_0, (1 - ᾱ(t)) I), prior N(0, I).

    Args:
        beta_min, beta_max: the linear rate β(t) = β_min + t (β_max - β_min) (defaults 0.1,
            20: the limit of DDPM's linear schedule at T = 1000).
        process: any :class:`NoiseProcess` instead, e.g. a trained DDPM's ``schedule``
            (its ᾱ exact at the grid points, interpolated between).

    Example::

        >>> sde = VPSDE()
        >>> m, s = sde.marginal(1.0)
        >>> float(m) < 0.01 and abs(float(s) - 1) < 1e-4
        True
    """

    name = "vp"

    def diffusion(self, t) -> Tensor:
        return self.beta(t).sqrt()

    def std(self, t) -> Tensor:
        return self.process.sigma(t)

    def time_at_sigma_bar(self, sigma_bar) -> Tensor:
        """σ̄² = 1/ᾱ - 1, so log ᾱ = -log(1 + σ̄²), then the process's inverse of log ᾱ."""
        return self.process.time_at(-torch.log1p(_time(sigma_bar).square()))


class SubVPSDE(_VPFamily):
    """The sub-VP SDE dx = -½ β(t) x dt + sqrt(β(t)(1 - e^{-2∫_0^t β})) dw (Song et al., eq. 12).

    Same mean as VP, variance (1 - ᾱ(t))² ≤ 1 - ᾱ(t) at every t (hence "sub"); prior
    N(0, I). Song et al. report better likelihoods than VP with it (Table 2).

    Example::

        >>> sde = SubVPSDE()
        >>> bool(sde.std(0.3) < VPSDE().std(0.3))
        True
    """

    name = "subvp"

    def diffusion(self, t) -> Tensor:
        return (self.beta(t) * -torch.expm1(2 * self.process.log_alpha_bar(t))).sqrt()

    def std(self, t) -> Tensor:
        return -torch.expm1(self.process.log_alpha_bar(t))

    def time_at_sigma_bar(self, sigma_bar) -> Tensor:
        """σ̄ = (1 - a²)/a for a = sqrt(ᾱ): a = 2/(σ̄ + sqrt(σ̄² + 4)), then log ᾱ = 2 log a."""
        s = _time(sigma_bar)
        a = 2 / (s + (s.square() + 4).sqrt())
        return self.process.time_at(2 * a.log())


class VESDE(SDE):
    """The variance-exploding SDE dx = sqrt(d[σ(t)²]/dt) dw, σ(t) = σ_min (σ_max/σ_min)^t.

    g(t) = σ(t) sqrt(2 log(σ_max/σ_min)) (Song et al., eq. 9 and appendix C); p(x_t | x_0) =
    N(x_0, (σ(t)² - σ_min²) I) (the exact transition; see the module docstring); prior
    N(0, σ_max² I).

    Example::

        >>> sde = VESDE()
        >>> round(float(sde.std(1.0)), 3)
        50.0
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.prior_std = self.sigma_max

    def sigma_ve(self, t) -> Tensor:
        """σ_min (σ_max/σ_min)^t."""
        return self.sigma_min * torch.exp(_time(t) * self._log_ratio)

    def drift_coef(self, t) -> Tensor:
        return torch.zeros_like(_time(t))

    def drift(self, x: Tensor, t) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t) -> Tensor:
        return self.sigma_ve(t) * math.sqrt(2 * self._log_ratio)

    def mean_coef(self, t) -> Tensor:
        return torch.ones_like(_time(t))

    def std(self, t) -> Tensor:
        # σ_min² (r^{2t} - 1), with expm1 for small t
        return self.sigma_min * torch.expm1(2 * _time(t) * self._log_ratio).sqrt()

    def time_at_sigma_bar(self, sigma_bar) -> Tensor:
        """σ̄ = σ (m = 1): t = log(1 + σ²/σ_min²) / (2 log(σ_max/σ_min)), clamped to [0, 1]."""
        s = _time(sigma_bar) / self.sigma_min
        return (torch.log1p(s.square()) / (2 * self._log_ratio)).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


def as_sde(process) -> SDE:
    """An :class:`SDE` as is; a :class:`NoiseProcess` (a DDPM's schedule) as ``VPSDE(process=)``."""
    if isinstance(process, SDE):
        return process
    if isinstance(process, NoiseProcess):
        return VPSDE(process=process)
    raise TypeError(f"expected an SDE or a NoiseProcess, got {type(process).__name__}")


def score_from_eps(eps_model: Callable[[Tensor, Tensor], Tensor], sde: SDE) -> ScoreFn:
    """The score function ``score_fn(x, t) = -ε̂(x, net_time(t)) / σ(t)`` of an ε-network.

    ``t`` is a float or 0-d tensor (one time for the batch); the network is called with
    ``sde.net_time(t)`` as an ``(n,)`` view with stride 0 and with ``x`` cast to its
    parameters' dtype (the result comes back in ``x``'s dtype).
    """
    params = getattr(eps_model, "parameters", None)
    p = next(params(), None) if callable(params) else None
    net_dtype = p.dtype if p is not None else None

    def score_fn(x: Tensor, t) -> Tensor:
        tt = _time(t.detach().cpu() if isinstance(t, Tensor) else t)
        tn = sde.net_time(tt).to(device=x.device).reshape(1).expand(x.shape[0])
        xin = x if net_dtype is None else x.to(net_dtype)
        eps = eps_model(xin, tn).to(x.dtype)
        return eps / -float(sde.std(tt))

    return score_fn


def gaussian_mixture_marginal(
    weights: Tensor, means: Tensor, stds: Tensor, sde: SDE
) -> tuple[Callable[[Tensor, object], Tensor], ScoreFn]:
    """Closed-form log p_t and score of Gaussian-mixture data under an SDE.

    Data p_0 = Σ_k w_k N(μ_k, s_k² I) perturbed by p(x_t | x_0) = N(m x_0, σ² I) is the
    mixture p_t = Σ_k w_k N(m μ_k, (m² s_k² + σ²) I): the test bed of every sampler and of
    the likelihood.

    Args:
        weights: ``(K,)``, summing to 1; means: ``(K, D)``; stds: ``(K,)``.
        sde: the :class:`SDE`.
    Returns:
        ``(log_prob(x, t), score(x, t))``: ``(n,)`` nats and ``(n, D)``, in ``x``'s dtype.

    Example::

        >>> one = torch.ones(1)
        >>> lp, sc = gaussian_mixture_marginal(one, torch.zeros(1, 2), one, VPSDE())
        >>> sc(torch.ones(3, 2), 0.5)   # N(0, I) stays N(0, I) under VP: score -x
        tensor([[-1., -1.],
                [-1., -1.],
                [-1., -1.]])
    """
    logw = torch.as_tensor(weights, dtype=torch.float64).log()
    mu0 = torch.as_tensor(means, dtype=torch.float64)
    s0 = torch.as_tensor(stds, dtype=torch.float64)

    def _parts(x: Tensor, t):
        tt = _time(t.detach().cpu() if isinstance(t, Tensor) else t)
        m, sig = sde.marginal(tt)
        var = (m * s0) ** 2 + sig**2  # (K,)
        mu = (m * mu0).to(x.device, x.dtype)
        var = var.to(x.device, x.dtype)
        diff = x.unsqueeze(1) - mu  # (n, K, D)
        d = x.shape[1]
        comp = (
            logw.to(x.device, x.dtype)
            - 0.5 * diff.square().sum(-1) / var
            - 0.5 * d * (torch.log(2 * math.pi * var))
        )
        return comp, diff, var

    def log_prob(x: Tensor, t) -> Tensor:
        comp, _, _ = _parts(x, t)
        return comp.logsumexp(1)

    def score(x: Tensor, t) -> Tensor:
        comp, diff, var = _parts(x, t)
        r = comp.softmax(1)  # responsibilities (n, K)
        return -(r.unsqueeze(-1) * diff / var.unsqueeze(-1)).sum(1)

    return log_prob, score


DEQUANTIZE = ("none", "uniform")


def dequantization_width(dequantize: str, levels: int | None) -> float | None:
    """The bin width ``w = 2/(levels - 1)`` a model trained with ``dequantize="uniform"`` adds
    noise over, or None for ``"none"``. A diffusion model on quantised images (digits: 17
    levels ``k/8 - 1``, ``w = 1/8``) trained on the grid values alone puts its density in
    spikes at the levels; trained on ``x + w u``, ``u ~ U(0, 1)^D`` (Theis et al. 2016, as the
    image flows), its PF-ODE density ``p`` of the dequantised data bounds the discrete NLL:
    ``-log P(x) <= E_u[-log p(x + w u)] - D log w`` (bits/dim by
    ``genmodels.data.bits_per_dim(..., discrete=False)``, the flows' convention)."""
    if dequantize not in DEQUANTIZE:
        raise ValueError(f"dequantize must be one of {DEQUANTIZE}, got {dequantize!r}")
    if dequantize == "none":
        return None
    if levels is None:
        raise ValueError(
            "dequantize='uniform' needs quantised data (images with levels); these data have "
            "no levels"
        )
    return 2.0 / (levels - 1)


def uniform_dequantize(x: Tensor, width: float, generator: torch.Generator | None) -> Tensor:
    """``x + w u``, ``u ~ U(0, 1)`` of ``x``'s shape from ``generator``: the bin of the level
    ``x`` is ``[x, x + w)``."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + width * u
