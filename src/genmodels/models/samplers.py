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

__all__ = ["ancestral", "ddim", "annealed_langevin", "SAMPLERS", "resolve_grid", "batch_times"]

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
