"""Score-based models of the SDE family: ``subvp`` and ``vesde`` (Song et al. 2021).

A :class:`ScoreSDE` is one ε-network (the same :func:`genmodels.nn.time_network` as a DDPM),
trained by denoising score matching over continuous time (Song et al. 2021, eq. 7) in the
ε-form of the lecture's Algorithm 1::

    t ~ U(t_min, 1),  ε ~ N(0, I),  x_t = m(t) x_0 + σ(t) ε
    L = ‖ε - ε_θ(c(t) x_t, net_time(t))‖²,       score = -ε_θ / σ(t)

(the λ(t) = σ(t)² weighting of eq. 7). The network sees x_t scaled by c(t) =
1/sqrt(m(t)² + σ(t)²), unit variance for unit-variance data (Karras et al. 2022's c_in: a VE
state reaches σ_max = 50), and net_time(t) = 999 t. Sampling is any SDE sampler of
:data:`~genmodels.models.samplers.SAMPLERS` (``euler_maruyama``, ``pc``, ``ode``);
``log_prob`` is the probability flow likelihood. The VP member of the family is the DDPM
(``genmodels train ddpm``), whose ancestral and DDIM samplers also apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..distributions import Standardize, check_batch
from ..nn import time_network_for
from ..nn.embeddings import check_time_scale
from ..registry import DataInfo, register
from .samplers import SAMPLERS, check_variable, pf_ode_log_prob, resolve_snr
from .sde import (
    SDE,
    VESDE,
    SubVPSDE,
    dequantization_width,
    score_from_eps,
    uniform_dequantize,
)

__all__ = ["ScoreSDE", "ScoreSDEConfig", "SubVPConfig", "VESDEConfig"]


class _Scaled(nn.Module):
    """ε_θ(c(t) x, 999 t) with c(t) = 1/sqrt(m² + σ²): the network as the samplers call it."""

    def __init__(self, net: nn.Module, sde: SDE):
        super().__init__()
        self.net, self.sde = net, sde

    def forward(self, x: torch.Tensor, t_net: torch.Tensor) -> torch.Tensor:
        t = t_net.detach().double().cpu() / 999.0
        m, s = self.sde.marginal(t)
        c = (m * m + s * s).rsqrt().to(x.device, x.dtype)
        return self.net(x * c.reshape(c.shape + (1,) * (x.dim() - 1)), t_net.to(x.dtype))


class ScoreSDE(nn.Module):
    """A score model over continuous time for an :class:`~genmodels.models.sde.SDE`.

    Args:
        net: ``net(x, t_net) -> ε̂`` (shape of x).
        event_shape: one example's shape.
        sde: :class:`~genmodels.models.sde.SubVPSDE` or :class:`~genmodels.models.sde.VESDE`
            (or any :class:`SDE` whose net time is 999 t).
        t_min: smallest training time (Song et al.: 1e-5).
        standardize: learn in standardised coordinates (log_prob includes the log-det).
        default_sampler: ``sample``'s default.
        levels, dequantize: quantised data's number of levels, and ``"uniform"`` to train
            on ``x + w u`` (:func:`~genmodels.models.sde.dequantization_width`).

    Example::

        m = ScoreSDE(TimeMLP(2), (2,), SubVPSDE())
        loss = m.loss(x0, generator=g); x = m.sample(100, sampler="ode")
    """

    def __init__(
        self,
        net: nn.Module,
        event_shape: tuple[int, ...],
        sde: SDE,
        *,
        t_min: float = 1e-5,
        standardize: bool = False,
        default_sampler: str = "euler_maruyama",
        levels: int | None = None,
        dequantize: str = "none",
    ):
        super().__init__()
        self.levels = levels
        self.dequantize, self.dequant_width = dequantize, dequantization_width(dequantize, levels)
        self.event_shape = tuple(event_shape)
        self.standardizer = Standardize.identity(self.event_shape)
        self.sde, self.t_min, self.standardize = sde, float(t_min), standardize
        self.eps_model = _Scaled(net, sde)
        self.default_sampler = default_sampler

    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the standardisation statistics from training data (if ``standardize``)."""
        check_batch(x, self.event_shape, "x")
        if self.standardize:
            self.standardizer.set_(x)

    def _to_model(self, x):
        return self.standardizer(x)[0] if self.standardize else x

    def _to_data(self, x):
        return self.standardizer.inverse(x)[0] if self.standardize else x

    def loss(self, batch: torch.Tensor, *, generator: torch.Generator | None = None):
        """Denoising score matching in ε-form (module docstring), a scalar."""
        check_batch(batch, self.event_shape, "batch")
        x0 = self._to_model(batch)
        if self.dequant_width is not None:  # uniform dequantisation, u drawn first
            x0 = uniform_dequantize(x0, self.dequant_width, generator)
        n = x0.shape[0]
        u = torch.rand(n, generator=generator, device=x0.device, dtype=torch.float64)
        t = self.t_min + (1 - self.t_min) * u
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.sde.perturb(x0, t.cpu(), eps)
        eps_hat = self.eps_model(x_t, self.sde.net_time(t.cpu()).to(x0.device))
        return (eps - eps_hat).square().flatten(1).mean(1).mean()

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        **options,
    ) -> torch.Tensor:
        """``n`` samples in data coordinates by an SDE sampler (``euler_maruyama``, ``pc``,
        ``ode``) from x_1 ~ the prior; ``options`` go to the sampler (``stats``, ``eps``...)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        sampler = sampler or self.default_sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        fn = SAMPLERS[sampler]
        if getattr(fn, "sde_sampler", None) is None:
            ok = [k for k, v in SAMPLERS.items() if getattr(v, "sde_sampler", None)]
            raise ValueError(
                f"sampler {sampler!r} applies to the discrete VP chain (ddpm) only; a "
                f"{self.sde.name} SDE model samples with {', '.join(ok)}"
            )
        p = next(self.parameters())
        x_T = self.sde.prior_sample(
            (n, *self.event_shape), generator=generator, dtype=p.dtype, device=p.device
        )
        if steps is not None:
            options["steps"] = steps
        resolve_snr(sampler, options, self.event_shape)
        x0 = fn(self.eps_model, x_T, self.sde, generator=generator, **options)
        return self._to_data(x0)

    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        *,
        trace: str | None = None,
        variable: str = "t",
        generator: torch.Generator | None = None,
        stats: dict | None = None,
    ) -> torch.Tensor:
        """log p(x) in nats per example by the probability flow ODE (as ``DDPM.log_prob``:
        exact trace up to 8 dimensions, Hutchinson above; standardisation's log-det included;
        ``variable`` ``"t"`` | ``"sigma"`` | ``"log_sigma"``: the solver's coordinates)."""
        check_batch(x, self.event_shape, "x")
        check_variable(variable)
        if trace is None:
            trace = "exact" if math.prod(self.event_shape) <= 8 else "hutchinson"
        lp = pf_ode_log_prob(
            score_from_eps(self.eps_model, self.sde),
            self.sde,
            self._to_model(x),
            trace=trace,
            variable=variable,
            generator=generator,
            stats=stats,
        )
        if self.standardize:
            lp = lp - self.standardizer.scale.double().log().sum().to(lp.dtype)
        return lp


@dataclass
class ScoreSDEConfig:
    """Network fields shared by ``subvp`` and ``vesde`` (as :class:`~.ddpm.DDPMConfig`'s).

    ``time_scale``: the network's time embedding sees ``time_scale · t_net`` (as the DDPM's);
    default 1 here, unmeasured otherwise. Runs saved before the field load with 1.0.
    """

    net: str = "auto"
    width: int | None = None
    depth: int | None = None
    mults: tuple[int, ...] = (1, 2, 2)
    emb_dim: int = 128
    activation: str = "silu"
    standardize: bool = False
    t_min: float = 1e-5
    dequantize: str = "none"
    time_scale: float = 1.0

    def validate(self) -> None:
        dequantization_width(self.dequantize, 2)  # validates the name
        check_time_scale(self.time_scale, "time_scale")
        if not 0 < self.t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1), got {self.t_min}")
        if self.emb_dim < 2 or self.emb_dim % 2:
            raise ValueError(f"emb_dim must be a positive even number, got {self.emb_dim}")


