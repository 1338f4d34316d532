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

The schedule is a noise process over continuous time (:mod:`.noise`: step t sits at
t/T ∈ (0, 1]), and the samplers are plain functions over a time grid and a network
(:mod:`.samplers`, k-diffusion style); :meth:`DDPM.sample` only dispatches to them.
``NoiseSchedule``, ``ancestral``, ``ddim``, ``ddim_timesteps`` and ``SAMPLERS`` are
re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import fold_fields
from ..distributions import Standardize, check_batch
from ..nn import time_network_for
from ..nn.embeddings import check_time_scale
from ..registry import DataInfo, register
from .noise import LinearVP, NoiseProcess, NoiseSchedule, ddim_timesteps
from .samplers import (
    SAMPLERS,
    ancestral,
    check_variable,
    ddim,
    pf_ode_log_prob,
    resolve_snr,
)
from .sde import VPSDE, dequantization_width, score_from_eps, uniform_dequantize

__all__ = [
    "NoiseProcess",
    "NoiseSchedule",
    "LinearVP",
    "discretised_gaussian_log_prob",
    "DDPM",
    "DDPMConfig",
    "DEFAULT_TIME_SCALE",
    "ancestral",
    "ddim",
    "ddim_timesteps",
    "SAMPLERS",
]

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
        levels: number of grey levels of quantised data on the grid -1 + 2k/(levels-1)
            (images), or None (continuous data). With levels, :meth:`nll_bound`'s L_0 is
            Ho et al.'s discretised decoder and the bound is on the discrete NLL.
        time_sampling: the training times of :meth:`loss`: ``"discrete"`` (Algorithm 1,
            integer steps) or ``"continuous"`` (real net times in [0, T-1], the schedule's
            ᾱ interpolated between grid points; see :meth:`loss`).

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
        levels: int | None = None,
        dequantize: str = "none",
        time_sampling: str = "discrete",
    ):
        super().__init__()
        if time_sampling not in ("discrete", "continuous"):
            raise ValueError(
                f"time_sampling must be 'discrete' or 'continuous', got {time_sampling!r}"
            )
        if time_sampling == "continuous" and loss_type != "simple":
            raise ValueError(
                "time_sampling='continuous' needs loss_type='simple' (the weighted loss's "
                f"weights are defined at the integer steps), got loss_type={loss_type!r}"
            )
        self.time_sampling = time_sampling
        if levels is not None and (not isinstance(levels, int) or levels < 2):
            raise ValueError(f"levels must be an integer >= 2 or None, got {levels!r}")
        self.levels = levels
        # "uniform": trained on x + w u (see models.sde.dequantization_width)
        self.dequantize, self.dequant_width = dequantize, dequantization_width(dequantize, levels)
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

        With ``time_sampling="continuous"`` the net time is real, u ~ Uniform[0, T-1], at
        process time t = (u + 1)/T ∈ [1/T, 1], and x_t = sqrt(ᾱ(t)) x_0 + sqrt(1-ᾱ(t)) ε
        with ᾱ(t) of the schedule as a noise process (:meth:`NoiseSchedule.log_alpha_bar`:
        exact at the integer steps, log ᾱ linear in between). That is the map the continuous
        samplers (``euler_maruyama``, ``pc``, ``ode``, the likelihood) read the network
        through, ``net_time(t) = t·T - 1``, so the network is trained at every time they
        query instead of at the integers alone (the continuous-time objective of Song et al.
        2021, eq. 7, with λ(t) = σ(t)², on the DDPM's schedule; Kingma et al. 2021, "Variational
        Diffusion Models", train the same way in continuous time). The ancestral and DDIM
        samplers still query integer steps, which this objective includes as a special case.
        """
        self._check(batch, "batch")
        x0 = self._to_model(batch)
        if self.dequant_width is not None:  # uniform dequantisation, u drawn first
            x0 = uniform_dequantize(x0, self.dequant_width, generator)
        n = x0.shape[0]
        if self.time_sampling == "continuous":
            u = torch.rand(n, generator=generator, device=x0.device, dtype=torch.float64)
            u = u * (self.timesteps - 1)  # the network's (real) time input
            lab = self.schedule.log_alpha_bar((u.cpu() + 1) / self.timesteps)
            shape = (-1,) + (1,) * (x0.dim() - 1)
            a = (0.5 * lab).exp().to(device=x0.device, dtype=x0.dtype).view(shape)
            s = (-torch.expm1(lab)).sqrt().to(device=x0.device, dtype=x0.dtype).view(shape)
            eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            err = (eps - self.eps_model(a * x0 + s * eps, u)).square()
            return err.flatten(1).mean(1).mean()
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
            sampler: a name in :data:`SAMPLERS`: ``"ancestral"`` (Algorithm 2; every step
                by default), ``"ddim"`` (50 steps by default), or the VP SDE's samplers
                ``"euler_maruyama"``, ``"pc"`` (1000 steps by default; ``snr`` from
                :data:`~.samplers.DEFAULT_PC_SNR` unless given: points 0.04, images 0.16) and
                ``"ode"`` (adaptive; no ``steps``).
            steps: network evaluations (a sub-grid of the T steps; the sampler's default
                when None).
            return_chain: also return the chain as a list of ``(t, x_t)`` in data
                coordinates, t the continuous time in [0, 1) after each step.
            progress: a tqdm bar over the sampler's steps (on stderr).
            options: passed to the sampler (``variance``, ``eta``, ``spacing``, ``ts``,
                ``stats``...).
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
            opts.setdefault("variance", self.variance)
        resolve_snr(sampler, opts, self.event_shape)
        if steps is not None:
            opts["steps"] = steps
        chain, callbacks, bar = [], [], None
        if return_chain:
            callbacks.append(lambda d: chain.append((d["t"], self._to_data(d["x"].clone()))))
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=f"{sampler} sampling, n={n}")

            def tick(d):
                if bar.total is None:
                    bar.reset(total=d["n"])
                bar.update()

            callbacks.append(tick)
        if callbacks:
            opts["callback"] = lambda d: [c(d) for c in callbacks]
        try:
            x0 = SAMPLERS[sampler](self.eps_model, x_T, self.schedule, generator=generator, **opts)
        finally:
            if bar is not None:
                bar.close()
        out = self._to_data(x0)
        return (out, chain) if return_chain else out

    @property
    def sde(self) -> VPSDE:
        """The VP SDE this DDPM is: ``VPSDE(process=self.schedule)`` (:mod:`.sde`)."""
        return VPSDE(process=self.schedule)

    def log_prob(self, x: torch.Tensor, **options) -> torch.Tensor:
        """The exact log-density through the probability flow ODE: :meth:`pf_log_prob`.

        On quantised images (``levels`` set) this is the continuous density at the grid
        values, not a likelihood of the discrete data (that needs a model trained with
        uniform dequantisation); ``genmodels evaluate`` then reports the discretised bound
        alone, as it does for an image flow.
        """
        return self.pf_log_prob(x, **options)

    @torch.no_grad()
    def pf_log_prob(
        self,
        x: torch.Tensor,
        *,
        trace: str | None = None,
        variable: str = "t",
        generator: torch.Generator | None = None,
        stats: dict | None = None,
    ) -> torch.Tensor:
        """log p(x) in nats per example, ``(n,)``, by the probability flow ODE of the VP SDE.

        The DDPM's ε-network is the score -ε̂/σ(t) of ``VPSDE(process=schedule)`` (continuous
        t reaches the net as t·T - 1), and :func:`~genmodels.models.samplers.pf_ode_log_prob`
        (eps = 1e-5, rtol = atol = 1e-5, dopri5) integrates the instantaneous change of
        variables (Song et al. 2021, appendix D.2). ``trace``: ``"exact"`` (default for at
        most 8 dimensions) or ``"hutchinson"`` (default above; noise from ``generator``).
        ``variable``: the coordinates the solver steps in, ``"t"`` (default), ``"sigma"`` or
        ``"log_sigma"`` (:func:`~genmodels.models.samplers.pf_ode_log_prob`; the same
        likelihood up to the solver's error).
        In the coordinates of ``x``: the standardisation's log-determinant is included.
        Unlike :meth:`nll_bound` this is the model's likelihood, not a bound on it.
        """
        self._check(x)
        check_variable(variable)
        if trace is None:
            trace = "exact" if math.prod(self.event_shape) <= 8 else "hutchinson"
        sde = self.sde
        lp = pf_ode_log_prob(
            score_from_eps(self.eps_model, sde),
            sde,
            self._to_model(x),
            trace=trace,
            variable=variable,
            generator=generator,
            stats=stats,
        )
        if self.standardize:
            lp = lp - self.data_std.double().log().sum().to(lp.dtype)
        return lp

    @property
    def default_bound_n(self) -> int | None:
        """Test points ``genmodels evaluate`` spends on :meth:`nll_bound` by default: each
        example costs T network passes, so images get a seeded subset of 100."""
        return 100 if len(self.event_shape) == 3 else None

    @property
    def bound_is_discrete(self) -> bool:
        """True when :meth:`nll_bound` bounds the discrete NLL -log P(x) (``levels`` set):
        its bits/dim is NLL/(D ln 2) with no bin term (``bits_per_dim(..., discrete=True)``)."""
        return self.levels is not None

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
        - L_0 = -log p_θ(x_0 | x_1) with the decoder N(μ_θ(x_1, 1), σ_1²), σ_1² = β_1:

          * quantised data (``levels`` set): Ho et al.'s discretised decoder (eq. 13),
            -log of the Gaussian's mass over x_0's bin [x_0 - w/2, x_0 + w/2] (w =
            2/(levels-1); the end bins open to ±∞). Then L bounds the *discrete* NLL
            -log P(x) ≥ 0, and bits/dim is L/(D ln 2) with no dequantisation term
            (:attr:`bound_is_discrete`; ``genmodels.data.bits_per_dim(..., discrete=True)``).
          * continuous data: -log N(x_0; μ_θ, σ_1²), a bound on the *density*, in the
            coordinates of ``x`` (the standardisation's log-determinant included).

        A continuous L_0 at quantised values is not a bound on the discrete NLL: with
        σ_1 = 0.01 and digits' bin of 0.125 the density times the bin reaches 5 > 1.
        """
        self._check(x)
        if self.levels is not None:
            w = 2.0 / (self.levels - 1)
            k = torch.round((x.double() + 1) / w)
            if (
                bool(((x.double() - (k * w - 1)).abs() > w / 4).any())
                or k.min() < 0
                or k.max() >= self.levels
            ):
                raise ValueError(
                    f"x must lie on the {self.levels} levels -1 + 2k/{self.levels - 1} in [-1, 1]"
                )
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
            t_net = torch.full((1,), i, dtype=torch.long, device=dev).expand(n)
            e_hat = self.eps_model(xt.to(dtype), t_net).double()
            # μ_θ(x_t, t) = (x_t - β_t/sqrt(1-ᾱ_t) ε̂) / sqrt(α_t)
            mu = (xt - betas[i] / (1 - ab[i]).sqrt() * e_hat) / alphas[i].sqrt()
            if i == 0:  # L_0 = -log p(x_0 | x_1), decoder N(μ, β_1)
                total = total + self._decoder_nll(x, mu, betas[0]).flatten(1).sum(1)
            else:  # L_{t-1}: KL of two Gaussians with means μ̃, μ and variances β̃_t, σ_t²
                mu_tilde = (abp[i].sqrt() * betas[i] / (1 - ab[i])) * x0 + (
                    alphas[i].sqrt() * (1 - abp[i]) / (1 - ab[i])
                ) * xt
                r = post_var[i] / sig2[i]
                kl = 0.5 * ((mu_tilde - mu).square() / sig2[i] + r - 1 - r.log())
                total = total + kl.flatten(1).sum(1)
        return total.to(x.dtype)

    def _decoder_nll(self, x, mu, var0):
        """-log p(x_0 | x_1) per value, float64: x in data coordinates, μ in the model's."""
        if self.levels is None:  # a density, in the coordinates of x
            x0 = self._to_model(x).double()
            nll = 0.5 * ((x0 - mu).square() / var0 + var0.log() + math.log(2 * math.pi))
            if self.standardize:
                nll = nll + self.data_std.double().log()
            return nll
        # discrete: the Gaussian's mass over x's bin, in data coordinates
        mean = self._to_data(mu)
        std = var0.sqrt() * (self.data_std.double() if self.standardize else 1.0)
        k = torch.round((x.double() + 1) * (self.levels - 1) / 2).long()
        return -discretised_gaussian_log_prob(k, mean, std, self.levels)


def _log1mexp(z: torch.Tensor) -> torch.Tensor:
    """log(1 - e^z) for z ≤ 0, accurate at both ends (Mächler 2012)."""
    z = z.clamp(max=0.0)
    return torch.where(z > -math.log(2.0), torch.log(-torch.expm1(z)), torch.log1p(-torch.exp(z)))


def discretised_gaussian_log_prob(
    k: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float, levels: int
) -> torch.Tensor:
    """log P(k) of a Gaussian discretised over levels 0..L-1 (Ho et al. 2020, eq. 13).

    Level k sits at x_k = 2k/(L-1) - 1 in [-1, 1] with bin [x_k - w/2, x_k + w/2],
    w = 2/(L-1), the first bin open to -∞ and the last to +∞:

        P(k) = Φ((x_k + w/2 - μ)/s) - Φ((x_k - w/2 - μ)/s)

    computed as a difference of log-CDFs (``torch.special.log_ndtr``) on the side of
    the bin away from the mean, so that far tails stay finite. Probabilities over the
    L levels sum to 1; log P(k) ≤ 0.

    Args:
        k: integer levels (any shape); mean, std: broadcastable to k.
        levels: L ≥ 2.
    Returns:
        log P(k) in nats, float64, the broadcast shape.

    Example::

        >>> k = torch.arange(5)
        >>> lp = discretised_gaussian_log_prob(k, torch.zeros(5), 0.3, 5)
        >>> round(float(lp.exp().sum()), 12)
        1.0
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64, device=mean.device)
    half = 1.0 / (levels - 1)
    x = (2.0 / (levels - 1)) * k.to(torch.float64) - 1
    inf = torch.tensor(math.inf, dtype=torch.float64, device=mean.device)
    upper = torch.where(k == levels - 1, inf, (x + half - mean) / std)
    lower = torch.where(k == 0, -inf, (x - half - mean) / std)
    # Φ(u) - Φ(l) = Φ(-l) - Φ(-u): use the pair whose CDFs are small (the left tail)
    right = (upper + lower) > 0
    a = torch.where(right, -lower, upper)
    b = torch.where(right, -upper, lower)
    log_a = torch.special.log_ndtr(a)
    return log_a + _log1mexp(torch.special.log_ndtr(b) - log_a)


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

    ``time_sampling``: ``"discrete"`` trains on the integer steps 0..T-1 (Algorithm 1);
    ``"continuous"`` on real net times in [0, T-1] with the schedule's interpolated ᾱ, the
    map the continuous samplers query (:meth:`DDPM.loss`). Runs saved before the field
    existed load as ``"discrete"``, as they trained.

    ``time_scale``: the ε-network's sinusoidal time embedding sees ``time_scale · i`` for net
    time ``i`` (integer steps 0..T-1, or real ones from the continuous samplers), i.e. every
    embedding frequency is multiplied by it (:func:`genmodels.nn.embeddings.scale_time`); a
    positive finite number. ``None`` takes the measured default for the data kind,
    :data:`DEFAULT_TIME_SCALE`: **points 0.1**, images 1. On points 0.1 moves the embedding's
    top frequency from 1 rad per step (period ≈ 6 steps) to 0.1 (≈ 63 steps); on moons, over
    seeds 0-2, the pinned dopri5 1e-5 PF-ODE solve then takes 122-146 evaluations instead of
    350, within 2.5% of DDIM-1000's sliced W1 from the same x_T, with ancestral sampling and
    the PF-ODE likelihood unchanged within the seeds' spread (docs/sde.md, "The time
    embedding's scale"). Images keep 1: unmeasured there. A run saved with ``None`` resolves
    through that table when loaded. Runs saved before the field existed load with 1.0, the
    embedding they trained with.
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
    dequantize: str = "none"
    time_sampling: str = "discrete"
    time_scale: float | None = None

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """Map an old config's ``image_mlp_width``/``channels`` onto ``width`` and
        ``image_mlp_depth``/``blocks`` onto ``depth`` (an old run's ``config.json``); an old
        run saved before ``time_sampling`` existed trained on integer steps: ``"discrete"``;
        one saved before ``time_scale`` existed embedded the unscaled step: 1.0."""
        if "time_sampling" not in old and _FIELDS_OF_EVERY_SAVED_CONFIG <= set(old):
            old = {**old, "time_sampling": "discrete"}
        if "time_scale" not in old and _FIELDS_OF_EVERY_SAVED_CONFIG <= set(old):
            old = {**old, "time_scale": 1.0}
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
        dequantization_width(self.dequantize, 2)  # validates the name
        if self.time_sampling not in ("discrete", "continuous"):
            raise ValueError(
                f"time_sampling must be 'discrete' or 'continuous', got {self.time_sampling!r}"
            )
        if self.time_sampling == "continuous" and self.loss_type != "simple":
            raise ValueError(
                "time_sampling='continuous' needs loss_type='simple' (the weighted loss's "
                "weights are defined at the integer steps)"
            )
        if self.time_scale is not None:
            check_time_scale(self.time_scale, "time_scale")


# ``DDPMConfig.time_scale=None`` per data kind (docs/sde.md, "The time embedding's scale"):
# 0.1 measured on moons (3 seeds) and 8gaussians (1 seed); images unmeasured, unscaled.
DEFAULT_TIME_SCALE = {"points": 0.1, "images": 1.0}

# the fields a saved ddpm config.json has had since the first release: a dict with all of
# them is an old run's config (not a few --set overrides)
_FIELDS_OF_EVERY_SAVED_CONFIG = {
    "timesteps", "beta_start", "beta_end", "schedule", "variance", "loss_type", "emb_dim",
    "activation",
}  # fmt: skip


@register(
    "ddpm",
    config=DDPMConfig,
    default_data="moons",
    description="denoising diffusion (Ho et al. 2020): Algorithm 1 training, ancestral and DDIM",
    task="density",
    section=7,
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
    scale = config.time_scale
    net = time_network_for(
        info.event_shape,
        config,
        time_scale=DEFAULT_TIME_SCALE[info.kind] if scale is None else scale,
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
        levels=info.levels if images else None,
        dequantize=config.dequantize,
        time_sampling=config.time_sampling,
    )
