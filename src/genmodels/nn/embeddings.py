"""Time embeddings for networks conditioned on a diffusion step or a time."""

from __future__ import annotations

import math

import torch

__all__ = ["sinusoidal_embedding"]


def sinusoidal_embedding(
    t: torch.Tensor, dim: int, *, max_period: float = 10_000.0
) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (integer or real) times.

    ``emb(t) = [sin(t ω_0), ..., sin(t ω_{h-1}), cos(t ω_0), ..., cos(t ω_{h-1})]``
    with ``ω_k = max_period^(-k/h)`` and ``h = dim // 2`` (Vaswani et al. 2017;
    used for timesteps by Ho et al. 2020).

    Args:
        t: times, shape ``(n,)`` (any real dtype).
        dim: embedding size (even).
    Returns:
        ``(n, dim)`` float32 (or t's floating dtype).
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    dtype = t.dtype if t.is_floating_point() else torch.float32
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / half
    )
    args = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)
