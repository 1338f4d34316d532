"""The variational autoencoder (Kingma & Welling 2014) with the IWAE bound (Burda et al. 2016).

The lecture's latent-variable slide: p(x) = ∫ p(x|z) p(z) dz is intractable, so an
encoder q(z|x) is fitted jointly with the decoder by maximising the ELBO

    log p(x) ≥ E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))

with z = μ(x) + σ(x)⊙ε (the reparameterisation trick). The ELBO and IWAE bound
are :func:`genmodels.inference.vi.elbo_analytic_kl` and
:func:`genmodels.inference.vi.iwae_bound`, applied with an amortised q(z|x) whose
batch shape is the data batch.

Decoders for the kind of data:

- ``gaussian`` (2-d points): p(x|z) = N(μ(z), diag σ(z)²) on standardised x.
- ``categorical`` (images with few grey levels, e.g. digits' 17): an independent
  softmax over the levels of every pixel, so -log2 P(x)/D is exactly bits/dim
  of the discrete data.
- ``logistic`` (images with many levels, e.g. 256): a mixture of ``mixtures``
  discretised logistics per pixel, as in Salimans et al. 2017 (PixelCNN++),
  P(k) = Σ_m π_m [σ((x_k + δ/2 - μ_m)/s_m) - σ((x_k - δ/2 - μ_m)/s_m)], the end
  bins extended to ±∞.
- ``bernoulli``: only for binarised (2-level) data.

Units: :meth:`VAE.elbo` and :meth:`VAE.iwae_bound` are lower bounds on log p(x) in
nats: the discrete log-probability log P(x) for images, the log-density in data
coordinates for points. :meth:`VAE.nll_bound` follows the library's evaluation
contract (an upper bound on the *continuous* NLL in the stored coordinates): for
images it spreads P(x) uniformly over each pixel's bin, -log P(x) + D·log(bin
width), so that ``genmodels.data.bits_per_dim`` turns it back into -log2 P(x)/D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from ..config import ConfigError
from ..distributions import Standardize, check_batch, check_count, model_dtype
from ..inference.vi import elbo_analytic_kl, iwae_bound
from ..nn import MLP
from ..registry import DataInfo, register

__all__ = ["VAE", "VAEConfig", "build_vae", "discretised_logistic_log_prob"]


@dataclass
class VAEConfig:
    """Settings of :class:`VAE` (``--set key=value``).

    Attributes:
        latent_dim: dimension of z (None: 2 for points, 16 for images).
        width: width of the encoder's and decoder's hidden layers (``hidden`` before).
        depth: hidden layers in each of them.
        decoder: ``auto`` (gaussian for points; categorical for ≤ 64 levels, else
            logistic), ``gaussian``, ``categorical``, ``logistic`` or ``bernoulli``.
        train_k: importance samples in the training objective (1: the ELBO; >1: IWAE).
        dropout: dropout rate in the hidden layers (images overfit fast).
        mixtures: components of the discretised-logistic mixture per pixel (``logistic``).
    """

    latent_dim: int | None = None
    width: int = 256
    depth: int = 2
    decoder: str = "auto"
    train_k: int = 1
    dropout: float = 0.0
    mixtures: int = 5

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """An old run's ``hidden`` is now ``width``."""
        if "hidden" not in old:
            return old
        if "width" in old:
            raise ConfigError("VAE config: give width (hidden is its old name), not both")
        return {("width" if k == "hidden" else k): v for k, v in old.items()}

    def validate(self) -> None:
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ValueError(f"latent_dim must be ≥ 1, got {self.latent_dim}")
        if self.width < 1 or self.depth < 1 or self.train_k < 1 or self.mixtures < 1:
            raise ValueError("width, depth, train_k and mixtures must be ≥ 1")
        if self.decoder not in ("auto", "gaussian", "categorical", "logistic", "bernoulli"):
            raise ValueError(
                "decoder must be auto, gaussian, categorical, logistic or bernoulli, "
                f"got {self.decoder!r}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def discretised_logistic_log_prob(
    k: Tensor, mean: Tensor, log_scale: Tensor, levels: int
) -> Tensor:
    """log P(k) of the discretised logistic over levels 0..L-1 (Salimans et al. 2017).

    Level k sits at x_k = 2k/(L-1) - 1 in [-1, 1], with bin half-width δ/2 = 1/(L-1):

        P(k) = σ((x_k + δ/2 - μ)/s) - σ((x_k - δ/2 - μ)/s),  the end bins extended to ±∞.

    Args:
        k: integer levels (any shape); mean, log_scale: broadcastable to k.
        levels: L ≥ 2.

    Returns:
        log P(k) in nats, the broadcast shape.

    Example::

        >>> k = torch.arange(4)
        >>> lp = discretised_logistic_log_prob(k, torch.zeros(4), torch.zeros(4), 4)
        >>> round(float(lp.exp().sum()), 6)
        1.0
    """
    x = 2 * k.to(mean.dtype) / (levels - 1) - 1
    half = 1.0 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    upper = (x + half - mean) * inv_s
    lower = (x - half - mean) * inv_s
    log_cdf_upper = F.logsigmoid(upper)  # log σ(u)
    log_sf_lower = F.logsigmoid(-lower)  # log(1 - σ(l))
    # log(σ(u) - σ(l)), stably: σ(u) - σ(l) = σ(u)(1-σ(l))(1 - e^{-(u-l)}); u - l = 2·half/s
    mid = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-(upper - lower)))
    first = k == 0
    last = k == levels - 1
    return torch.where(first, log_cdf_upper, torch.where(last, log_sf_lower, mid))


