"""Conditional Neural Processes and Neural Processes (the lecture's section 5).

Both are the lecture's three parts (Garnelo et al. 2018a, "Conditional Neural Processes";
2018b, "Neural Processes")::

    encoder      r_i = h(x_i, y_i)                 each context point
    aggregator   r   = (1/n) sum_i r_i             permutation invariant
    decoder      (mu_j, sigma_j) = g(x_j, r)       each target, sigma = 0.1 + 0.9 softplus(.)

- CNP: trained by the target log-likelihood ``log N(y_T | mu, sigma^2)``.
- NP: adds a global latent ``z``: ``s = mean_i h_z(x_i, y_i)``, ``q(z | .) = N(mu_z(s),
  sigma_z(s)^2)`` with ``sigma_z = 0.1 + 0.9 sigmoid(.)`` (Le et al. 2018), and the decoder
  ``g(x_j, r, z)``. It is trained by the ELBO with the conditional prior ``q(z | C)``::

      log p(y_T | x_T, C) >= E_{q(z | C ∪ T)} log p(y_T | x_T, r, z) - KL(q(z | C ∪ T) || q(z | C))

The predictive sigma has a floor of 0.1 (``sigma_floor``), as the NP and NDP reference codes
have, so that models compare fairly on the noise-free families. ``predict`` decodes at the
mean of ``q(z | C)``; ``predict(..., n_samples=K, generator=g)`` gives a Normal with a leading
``K`` dimension of z draws (score it as the equal-weight mixture).

Losses are per target value (nats divided by the number of target values), so that one
learning rate fits every family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from ..data.info import DataInfo
from ..registry import register

__all__ = [
    "CNP",
    "NP",
    "LatentProcess",
    "CNPConfig",
    "NPConfig",
    "mlp",
    "batch_inputs",
    "mixture_log_prob",
]


def mlp(sizes: list[int], act=nn.ReLU) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` through ``sizes``."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def batch_inputs(model: nn.Module, x_context, y_context, x_target, dx: int, dy: int):
    """The three inputs in the model's dtype with a batch dimension, and whether to drop it.

    Raises one ValueError naming the argument for a wrong dimension or mismatched lengths.
    """
    p = next(model.parameters())
    args = {"x_context": x_context, "y_context": y_context, "x_target": x_target}
    for k, v in args.items():
        if not isinstance(v, Tensor) or v.dim() not in (2, 3):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{k} must be (n, d) or (B, n, d), got {shape}")
    squeeze = x_context.dim() == 2
    if any((v.dim() == 2) != squeeze for v in args.values()):
        raise ValueError("x_context, y_context and x_target: all with a batch dimension or none")
    xc, yc, xt = (v.to(device=p.device, dtype=p.dtype) for v in args.values())
    if squeeze:
        xc, yc, xt = xc[None], yc[None], xt[None]
    for k, v, d in (("x_context", xc, dx), ("y_context", yc, dy), ("x_target", xt, dx)):
        if v.shape[-1] != d:
            raise ValueError(f"{k} must have last dimension {d}, got {tuple(v.shape)}")
    if xc.shape[:2] != yc.shape[:2] or xt.shape[0] != xc.shape[0]:
        raise ValueError(
            f"x_context {tuple(xc.shape)}, y_context {tuple(yc.shape)} and x_target "
            f"{tuple(xt.shape)} must agree in batch and context length"
        )
    if xc.shape[1] == 0:
        raise ValueError(
            "a neural process needs at least one context point (x_context has 0); "
            "a GP gives the prior predictive there"
        )
    return xc, yc, xt, squeeze


def _out(mu: Tensor, sigma: Tensor, squeeze: bool) -> Normal:
    if squeeze:
        mu, sigma = mu.squeeze(-3), sigma.squeeze(-3)
    return Normal(mu, sigma)


def mixture_log_prob(pred: Normal, y: Tensor) -> Tensor:
    """``log (1/K) sum_k N(y; mu_k, sigma_k^2)`` per task, summed over its target values:
    ``pred`` has a leading ``K`` dimension, ``y`` ``(B, m, dy)`` -> ``(B,)``."""
    lp = pred.log_prob(y).sum((-2, -1))  # (K, B)
    return torch.logsumexp(lp, 0) - torch.log(torch.tensor(float(lp.shape[0])))


class _Decoder(nn.Module):
    """``(mu, sigma) = g(x, rep)`` with ``sigma = floor + (1 - floor) softplus``."""

    def __init__(self, din: int, dy: int, hidden: int, layers: int, sigma_floor: float):
        super().__init__()
        self.net = mlp([din] + [hidden] * layers + [2 * dy])
        self.sigma_floor = sigma_floor

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, raw = self.net(h).chunk(2, -1)
        return mu, self.sigma_floor + (1 - self.sigma_floor) * F.softplus(raw)


class CNP(nn.Module):
    """Conditional Neural Process: encoder, mean aggregator, decoder.

    Args:
        dx, dy: input and output dimensions; hidden, layers: MLP widths and depth;
        r_dim: the representation's size; sigma_floor: the predictive sigma's floor.
    """

    train_defaults = {"lr": 1e-3}
    coherent_functions = False  # sample_functions: independent marginal draws

    def __init__(self, dx=1, dy=1, *, hidden=64, layers=3, r_dim=64, sigma_floor=0.1):
        super().__init__()
        self.dx, self.dy = dx, dy
        self.encoder = mlp([dx + dy] + [hidden] * (layers - 1) + [r_dim])
        self.decoder = _Decoder(dx + r_dim, dy, hidden, layers, sigma_floor)

    def represent(self, xc: Tensor, yc: Tensor) -> Tensor:
        """``r = mean_i h(x_i, y_i)``: ``(B, n, ·)`` -> ``(B, r_dim)``."""
        return self.encoder(torch.cat([xc, yc], -1)).mean(1)

    def _decode(self, xt: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        rr = r.unsqueeze(-2).expand(*r.shape[:-1], xt.shape[-2], r.shape[-1])
        return self.decoder(torch.cat([xt.expand(*rr.shape[:-1], xt.shape[-1]), rr], -1))

    def predict(self, x_context, y_context, x_target, *, n_samples=None, generator=None):
        """``Normal`` over ``y_target`` ``(..., m, dy)`` (a CNP has no latent: ``n_samples=K``
        repeats the one prediction ``K`` times)."""
        xc, yc, xt, squeeze = batch_inputs(self, x_context, y_context, x_target, self.dx, self.dy)
        mu, sigma = self._decode(xt, self.represent(xc, yc))
        if n_samples is not None:
            mu, sigma = (v.expand(n_samples, *v.shape) for v in (mu, sigma))
        return _out(mu, sigma, squeeze)

    def sample_functions(self, x_context, y_context, x_target, n: int, *, generator=None):
        """``n`` draws of ``y_target`` given the context, ``(n, B, m, dy)``: a CNP has no
        latent, so these are **independent draws from each target's marginal**
        ``N(mu_j, sigma_j^2)`` (observation noise included), not coherent functions."""
        _check_n(n)
        p = self.predict(x_context, y_context, x_target)
        eps = torch.randn(
            (n, *p.mean.shape), generator=generator, dtype=p.mean.dtype, device=p.mean.device
        )
        return p.mean + p.stddev * eps

    def loss(self, batch, *, generator=None) -> Tensor:
        """Negative target log-likelihood per target value."""
        xc, yc, xt, yt = batch
        mu, sigma = self._decode(xt, self.represent(xc, yc))
        return -Normal(mu, sigma).log_prob(yt).mean()


class LatentProcess:
    """What the latent-variable processes (NP, NDP, ND2P) share: a mixin for an ``nn.Module``.

    A latent ``w`` (NP: ``z``; NDP: ``(L0, D)``) summarises a set of points through the
    mean-pooled encoder ``s = mean_i h(x_i, y_i)`` and the head ``q(w | set) = N(mu(s),
    (0.1 + 0.9 sigmoid(.))^2)`` (Le et al. 2018's bounded scale). The subclass holds the two
    networks as ``latent_encoder`` and ``latent_head`` and decodes a latent:
    ``_decode_latent(xc, yc, xt, w) -> (mu, sigma)`` with ``w`` ``(..., B, w_dim)`` (any
    leading sample dimensions). On these the mixin writes, once:

    - ``predict``: decode at the mean of ``q(w | C)``, or at ``n_samples`` draws;
    - ``sample_functions``: the decoder's mean at ``n`` draws of ``q(w | C)``: coherent
      functions (one latent per function; the per-point observation noise is left out);
    - ``elbo`` and ``loss``: ``E_{q(w|C∪T)} log p(y_T | w) - KL(q(w|C∪T) || q(w|C))``.
    """

    latent_encoder: nn.Module
    latent_head: nn.Module
    coherent_functions = True  # one latent per sampled function

    def q_latent(self, x: Tensor, y: Tensor) -> Normal:
        """``q(w | {(x_i, y_i)})``: ``(B, n, ·)`` -> a Normal with batch shape ``(B, w_dim)``."""
        s = self.latent_encoder(torch.cat([x, y], -1)).mean(1)
        mu, raw = self.latent_head(s).chunk(2, -1)
        return Normal(mu, 0.1 + 0.9 * torch.sigmoid(raw))

    @staticmethod
    def _draw(q: Normal, n: int, generator, like: Tensor) -> Tensor:
        """``n`` reparameterised draws of ``q``: ``(n, B, w_dim)``."""
        eps = torch.randn(
            (n, *q.mean.shape), generator=generator, dtype=like.dtype, device=like.device
        )
        return q.mean + q.stddev * eps

    def _decode_latent(self, xc, yc, xt, w) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def predict(self, x_context, y_context, x_target, *, n_samples=None, generator=None):
        """``Normal`` over ``y_target`` ``(..., m, dy)`` decoded at the mean of ``q(w | C)``,
        or at ``n_samples`` draws of it (a leading ``K`` dimension)."""
        xc, yc, xt, squeeze = batch_inputs(self, x_context, y_context, x_target, self.dx, self.dy)
        q = self.q_latent(xc, yc)
        w = q.mean if n_samples is None else self._draw(q, n_samples, generator, xt)
        mu, sigma = self._decode_latent(xc, yc, xt, w)
        return _out(mu, sigma, squeeze)

    def sample_functions(self, x_context, y_context, x_target, n: int, *, generator=None):
        """``n`` functions given the context: the decoder's mean at ``n`` draws of
        ``q(w | C)``, ``(n, B, m, dy)`` (``(n, m, dy)`` without a batch dimension)."""
        _check_n(n)
        return self.predict(x_context, y_context, x_target, n_samples=n, generator=generator).mean

    def elbo(self, batch, *, generator=None, n_samples: int = 1) -> Tensor:
        """The ELBO per task ``(B,)`` in nats: ``E_{q(w|C∪T)} log p(y_T | w) - KL(q(w|C∪T) ||
        q(w|C))`` (the expectation by ``n_samples`` reparameterised draws; the KL exact)."""
        xc, yc, xt, yt = batch
        q_ct, q_c = self.q_latent(xt, yt), self.q_latent(xc, yc)  # the targets hold the context
        mu, sigma = self._decode_latent(xc, yc, xt, self._draw(q_ct, n_samples, generator, yt))
        ll = Normal(mu, sigma).log_prob(yt).sum((-2, -1)).mean(0)
        return ll - kl_divergence(q_ct, q_c).sum(-1)

    def loss(self, batch, *, generator=None) -> Tensor:
        """Negative ELBO per target value."""
        return -self.elbo(batch, generator=generator).sum() / batch.y_target.numel()


def _check_n(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of sampled functions) must be a positive int, got {n!r}")


class NP(LatentProcess, CNP):
    """Neural Process: the CNP's deterministic path plus a global latent ``z``."""

    def __init__(self, dx=1, dy=1, *, hidden=64, layers=3, r_dim=64, z_dim=32, sigma_floor=0.1):
        super().__init__(dx, dy, hidden=hidden, layers=layers, r_dim=r_dim, sigma_floor=sigma_floor)
        self.z_dim = z_dim
        self.latent_encoder = mlp([dx + dy] + [hidden] * (layers - 1) + [hidden])
        self.latent_head = nn.Linear(hidden, 2 * z_dim)
        self.decoder = _Decoder(dx + r_dim + z_dim, dy, hidden, layers, sigma_floor)

    def _decode_latent(self, xc, yc, xt, z):
        """``g(x_t, r, z)`` with ``r`` from the context, at ``z`` ``(..., B, z_dim)``."""
        r = self.represent(xc, yc)
        return self._decode(xt, torch.cat([r.expand(*z.shape[:-1], r.shape[-1]), z], -1))


@dataclass
class CNPConfig:
    """``cnp``: MLP width and depth, representation size, predictive sigma floor."""

    hidden: int = 64
    layers: int = 3
    r_dim: int = 64
    sigma_floor: float = 0.1


@dataclass
class NPConfig(CNPConfig):
    """``np``: the CNP's fields and the latent's size."""

    z_dim: int = 32


_DESC = "({}, Garnelo et al. 2018): encoder, mean aggregator, decoder"


@register(
    "cnp",
    config=CNPConfig,
    default_data="sine",
    task="process",
    section=5,
    data_kinds=("tasks",),
    description="Conditional Neural Process " + _DESC.format("CNP"),
)
def build_cnp(config: CNPConfig, info: DataInfo) -> CNP:
    return CNP(
        info.input_shape[0],
        info.event_shape[0],
        hidden=config.hidden,
        layers=config.layers,
        r_dim=config.r_dim,
        sigma_floor=config.sigma_floor,
    )


@register(
    "np",
    config=NPConfig,
    default_data="sine",
    task="process",
    section=5,
    data_kinds=("tasks",),
    description="Neural Process with a global latent, trained by the ELBO " + _DESC.format("NP"),
)
def build_np(config: NPConfig, info: DataInfo) -> NP:
    return NP(
        info.input_shape[0],
        info.event_shape[0],
        hidden=config.hidden,
        layers=config.layers,
        r_dim=config.r_dim,
        z_dim=config.z_dim,
        sigma_floor=config.sigma_floor,
    )
