"""Denoising diffusion probabilistic models (the lecture's section 7).

Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models"; DDIM from
Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models".

Forward process (a fixed Markov chain, the lecture's "前向过程")::

    q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I)
    q(x_t | x_0)     = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),   α_t = 1 - β_t,  ᾱ_t = Π_{s≤t} α_s

The reverse process p_θ(x_{t-1} | x_t) = N(μ_θ(x_t, t), σ_t² I) is parameterised
by a noise predictor ε_θ(x_t, t). Training is the lecture's Algorithm 1 (the
loss is L_simple; the lecture's weighted form β_t² / (2σ_t² α_t (1-ᾱ_t)) is
an option); sampling is Algorithm 2 (:func:`ancestral`), and :func:`ddim` is a
second sampler of the same trained network.

Timestep convention: arrays are indexed by ``i = t - 1 ∈ {0, ..., T-1}``, and the
network receives ``i`` (diffusers' convention), so any ``eps_model(x, i)`` works.

Samplers are plain functions over a time grid and a network (k-diffusion style);
:meth:`DDPM.sample` only dispatches to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import fold_fields
from ..distributions import Standardize, check_batch
from ..nn import time_network
from ..registry import DataInfo, register

__all__ = [
    "NoiseSchedule",
    "DDPM",
    "DDPMConfig",
    "ancestral",
    "ddim",
    "ddim_timesteps",
    "SAMPLERS",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NoiseSchedule:
    """β_1..β_T and everything derived from them, kept in float64.

    Attributes (all float64 tensors of length T, index i = t - 1):
        betas, alphas, alphas_cumprod (ᾱ_t), alphas_cumprod_prev (ᾱ_{t-1}, with ᾱ_0 = 1),
        posterior_variance (β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t); β̃_1 = 0).
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


# ---------------------------------------------------------------------------
# Samplers: plain functions over a time grid and a network.
# ---------------------------------------------------------------------------


def _shared_t(i: int, n: int, device) -> torch.Tensor:
    # One timestep for the whole batch, as an (n,) view with stride 0: networks
    # that index an embedding with it work unchanged, and TimeMLP computes it once.
    return torch.full((1,), i, dtype=torch.long, device=device).expand(n)