class VAE(nn.Module):
    """A VAE with a Gaussian encoder and a decoder for the data's kind.

    Shapes: x is ``(n, *event_shape)`` in the stored coordinates of
    ``genmodels.data.load(...).x`` (points ``(n, d)``; images ``(n, c, h, w)`` with
    values 2k/(L-1) - 1). z is ``(n, latent_dim)``.

    Example::

        >>> info = DataInfo("digits", "images", (1, 8, 8), 10, 17)
        >>> vae = build_vae(VAEConfig(width=32), info)
        >>> x = vae.sample(4, generator=torch.Generator().manual_seed(0))
        >>> x.shape, vae.iwae_bound(x, 8).shape
        (torch.Size([4, 1, 8, 8]), torch.Size([4]))
    """

    def __init__(self, config: VAEConfig, info: DataInfo):
        super().__init__()
        config.validate()
        self.config, self.info = config, info
        self.event_shape = tuple(info.event_shape)
        self.data_dim = math.prod(self.event_shape)
        # standardisation of flattened points (set by init_from_data; identity for images),
        # registered first so that checkpoints keep their keys (shift, scale first)
        self.standardizer = Standardize.identity((self.data_dim,))
        self.standardizer.keep_checkpoint_names(self, "shift", "scale")
        self.kind = info.kind
        decoder = config.decoder
        if decoder == "auto":
            if info.kind == "points":
                decoder = "gaussian"
            else:
                decoder = "categorical" if (info.levels or 256) <= 64 else "logistic"
        if decoder != "gaussian" and not info.levels:
            raise ValueError(f"decoder {decoder!r} needs discrete data (info.levels), got {info}")
        if decoder == "bernoulli" and info.levels != 2:
            raise ValueError(
                f"the bernoulli decoder is for binarised data, not {info.levels} levels"
            )
        self.decoder_kind = decoder
        self.levels = info.levels
        latent = config.latent_dim or (2 if info.kind == "points" else 16)
        self.latent_dim = latent
        per_dim = {
            "gaussian": 2,
            "categorical": info.levels,
            "logistic": 3 * config.mixtures,
            "bernoulli": 1,
        }
        out = self.data_dim * per_dim[decoder]
        hidden = (config.width,) * config.depth
        self.encoder = MLP(self.data_dim, 2 * latent, hidden, "silu", config.dropout)
        self.decoder = MLP(latent, out, hidden, "silu", config.dropout)

    # -- data coordinates -----------------------------------------------------------
    @property
    def shift(self) -> Tensor:
        """Mean of the flattened training points (zeros for images)."""
        return self.standardizer.loc

    @property
    def scale(self) -> Tensor:
        """Standard deviation of the flattened training points (ones for images)."""
        return self.standardizer.scale

    def init_from_data(self, x: Tensor) -> None:
        """Standardise points with the training mean/std (images are used as stored)."""
        flat = self._check(x, dtype=False)  # statistics only
        if self.kind == "points":
            self.standardizer.set_(flat)

    def _check(self, x: Tensor, dtype: bool = True) -> Tensor:
        """``x`` ``(n, *event_shape)`` of the model's dtype (``dtype``), flattened to ``(n, D)``."""
        return check_batch(x, self.event_shape, "x", model_dtype(self) if dtype else None).flatten(
            1
        )

    def _levels_of(self, flat: Tensor) -> Tensor:
        return torch.round((flat + 1) * (self.levels - 1) / 2).clamp(0, self.levels - 1).long()

    # -- the two halves ---------------------------------------------------------------
    def encode(self, x: Tensor) -> Independent:
        """q(z|x) = N(μ(x), diag σ(x)²), batch shape (n,), event shape (latent_dim,)."""
        flat = self.standardizer(self._check(x))[0]
        h = self.encoder(flat)
        mu, pre = h.chunk(2, -1)
        return Independent(Normal(mu, F.softplus(pre) + 1e-4), 1)

    def prior(self, like: Tensor) -> Independent:
        """p(z) = N(0, I)."""
        z = torch.zeros(self.latent_dim, dtype=like.dtype, device=like.device)
        return Independent(Normal(z, torch.ones_like(z)), 1)

    def _decoder_out(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def _mixture(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture weights (log), means and log-scales, each ``(..., D, M)``."""
        p = h.unflatten(-1, (self.data_dim, 3, self.config.mixtures))
        return torch.log_softmax(p[..., 0, :], -1), p[..., 1, :], p[..., 2, :].clamp(min=-7.0)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats: x ``(n, *event)``, z ``(*S, n, latent)`` -> ``(*S, n)``."""
        flat = self._check(x)
        h = self._decoder_out(z)
        if self.decoder_kind == "gaussian":
            mu, pre = h.chunk(2, -1)
            u, ladj = self.standardizer(flat)  # ladj = -Σ log scale: back to data coordinates
            sd = F.softplus(pre) + 1e-3
            return Normal(mu, sd).log_prob(u).sum(-1) + ladj
        k = self._levels_of(flat)
        if self.decoder_kind == "categorical":
            logits = h.unflatten(-1, (self.data_dim, self.levels))
            logp = torch.log_softmax(logits, -1)
            idx = k.expand(*logp.shape[:-1]).unsqueeze(-1)
            return logp.gather(-1, idx).squeeze(-1).sum(-1)
        if self.decoder_kind == "logistic":
            log_pi, mean, log_scale = self._mixture(h)  # each (*S, n, D, M)
            lp = discretised_logistic_log_prob(k.unsqueeze(-1), mean, log_scale, self.levels)
            return torch.logsumexp(log_pi + lp, -1).sum(-1)
        return -F.binary_cross_entropy_with_logits(
            h, k.to(h.dtype).expand_as(h), reduction="none"
        ).sum(-1)

    # -- bounds ---------------------------------------------------------------------------
    def elbo(self, x: Tensor, *, n_samples: int = 1, generator: torch.Generator | None = None):
        """ELBO ``(n,)`` in nats: E_q log p(x|z) - KL(q(z|x) || p(z)) (log P(x) for images).
        An empty batch gives an empty ``(0,)`` tensor."""
        if self._check(x).shape[0] == 0:  # torch's KL of Independent cannot sum an empty batch
            return x.new_zeros(0)
        q = self.encode(x)
        return elbo_analytic_kl(
            lambda z: self.log_likelihood(x, z), q, self.prior(x), n_samples, generator=generator
        )

    def iwae_bound(
        self, x: Tensor, k: int, *, generator: torch.Generator | None = None, chunk: int = 64
    ) -> Tensor:
        """IWAE bound ``(n,)`` in nats with K = ``k`` importance samples (Burda et al. 2016).

        log (1/K) Σ_k p(x, z_k)/q(z_k|x), z_k ~ q(z|x); evaluated over chunks of the
        batch to bound memory.
        """
        out = [x.new_zeros(0)] if self._check(x).shape[0] == 0 else []
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk]
            q, p = self.encode(xb), self.prior(xb)
            lj = lambda z, xb=xb, p=p: self.log_likelihood(xb, z) + p.log_prob(z)
            out.append(iwae_bound(lj, q, k, generator=generator))
        return torch.cat(out)

    @torch.no_grad()
    def nll_bound(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Upper bound ``(n,)`` on the continuous NLL of x in its stored coordinates (nats).

        -ELBO for points; -ELBO + D·log(bin width) for images (P(x) spread uniformly
        over the bins), which ``genmodels.data.bits_per_dim`` maps to -log2 P(x)/D.
        """
        nll = -self.elbo(x, generator=generator)
        if self.kind == "images":
            nll = nll + self.data_dim * math.log(2.0 / (self.levels - 1))
        return nll

    def loss(self, batch: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean negative ELBO (or IWAE bound, ``train_k`` > 1) per dimension, in nats."""
        if self.config.train_k > 1:
            q, p = self.encode(batch), self.prior(batch)
            lj = lambda z: self.log_likelihood(batch, z) + p.log_prob(z)
            bound = iwae_bound(lj, q, self.config.train_k, generator=generator)
        else:
            bound = self.elbo(batch, generator=generator)
        return -bound.mean() / self.data_dim

    # -- pictures ------------------------------------------------------------------------
    def decode_mean(self, z: Tensor) -> Tensor:
        """The decoder's mean E[x|z] in data coordinates, ``(n, *event_shape)``."""
        h = self._decoder_out(z)
        if self.decoder_kind == "gaussian":
            mu = self.standardizer.inverse(h.chunk(2, -1)[0])[0]
        elif self.decoder_kind == "categorical":
            probs = torch.softmax(h.unflatten(-1, (self.data_dim, self.levels)), -1)
            values = torch.linspace(-1, 1, self.levels, dtype=h.dtype, device=h.device)
            mu = probs @ values
        elif self.decoder_kind == "logistic":
            log_pi, mean, _ = self._mixture(h)
            mu = (log_pi.exp() * mean.clamp(-1, 1)).sum(-1)
        else:
            mu = 2 * torch.sigmoid(h) - 1
        return mu.reshape(-1, *self.event_shape)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, mean: bool = False):
        """Draw x ~ p(x|z), z ~ N(0, I): ``(n, *event_shape)`` in data coordinates.

        With ``mean=True``, return the decoder mean E[x|z] instead (smoother pictures).
        """
        n = check_count(n)
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.decode_mean(z) if mean else self._draw(z, generator)

    def _draw(self, z: Tensor, generator: torch.Generator | None) -> Tensor:
        h = self._decoder_out(z)
        kw = dict(dtype=h.dtype, device=h.device)
        if self.decoder_kind == "gaussian":
            mu, pre = h.chunk(2, -1)
            u = mu + (F.softplus(pre) + 1e-3) * torch.randn(mu.shape, generator=generator, **kw)
            return self.standardizer.inverse(u)[0].reshape(-1, *self.event_shape)
        if self.decoder_kind == "categorical":
            probs = torch.softmax(h.unflatten(-1, (self.data_dim, self.levels)), -1)
            k = torch.multinomial(probs.reshape(-1, self.levels), 1, generator=generator)
            k = k.reshape(z.shape[0], self.data_dim)
        elif self.decoder_kind == "logistic":
            log_pi, mean, log_scale = self._mixture(h)
            m = self.config.mixtures
            j = torch.multinomial(log_pi.exp().reshape(-1, m), 1, generator=generator)
            j = j.reshape(*mean.shape[:-1], 1)
            mean, log_scale = mean.gather(-1, j).squeeze(-1), log_scale.gather(-1, j).squeeze(-1)
            u = torch.rand(mean.shape, generator=generator, **kw).clamp(1e-6, 1 - 1e-6)
            x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
            k = self._levels_of(x.clamp(-1, 1))
        else:
            k = torch.bernoulli(torch.sigmoid(h), generator=generator).long()
        x = 2 * k.to(h.dtype) / (self.levels - 1) - 1
        return x.reshape(-1, *self.event_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the encoder mean, ``(n, *event_shape)``."""
        return self.decode_mean(self.encode(x).mean)


@register(
    "vae",
    config=VAEConfig,
    default_data="digits",
    description="Variational autoencoder with IWAE evaluation (Kingma & Welling 2014)",
    task="density",
    section=1,
    data_kinds=("points", "images"),
)
def build_vae(config: VAEConfig, info: DataInfo) -> VAE:
    """Build a :class:`VAE` for the data described by ``info``."""
    return VAE(config, info)
