"""Samplers of diffusion models: plain functions over a time grid and a network.

The protocol (k-diffusion's ``sample_euler(model, x, sigmas)`` family, in ε and t)::

    def sampler(eps_model, x, process, ts=None, *, steps=None, spacing=None, clip=None,
                generator=None, callback=None, stats=None, **own_options) -> Tensor

- ``eps_model(x, t_net) -> ε̂``: the noise predictor, called with ``t_net =
  process.net_time(t)`` as an ``(n,)`` view with stride 0 (one time for the batch; the
  DDPM's integer steps for a :class:`~genmodels.models.noise.NoiseSchedule`).
- ``x``: the state at ``ts[0]`` (x_T ~ N(0, I) for ``ts[0] = 1``), ``(n, ...)``; not modified.
- ``process``: a :class:`~genmodels.models.noise.NoiseProcess` (ᾱ(t), σ(t), β(t)).
- ``ts``: decreasing times t_0 > t_1 > ... > t_N in [0, 1] (float64); the sampler moves
  the state from t_k to t_{k+1}. ``None``: ``process.grid(steps, spacing)`` with the
  sampler's default ``steps`` (``ancestral``: every step of a discrete schedule).
- ``clip``: ``(lo, hi)``, a box for the sampler's x̂_0 where it forms one (images in
  [-1, 1]; ``DDPM.sample`` passes the model's), or None.
- ``generator``: every random draw comes from it.
- ``callback(info)``: after each step, with ``info = {"k": k, "n": N, "t": t_{k+1},
  "x": x_{t_{k+1}}}`` (progress bars, recorded chains); samplers may update ``x`` in
  place, so a callback that keeps it copies it.
- ``stats``: a dict; the sampler adds its network evaluations to ``stats["nfe"]``
  (counts accumulate over calls, as ``integrate.odeint``'s ``SolverStats`` do).
- returns the state at t_N (x_0 for ``ts[-1] = 0``), same shape as ``x``.

A sampler is one function of this shape plus one entry in :data:`SAMPLERS`, and then
``DDPM.sample(sampler=name)`` and ``genmodels sample --sampler name`` reach it. SDE and ODE
samplers (Euler–Maruyama on the reverse VP SDE, predictor–corrector, the probability flow
ODE) read β(t) and σ(t) from the process and the score from ``eps_to_score(ε̂, σ(t))``;
annealed Langevin takes the grid as its noise levels. A worked example is in docs/ddpm.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from .noise import NoiseProcess, eps_to_score, eps_to_x0, x0_to_eps

__all__ = [
    "DEFAULT_PC_SNR",
    "default_pc_snr",
    "check_snr",
    "resolve_snr",
    "ancestral",
    "ddim",
    "annealed_langevin",
    "SAMPLERS",
    "resolve_grid",
    "batch_times",
    "euler_maruyama",
    "pc",
    "ode",
    "pf_ode_log_prob",
    "VARIABLES",
    "check_variable",
]

EpsModel = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[dict], None]


def resolve_grid(
    process: NoiseProcess,
    ts: Tensor | Sequence[float] | None = None,
    steps: int | None = None,
    spacing: str | None = None,
) -> Tensor:
    """The sampler's time grid: ``ts`` checked, or ``process.grid(steps, spacing)``.

    Returns a float64 tensor t_0 > ... > t_N in [0, 1] with N ≥ 1.
    """
    if ts is None:
        return process.grid(steps, spacing)
    if steps is not None or spacing is not None:
        raise ValueError("give either ts or steps/spacing, not both")
    ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
    if ts.dim() != 1 or len(ts) < 2:
        raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()) or ts[-1] < 0 or ts[0] > 1:
        raise ValueError("ts must be strictly decreasing times in [0, 1]")
    return ts


def batch_times(process: NoiseProcess, ts: Tensor, n: int, device) -> list[Tensor]:
    """The network's time input for each step's start ``ts[k]``, k < N, for a batch of ``n``.

    One time for the whole batch as an ``(n,)`` view with stride 0: networks that index an
    embedding with it work unchanged, and ``TimeMLP`` computes the embedding once.
    """
    tin = process.net_time(ts[:-1]).to(device)
    return [tin[k : k + 1].expand(n) for k in range(len(tin))]


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _count(stats: dict | None, nfe: int) -> None:
    if stats is not None:
        stats["nfe"] = stats.get("nfe", 0) + nfe


@torch.inference_mode()
def ancestral(
    eps_model: EpsModel,
    x_T: Tensor,
    schedule: NoiseProcess,
    ts: Tensor | Sequence[float] | None = None,
    *,
    steps: int | None = None,
    spacing: str | None = None,
    variance: Literal["beta_tilde", "beta"] = "beta_tilde",
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    stats: dict | None = None,
) -> Tensor:
    """DDPM ancestral sampling: the lecture's Algorithm 2 (Ho et al. 2020), line by line.

    ::

        1: x_T ~ N(0, I)                                   (the argument x_T)
        2: for t = T, ..., 1:
        3:     z ~ N(0, I) if t > 1, else z = 0
        4:     x_{t-1} = 1/sqrt(α_t) (x_t - (1-α_t)/sqrt(1-ᾱ_t) ε_θ(x_t, t)) + σ_t z
        6: return x_0

    On a grid t_0 > ... > t_N (default: every step of the schedule, i.e. exactly the
    algorithm above) a step from t to s uses the one-step α of the sub-chain,
    α = ᾱ(t)/ᾱ(s), and σ² = β̃ = (1-α)(1-ᾱ(s))/(1-ᾱ(t)) (``variance="beta_tilde"``) or
    1-α (``"beta"``): diffusers' ``DDPMScheduler`` with fewer inference steps.

    With ``clip=(lo, hi)`` (data known to lie in a box, e.g. images in [-1, 1]), line 4
    is computed through the clipped prediction x̂_0 as the posterior mean μ̃(x_t, x̂_0)
    (Ho et al.'s eq. 7 and released code), which equals line 4 when nothing is clipped.

    Args:
        eps_model: ``eps_model(x, t_net) -> ε̂`` (see the module's protocol).
        x_T: the starting noise ``(n, ...)``.
        schedule: the noise process the network was trained with.
        ts, steps, spacing: the time grid (default: every step of a discrete schedule).
        variance: σ_t² = β̃_t (default) or β_t.
        clip: optional box for x̂_0.
        generator: source of the z draws.
        callback: called after each step (module docstring).
        stats: ``stats["nfe"]`` grows by the number of network evaluations.
    Returns:
        x_0, same shape as ``x_T``.

    Example::

        x0 = ancestral(eps_model, torch.randn(16, 2), NoiseSchedule.linear(), generator=g)
    """
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")
    ts = resolve_grid(schedule, ts, steps, spacing)
    N, n, dev = len(ts) - 1, x_T.shape[0], x_T.device
    # Coefficients of each step t -> s in float64, as Python floats: the loop does tensor work only.
    lab = schedule.log_alpha_bar(ts)
    lab_t, lab_s = lab[:-1], lab[1:]
    alpha = (lab_t - lab_s).exp()  # α_t of the step
    one_m_alpha = -torch.expm1(lab_t - lab_s)  # 1 - α_t = β_t
    sig_t, sig_s = (-torch.expm1(lab_t)).sqrt(), (-torch.expm1(lab_s)).sqrt()  # sqrt(1-ᾱ)
    var = one_m_alpha * (sig_s / sig_t) ** 2 if variance == "beta_tilde" else one_m_alpha
    c_x = (1 / alpha.sqrt()).tolist()
    c_eps = (one_m_alpha / sig_t).tolist()
    sigma = var.sqrt().tolist()
    if clip is not None:
        a_t, a_s = (0.5 * lab_t).exp(), (0.5 * lab_s).exp()  # sqrt(ᾱ(t)), sqrt(ᾱ(s))
        c_x0 = (a_s * one_m_alpha / sig_t**2).tolist()
        c_xt = (alpha.sqrt() * (sig_s / sig_t) ** 2).tolist()
        a_t, sig_tl = a_t.tolist(), sig_t.tolist()
    t_net = batch_times(schedule, ts, n, dev)
    t_out = ts[1:].tolist()

    x, buf = x_T.clone(), torch.empty_like(x_T)  # 1: x_T ~ N(0, I); x is updated in place
    for k in range(N):  # 2: for t = T, ..., 1 (here t = ts[k])
        z = buf.normal_(generator=generator) if k < N - 1 else None  # 3: z ~ N(0, I) if t > 1
        eps = eps_model(x, t_net[k])  # ε_θ(x_t, t)
        if clip is None:  # 4: x_{t-1} = 1/sqrt(α_t) (x_t - (1-α_t)/sqrt(1-ᾱ_t) ε) + σ_t z
            x.sub_(eps, alpha=c_eps[k]).mul_(c_x[k])
        else:  # 4, through the clipped x̂_0: μ̃ = c_x0 x̂_0 + c_xt x_t
            x0 = eps_to_x0(x, eps, a_t[k], sig_tl[k]).clamp_(*clip)
            x.mul_(c_xt[k]).add_(x0, alpha=c_x0[k])
        if z is not None:
            x.add_(z, alpha=sigma[k])
        if callback is not None:
            callback({"k": k, "n": N, "t": t_out[k], "x": x})
    _count(stats, N)
    return x  # 6


@torch.inference_mode()
def ddim(
    eps_model: EpsModel,
    x_T: Tensor,
    schedule: NoiseProcess,
    ts: Tensor | Sequence[float] | None = None,
    *,
    steps: int | None = None,
    spacing: str | None = None,
    eta: float = 0.0,
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    stats: dict | None = None,
) -> Tensor:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12) on a grid of ``steps`` times.

    For consecutive grid times t > s::

        x̂_0 = (x_t - sqrt(1-ᾱ_t) ε_θ(x_t, t)) / sqrt(ᾱ_t)
        σ   = η sqrt((1-ᾱ_s)/(1-ᾱ_t)) sqrt(1 - ᾱ_t/ᾱ_s)
        x_s = sqrt(ᾱ_s) x̂_0 + sqrt(1-ᾱ_s-σ²) ε_θ(x_t, t) + σ z

    η = 0 is the deterministic DDIM; η = 1 matches DDPM's β̃ variance. Defaults match
    diffusers' ``DDIMScheduler`` (50 steps, leading spacing, η = 0, final ᾱ = ᾱ(0) = 1;
    its ``set_alpha_to_one=False`` is a grid ending at t = 1/T, less one no-op step).
    Args and protocol as :func:`ancestral` (``steps`` defaults to 50).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if ts is None and steps is None:
        steps = 50
    ts = resolve_grid(schedule, ts, steps, spacing)
    N, n, dev = len(ts) - 1, x_T.shape[0], x_T.device
    ab = schedule.alpha_bar(ts).tolist()
    t_net = batch_times(schedule, ts, n, dev)
    t_out = ts[1:].tolist()
    x = x_T.clone()
    for k in range(N):
        a_t, a_s = ab[k], ab[k + 1]
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        eps = eps_model(x, t_net[k])
        dir_coef = math.sqrt(max(1 - a_s - sigma * sigma, 0.0))
        if clip is None:
            # the lines above, folded (one fewer pass over x): x_s = sqrt(a_s/a_t) x_t + c_eps ε
            c_eps = dir_coef - math.sqrt(a_s * (1 - a_t) / a_t)
            x = x.mul_(math.sqrt(a_s / a_t)).add_(eps, alpha=c_eps)
        else:
            x0 = eps_to_x0(x, eps, math.sqrt(a_t), math.sqrt(1 - a_t)).clamp_(*clip)
            # the direction term uses the ε implied by the clipped x̂_0 (as diffusers'
            # DDIMScheduler does): with the raw ε, every clip pushes the state further
            # out and deterministic DDIM saturates to ±1 (seen on 8x8 digits)
            eps = x0_to_eps(x, x0, math.sqrt(a_t), math.sqrt(1 - a_t))
            x = x0.mul_(math.sqrt(a_s)).add_(eps, alpha=dir_coef)
        if sigma > 0:
            x.add_(_randn(x, generator), alpha=sigma)
        if callback is not None:
            callback({"k": k, "n": N, "t": t_out[k], "x": x})
    _count(stats, N)
    return x


@torch.inference_mode()
def annealed_langevin(
    eps_model: EpsModel,
    x: Tensor,
    process,
    ts: Tensor | Sequence[float] | None = None,
    *,
    steps: int | None = None,
    spacing: str | None = None,
    step_size: float = 2e-5,
    denoise: bool = True,
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    stats: dict | None = None,
) -> Tensor:
    """Annealed Langevin dynamics: the lecture's Algorithm 1 (Song & Ermon 2019), line by line.

    ::

        Require {σ_i}_{i=1}^L, ε, T
        1: initialise x̃_0                                      (the argument x)
        2: for i = 1, ..., L:
        3:     α_i = ε σ_i² / σ_L²                              (the step size)
        4:     for t = 1, ..., T:
        5:         z_t ~ N(0, I)
        6:         x̃_t = x̃_{t-1} + (α_i/2) s_θ(x̃_{t-1}, σ_i) + sqrt(α_i) z_t
        8:     x̃_0 = x̃_T
           return x̃_T
        +  (``denoise``) x̂ = (x̃_T + σ_L² s_θ(x̃_T, σ_L)) / sqrt(ᾱ(t_L)): Tweedie's formula,
           E[x | x̃] for x̃ = x + σ_L z (Song & Ermon 2020, "Improved techniques", sec. 4.2,
           after Jolicoeur-Martineau et al. 2021); sqrt(ᾱ) = 1 for NCSN's levels.

    The noise levels are the grid: σ_i = ``process.sigma(ts[i-1])`` for every point of
    ``ts`` (L = len(ts); default ``process.grid()``, an NCSN's trained levels), strictly
    decreasing and positive. The score is read from the ε-network as s_θ(x, σ) = -ε̂/σ
    (:func:`~genmodels.models.noise.eps_to_score`; an NCSN trained with λ(σ) = σ² *is* an
    ε-network). ``steps`` is T, the Langevin steps per level (default 100: Song & Ermon's
    T); ``step_size`` is ε (default 2e-5, theirs for σ_L = 0.01). ``clip`` boxes the
    denoised x̂. ``callback`` runs after each level (``k`` = i - 1, ``n`` = L, ``t``,
    ``sigma`` = σ_i, ``x``); ``stats["nfe"]`` grows by L·T (+1 with ``denoise``).

    Errors: ε ≤ 0, T < 1, levels that do not strictly decrease or reach σ = 0, and a score
    that turns the state NaN or infinite (named by its level) each raise a ValueError.
    """
    if not isinstance(step_size, (int, float)) or not 0 < step_size < math.inf:
        raise ValueError(f"step_size (ε) must be a positive finite number, got {step_size!r}")
    T = 100 if steps is None else steps
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"steps (T, Langevin steps per level) must be an integer >= 1, got {T!r}")
    ts = resolve_grid(process, ts, None, spacing)
    sigmas = process.sigma(ts).tolist()
    if not sigmas[-1] > 0 or any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"the noise levels must strictly decrease to σ_L > 0, got {sigmas}")
    L, n = len(ts), x.shape[0]
    t_net = process.net_time(ts).to(x.device)
    x, buf = x.clone(), torch.empty_like(x)  # 1: x̃_0
    for i in range(L):  # 2: for i = 1, ..., L
        sigma, tin = sigmas[i], t_net[i : i + 1].expand(n)
        alpha = step_size * sigma**2 / sigmas[-1] ** 2  # 3: α_i = ε σ_i²/σ_L²
        for _ in range(T):  # 4: for t = 1, ..., T
            z = buf.normal_(generator=generator)  # 5: z_t ~ N(0, I)
            score = eps_to_score(eps_model(x, tin), sigma)  # s_θ(x̃_{t-1}, σ_i)
            x.add_(score, alpha=alpha / 2).add_(z, alpha=math.sqrt(alpha))  # 6
        if not torch.isfinite(x).all():
            raise ValueError(
                f"annealed Langevin: the state became NaN or infinite at level {i + 1} of {L} "
                f"(σ = {sigma:.4g}, α = {alpha:.4g}); the score returned non-finite values or "
                f"the step size ε = {step_size:g} is too large"
            )
        if callback is not None:
            callback({"k": i, "n": L, "t": float(ts[i]), "sigma": sigma, "x": x})
    _count(stats, L * T)
    if not denoise:
        return x
    eps = eps_model(x, t_net[-1:].expand(n))  # Tweedie: x̂ = (x̃ - σ_L ε̂)/sqrt(ᾱ)
    _count(stats, 1)
    x0 = eps_to_x0(x, eps, float(process.mean_coef(ts[-1])), sigmas[-1])
    return x0.clamp_(*clip) if clip is not None else x0


# The one table of samplers: name -> function of the module's protocol.
SAMPLERS: dict[str, Callable[..., Tensor]] = {"ancestral": ancestral, "ddim": ddim}
SAMPLERS["annealed_langevin"] = annealed_langevin


# ---------------------------------------------------------------------------
# Score-SDE samplers (Song et al. 2021): any score_fn(x, t) and any SDE.
# ---------------------------------------------------------------------------
# These take the score and the SDE of :mod:`.sde` directly, as the paper writes them:
# ``sampler(score_fn, sde, x_T, ts=None, *, steps, eps, generator, callback, stats)``, with
# ``score_fn(x, t) -> ∇_x log p_t(x)`` for one time t ∈ [eps, 1] (a float or 0-d tensor).
# :data:`SAMPLERS` holds them through :func:`_on_protocol`, which turns the module's
# ``(eps_model, x, process)`` into ``(score_from_eps(eps_model, sde), sde, x)``.

from ..integrate import NonFiniteSolutionError, SolverStats, odeint, sdeint  # noqa: E402
from ..integrate.trace import dynamics_with_divergence, hutchinson_noise  # noqa: E402
from .sde import SDE, as_sde, score_from_eps  # noqa: E402

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _sde_grid(ts, steps: int | None, eps: float, default: int) -> Tensor:
    """A decreasing float64 grid 1 = t_0 > ... > t_N = eps (N = steps), or ``ts`` checked."""
    if ts is not None:
        if steps is not None:
            raise ValueError("give either ts or steps, not both")
        ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
        if ts.dim() != 1 or len(ts) < 2 or not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("ts must be a strictly decreasing 1-D grid of at least 2 times")
        if ts[-1] <= 0 or ts[0] > 1:
            raise ValueError("ts must lie in (0, 1]: the score is singular at t = 0")
        return ts
    steps = default if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    return torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)


class _Counted:
    """``score_fn`` with a call counter (the samplers' ``stats["nfe"]``)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.n = score_fn, 0

    def __call__(self, x: Tensor, t) -> Tensor:
        self.n += 1
        return self.score_fn(x, t)


def _nonfinite(name: str) -> ValueError:
    return ValueError(
        f"{name}: the state became non-finite (NaN/inf): does the score function return NaN?"
    )


class _ReverseSDE:
    """dx = [f(x, t) - g(t)² ∇log p_t(x)] dt + g(t) dw̄ in torchsde's protocol, for sdeint."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, score_fn: ScoreFn, sde: SDE):
        self.score_fn, self.sde = score_fn, sde

    def f(self, t: Tensor, x: Tensor) -> Tensor:
        g2 = float(self.sde.diffusion(float(t))) ** 2
        return self.sde.drift(x, float(t)) - g2 * self.score_fn(x, t)

    def g(self, t: Tensor, x: Tensor) -> Tensor:
        return torch.full_like(x, float(self.sde.diffusion(float(t))))


@torch.inference_mode()
def euler_maruyama(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    ts: Tensor | Sequence[float] | None = None,
    *,
    steps: int | None = None,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    stats: dict | None = None,
) -> Tensor:
    """Euler–Maruyama on the reverse-time SDE (Song et al. 2021, eq. 6; Anderson 1982)::

        dx = [f(x, t) - g(t)² ∇_x log p_t(x)] dt + g(t) dw̄,     t from 1 down to eps

    through :func:`genmodels.integrate.sdeint` (``method="euler"``, increments from
    ``generator``) on ``steps`` equal steps (default 1000), then the last step without noise
    (x̄ of Song et al.'s code: the returned sample is the mean of the final step).

    Args:
        score_fn: ``score_fn(x, t) -> ∇_x log p_t(x)``, shape of ``x``; t ∈ [eps, 1].
        sde: the forward :class:`~genmodels.models.sde.SDE`.
        x_T: the start, a draw of the prior ``sde.prior_sample``; ``(n, ...)``.
        ts: a decreasing grid in (0, 1] instead of ``steps``/``eps``.
        stats: ``stats["nfe"]`` grows by the score evaluations (steps + 1: ``sdeint``
            evaluates the drift once more to check its shape).
    Returns:
        x at ``ts[-1]`` (= eps), the shape of ``x_T``.

    Example::

        x0 = euler_maruyama(score_fn, VPSDE(), torch.randn(1000, 2), steps=500, generator=g)
    """
    ts = _sde_grid(ts, steps, eps, 1000)
    score = _Counted(score_fn)
    rev = _ReverseSDE(score, sde)
    N, x = len(ts) - 1, x_T
    if N > 1:
        uniform = bool(torch.allclose(ts.diff(), ts.diff()[0], rtol=1e-9, atol=0))
        path = ts[:-1] if callback is not None or not uniform else ts[[0, -2]]
        dt = float((ts[0] - ts[1]).abs()) * (1 + 1e-9) if uniform else 1.0
        try:
            xs = sdeint(rev, x_T, path, method="euler", dt=dt, generator=generator)
        except FloatingPointError:
            raise _nonfinite("euler_maruyama") from None
        x = xs[-1]
        if callback is not None:
            for k in range(1, N):
                callback({"k": k - 1, "n": N, "t": float(ts[k]), "x": xs[k]})
    t, h = float(ts[-2]), float(ts[-1] - ts[-2])  # the last step, noise-free
    x = x + rev.f(torch.tensor(t), x) * h
    if not bool(torch.isfinite(x).all()):
        raise _nonfinite("euler_maruyama")
    if callback is not None:
        callback({"k": N - 1, "n": N, "t": float(ts[-1]), "x": x})
    _count(stats, score.n)
    return x


@torch.inference_mode()
def pc(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    ts: Tensor | Sequence[float] | None = None,
    *,
    steps: int | None = None,
    snr: float = 0.16,
    eps: float = 1e-3,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    stats: dict | None = None,
) -> Tensor:
    """Predictor–corrector sampling (Song et al. 2021, Algorithms 2-3 and their code).

    At each grid time t (from 1 down to eps; step h = t_{k+1} - t_k < 0)::

        corrector (one Langevin step, signal-to-noise ratio ``snr``):
            s = ∇log p_t(x),  z ~ N(0, I)
            ε = 2 α_t (snr ‖z‖ / ‖s‖)²          (norms averaged over the batch; α_t = 1 - β_t|h|
                                                 for VP/sub-VP, 1 for VE)
            x ← x + ε s + sqrt(2ε) z
        predictor (reverse diffusion, the reverse SDE discretised with the forward's
        f(x, t)|h| and G = g(t) sqrt(|h|)):
            x̄ = x - [f(x, t) - g(t)² ∇log p_t(x)] |h|
            x ← x̄ + G z'

    and the result is the last x̄ (no noise on the final step). 2 score evaluations per step;
    ``steps`` defaults to 1000. Args as :func:`euler_maruyama`.
    """
    snr = check_snr(snr)
    ts = _sde_grid(ts, steps, eps, 1000)
    N, n = len(ts) - 1, x_T.shape[0]
    x = x_T.clone()
    for k in range(N):
        t, dt = float(ts[k]), float(ts[k] - ts[k + 1])  # dt = |h| > 0
        # corrector: one Langevin step at t
        s = score_fn(x, t)
        z = _randn(x, generator)
        s_norm = s.reshape(n, -1).norm(dim=1).mean()
        z_norm = z.reshape(n, -1).norm(dim=1).mean()
        step = 2 * sde.corrector_alpha(t, dt) * (snr * z_norm / s_norm) ** 2
        x = x + step * s + (2 * step).sqrt() * z
        # predictor: one reverse-diffusion step t -> t - dt
        g = float(sde.diffusion(t))
        x_mean = x - (sde.drift(x, t) - g * g * score_fn(x, t)) * dt
        x = x_mean + (g * math.sqrt(dt)) * _randn(x, generator) if k < N - 1 else x_mean
        if not bool(torch.isfinite(x).all()):
            raise _nonfinite("pc")
        if callback is not None:
            callback({"k": k, "n": N, "t": float(ts[k + 1]), "x": x})
    _count(stats, 2 * N)
    return x


#: pc's Langevin signal-to-noise ratio when a model samples with ``pc`` and no ``snr`` is given,
#: by the kind of data: Song et al.'s 0.16 (their image setting) for images; 0.04 for points.
#: The step rule ε = 2α(snr ‖z‖/‖s‖)² assumes ‖σ s‖ ≈ ‖z‖, true for images at every σ (the noise
#: is almost all orthogonal to the data) and false for 2-D data wider than the small σ's, where
#: the step stops shrinking with σ² and the corrector, with the network's score error, spreads the
#: samples in the last ~100 steps (docs/sde.md, "Why pc at snr 0.16 loses to ancestral on
#: moons"). Measured on moons (5 networks) and 8gaussians: with 0.04 pc beats ancestral on each.
#: :func:`pc`'s own default stays 0.16.
DEFAULT_PC_SNR = {"points": 0.04, "images": 0.16}


def default_pc_snr(event_shape: Sequence[int]) -> float:
    """:data:`DEFAULT_PC_SNR` for samples of ``event_shape``: ``(D,)`` is points, else images."""
    return DEFAULT_PC_SNR["points" if len(event_shape) == 1 else "images"]


def check_snr(snr) -> float:
    """``snr`` as a float > 0, or a ValueError naming it."""
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not snr > 0:
        raise ValueError(f"snr must be a number > 0, got {snr!r}")
    return float(snr)


def resolve_snr(sampler: str, opts: dict, event_shape: Sequence[int]) -> None:
    """Set ``opts["snr"]`` for a model's ``sample``: a given ``snr`` is checked and allowed only
    with ``pc``; ``pc`` without one gets :func:`default_pc_snr` (a None ``snr`` is dropped)."""
    if opts.get("snr") is not None:
        if sampler != "pc":
            raise ValueError(f"snr is pc's Langevin step setting; sampler {sampler!r} takes none")
        opts["snr"] = check_snr(opts["snr"])
    else:
        opts.pop("snr", None)
        if sampler == "pc":
            opts["snr"] = default_pc_snr(event_shape)


VARIABLES = ("t", "sigma", "log_sigma")


def check_variable(variable) -> str:
    """``variable`` if it is one of :data:`VARIABLES` (the probability flow ODE's integration
    variable), else a ValueError naming the allowed values."""
    if not isinstance(variable, str) or variable not in VARIABLES:
        raise ValueError(
            f"variable must be one of {', '.join(map(repr, VARIABLES))} (the probability flow "
            f"ODE's integration variable), got {variable!r}"
        )
    return variable


class _FlowCoordinates:
    """The probability flow ODE of ``sde`` in one of :data:`VARIABLES`, on t ∈ [lo, hi].

    - ``"t"``: the state x and dx/dt = f(x, t) - ½ g(t)² ∇log p_t(x) (Song et al., eq. 13).
    - ``"sigma"``: the state x̄ = x/m(t) and u = σ̄(t) = σ(t)/m(t)::

          dx̄/dσ̄ = -σ(t) ∇log p_t(m x̄) = ε(x, t)

      (Song, Meng & Ermon 2021, DDIM sec. 4.3; Karras et al. 2022, EDM eq. 4 with s = 1,
      σ = σ̄). Derivation: ½ g² = σσ' - (m'/m) σ² = σ² (log σ̄)' (the moment equation of
      the linear SDE, module :mod:`.sde`), so dx̄/dt = (x' - (m'/m) x)/m = -½ g² s/m =
      -σ σ̄' s. Far from the data x̄ ≈ x_0 + σ̄ ε with ε nearly constant along the path:
      the solution is almost a straight line in σ̄, which dopri5 steps over in a few steps.
    - ``"log_sigma"``: x̄ and u = log σ̄ = -λ/2 (λ the log-SNR), dx̄/du = σ̄ ε(x, t): the
      ODE DPM-Solver (Lu et al. 2022) integrates exactly in its linear part.

    VP, sub-VP and VE alike (VE: m = 1, x̄ = x, σ̄ = σ). The map t ↦ u is increasing, and t
    is read back by ``sde.time_at_sigma_bar`` (closed forms; a DDPM's schedule exactly).
    """

    def __init__(self, sde: SDE, variable: str, lo: float, hi: float):
        check_variable(variable)
        self.sde, self.variable, self.lo, self.hi = sde, variable, lo, hi
        u_lo, u_hi = self.u(torch.tensor([lo, hi], dtype=torch.float64)).tolist()
        self.u_lo, self.u_hi = u_lo, u_hi

    def u(self, t: Tensor) -> Tensor:
        """The integration variable at times ``t`` (float64)."""
        if self.variable == "t":
            return t
        sb = self.sde.sigma_bar(t)
        return sb if self.variable == "sigma" else sb.log()

    def clamp(self, u: float) -> float:
        """u clamped to the solve's interval: odeint's first-step guess may probe past its end."""
        return min(max(u, self.u_lo), self.u_hi)

    def time(self, u: float) -> float:
        """t at u (u already clamped)."""
        if self.variable == "t":
            return u
        sb = u if self.variable == "sigma" else math.exp(u)
        return min(max(float(self.sde.time_at_sigma_bar(sb)), self.lo), self.hi)

    def grid(self, u0: float, u1: float, steps: int) -> Tensor:
        """``steps`` fixed steps from u0 to u1: equal in t and in log σ̄; in σ̄ equal in
        σ̄^(1/7) (Karras et al. 2022, eq. 5, ρ = 7: short steps near the data)."""
        k = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        if self.variable == "sigma":
            a, b = u0 ** (1 / 7), u1 ** (1 / 7)
            g = (a + k * (b - a)) ** 7
        else:
            g = u0 + k * (u1 - u0)
        g[0], g[-1] = u0, u1
        return g

    def scale(self, t) -> float:
        """m(t): x = m(t) x̄ (1 in the coordinates ``"t"``, where the state is x)."""
        return 1.0 if self.variable == "t" else float(self.sde.mean_coef(t))

    def field(self, score_fn: ScoreFn, shape) -> Callable[[Tensor, Tensor], Tensor]:
        """The ODE's right-hand side ``field(u, state)``, the state flattened to ``shape``."""
        sde = self.sde

        def field(u: Tensor, y: Tensor) -> Tensor:
            u = self.clamp(float(u))
            t = self.time(u)
            if self.variable == "t":
                g = float(sde.diffusion(t))
                s = score_fn(y.reshape(shape), t).reshape(y.shape)
                return sde.drift(y, t) - (0.5 * g * g) * s
            m, sig = float(sde.mean_coef(t)), float(sde.std(t))
            eps = score_fn((m * y).reshape(shape), t).reshape(y.shape) * -sig  # ε = -σ ∇log p
            return eps if self.variable == "sigma" else eps * math.exp(u)

        return field


@torch.inference_mode()
def ode(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Tensor,
    ts: Tensor | Sequence[float] | None = None,
    *,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str | None = None,
    variable: Literal["t", "sigma", "log_sigma"] = "t",
    steps: int | None = None,
    callback: Callback | None = None,
    stats: dict | None = None,
) -> Tensor:
    """The probability flow ODE (Song et al. 2021, eq. 13), solved from t = 1 to eps::

        dx/dt = f(x, t) - ½ g(t)² ∇_x log p_t(x)

    by :func:`genmodels.integrate.odeint` (adaptive dopri5, ``rtol``/``atol``). Deterministic:
    the same x_T gives the same sample (the map the likelihood :func:`pf_ode_log_prob` inverts).

    ``variable`` picks the coordinates the solver steps in (the same ODE, the same solution
    up to the solver's error; see ``_FlowCoordinates``): ``"t"`` (default) the equation
    above as written; ``"sigma"`` dx̄/dσ̄ = ε(x, t) for x̄ = x/m(t), σ̄ = σ(t)/m(t)
    (Karras et al. 2022's coordinates; the ODE that DDIM discretises with Euler, Song, Meng
    & Ermon 2021 sec. 4.3); ``"log_sigma"`` the same in log σ̄ (DPM-Solver's λ = -2 log σ̄,
    Lu et al. 2022). The tolerances act on the state of the chosen coordinates (x̄, of size
    σ̄(1) ≈ 150 at the start under VP, ≈ x at the end).

    Which is cheaper depends on the schedule and the network (docs/sde.md): with the linear
    β (``VPSDE()``, the default ``ddpm``) ``"t"`` takes the fewest evaluations (98 against
    224 and 116 with an exact mixture score; a trained DDPM's NFE at 1e-5 is set by its
    ε-network's small oscillations in t, which every coordinate has to resolve); where the
    t field is stiff or jumps (the cosine schedule, β up to 690 near t = 1; a DDPM with few
    steps, whose piecewise-constant β jumps at each grid point) ``"log_sigma"`` /
    ``"sigma"`` reach the solution in a fraction of the evaluations that ``"t"`` needs.

    ``steps``: None (default) solves adaptively with ``method`` (default ``"dopri5"``) to
    ``rtol``/``atol``; an integer K runs ``method`` (default ``"heun2"``, Heun's second-order
    method, 2 evaluations a step: Karras et al. 2022's deterministic sampler) on K fixed
    steps, equal in t or log σ̄, in σ̄ equal in σ̄^(1/7) (EDM's ρ = 7). On the default
    ``ddpm`` on moons Heun with K = 75 in t (150 evaluations) lands within 0.003 of DDIM-1000
    on average, as close as the adaptive solve at 1e-5, which takes 350 (docs/sde.md).

    ``ts``: output times (default ``[1, eps]``); ``callback`` runs at each of them with x
    (not x̄). ``stats["nfe"]`` grows by the solver's field evaluations.
    """
    if ts is None:
        ts = torch.tensor([1.0, eps], dtype=torch.float64)
    else:
        ts = _sde_grid(ts, None, eps, 1)
    coords = _FlowCoordinates(sde, variable, float(ts.min()), float(ts.max()))
    field = coords.field(score_fn, x_T.shape)
    us = coords.u(ts)
    y0 = x_T / coords.scale(ts[0])
    options = None
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer or None, got {steps!r}")
        grid = coords.grid(float(us[0]), float(us[-1]), steps)
        options = {"grid_constructor": lambda f, y, t: grid}
        method = method or "heun2"

    st = SolverStats()
    try:
        ys = odeint(
            field,
            y0,
            us,
            rtol=rtol,
            atol=atol,
            method=method or "dopri5",
            options=options,
            stats=st,
        )
    except NonFiniteSolutionError:
        raise _nonfinite("ode") from None
    finally:
        _count(stats, st.nfe)
    xs = [ys[k] * coords.scale(ts[k]) if k else x_T for k in range(len(ts))]
    if callback is not None:
        for k in range(1, len(ts)):
            callback({"k": k - 1, "n": len(ts) - 1, "t": float(ts[k]), "x": xs[k]})
    return xs[-1]


def pf_ode_log_prob(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: Literal["exact", "hutchinson"] = "exact",
    variable: Literal["t", "sigma", "log_sigma"] = "t",
    generator: torch.Generator | None = None,
    stats: dict | None = None,
) -> Tensor:
    """log p(x) in nats per row by the probability flow ODE (Song et al. 2021, appendix D.2).

    The ODE dx/dt = f̃(x, t) = f(x, t) - ½ g(t)² ∇log p_t(x) carries p_eps to p_1, and the
    instantaneous change of variables (Chen et al. 2018) gives, solved jointly from eps to 1
    (one augmented state [x, ∫div], :func:`genmodels.integrate.odeint`, dopri5)::

        log p_eps(x) = log p_1(x(1)) + ∫_eps^1 tr(∂f̃/∂x)(x(t), t) dt,   p_1 ≈ the prior.

    With ``variable="sigma"`` or ``"log_sigma"`` (see :func:`ode`) the state is x̄ = x/m(t)
    and the field F(x̄, u) = dx̄/du; the same formula holds for the density of x̄, and
    p_t(x) = p̄_u(x/m) / m^D, so::

        log p_eps(x) = log p_1(m(1) x̄(1)) + D log(m(1)/m(eps)) + ∫ tr(∂F/∂x̄) du.

    The default stays ``"t"`` (the likelihoods in the docs were measured with it).

    The trace is exact (D vector-Jacobian products; use it for D ≤ 8) or Hutchinson's
    estimate with Rademacher noise drawn once from ``generator`` (one product; unbiased for
    each row), from :mod:`genmodels.integrate.trace`.

    Args:
        score_fn: ``score_fn(x, t)`` as for the samplers.
        sde: the :class:`~genmodels.models.sde.SDE`.
        x: ``(n, ...)`` points (solved in float64; returned in ``x``'s dtype).
        eps: the start time (the data end of the ODE).
        rtol, atol: the solver's tolerances.
        trace: ``"exact"`` or ``"hutchinson"``.
        variable: the coordinates the solver steps in, as for :func:`ode`.
        stats: ``stats["nfe"]`` grows by the augmented field's evaluations; with Hutchinson
            ``stats["se_nats"]`` is the standard error of the mean of the returned values
            (spread over x and the estimator's noise together).
    Returns:
        ``(n,)`` log-densities in nats. No gradient flows through it (it runs under
        ``torch.no_grad()`` and works when the caller's grad is off).

    Example::

        lp = pf_ode_log_prob(score_fn, VPSDE(), x)   # exact trace, D = 2
    """
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError("x must be a tensor (n, ...) of points")
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    coords = _FlowCoordinates(sde, variable, eps, 1.0)
    shape, n = x.shape, x.shape[0]
    d = x[0].numel()
    m_eps, m_1 = coords.scale(eps), coords.scale(1.0)
    z0 = x.detach().reshape(n, -1).to(torch.float64) / m_eps
    noise = None
    if trace == "hutchinson":
        noise = hutchinson_noise(
            z0.shape, generator=generator, dtype=torch.float64, device=z0.device
        )
    f = coords.field(score_fn, shape)

    def field(u, state):
        z, _ = state
        return dynamics_with_divergence(f, u, z, method=trace, noise=noise, create_graph=False)

    st = SolverStats()
    us = coords.u(torch.tensor([eps, 1.0], dtype=torch.float64))
    start = (z0, torch.zeros(n, dtype=torch.float64, device=z0.device))
    try:
        with torch.no_grad():
            zs, ints = odeint(field, start, us, rtol=rtol, atol=atol, method="dopri5", stats=st)
    except NonFiniteSolutionError:
        raise _nonfinite("pf_ode_log_prob") from None
    finally:
        _count(stats, st.nfe)
    lp = sde.prior_log_prob(zs[-1] * m_1) + ints[-1] + d * math.log(m_1 / m_eps)
    if stats is not None and trace == "hutchinson":
        stats["se_nats"] = float(lp.std() / math.sqrt(n)) if n > 1 else float("nan")
    return lp.to(x.dtype)


def _on_protocol(sde_sampler: Callable[..., Tensor], stochastic: bool = True):
    """``sde_sampler(score_fn, sde, x, ...)`` as a sampler of the module's protocol.

    The process becomes an SDE by :func:`~genmodels.models.sde.as_sde` (a DDPM's schedule is
    the VP SDE), the ε-network a score by :func:`~genmodels.models.sde.score_from_eps`;
    ``clip`` is accepted and unused (these samplers form no x̂_0), ``spacing`` must be None
    or ``"uniform"``.
    """

    def sampler(
        eps_model: EpsModel,
        x: Tensor,
        process,
        ts: Tensor | Sequence[float] | None = None,
        *,
        steps: int | None = None,
        spacing: str | None = None,
        clip: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        stats: dict | None = None,
        **own,
    ) -> Tensor:
        if spacing not in (None, "uniform"):
            raise ValueError(f"{sde_sampler.__name__}: spacing must be 'uniform', got {spacing!r}")
        sde = as_sde(process)
        kw = dict(callback=callback, stats=stats, steps=steps, **own)
        if stochastic:
            kw.update(generator=generator)
        return sde_sampler(score_from_eps(eps_model, sde), sde, x, ts, **kw)

    sampler.__name__ = sde_sampler.__name__
    sampler.__doc__ = f"{sde_sampler.__name__} on the sampler protocol: see its own docstring."
    sampler.sde_sampler = sde_sampler
    return sampler


SAMPLERS["euler_maruyama"] = _on_protocol(euler_maruyama)
SAMPLERS["pc"] = _on_protocol(pc)
SAMPLERS["ode"] = _on_protocol(ode, stochastic=False)
