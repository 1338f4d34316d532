"""Metrics of a VAE: ELBO and IWAE bounds on the test split, beside a same-run baseline.

For images every number is bits/dim of the *discrete* data, -log2 P(x)/D, the
decoder being a distribution over the grey levels (so no dequantisation enters):
the ELBO, the IWAE bound with K = 64 and K = 512 (Burda et al. 2016; tighter as K
grows), and an independent-pixel histogram with add-one smoothing fitted on the
training split (the baseline the VAE must beat). For points: the negative ELBO
and IWAE bounds in nats per example, in the data's coordinates.

All bounds are upper bounds on the negative log-likelihood (lower is better).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["vae_metrics", "histogram_bits_per_dim"]


def histogram_bits_per_dim(train_x: Tensor, test_x: Tensor, levels: int) -> float:
    """Bits/dim on ``test_x`` of an independent per-pixel histogram fitted on ``train_x``.

    P_j(k) = (count_j(k) + 1) / (n + L) for pixel j and level k (add-one smoothing);
    the result is -Σ_j log2 P_j(k_j) / D averaged over the test images.

    Args:
        train_x, test_x: ``(n, *event_shape)`` values 2k/(L-1) - 1.
        levels: L.

    Example::

        >>> x = torch.tensor([[-1.0], [1.0]])  # two 1-pixel images, L = 2
        >>> histogram_bits_per_dim(x, x, 2)  # P = (1+1)/(2+2) = 1/2 -> 1 bit
        1.0
    """

    def to_levels(x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1).double()
        return torch.round((flat + 1) * (levels - 1) / 2).clamp(0, levels - 1).long()

    k_train, k_test = to_levels(train_x), to_levels(test_x)
    d = k_train.shape[1]
    counts = torch.zeros(d, levels, dtype=torch.float64)
    counts.scatter_add_(1, k_train.T, torch.ones(d, k_train.shape[0], dtype=torch.float64))
    probs = (counts + 1) / (k_train.shape[0] + levels)
    log2p = torch.log2(probs.gather(1, k_test.T))  # (D, n_test)
    return float(-log2p.sum(0).mean() / d)


@torch.no_grad()
def vae_metrics(
    model, train, test, *, generator: torch.Generator | None = None, batch_size: int = 256
) -> dict[str, float]:
    """Test-split bounds of a trained :class:`genmodels.models.vae.VAE`.

    Args:
        model: the VAE (put in eval mode here).
        train, test: data sets with ``.x`` and ``.info`` (train is used by the baseline).
        generator: the source of the latent samples.
        batch_size: examples per chunk.

    Returns:
        images: ``elbo_nats`` (-ELBO per image, nats, an upper bound on -ln P(x)),
        ``elbo_bits_per_dim``, ``iwae64_bits_per_dim``, ``iwae512_bits_per_dim``,
        ``histogram_bits_per_dim``;
        points: ``elbo_nats``, ``iwae64_nats``, ``iwae512_nats`` (negative bounds per point).
    """
    was = model.training
    model.eval()
    p = next(model.parameters())
    x = test.x.to(device=p.device, dtype=p.dtype)
    sums = {"elbo": 0.0, "iwae64": 0.0, "iwae512": 0.0}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        sums["elbo"] -= float(model.elbo(xb, generator=generator).sum())
        sums["iwae64"] -= float(model.iwae_bound(xb, 64, generator=generator).sum())
        sums["iwae512"] -= float(model.iwae_bound(xb, 512, generator=generator, chunk=16).sum())
    model.train(was)
    n = x.shape[0]
    nats = {k: v / n for k, v in sums.items()}
    if test.info.kind != "images":
        return {
            "elbo_nats": nats["elbo"],
            "iwae64_nats": nats["iwae64"],
            "iwae512_nats": nats["iwae512"],
        }
    d = math.prod(test.info.event_shape)
    bpd = {k: v / (d * math.log(2)) for k, v in nats.items()}
    return {
        "elbo_nats": nats["elbo"],
        "elbo_bits_per_dim": bpd["elbo"],
        "iwae64_bits_per_dim": bpd["iwae64"],
        "iwae512_bits_per_dim": bpd["iwae512"],
        "histogram_bits_per_dim": histogram_bits_per_dim(train.x, test.x, test.info.levels),
    }
