"""Fixed-step Adams methods: ``explicit_adams`` (Adams–Bashforth) and ``implicit_adams``
(Adams–Bashforth–Moulton predictor-corrector, alias ``fixed_adams``), as torchdiffeq's.

On a grid of equal steps ``h`` with ``f_j = f(t_j, y_j)``, the ``k``-step Adams–Bashforth
formula (order ``k``) is

    y_(n+1) = y_n + h * sum_(j=0..k-1) beta_j f_(n-j),    beta_j = int_0^1 l_j(s) ds,

with ``l_j`` the Lagrange polynomial through the nodes ``s = 0, -1, .., -(k-1)`` that is 1 at
``-j``: the integral of the polynomial interpolating the past slopes.  Adams–Moulton adds the
node ``s = 1`` (the unknown ``f_(n+1)``, order ``k + 1``); ``implicit_adams`` predicts with
Adams–Bashforth and corrects by fixed-point iteration ``y_(n+1) <- y_n + h (gamma_0
f(t_(n+1), y_(n+1)) + sum_j gamma_(j+1) f_(n-j))`` until two iterates agree to ``rtol``/``atol``
(at most ``max_iters``).  (Hairer, Nørsett & Wanner 1993, Solving ODEs I, sec. III.1.)

As torchdiffeq: the order grows with the history, up to ``max_order - 1`` past slopes (default
12, at most 12); while fewer than 3 are known a step is taken by ``rk4`` (3/8 rule).  Unlike
torchdiffeq the history restarts where the step size changes (a grid with unequal steps, such as
the last, shorter step of ``step_size``), since the coefficients hold for equal steps only.
Without ``step_size``/``grid_constructor`` the grid is the output times (torchdiffeq's rule).
Not for stiff problems: the fixed-point corrector converges only for ``h |lambda|`` small.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from fractions import Fraction

import torch
from torch import Tensor

from .odeint import EXTRA_SOLVERS, SolverStats, _hermite, runge_kutta_step
from .tableaus import TABLEAUS

__all__ = ["adams_bashforth_coefficients", "adams_moulton_coefficients"]

MAX_ORDER = 12
_MIN_HISTORY = 3  # fewer known slopes: an rk4 step


def _poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    r = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            r[i + j] += a * b
    return r


def _lagrange_integrals(nodes: list[int]) -> list[Fraction]:
    """``int_0^1 l_j(s) ds`` for the Lagrange basis ``l_j`` on ``nodes`` (exact rationals)."""
    out = []
    for j, xj in enumerate(nodes):
        p, den = [Fraction(1)], Fraction(1)
        for m, xm in enumerate(nodes):
            if m != j:
                p = _poly_mul(p, [Fraction(-xm), Fraction(1)])
                den *= xj - xm
        out.append(sum(c / (i + 1) for i, c in enumerate(p)) / den)
    return out


def adams_bashforth_coefficients(k: int) -> list[float]:
    """``beta_0 .. beta_(k-1)`` of the ``k``-step Adams–Bashforth formula (slopes newest first).

    Example:
        >>> adams_bashforth_coefficients(2)
        [1.5, -0.5]
    """
    return [float(x) for x in _lagrange_integrals([-j for j in range(k)])]


def adams_moulton_coefficients(k: int) -> list[float]:
    """``gamma_0 .. gamma_(k-1)`` of the Adams–Moulton formula of order ``k`` through
    ``f_(n+1), f_n, .., f_(n-k+2)`` (``k = 2``: the trapezoidal rule).

    Example:
        >>> adams_moulton_coefficients(2)
        [0.5, 0.5]
    """
    return [float(x) for x in _lagrange_integrals([1 - j for j in range(k)])]


_AB = [[]] + [adams_bashforth_coefficients(k) for k in range(1, MAX_ORDER + 1)]
_AM = [[]] + [adams_moulton_coefficients(k) for k in range(1, MAX_ORDER + 2)]


def _adams_options(o, implicit: bool, name: str) -> tuple[int, int, bool]:
    ex = dict(o.extra)
    max_order = ex.pop("max_order", MAX_ORDER)
    max_iters = ex.pop("max_iters", 4)
    if "implicit" in ex:
        if not implicit and ex["implicit"]:
            raise ValueError("options['implicit']=True is not available for 'explicit_adams'")
        implicit = bool(ex.pop("implicit"))
    if ex:
        raise ValueError(f"option(s) {sorted(ex)} do not apply to method {name!r}")
    if isinstance(max_order, bool) or not isinstance(max_order, int):
        raise TypeError(f"options['max_order'] must be an int, got {max_order!r}")
    if not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"options['max_order'] must be in [1, {MAX_ORDER}], got {max_order}")
    if max_order < _MIN_HISTORY + 1:
        warnings.warn(
            f"max_order={max_order} is below {_MIN_HISTORY + 1}: every step of {name!r} is an "
            "rk4 step",
            stacklevel=4,
        )
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"options['max_iters'] must be an int >= 1, got {max_iters!r}")
    return max_order, max_iters, implicit


def _solve_adams(implicit: bool, name: str):
    def solve(f, y0, ts, rtol, atol, norm, o, stats: SolverStats, grad, grid, f_first):
        max_order, max_iters, impl = _adams_options(o, implicit, name)
        rk4 = TABLEAUS["rk4"]
        g = list(ts) if grid is None else grid
        hist: deque = deque(maxlen=max(max_order - 1, 1))
        out, j, n = [y0], 1, len(ts)
        direction = 1.0 if ts[-1] > ts[0] else -1.0
        y, h_prev, first, warned = y0, None, True, False
        for g0, g1 in zip(g[:-1], g[1:]):
            h = g1 - g0
            t0p = math.nextafter(g0, g1) if o.perturb else g0
            t1p = math.nextafter(g1, g0) if o.perturb else g1
            f0 = (f_first if first else f)(t0p, y)
            first = False
            stats.nfe += 1
            if h_prev is None or abs(h - h_prev) > 1e-10 * abs(h):
                hist.clear()  # equal steps only: restart the history
            hist.appendleft(f0)
            h_prev = h
            k = min(len(hist), max_order - 1)
            if k < _MIN_HISTORY:
                y1 = runge_kutta_step(f, g0, y, h, f0, rk4, t_last=t1p)[0]
                stats.nfe += rk4.stages - 1
            else:
                dy = _dot(_AB[k], hist, h)
                if impl:
                    gam = _AM[k + 1]
                    delta = _dot(gam[1:], hist, h)
                    for _ in range(max_iters):
                        f1 = f(t1p, y + dy)
                        stats.nfe += 1
                        new = torch.add(delta, f1, alpha=h * gam[0])
                        ok = _converged(dy, new, rtol, atol)
                        dy = new
                        if ok:
                            break
                    else:
                        stats.extra["adams_not_converged"] = (
                            stats.extra.get("adams_not_converged", 0) + 1
                        )
                        if not warned:
                            warnings.warn(
                                f"{name}: the corrector's fixed-point iteration did not converge "
                                f"in max_iters={max_iters} at t={g1!r}; the solution may be "
                                "inaccurate (smaller steps, or an implicit method for stiff "
                                "problems)",
                                stacklevel=4,
                            )
                            warned = True
                y1 = y + dy
            stats.n_steps += 1
            stats.n_accepted += 1
            f_end = None
            while j < n and (ts[j] - g1) * direction <= 0:
                tj = ts[j]
                if tj == g1:
                    out.append(y1)
                elif o.interp == "cubic":
                    if f_end is None:
                        f_end = f(t1p, y1)
                        stats.nfe += 1
                    out.append(_hermite(y, f0, y1, f_end, g0, h, tj))
                else:
                    out.append(torch.lerp(y, y1, (tj - g0) / h))
                j += 1
            y = y1
        return out

    solve.__name__ = f"solve_{name}"
    return solve


def _dot(coef: list[float], fs, h: float) -> Tensor:
    out = fs[0] * (h * coef[0])
    for c, fj in zip(coef[1:], list(fs)[1 : len(coef)]):
        out = torch.add(out, fj, alpha=h * c)
    return out


def _converged(old: Tensor, new: Tensor, rtol: float, atol: float) -> bool:
    """torchdiffeq's test on two corrector iterates: max |new - old| / (atol + rtol max(|old|,
    |new|)) < 1."""
    with torch.no_grad():
        old, new = old.detach(), new.detach()
        tol = torch.maximum(old.abs(), new.abs()).mul_(rtol).add_(atol)
        return bool(((new - old).abs() / tol).max() < 1)


EXTRA_SOLVERS["explicit_adams"] = _solve_adams(False, "explicit_adams")
EXTRA_SOLVERS["implicit_adams"] = _solve_adams(True, "implicit_adams")
EXTRA_SOLVERS["fixed_adams"] = _solve_adams(True, "fixed_adams")