@torch.inference_mode()
def ancestral(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    variance: Literal["beta_tilde", "beta"] = "beta_tilde",
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling: the lecture's Algorithm 2, one line per line.

    ::

        x_T ~ N(0, I)
        for t = T, ..., 1:
            z ~ N(0, I) if t > 1 else z = 0
            x_{t-1} = 1/sqrt(α_t) (x_t - (1-α_t)/sqrt(1-ᾱ_t) ε_θ(x_t, t)) + σ_t z
        return x_0

    With ``clip=(lo, hi)`` (data known to lie in a box, e.g. images in [-1, 1]),
    the mean is computed through the clipped prediction x̂_0 instead (Ho et al.'s
    released code), which equals the line above when nothing is clipped.

    Args:
        eps_model: ``eps_model(x, i) -> ε̂`` with integer timesteps ``i = t - 1``.
        x_T: the starting noise ``(n, ...)``.
        schedule: the β schedule the network was trained with.
        variance: σ_t² = β̃_t (default) or β_t.
        clip: optional box for x̂_0.
        generator: source of the z draws.
        callback: called as ``callback(i, x_i)`` after each step (e.g. to record the chain).
    Returns:
        x_0, same shape as ``x_T``.
    """
    n, dev = x_T.shape[0], x_T.device
    T = len(schedule)
    a, ab, abp = schedule.alphas, schedule.alphas_cumprod, schedule.alphas_cumprod_prev
    sigma = schedule.sigma2(variance).sqrt()
    # Python floats, computed once in float64: the loop does tensor work only.
    c_x = (1 / a.sqrt()).tolist()
    c_eps = ((1 - a) / (1 - ab).sqrt()).tolist()
    sig = sigma.tolist()
    if clip is not None:
        c_x0 = (abp.sqrt() * schedule.betas / (1 - ab)).tolist()
        c_xt = (a.sqrt() * (1 - abp) / (1 - ab)).tolist()
        sqrt_ab, sqrt_1mab = ab.sqrt().tolist(), (1 - ab).sqrt().tolist()
    steps = [_shared_t(i, n, dev) for i in range(T)]
    x = x_T.clone()
    for i in reversed(range(T)):  # i = t - 1
        eps = eps_model(x, steps[i])
        if clip is None:
            x = (x - c_eps[i] * eps).mul_(c_x[i])
        else:
            x0 = ((x - sqrt_1mab[i] * eps) / sqrt_ab[i]).clamp_(*clip)
            x = x.mul_(c_xt[i]).add_(x0, alpha=c_x0[i])
        if i > 0:
            z = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            x.add_(z, alpha=sig[i])
        if callback is not None:
            callback(i, x)
    return x


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> list[int]:
    """The decreasing sub-sequence of timesteps (indices ``0..T-1``) DDIM visits.

    ``"leading"``: ``[0, r, 2r, ...] ` with ``r = T // steps`` (diffusers' default);
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


@torch.inference_mode()
def ddim(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "leading",
    final_alpha_cumprod: float = 1.0,
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) on a sub-sequence of timesteps.

    For consecutive visited timesteps t > s (ᾱ_s = ``final_alpha_cumprod`` after the last)::

        x̂_0 = (x_t - sqrt(1-ᾱ_t) ε_θ(x_t, t)) / sqrt(ᾱ_t)
        σ   = η sqrt((1-ᾱ_s)/(1-ᾱ_t)) sqrt(1 - ᾱ_t/ᾱ_s)
        x_s = sqrt(ᾱ_s) x̂_0 + sqrt(1-ᾱ_s-σ²) ε_θ(x_t, t) + σ z

    η = 0 is the deterministic DDIM; η = 1 matches DDPM's β̃ variance. Defaults
    match diffusers' ``DDIMScheduler`` (50 steps, leading spacing, η = 0, final ᾱ = 1).
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    n, dev = x_T.shape[0], x_T.device
    ab = schedule.alphas_cumprod.tolist()
    ts = ddim_timesteps(len(schedule), steps, spacing)
    x = x_T.clone()
    for k, t in enumerate(ts):
        a_t = ab[t]
        a_s = ab[ts[k + 1]] if k + 1 < len(ts) else final_alpha_cumprod
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        eps = eps_model(x, _shared_t(t, n, dev))
        dir_coef = math.sqrt(max(1 - a_s - sigma * sigma, 0.0))
        if clip is None:
            # the lines above, folded: x_s = sqrt(a_s/a_t) x_t + c_eps ε
            c_eps = dir_coef - math.sqrt(a_s * (1 - a_t) / a_t)
            x = x.mul_(math.sqrt(a_s / a_t)).add_(eps, alpha=c_eps)
        else:
            x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp_(*clip)
            # the direction term uses the ε implied by the clipped x̂_0 (as diffusers'
            # DDIMScheduler does): with the raw ε, every clip pushes the state further
            # out and deterministic DDIM saturates to ±1 (seen on 8x8 digits)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
            x = x0.mul_(math.sqrt(a_s)).add_(eps, alpha=dir_coef)
        if sigma > 0:
            z = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            x.add_(z, alpha=sigma)
        if callback is not None:
            callback(t, x)
    return x


SAMPLERS = {"ancestral": ancestral, "ddim": ddim}


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------


class DDPM(nn.Module):
    """A DDPM over data of any shape with a user-supplied ε-network.

    Args:
        eps_model: ``eps_model(x, i) -> ε̂`` (same shape as x), timesteps ``i ∈ 0..T-1``.
        event_shape: shape of one example.
        schedule: a :class:`NoiseSchedule` (default: linear, T = 1000, 1e-4 to 0.02).
        variance: σ_t² for sampling and the weighted loss, ``"beta_tilde"`` or ``"beta"``.
        loss_type: ``"simple"`` (L_simple, Algorithm 1) or ``"weighted"`` (the lecture's
            β_t²/(2σ_t² α_t (1-ᾱ_t)) weighting: the ELBO's L_{t-1} terms up to a constant).
        clip: box for x̂_0 during sampling, only for data known to lie in it (images).
        standardize: learn in standardised coordinates (per-feature mean/std of the
            training data, set by :meth:`init_from_data`); samples and bounds are
            returned in data coordinates.

    Example::

        model = DDPM(TimeMLP(2), event_shape=(2,))
        loss = model.loss(x0, generator=g)      # Algorithm 1, one step
        x = model.sample(1000, sampler="ddim")  # 50 DDIM steps
    """

    def __init__(
        self,
        eps_model: nn.Module,
        event_shape: tuple[int, ...],
        schedule: NoiseSchedule | None = None,
        *,
        variance: str = "beta_tilde",
        loss_type: str = "simple",
        clip: tuple[float, float] | None = None,
        standardize: bool = False,
    ):
        super().__init__()
        self.event_shape = tuple(event_shape)
        # registered first: checkpoints keep their keys (data_mean, data_std first)
        self.standardizer = Standardize.identity(self.event_shape)
        self.standardizer.keep_checkpoint_names(self, "data_mean", "data_std")
        self.eps_model = eps_model
        self.schedule = schedule or NoiseSchedule.linear()
        self.schedule.sigma2(variance)  # validates
        if loss_type not in ("simple", "weighted"):
            raise ValueError(f"loss_type must be 'simple' or 'weighted', got {loss_type!r}")
        self.variance, self.loss_type, self.clip = variance, loss_type, clip
        self.standardize = standardize
        s = self.schedule
        self.register_buffer("sqrt_ab", s.alphas_cumprod.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1mab", (1 - s.alphas_cumprod).sqrt().float(), persistent=False)
        # The lecture's weight β_t² / (2 σ_t² α_t (1 - ᾱ_t)); β̃_1 = 0, so t = 1 uses β̃_2
        # (as the DDPM code clips the posterior log-variance). Normalised to mean 1.
        sig2 = s.sigma2(variance).clone()
        if variance == "beta_tilde" and len(sig2) > 1:
            sig2[0] = sig2[1]
        w = s.betas**2 / (2 * sig2 * s.alphas * (1 - s.alphas_cumprod))
        self.register_buffer("loss_weight", (w / w.mean()).float(), persistent=False)

    @property
    def timesteps(self) -> int:
        return len(self.schedule)

    @property
    def data_mean(self) -> torch.Tensor:
        """Per-feature mean of the training data (zeros unless ``standardize``)."""
        return self.standardizer.loc

    @property
    def data_std(self) -> torch.Tensor:
        """Per-feature standard deviation of the training data (ones unless ``standardize``)."""
        return self.standardizer.scale

    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the standardisation statistics from training data (if ``standardize``)."""
        check_batch(x, self.event_shape, "x")
        if self.standardize:
            self.standardizer.set_(x)

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardizer(x)[0] if self.standardize else x

    def _to_data(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardizer.inverse(x)[0] if self.standardize else x

    def _check(self, x: torch.Tensor, name: str = "x") -> None:
        check_batch(x, self.event_shape, name)

    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε: a draw from q(x_t | x_0) in closed form."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return self.sqrt_ab[i].view(shape) * x0 + self.sqrt_1mab[i].view(shape) * eps

    def loss(self, batch: torch.Tensor, *, generator: torch.Generator | None = None):
        """Algorithm 1: ``‖ε - ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε, t)‖²`` averaged over the batch.

        t ~ Uniform{1..T}, ε ~ N(0, I), both from ``generator``. Returns a scalar
        (mean over examples and dimensions; weighted per t if ``loss_type="weighted"``).
        """
        self._check(batch, "batch")
        x0 = self._to_model(batch)
        n = x0.shape[0]
        i = torch.randint(0, self.timesteps, (n,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        err = (eps - self.eps_model(self.q_sample(x0, i, eps), i)).square()
        per_example = err.flatten(1).mean(1)
        if self.loss_type == "weighted":
            per_example = per_example * self.loss_weight[i]
        return per_example.mean()

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str = "ancestral",
        steps: int | None = None,
        return_chain: bool = False,
        progress: bool = False,
        **options,
    ):
        """Draw ``n`` samples ``(n, *event_shape)`` in data coordinates.

        Args:
            sampler: ``"ancestral"`` (Algorithm 2, T steps) or ``"ddim"`` (default 50 steps).
            steps: number of DDIM steps (ancestral always takes T).
            return_chain: also return the chain as a list of ``(i, x_i)`` in data coordinates.
            progress: a tqdm bar over the sampler's steps (on stderr).
            options: passed to the sampler (``variance``, ``eta``, ``spacing``...).
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        p = next(self.parameters(), None)
        dev = p.device if p is not None else self.data_mean.device
        dtype = p.dtype if p is not None else torch.float32
        x_T = torch.randn((n, *self.event_shape), generator=generator, device=dev, dtype=dtype)
        opts = dict(options)
        opts.setdefault("clip", self.clip)
        if sampler == "ancestral":
            if steps not in (None, self.timesteps):
                raise ValueError(
                    f"the ancestral sampler takes all T={self.timesteps} steps; use --sampler ddim "
                    f"for {steps} steps"
                )
            opts.setdefault("variance", self.variance)
        elif steps is not None:
            opts["steps"] = steps
        chain = []
        callbacks = []
        if return_chain:
            callbacks.append(lambda i, x: chain.append((i, self._to_data(x.clone()))))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            total = self.timesteps
            if sampler == "ddim":
                spacing = opts.get("spacing", "leading")
                total = len(ddim_timesteps(self.timesteps, opts.get("steps", 50), spacing))
            bar = tqdm(total=total, desc=f"{sampler} sampling, n={n}")
            callbacks.append(lambda i, x: bar.update())
        if callbacks:
            opts["callback"] = lambda i, x: [c(i, x) for c in callbacks]
        try:
            x0 = SAMPLERS[sampler](self.eps_model, x_T, self.schedule, generator=generator, **opts)
        finally:
            if bar is not None:
                bar.close()
        out = self._to_data(x0)
        return (out, chain) if return_chain else out

    @property
    def default_bound_n(self) -> int | None:
        """Test points ``genmodels evaluate`` spends on :meth:`nll_bound` by default: each
        example costs T network passes, so images get a seeded subset of 100."""
        return 100 if len(self.event_shape) == 3 else None

    @torch.inference_mode()
    def nll_bound(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None, batch_size: int = 4096
    ) -> torch.Tensor:
        """The variational bound -ELBO ≥ -log p(x) in nats per example, ``(n,)``.

        L = L_T + Σ_{t=2}^T L_{t-1} + L_0 (Ho et al. 2020, eq. 5) with every term
        evaluated (one ε draw per term):

        - L_T = KL(q(x_T|x_0) ‖ N(0, I)), in closed form;
        - L_{t-1} = KL(q(x_{t-1}|x_t, x_0) ‖ p_θ(x_{t-1}|x_t)) for Gaussians with
          σ_t² of the model's ``variance``;
        - L_0 = -log N(x_0; μ_θ(x_1, 1), σ_1²) with σ_1² = β_1: a continuous decoder,
          so this bounds the *density* of continuous data (for quantised images,
          see ``genmodels.data.bits_per_dim``).

        The log-determinant of the internal standardisation is included, so the
        bound is in the coordinates of ``x``.
        """
        self._check(x)
        out = [self._nll_bound_batch(xb, generator) for xb in x.split(batch_size)]
        return torch.cat(out)

    def _nll_bound_batch(self, x, generator):
        s = self.schedule
        x0 = self._to_model(x).double()
        n, dev = x0.shape[0], x0.device
        ab = s.alphas_cumprod.to(dev)
        abp = s.alphas_cumprod_prev.to(dev)
        betas, alphas = s.betas.to(dev), s.alphas.to(dev)
        sig2 = s.sigma2(self.variance).to(dev)
        post_var = s.posterior_variance.to(dev)
        flat = x0.flatten(1)
        # L_T: KL(N(sqrt(ab_T) x0, 1-ab_T) || N(0, 1)), summed over dimensions.
        m, v = ab[-1].sqrt() * flat, 1 - ab[-1]
        total = 0.5 * (v + m.square() - 1 - v.log()).sum(1)
        dtype = next(self.eps_model.parameters()).dtype
        for i in range(self.timesteps):
            eps = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float64)
            xt = ab[i].sqrt() * x0 + (1 - ab[i]).sqrt() * eps
            e_hat = self.eps_model(xt.to(dtype), _shared_t(i, n, dev)).double()
            # μ_θ(x_t, t) = (x_t - β_t/sqrt(1-ᾱ_t) ε̂) / sqrt(α_t)
            mu = (xt - betas[i] / (1 - ab[i]).sqrt() * e_hat) / alphas[i].sqrt()
            if i == 0:  # L_0 = -log N(x_0; μ, β_1)
                var0 = betas[0]
                nll = 0.5 * ((x0 - mu).square() / var0 + var0.log() + math.log(2 * math.pi))
                total = total + nll.flatten(1).sum(1)
            else:  # L_{t-1}: KL of two Gaussians with means μ̃, μ and variances β̃_t, σ_t²
                mu_tilde = (abp[i].sqrt() * betas[i] / (1 - ab[i])) * x0 + (
                    alphas[i].sqrt() * (1 - abp[i]) / (1 - ab[i])
                ) * xt
                r = post_var[i] / sig2[i]
                kl = 0.5 * ((mu_tilde - mu).square() / sig2[i] + r - 1 - r.log())
                total = total + kl.flatten(1).sum(1)
        if self.standardize:
            total = total + self.data_std.double().log().sum()
        return total.to(x.dtype)


# ---------------------------------------------------------------------------
# Registry entry.
# ---------------------------------------------------------------------------


@dataclass
class DDPMConfig:
    """Hyper-parameters of ``genmodels train ddpm`` (``--set key=value``).

    The ε-network is chosen from the data's shape by :func:`genmodels.nn.time_network`;
    ``width`` and ``depth`` mean what they mean for that network, and ``None`` is the
    measured default for the data:

    ===========================  =========================================  =====  =====
    data                         ε-network (``net="auto"``)                 width  depth
    ===========================  =========================================  =====  =====
    points ``(d,)``              TimeMLP: ``depth`` layers of ``width``       128    3
    images, ≤ 256 pixels (8x8)   TimeMLP on the flattened pixels              512    4
    images, > 256 pixels         U-Net: ``width`` base channels, ``depth``    16     1
                                 residual blocks per level, ``mults``
    ===========================  =========================================  =====  =====

    ``net`` forces ``"mlp"`` or ``"unet"`` (images only); ``mults`` (the U-Net's width
    multiplier per level) is unused by the MLP. Runs saved before these fields were merged
    (``image_mlp_width``, ``image_mlp_depth``, ``channels``, ``blocks``) load: the old field
    that was set maps to ``width``/``depth`` (:meth:`upgrade_fields`).
    """

    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: str = "linear"
    variance: str = "beta_tilde"
    loss_type: str = "simple"
    net: str = "auto"
    width: int | None = None
    depth: int | None = None
    mults: tuple[int, ...] = (1, 2, 2)
    emb_dim: int = 128
    activation: str = "silu"
    standardize: bool = False

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """Map an old config's ``image_mlp_width``/``channels`` onto ``width`` and
        ``image_mlp_depth``/``blocks`` onto ``depth`` (an old run's ``config.json``)."""
        if not {"image_mlp_width", "image_mlp_depth", "channels", "blocks"} & set(old):
            return old
        net = old.get("net", "auto")
        widths = {"width": 128, "image_mlp_width": 512, "channels": 16}
        depths = {"depth": 3, "image_mlp_depth": 4, "blocks": 1}
        if net == "unet":  # the MLP fields were unused
            ignored = ("width", "image_mlp_width", "depth", "image_mlp_depth")
        elif net == "mlp":  # the U-Net fields were unused
            ignored = ("channels", "blocks")
        else:
            ignored = ()
        old = {k: v for k, v in old.items() if k not in ignored}
        widths = {k: v for k, v in widths.items() if k not in ignored}
        depths = {k: v for k, v in depths.items() if k not in ignored}
        new = fold_fields(old, "width", widths, what="ddpm config")
        return fold_fields(new, "depth", depths, what="ddpm config")

    def validate(self) -> None:
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.variance not in ("beta_tilde", "beta"):
            raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {self.variance!r}")
        if self.loss_type not in ("simple", "weighted"):
            raise ValueError(f"loss_type must be 'simple' or 'weighted', got {self.loss_type!r}")
        if self.net not in ("auto", "mlp", "unet"):
            raise ValueError(f"net must be 'auto', 'mlp' or 'unet', got {self.net!r}")
        if (self.width is not None and self.width < 1) or (
            self.depth is not None and self.depth < 1
        ):
            raise ValueError(f"width and depth must be >= 1, got {self.width}, {self.depth}")
        if self.emb_dim < 2 or self.emb_dim % 2:
            raise ValueError(f"emb_dim must be a positive even number, got {self.emb_dim}")
        if not self.mults or min(self.mults) < 1:
            raise ValueError(f"every entry of mults must be >= 1, got {self.mults}")


@register(
    "ddpm",
    config=DDPMConfig,
    default_data="moons",
    description="denoising diffusion (Ho et al. 2020): Algorithm 1 training, ancestral and DDIM",
    task="density",
    data_kinds=("points", "images"),
)
def build_ddpm(config: DDPMConfig, info: DataInfo) -> DDPM:
    """A DDPM with the ε-network :func:`genmodels.nn.time_network` picks for the data's shape
    (see :class:`DDPMConfig`). Images live in [-1, 1]: sampling clips x̂_0 to that box (Ho
    et al.'s code) and they are not standardised."""
    if info.kind not in ("points", "images"):
        raise ValueError(f"ddpm has no default network for {info.kind} data")
    if config.schedule == "linear":
        schedule = NoiseSchedule.linear(config.timesteps, config.beta_start, config.beta_end)
    else:
        schedule = NoiseSchedule.cosine(config.timesteps)
    net = time_network(
        info.event_shape,
        net=config.net,
        width=config.width,
        depth=config.depth,
        emb_dim=config.emb_dim,
        activation=config.activation,
        mults=config.mults,
    )
    images = info.kind == "images"
    return DDPM(
        net,
        info.event_shape,
        schedule,
        variance=config.variance,
        loss_type=config.loss_type,
        clip=(-1.0, 1.0) if images else None,
        standardize=config.standardize and not images,
    )
