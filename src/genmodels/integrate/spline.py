"""Natural cubic spline interpolation of (irregularly sampled, partly missing) time series.

The lecture's Neural CDE slide turns discrete observations x_1, ..., x_n at times
t_1 < ... < t_n into a continuous path X by natural cubic spline interpolation, and
then integrates dz = f(z) dX = f(z) (dX/dt) dt (Kidger et al. 2020, "Neural controlled
differential equations for irregular time series", §3). :class:`NaturalCubicSpline`
is that X: ``evaluate`` gives X(t), ``derivative`` gives dX/dt.

On each interval [t_i, t_{i+1}], with h_i = t_{i+1} - t_i and τ = t - t_i,

    X(t) = a_i + b_i τ + c_i τ² + d_i τ³,
    a_i = x_i,  c_i = M_i / 2,  d_i = (M_{i+1} - M_i) / (6 h_i),
    b_i = (x_{i+1} - x_i) / h_i - h_i (2 M_i + M_{i+1}) / 6,

where the second derivatives M_i = X''(t_i) solve the tridiagonal system (C² continuity)

    h_{i-1} M_{i-1} + 2 (h_{i-1} + h_i) M_i + h_i M_{i+1}
        = 6 [(x_{i+1} - x_i) / h_i - (x_i - x_{i-1}) / h_{i-1}],   i = 1, ..., n - 2,

with the *natural* end conditions M_0 = M_{n-1} = 0. The system is solved by the Thomas
algorithm (Gaussian elimination without pivoting; the matrix is strictly diagonally
dominant so this is stable), vectorised over batch and channels: the matrix depends on
the knots only, so its elimination factors are computed once, and the sweeps run over
the n knots with whole (..., channels) tensors.

:func:`natural_cubic_coeffs` returns the four coefficient tensors (a, b, c, d), each
``(..., n - 1, channels)``, NaN-aware and vectorised over every series and channel at once
(torchcde's ``natural_cubic_coeffs`` loops in Python over scalar paths when there is a NaN);
``NaturalCubicSpline.from_coeffs`` rebuilds the path from them, so coefficients can be
computed once for a data set and sliced per batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["NaturalCubicSpline", "SplineCoeffs", "natural_cubic_coeffs"]


class SplineCoeffs(NamedTuple):
    """Coefficients of a cubic spline on each interval [t_i, t_{i+1}]:
    ``X(t) = a + b τ + c τ² + d τ³`` with ``τ = t - t_i``; each ``(..., n - 1, channels)``."""

    a: Tensor
    b: Tensor
    c: Tensor
    d: Tensor


def _check_knots(t, x, name: str) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() != 1 or t.shape[0] < 2:
        raise ValueError(f"{name}: t must be a 1-D tensor of n >= 2 knots, got {t}")
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[-2] != t.shape[0]:
        raise ValueError(
            f"{name}: x must have shape (..., n, channels) with n = len(t) = "
            f"{t.shape[0]}, got {tuple(x.shape) if isinstance(x, Tensor) else type(x)}"
        )
    if not torch.is_floating_point(x):
        raise TypeError(f"{name}: x must be floating point, got {x.dtype}")
    t = t.to(device=x.device, dtype=x.dtype)
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"{name}: knots t must be finite and strictly increasing")
    return t


def natural_cubic_coeffs(t: Tensor, x: Tensor) -> SplineCoeffs:
    """The natural cubic spline's coefficients through ``(t_i, x_i)``, NaN-aware.

    Args:
        t: ``(n,)`` strictly increasing knots, n >= 2 (shared by every series).
        x: ``(..., n, channels)`` values; NaN = missing, anywhere, per series and channel.
            Each series-channel's NaNs between its first and last observation are filled by
            the natural cubic spline through its observed knots only (so the result there
            *is* that spline), before the first / after the last observation with the
            nearest observed value, and a series-channel never observed is the constant 0.
            This is torchcde's convention (``natural_cubic_coeffs``, version 0.2.5); here
            every series-channel is solved at once (one batched Thomas sweep over rows with
            their own knots), not one Python loop per scalar path.

    Returns:
        :class:`SplineCoeffs` ``(a, b, c, d)``, each ``(..., n - 1, channels)``; on
        [t_i, t_{i+1}], ``X(t) = a_i + b_i τ + c_i τ² + d_i τ³`` with ``τ = t - t_i``.
        (torchcde stores ``[a, b, 2c, 3d]`` concatenated along the channels.)

    Example:
        >>> t = torch.linspace(0, 1, 4)
        >>> x = torch.tensor([[0.0], [float("nan")], [2.0], [3.0]])
        >>> a, b, c, d = natural_cubic_coeffs(t, x)
        >>> a.shape, bool(torch.isfinite(a).all())
        (torch.Size([3, 1]), True)
    """
    t = _check_knots(t, x, "natural_cubic_coeffs")
    h = t[1:] - t[:-1]
    x = _fill_missing(t, x)
    n = t.shape[0]
    slope = (x[..., 1:, :] - x[..., :-1, :]) / h.unsqueeze(-1)  # (..., n-1, c)
    if n > 2:
        rhs = 6.0 * (slope[..., 1:, :] - slope[..., :-1, :])  # (..., n-2, c)
        hl = h.tolist()
        diag = [2.0 * (hl[i] + hl[i + 1]) for i in range(n - 2)]
        lower = [0.0] + hl[1:-1]
        upper = hl[1:-1] + [0.0]
        inner = _thomas(lower, diag, upper, rhs)
        zero = torch.zeros_like(inner[..., :1, :])
        m = torch.cat([zero, inner, zero], dim=-2)  # natural ends M_0 = M_{n-1} = 0
    else:
        m = torch.zeros_like(x)
    hh = h.unsqueeze(-1)
    m0, m1 = m[..., :-1, :], m[..., 1:, :]
    return SplineCoeffs(
        x[..., :-1, :], slope - hh * (2.0 * m0 + m1) / 6.0, 0.5 * m0, (m1 - m0) / (6.0 * hh)
    )


def _thomas(lower: list[float], diag: list[float], upper: list[float], rhs: Tensor) -> Tensor:
    """Solve a tridiagonal system along dim -2 of ``rhs`` (the Thomas algorithm).

    Row k reads lower[k] m[k-1] + diag[k] m[k] + upper[k] m[k+1] = rhs[..., k, :]
    (lower[0] and upper[-1] unused). lower/diag/upper: k Python floats (the matrix is
    shared by every series and channel); rhs: (..., k, c) -> (..., k, c).
    """
    k = len(diag)
    # eliminate the shared matrix once: w_i = diag_i - lower_i c'_{i-1}, c'_i = upper_i / w_i
    inv_w, cp = [0.0] * k, [0.0] * k
    for i in range(k):
        w = diag[i] - (lower[i] * cp[i - 1] if i > 0 else 0.0)
        inv_w[i] = 1.0 / w
        cp[i] = upper[i] * inv_w[i]
    d = list(rhs.unbind(-2))
    d[0] = d[0] * inv_w[0]
    for i in range(1, k):  # forward sweep
        d[i] = (d[i] - lower[i] * d[i - 1]) * inv_w[i]
    for i in range(k - 2, -1, -1):  # back substitution
        d[i] = d[i] - cp[i] * d[i + 1]
    return torch.stack(d, dim=-2)


def _fill_missing(t: Tensor, x: Tensor) -> Tensor:
    """Fill the NaNs of x (..., n, c), each series-channel on its own.

    Before the first / after the last observation, the nearest observed value; then a
    missing value between them becomes the value of the natural cubic spline through that
    series-channel's observed knots and those filled ends (so the spline fitted afterwards
    on all knots is exactly that spline); a series-channel never observed becomes 0.
    The knots of each series differ, so the tridiagonal systems
    differ too: they are solved together by a Thomas sweep over batched coefficients.
    """
    observed = ~torch.isnan(x)
    if bool(observed.all()):
        return x
    shape, n = x.shape, t.shape[0]
    xs = x.transpose(-1, -2).reshape(-1, n)  # (B, n), one row per series-channel
    obs = observed.transpose(-1, -2).reshape(-1, n)
    pos = torch.arange(n, device=x.device).expand_as(xs)
    # the ends first (torchcde's convention): before the first / after the last observation
    # the nearest observed value, and those knots count as observed for the spline below
    seen = obs.any(-1, keepdim=True)
    first = torch.where(obs, pos, n).min(-1, keepdim=True).values.clamp(max=n - 1)
    last = torch.where(obs, pos, -1).max(-1, keepdim=True).values.clamp(min=0)
    ends = seen & ((pos < first) | (pos > last))
    xs = torch.where(pos < first, xs.gather(-1, first), xs)
    xs = torch.where(pos > last, xs.gather(-1, last), xs)
    obs = obs | ends
    count = obs.sum(-1)  # (B,)
    # observed knots first, in time order; padding after them
    order = torch.sort((~obs).to(torch.int8), dim=-1, stable=True).indices
    valid = pos < count.unsqueeze(-1)
    last = (count - 1).clamp(min=0).unsqueeze(-1)
    tk = torch.where(valid, t[order], t[-1] + 1.0 + pos.to(t.dtype))  # strictly increasing
    xk = xs.gather(-1, order)
    x_last = xk.gather(-1, last)
    xk = torch.where(valid, xk, x_last)
    xk = torch.nan_to_num(xk)  # rows never observed
    # natural spline through (tk, xk)[:count] per row: rows 1..count-2 are equations
    hk = tk[:, 1:] - tk[:, :-1]  # (B, n-1)
    sk = (xk[:, 1:] - xk[:, :-1]) / hk
    eq = (pos >= 1) & (pos <= count.unsqueeze(-1) - 2)
    zero = torch.zeros_like(xk)
    h_prev = torch.cat([zero[:, :1], hk], dim=-1)
    h_next = torch.cat([hk, zero[:, :1]], dim=-1)
    s_prev = torch.cat([zero[:, :1], sk], dim=-1)
    s_next = torch.cat([sk, zero[:, :1]], dim=-1)
    lower = torch.where(eq, h_prev, zero)
    upper = torch.where(eq, h_next, zero)
    diag = torch.where(eq, 2.0 * (h_prev + h_next), torch.ones_like(xk))
    rhs = torch.where(eq, 6.0 * (s_next - s_prev), zero)
    # Thomas algorithm with per-row coefficients
    cp, d = [], []
    for j in range(n):
        w = diag[:, j] - (lower[:, j] * cp[j - 1] if j > 0 else 0.0)
        cp.append(upper[:, j] / w)
        d.append((rhs[:, j] - (lower[:, j] * d[j - 1] if j > 0 else 0.0)) / w)
    for j in range(n - 2, -1, -1):
        d[j] = d[j] - cp[j] * d[j + 1]
    m = torch.stack(d, dim=-1)  # (B, n) second derivatives at tk
    # evaluate at every knot of the full grid
    tq = t.expand_as(xs).contiguous()
    i = torch.searchsorted(tk.contiguous(), tq, right=True) - 1
    i = torch.minimum(i.clamp(min=0), (count - 2).clamp(min=0).unsqueeze(-1))
    i1 = (i + 1).clamp(max=n - 1)
    ta, tb = tk.gather(-1, i), tk.gather(-1, i1)
    xa, xb = xk.gather(-1, i), xk.gather(-1, i1)
    ma, mb = m.gather(-1, i), m.gather(-1, i1)
    h = tb - ta
    u, v = tb - tq, tq - ta
    cubic = (ma * u**3 + mb * v**3) / (6.0 * h) + (xa / h - ma * h / 6.0) * u
    cubic = cubic + (xb / h - mb * h / 6.0) * v
    t_first = tk[:, :1]
    t_last = tk.gather(-1, last)
    filled = torch.where(tq < t_first, xk[:, :1], torch.where(tq > t_last, x_last, cubic))
    filled = torch.where(count.unsqueeze(-1) >= 2, filled, xk[:, :1].expand_as(filled))
    filled = torch.where(count.unsqueeze(-1) == 0, zero, filled)
    filled = torch.where(obs, xs, filled)
    return filled.reshape(*shape[:-2], shape[-1], n).transpose(-1, -2)


class NaturalCubicSpline:
    """The natural cubic spline through (t_i, x_i), batched over leading dims and channels.

    Args:
        t: (n,) strictly increasing knots, n ≥ 2.
        x: (..., n, channels) values at the knots. NaN marks a missing value: before
            fitting, each series-channel's NaNs between its first and last observation are
            filled with the natural cubic spline through its observed knots only (so there
            the result *is* the natural spline of the observed data), before the first /
            after the last observation with the nearest observed value, and with 0 where a
            series-channel has no observation at all. This is torchcde's convention.

    Outside [t_0, t_{n-1}] the end cubics are extrapolated.

    Example:
        >>> t = torch.linspace(0, 1, 5)
        >>> x = torch.stack([t, t**2], dim=-1)            # (5, 2)
        >>> spline = NaturalCubicSpline(t, x)
        >>> spline.evaluate(0.5)                          # (2,), passes through the knot
        tensor([0.5000, 0.2500])
        >>> spline.derivative(torch.tensor([0.1, 0.9])).shape   # (2 times, 2 channels)
        torch.Size([2, 2])
    """

    def __init__(self, t: Tensor, x: Tensor) -> None:
        t = _check_knots(t, x, "NaturalCubicSpline")
        self._t = t
        self._a, self._b, self._c, self._d = natural_cubic_coeffs(t, x)

    @classmethod
    def from_coeffs(cls, t: Tensor, coeffs: SplineCoeffs) -> NaturalCubicSpline:
        """The spline with knots ``t`` ``(n,)`` and :func:`natural_cubic_coeffs`' output
        (each ``(..., n - 1, channels)``), e.g. one batch's rows of a data set's coefficients."""
        a, b, c, d = coeffs
        if not isinstance(t, Tensor) or t.dim() != 1 or a.shape[-2] != t.shape[0] - 1:
            raise ValueError(
                f"from_coeffs: t must be (n,) and coefficients (..., n - 1, channels); got t "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t)}, a {tuple(a.shape)}"
            )
        new = cls.__new__(cls)
        new._t = t.to(device=a.device, dtype=a.dtype)
        new._a, new._b, new._c, new._d = a, b, c, d
        return new

    @property
    def knots(self) -> Tensor:
        """(n,) the knots t."""
        return self._t

    @property
    def coeffs(self) -> SplineCoeffs:
        """``(a, b, c, d)``, each ``(..., n - 1, channels)`` (see :func:`natural_cubic_coeffs`)."""
        return SplineCoeffs(self._a, self._b, self._c, self._d)

    @property
    def interval(self) -> tuple[float, float]:
        """(t_0, t_{n-1})."""
        return float(self._t[0]), float(self._t[-1])

    def _locate(self, t: float | Tensor) -> tuple[Tensor, Tensor, bool]:
        scalar = not isinstance(t, Tensor) or t.dim() == 0
        tt = torch.as_tensor(t, dtype=self._t.dtype, device=self._t.device).reshape(-1)
        i = torch.searchsorted(self._t, tt, right=True) - 1
        i = i.clamp(0, self._t.shape[0] - 2)
        tau = (tt - self._t[i]).unsqueeze(-1)  # (m, 1)
        return i, tau, scalar

    def _gather(self, coef: Tensor, i: Tensor, scalar: bool) -> Tensor:
        out = coef.index_select(-2, i)  # (..., m, c)
        return out.squeeze(-2) if scalar else out

    def evaluate(self, t: float | Tensor) -> Tensor:
        """X(t): (..., channels) for a scalar t, (..., m, channels) for t of shape (m,)."""
        i, tau, scalar = self._locate(t)
        a, b = self._gather(self._a, i, scalar), self._gather(self._b, i, scalar)
        c, d = self._gather(self._c, i, scalar), self._gather(self._d, i, scalar)
        tau = tau.squeeze(0) if scalar else tau
        return a + tau * (b + tau * (c + tau * d))

    def derivative(self, t: float | Tensor) -> Tensor:
        """dX/dt at t: shapes as :meth:`evaluate`."""
        i, tau, scalar = self._locate(t)
        b, c = self._gather(self._b, i, scalar), self._gather(self._c, i, scalar)
        d = self._gather(self._d, i, scalar)
        tau = tau.squeeze(0) if scalar else tau
        return b + tau * (2.0 * c + 3.0 * tau * d)

    def second_derivative(self, t: float | Tensor) -> Tensor:
        """d²X/dt² at t: shapes as :meth:`evaluate`."""
        i, tau, scalar = self._locate(t)
        c, d = self._gather(self._c, i, scalar), self._gather(self._d, i, scalar)
        tau = tau.squeeze(0) if scalar else tau
        return 2.0 * c + 6.0 * tau * d