@dataclass
class SubVPConfig(ScoreSDEConfig):
    """``genmodels train subvp``: the sub-VP SDE's β_min, β_max and the network."""

    beta_min: float = 0.1
    beta_max: float = 20.0


@dataclass
class VESDEConfig(ScoreSDEConfig):
    """``genmodels train vesde``: the VE SDE's σ_min, σ_max and the network."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0


def _build(config: ScoreSDEConfig, info: DataInfo, sde: SDE) -> ScoreSDE:
    if info.kind not in ("points", "images"):
        raise ValueError(f"score SDE models have no default network for {info.kind} data")
    net = time_network_for(info.event_shape, config)
    return ScoreSDE(
        net,
        info.event_shape,
        sde,
        t_min=config.t_min,
        standardize=config.standardize and info.kind != "images",
        levels=info.levels if info.kind == "images" else None,
        dequantize=config.dequantize,
    )


@register(
    "subvp",
    config=SubVPConfig,
    default_data="moons",
    description="score SDE, sub-VP (Song et al. 2021): reverse SDE, PC and PF-ODE samplers, "
    "exact likelihood",
    task="density",
    section=7,
    data_kinds=("points", "images"),
)
def build_subvp(config: SubVPConfig, info: DataInfo) -> ScoreSDE:
    """A :class:`ScoreSDE` with ``SubVPSDE(beta_min, beta_max)``."""
    return _build(config, info, SubVPSDE(config.beta_min, config.beta_max))


@register(
    "vesde",
    config=VESDEConfig,
    default_data="moons",
    description="score SDE, variance exploding (Song et al. 2021; NCSN's continuous limit)",
    task="density",
    section=7,
    data_kinds=("points", "images"),
)
def build_vesde(config: VESDEConfig, info: DataInfo) -> ScoreSDE:
    """A :class:`ScoreSDE` with ``VESDE(sigma_min, sigma_max)``."""
    return _build(config, info, VESDE(config.sigma_min, config.sigma_max))
