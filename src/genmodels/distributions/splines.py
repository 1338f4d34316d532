"""Monotonic rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows").

On ``[-B, B]`` the map is a piecewise rational-quadratic function through ``K + 1`` knots
``(x_k, y_k)`` with positive derivatives ``d_k`` at the knots; outside it is the identity
("linear tails", so the boundary derivatives are 1). Inside bin ``k``, with
``xi = (x - x_k) / w_k`` and ``s_k = h_k / w_k`` (eq. 4 and the derivative of the paper)

    g(x)  = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]
    g'(x) = s_k^2 [d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2]
            / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]^2

and the inverse solves the quadratic ``a xi^2 + b xi + c = 0`` for the root
``xi = 2c / (-b - sqrt(b^2 - 4ac))`` (eqs. 6-8), evaluated as ``(-b + sqrt(.)) / 2a`` when
``b < 0`` so that no digits cancel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rational_quadratic_spline", "spline_params"]

# Chosen so that all-zero raw parameters give equal bins and unit derivatives: the identity.
_MIN_BIN = 1e-3
_MIN_DERIVATIVE = 1e-3
_DERIV_SHIFT = math.log(math.expm1(1.0 - _MIN_DERIVATIVE))


def spline_params(
    raw: Tensor, bound: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Turn raw network outputs ``(..., 3K - 1)`` into the per-bin spline parameters.

    Returns ``(x0, y0, w, h, d0, d1)``, each ``(..., K)``: the left knot of every bin in x and
    y, bin widths and heights (softmaxes floored at ``1e-3`` of ``2B``) and the derivatives at
    the left and right knots (``1e-3 + softplus``; the outermost ones equal 1, linear tails).
    All-zero input gives equal bins and unit derivatives: the identity map.
    """
    k = (raw.shape[-1] + 1) // 3
    uw, uh, ud = raw.split_with_sizes((k, k, k - 1), -1)
    a, b = (1 - _MIN_BIN * k) * 2 * bound, _MIN_BIN * 2 * bound
    w = torch.softmax(uw, dim=-1) * a + b
    h = torch.softmax(uh, dim=-1) * a + b
    x0 = torch.cumsum(w, dim=-1) - w - bound
    y0 = torch.cumsum(h, dim=-1) - h - bound
    d = _MIN_DERIVATIVE + F.softplus(ud + _DERIV_SHIFT)
    return x0, y0, w, h, F.pad(d, (1, 0), value=1.0), F.pad(d, (0, 1), value=1.0)


def rational_quadratic_spline(
    x: Tensor, raw: Tensor, bound: float = 5.0, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise; return the value and log|g'|.

    Args:
        x: ``(...)`` inputs (any shape).
        raw: ``(..., 3K - 1)`` unconstrained parameters for each element of ``x``.
        bound: ``B``; the spline acts on ``[-B, B]``, the identity outside.
        inverse: apply ``g^{-1}`` instead of ``g``.

    Returns:
        ``(y, logabsdet)`` both shaped like ``x``: the elementwise log|dy/dx| in nats.

    Example::

        >>> x = torch.linspace(-6, 6, 7)
        >>> y, ladj = rational_quadratic_spline(x, torch.zeros(7, 23))  # K = 8: identity
        >>> torch.allclose(y, x, atol=1e-5), float(ladj.abs().max()) < 1e-5
        (True, True)
    """
    x0, y0, w, h, d0, d1 = spline_params(raw, bound)
    k = w.shape[-1]
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    with torch.no_grad():  # bin index: number of interior left knots at or below x
        edges = (y0 if inverse else x0)[..., 1:]
        idx = (xc.unsqueeze(-1) >= edges).sum(-1, keepdim=True)
        idx = idx + torch.arange(6, device=x.device) * k  # one gather for all six tables
    x0, y0, wk, hk, d0, d1 = torch.cat([x0, y0, w, h, d0, d1], -1).gather(-1, idx).unbind(-1)
    s = hk / wk
    delta = d1 + d0 - 2 * s
    if not inverse:
        xi = (xc - x0) / wk
    else:
        dy = xc - y0
        a = hk * (s - d0) + dy * delta
        b = hk * d0 - dy * delta
        c = -s * dy
        root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
        # The wanted root, 2c / (-b - root) = (-b + root) / (2a); take the form without
        # cancellation for the sign of b (the other loses half the digits when 4ac << b^2).
        pos = b >= 0
        num_, den_ = torch.where(pos, 2 * c, root - b), torch.where(pos, -b - root, 2 * a)
        den_ = torch.where(den_ == 0, torch.ones_like(den_), den_)
        xi = (num_ / den_).clamp(0, 1)
    omxi = 1 - xi
    t = xi * omxi
    den = s + delta * t
    num = (s * s) * (d1 * xi * xi + 2 * s * t + d0 * omxi * omxi)
    if not inverse:
        y = y0 + hk * (s * xi * xi + d0 * t) / den
        ladj = torch.log(num) - 2 * torch.log(den)
    else:
        y = x0 + xi * wk
        ladj = 2 * torch.log(den) - torch.log(num)
    return torch.where(inside, y, x), torch.where(inside, ladj, 0.0)
