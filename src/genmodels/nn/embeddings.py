"""Time embeddings for networks conditioned on a diffusion step or a time."""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["sinusoidal_embedding", "check_time_scale", "scale_time"]


@functools.lru_cache(maxsize=64)
def _frequencies(half: int, max_period: float, device, dtype) -> torch.Tensor:
    # ω_k = max_period^(-k/half), computed once per (size, device, dtype)
    k = torch.arange(half, dtype=torch.float64)
    return torch.exp(-math.log(max_period) * k / half).to(device=device, dtype=dtype)


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
    dtype = t.dtype if t.is_floating_point() else torch.float32
    freqs = _frequencies(dim // 2, max_period, t.device, dtype)
    args = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def check_time_scale(value, name: str = "time_scale") -> float:
    """``value`` as a float if it is a positive finite real number, else a ValueError naming
    ``name`` (the scale a network's time embedding applies to its time input)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def scale_time(t: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · t``, the time a network's sinusoidal embedding sees (``time_scale``).

    ``scale = 1`` returns ``t`` itself (integer steps stay integers: the embedding is then
    bit-for-bit the unscaled one). Otherwise integer times become float32 first (the
    embedding's own dtype for them) and real times keep their dtype.

    Why a scale: with ``max_period`` 10⁴ the embedding's frequencies run from 1 rad per unit
    of ``t`` down to 10⁻⁴; on DDPM's net times 0..999 the fastest components have a period of
    ~6 steps, so a network may vary with its time input on that scale. ``scale`` moves every
    frequency down by the same factor (0.1: fastest period ≈ 63 steps), the same as choosing
    another time unit for the network's input (docs/sde.md, "The time embedding's scale").
    """
    if scale == 1.0:
        return t
    return (t if t.is_floating_point() else t.to(torch.float32)) * scale
