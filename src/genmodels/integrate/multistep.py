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

import warnings
from collections import deque
from fractions import Fraction

import torch
from torch import Tensor

from .checks import MaxStepsExceededError
from .odeint import EXTRA_SOLVERS, SolverStats, _hermite, nextafter, runge_kutta_step
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


class _AdamsStepper:
    """The steps of an Adams method with their history of slopes, shared by the solve on a
    grid and the event search: ``step(g0, g1, y)`` -> ``(y1, f0, t1p)`` (``f0 = f(t0, y)``,
    ``t1p`` the time the step's end is evaluated at)."""

    def __init__(self, f, rtol, atol, o, stats: SolverStats, f_first, implicit: bool, name: str):
        self.max_order, self.max_iters, self.impl = _adams_options(o, implicit, name)
        self.f, self.f_first, self.rtol, self.atol = f, f_first, rtol, atol
        self.o, self.stats, self.name = o, stats, name
        self.hist: deque = deque(maxlen=max(self.max_order - 1, 1))
        self.h_prev, self.warned = None, False

    def step(self, g0: float, g1: float, y: Tensor, f0: Tensor | None = None):
        o, stats, f = self.o, self.stats, self.f
        h = g1 - g0
        t0p = nextafter(g0, g1, y.dtype) if o.perturb else g0  # one ulp of the state's
        t1p = nextafter(g1, g0, y.dtype) if o.perturb else g1  # dtype (float32 too)
        if o.callbacks is not None and o.callbacks.step is not None:
            o.callbacks.step(g0, y, h)
        if f0 is None:
            f0 = (self.f_first if self.f_first is not None else f)(t0p, y)
            stats.nfe += 1
        self.f_first = None
        hist, h_prev, max_order = self.hist, self.h_prev, self.max_order
        if h_prev is None or abs(h - h_prev) > 1e-10 * abs(h):
            hist.clear()  # equal steps only: restart the history
        hist.appendleft(f0)
        self.h_prev = h
        k = min(len(hist), max_order - 1)
        if k < _MIN_HISTORY:
            rk4 = TABLEAUS["rk4"]
            y1 = runge_kutta_step(f, g0, y, h, f0, rk4, t_last=t1p)[0]
            stats.nfe += rk4.stages - 1
        else:
            dy = _dot(_AB[k], hist, h)
            if self.impl:
                gam = _AM[k + 1]
                delta = _dot(gam[1:], hist, h)
                for _ in range(self.max_iters):
                    f1 = f(t1p, y + dy)
                    stats.nfe += 1
                    new = torch.add(delta, f1, alpha=h * gam[0])
                    ok = _converged(dy, new, self.rtol, self.atol)
                    dy = new
                    if ok:
                        break
                else:
                    self._not_converged(g1)
            y1 = y + dy
        stats.n_steps += 1
        stats.n_accepted += 1
        return y1, f0, t1p

    def _not_converged(self, g1: float) -> None:
        extra = self.stats.extra
        extra["adams_not_converged"] = extra.get("adams_not_converged", 0) + 1
        if not self.warned:
            warnings.warn(
                f"{self.name}: the corrector's fixed-point iteration did not converge "
                f"in max_iters={self.max_iters} at t={g1!r}; the solution may be "
                "inaccurate (smaller steps, or an implicit method for stiff problems)",
                stacklevel=5,
            )
            self.warned = True


def _solve_adams(implicit: bool, name: str):
    def solve(f, y0, ts, rtol, atol, norm, o, stats: SolverStats, grad, grid, f_first):
        stepper = _AdamsStepper(f, rtol, atol, o, stats, f_first, implicit, name)
        g = list(ts) if grid is None else grid
        out, j, n = [y0], 1, len(ts)
        direction = 1.0 if ts[-1] > ts[0] else -1.0
        y = y0
        for g0, g1 in zip(g[:-1], g[1:]):
            h = g1 - g0
            y1, f0, t1p = stepper.step(g0, g1, y)
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

    def event(f, y0, t0, direction, rtol, atol, o, stats, grad, f_first, search):
        """Steps of ``options['step_size']`` from ``t0`` until ``search`` (an
        :class:`~genmodels.integrate.events.EventSearch`) finds the event inside one; the
        event is located on the step's linear or cubic Hermite interpolant (the ``interp``
        option), as torchdiffeq's fixed-grid solvers do.  At most ``max_num_steps`` steps
        (20000 unless given).  Returns ``[y0, y_event]``."""
        stepper = _AdamsStepper(f, rtol, atol, o, stats, f_first, implicit, name)
        h = direction * o.step_size
        limit = o.max_num_steps if o.max_num_steps_given else 20000
        y, f_next, t = y0, None, t0
        for i in range(limit):
            t, t1 = t0 + i * h, t0 + (i + 1) * h
            y1, f0, t1p = stepper.step(t, t1, y, f_next)
            f1: list[Tensor] = []

            def interp(tj, t=t, y=y, y1=y1, f0=f0, f1=f1, t1p=t1p, h=h):
                if o.interp != "cubic":
                    return torch.lerp(y, y1, (tj - t) / h)
                if not f1:
                    with torch.set_grad_enabled(grad):  # the search bisects under no_grad
                        f1.append(f(t1p, y1))
                    stats.nfe += 1
                return _hermite(y, f0, y1, f1[0], t, h, tj)

            if search(t, t1, y, y1, interp):
                return [y0, search.y_event]
            # the cubic interpolant's end slope is the next step's first (not under perturb,
            # where the next step starts one ulp later)
            f_next = f1[0] if f1 and not o.perturb else None
            y = y1
        raise MaxStepsExceededError(
            f"no event after {limit} fixed steps of {o.step_size!r} from t={t0!r} (reached "
            f"t={t0 + limit * h!r}); options['max_num_steps'] allows more",
            t0 + limit * h,
        )

    solve.__name__ = f"solve_{name}"
    solve.event = event
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
for _name in ("explicit_adams", "implicit_adams", "fixed_adams"):
    EXTRA_SOLVERS[_name].valid_callbacks = frozenset({"callback_step"})  # as torchdiffeq
