"""Two-sample distances between model samples and data.

All three take samples ``x: (n, d)`` and ``y: (m, d)`` (images are flattened)
and are computed in float64 in chunks, so 10k x 10k pairs fit in memory:

- :func:`mmd2`: the unbiased estimate of the squared maximum mean discrepancy
  with an RBF kernel ``k(a, b) = exp(-|a - b|² / (2 h²))`` (Gretton et al. 2012);
- :func:`energy_distance`: ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with U-statistics
  for the within-sample terms (Székely & Rizzo 2013);
- :func:`sliced_wasserstein`: the sliced Wasserstein-1 distance, the mean of 1-D
  W1 distances over fixed random unit directions (Rabin et al. 2011).

A number alone says little; :func:`genmodels.evaluate.evaluate_model` always
reports it beside the same metric between two real samples (the floor).
"""

from __future__ import annotations

import math

import torch

__all__ = ["mmd2", "energy_distance", "sliced_wasserstein", "median_bandwidth"]

_CHUNK = 2048


def _as_2d(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, ...) with n >= 2, got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = x.reshape(x.shape[0], -1).double()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_pair(x, y):
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y.to(x.device)


def _pair_sum(a, b, fn, *, exclude_diag: bool) -> float:
    """Σ_{i,j} fn(|a_i - b_j|²) over all pairs (minus the diagonal when a is b)."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[0], _CHUNK):
        blk = a[s : s + _CHUNK]
        d2 = torch.cdist(blk, b).square_()
        v = fn(d2)
        if exclude_diag:
            r = torch.arange(blk.shape[0], device=a.device)
            v[r, r + s] = 0.0
        total += v.sum()
    return float(total)


def median_bandwidth(y: torch.Tensor, *, max_points: int = 2000) -> float:
    """The median pairwise distance of (a prefix of) ``y``: the RBF bandwidth heuristic."""
    y = _as_2d(y, "y")[:max_points]
    d = torch.pdist(y)
    h = float(d.median())
    return h if h > 0 else 1.0


def mmd2(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float) -> float:
    """Unbiased MMD² between samples ``x (n, d)`` and ``y (m, d)``, RBF kernel of width ``h``.

    ``MMD²_u = Σ_{i≠j} k(x_i,x_j)/(n(n-1)) + Σ_{i≠j} k(y_i,y_j)/(m(m-1)) - 2 Σ k(x_i,y_j)/(nm)``;
    zero in expectation when both come from one distribution (so it can be slightly negative).
    """
    if not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
    x, y = _check_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    g = -1.0 / (2.0 * bandwidth**2)
    k = lambda d2: torch.exp(d2 * g)
    kxx = _pair_sum(x, x, k, exclude_diag=True) / (n * (n - 1))
    kyy = _pair_sum(y, y, k, exclude_diag=True) / (m * (m - 1))
    kxy = _pair_sum(x, y, k, exclude_diag=False) / (n * m)
    return kxx + kyy - 2.0 * kxy


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (within terms as U-statistics)."""
    x, y = _check_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    dist = lambda d2: d2.sqrt_()
    exy = _pair_sum(x, y, dist, exclude_diag=False) / (n * m)
    exx = _pair_sum(x, x, dist, exclude_diag=True) / (n * (n - 1))
    eyy = _pair_sum(y, y, dist, exclude_diag=True) / (m * (m - 1))
    return 2.0 * exy - exx - eyy


def _directions(d: int, k: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(k, d, generator=g, dtype=torch.float64)
    return (v / v.norm(dim=1, keepdim=True)).to(device)


def _quantiles(sorted_vals: torch.Tensor, k: int) -> torch.Tensor:
    """Values of the empirical quantile function at (j + 1/2)/k, j = 0..k-1 (per column)."""
    n = sorted_vals.shape[0]
    if n == k:
        return sorted_vals
    pos = (torch.arange(k, dtype=torch.float64, device=sorted_vals.device) + 0.5) / k * n - 0.5
    pos = pos.clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo).unsqueeze(1)
    return sorted_vals[lo] * (1 - w) + sorted_vals[hi] * w


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, *, n_directions: int = 512, seed: int = 0
) -> float:
    """Sliced W1: mean over ``n_directions`` fixed unit directions θ of W1(θᵀx, θᵀy).

    The directions come from ``seed`` alone, so numbers are comparable across runs.
    The 1-D W1 is ``∫ |F⁻¹(u) - G⁻¹(u)| du``, exact for equal sample sizes (sorted
    differences) and interpolated on a common quantile grid otherwise.
    """
    if n_directions < 1:
        raise ValueError(f"n_directions must be >= 1, got {n_directions}")
    x, y = _check_pair(x, y)
    theta = _directions(x.shape[1], n_directions, seed, x.device)
    px = (x @ theta.T).sort(dim=0).values
    py = (y @ theta.T).sort(dim=0).values
    k = max(px.shape[0], py.shape[0])
    return float((_quantiles(px, k) - _quantiles(py, k)).abs().mean())
