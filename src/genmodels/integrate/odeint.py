"""``odeint``: explicit Runge–Kutta solvers (fixed step and adaptive) in one stepping loop.

Solves ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` and returns ``y`` at every time of ``t``
(the lecture's ``ODESolve(z(t0), f, t0, t1, theta)``).  The interface is torchdiffeq's, so
scripts written for ``torchdiffeq.odeint`` run unchanged; the methods are the data in
:mod:`genmodels.integrate.tableaus`.

The hot loop keeps the state as one flat tensor, the stages ``k_i`` as rows of one buffer, time
and step size as Python floats, and does one fused ``addmv`` per stage (``y + h * K^T a_i``),
one for the error estimate and a single ``.item()`` per step for the accept/reject decision.
"""

from __future__ import annotations

import bisect
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ._flat import FlatState, State, check_output, make_norm, user_norm
from .checks import (
    MaxStepsExceededError,
    NonFiniteSolutionError,
    ODESolverError,
    StepSizeUnderflowError,
    check_times,
)
from .events import EventSearch, EventTime, combined_event_fn
from .tableaus import TABLEAUS, ButcherTableau, get_tableau

__all__ = [
    "odeint",
    "SolverStats",
    "ODESolverError",
    "StepSizeUnderflowError",
    "MaxStepsExceededError",
    "NonFiniteSolutionError",
    "StiffnessWarning",
    "LongSolveWarning",
]

OPTION_KEYS = frozenset(
    {
        "step_size",
        "grid_constructor",
        "perturb",
        "interp",
        "first_step",
        "max_num_steps",
        "norm",
        "dtype",
        "safety",
        "ifactor",
        "dfactor",
        "step_t",
        "jump_t",
        "min_step",
        "max_step",
        # multistep.py (Adams) and implicit.py (Newton): read from _Options.extra
        "max_order",
        "max_iters",
        "implicit",
        "jacobian",
        "newton_tol",
        # scipy_solver.py: read from _Options.extra
        "solver",
        "jac",
    }
)

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")

# Solvers that are not a Butcher tableau on the explicit stepping loop: name -> solve function
# ``solve(f, y0, ts, rtol, atol, norm, options, stats, grad, grid, f_first) -> list[Tensor]``
# with integrate_flat's arguments (filled by multistep.py, implicit.py and scipy_solver.py on
# import); the contract is spelled out in integrate_flat's docstring.
EXTRA_SOLVERS: dict[str, Callable] = {}


class StiffnessWarning(UserWarning):
    """An adaptive explicit solve whose step size is held at the method's stability limit.

    Issued at most once per solve (see :func:`odeint`, "Stiffness").  The solve goes on; an
    explicit method will need a number of steps proportional to the stiffness of the problem.
    """


class LongSolveWarning(UserWarning):
    """An adaptive solve that has taken a million accepted steps and is still going."""


@dataclass
class SolverStats:
    """Counters of a solve; pass one as ``odeint(..., stats=s)`` and read it afterwards.

    Counts accumulate over every solve the object is passed to.  ``odeint_adjoint`` fills the
    ``*_backward`` fields when the backward pass runs.

    Example:
        >>> s = SolverStats()
        >>> _ = odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), stats=s)
        >>> s.nfe > 0
        True
    """

    nfe: int = 0
    n_steps: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    nfe_backward: int = 0
    n_steps_backward: int = 0
    n_accepted_backward: int = 0
    n_rejected_backward: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class _Options:
    step_size: float | None = None
    grid_constructor: Callable | None = None
    perturb: bool = False
    interp: str = "linear"
    first_step: float | None = None
    max_num_steps: int = 2**31 - 1
    norm: Callable | str | None = None
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    step_t: list[float] = field(default_factory=list)
    jump_t: list[float] = field(default_factory=list)
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps_given: bool = False
    callbacks: Callbacks | None = None  # the user's step callbacks, for EXTRA_SOLVERS to call
    extra: dict = field(default_factory=dict)  # options only some solvers read


def _floats(name: str, v) -> list[float]:
    if isinstance(v, Tensor):
        return [float(x) for x in v.detach().reshape(-1).double().tolist()]
    try:
        return [float(x) for x in v]
    except TypeError:
        raise TypeError(f"options[{name!r}] must be a sequence or tensor of times") from None


def _positive(name: str, v) -> float:
    x = float(v)
    if not x > 0 or not math.isfinite(x):
        raise ValueError(f"options[{name!r}] must be a positive finite number, got {v!r}")
    return x


def parse_options(options: dict | None) -> _Options:
    """torchdiffeq's ``options`` dict checked and parsed (unknown keys and bad values raise).

    Options only some solvers read (Adams, implicit, scipy) are kept unchecked in
    ``_Options.extra`` for the solver to check."""
    o = _Options()
    if options is None:
        return o
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    known = OPTION_KEYS
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)}; known options: {', '.join(sorted(known))}"
        )
    for k, v in options.items():
        if v is None:
            continue
        if k == "step_size":
            o.step_size = _positive(k, v)
        elif k == "grid_constructor":
            if not callable(v):
                raise TypeError("options['grid_constructor'] must be callable(func, y0, t)")
            o.grid_constructor = v
        elif k == "perturb":
            o.perturb = bool(v)
        elif k == "interp":
            if v not in ("linear", "cubic"):
                raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {v!r}")
            o.interp = v
        elif k == "first_step":
            o.first_step = _positive(k, v)
        elif k == "max_num_steps":
            if int(v) < 1:
                raise ValueError(f"options['max_num_steps'] must be >= 1, got {v!r}")
            o.max_num_steps = int(v)
            o.max_num_steps_given = True
        elif k == "min_step":
            x = float(v)
            if not (x >= 0 and math.isfinite(x)):
                raise ValueError(f"options['min_step'] must be >= 0 and finite, got {v!r}")
            o.min_step = x
        elif k == "max_step":
            x = float(v)
            if not x > 0:
                raise ValueError(f"options['max_step'] must be > 0 (inf allowed), got {v!r}")
            o.max_step = x
        elif k == "norm":
            if not (callable(v) or v == "seminorm"):
                raise TypeError("options['norm'] must be callable(tensor or tuple) -> scalar")
            o.norm = v
        elif k == "dtype":
            if not isinstance(v, torch.dtype) or not v.is_floating_point:
                raise TypeError(f"options['dtype'] must be a floating torch.dtype, got {v!r}")
            # time is always kept as Python float64; accepted for torchdiffeq compatibility
        elif k in ("safety", "ifactor", "dfactor"):
            setattr(o, k, _positive(k, v))
        elif k in ("step_t", "jump_t"):
            setattr(o, k, _floats(k, v))
        else:
            o.extra[k] = v  # checked by the solver that reads it
    if o.min_step > o.max_step:
        raise ValueError(
            f"options['min_step']={o.min_step!r} must not exceed options['max_step']={o.max_step!r}"
        )
    return o


def check_tolerance(name: str, v, strict: bool) -> float:
    """``rtol``/``atol`` as a float, finite and ``>= 0`` (``> 0`` when ``strict``)."""
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(v.shape)}")
        v = v.item()
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float, got {type(v).__name__}") from None
    if not math.isfinite(x) or x < 0 or (strict and x == 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'} and finite, got {v!r}")
    return x


def nextafter(t: float, toward: float, dtype: torch.dtype) -> float:
    """The neighbour of ``t`` toward ``toward`` one unit in the last place of ``dtype``.

    The vector field sees time in the state's dtype, so a one-ulp shift (``perturb``, the two
    sides of a ``jump_t`` discontinuity) must be taken there: in float32 the float64 neighbour
    of 0.5 rounds back to 0.5.  ``t`` is first rounded to ``dtype`` (the time the field would
    see); the result is exactly representable in ``dtype``.
    """
    if dtype == torch.float64:
        return math.nextafter(t, toward)
    if dtype == torch.float32:
        return float(np.nextafter(np.float32(t), np.float32(toward)))
    a = torch.tensor(t, dtype=dtype)
    return torch.nextafter(a, torch.tensor(toward, dtype=dtype)).item()


@dataclass
class Callbacks:
    """The step callbacks a vector field defines (torchdiffeq's), as ``cb(t0, y0, dt)`` on the
    solver's own state and float times; ``None`` where undefined.

    ``step`` is called before every step attempt from ``(t0, y0)`` with step ``dt`` (signed: the
    step ends at ``t0 + dt``), ``accept``/``reject`` after the error test of an adaptive step
    with the same arguments.  The user's functions receive ``t0`` and ``dt`` as float64 0-d
    tensors and ``y0`` in the state's own structure.
    """

    step: Callable | None = None
    accept: Callable | None = None
    reject: Callable | None = None

    def names(self, suffix: str = "") -> set[str]:
        got = zip(CALLBACK_NAMES, (self.step, self.accept, self.reject))
        return {n + suffix for n, cb in got if cb is not None}


def find_callbacks(
    func, structure: Callable[[Tensor], object], suffix: str = ""
) -> Callbacks | None:
    """``func``'s ``callback_step``, ``callback_accept_step``, ``callback_reject_step`` (with
    ``suffix="_adjoint"``: the variants called in the adjoint's backward solve); ``structure``
    maps the solver's state to what the user's callback receives.  ``None`` when none is set."""
    found = {}
    for name in CALLBACK_NAMES:
        cb = getattr(func, name + suffix, None)
        if cb is None:
            continue
        if not callable(cb):
            raise TypeError(f"func.{name + suffix} must be callable(t0, y0, dt)")

        def call(t0: float, y0: Tensor, dt: float, _cb=cb) -> None:
            f64 = torch.float64
            dev = y0.device
            _cb(torch.tensor(t0, dtype=f64, device=dev), structure(y0),
                torch.tensor(dt, dtype=f64, device=dev))  # fmt: skip

        found[name] = call
    if not found:
        return None
    return Callbacks(
        found.get("callback_step"), found.get("callback_accept_step"),
        found.get("callback_reject_step"),
    )  # fmt: skip


def warn_unused_callbacks(cbs: Callbacks | None, method, valid: frozenset, suffix: str = ""):
    """torchdiffeq's warning when ``func`` defines a callback the method never calls."""
    if cbs is None:
        return
    unused = cbs.names(suffix) - {n + suffix for n in valid}
    if unused:
        name = method if isinstance(method, str) else getattr(method, "name", method)
        warnings.warn(
            f"solver {name!r} does not call the callback(s) {sorted(unused)}: "
            f"it calls only {sorted(n + suffix for n in valid) or 'none'}",
            UserWarning,
            stacklevel=_stacklevel(),
        )


def valid_callbacks(solver, fixed_grid: bool) -> frozenset:
    """The callbacks ``solver`` (a tableau or an :data:`EXTRA_SOLVERS` function) calls."""
    if isinstance(solver, ButcherTableau):
        if fixed_grid or not solver.adaptive:
            return frozenset({"callback_step"})
        return frozenset(CALLBACK_NAMES)
    return frozenset(getattr(solver, "valid_callbacks", frozenset()))


def _stage_time(t: float, ci: float, h: float, t1: float) -> float:
    return t1 if ci == 1.0 else t + ci * h


def _initial_step(f, t0, y0, f0, direction, order, rtol, atol, norm, stats) -> float:
    """Hairer, Nørsett & Wanner (1993), Solving ODEs I, sec. II.4: starting step size."""
    with torch.no_grad():
        y0, f0 = y0.detach(), f0.detach()
        scale = y0.abs().mul_(rtol).add_(atol)
        d0 = norm(y0 / scale)
        d1 = norm(f0 / scale)
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        f1 = f(t0 + direction * h0, torch.add(y0, f0, alpha=direction * h0))
        stats.nfe += 1
        d2 = norm((f1 - f0).div_(scale)) / h0
        if max(d1, d2) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
        return min(100 * h0, h1)


def integrate_flat(
    f: Callable,
    y0: Tensor,
    ts: Sequence[float],
    tab: ButcherTableau,
    rtol: float,
    atol: float,
    norm: Callable[[Tensor], float],
    o: _Options,
    stats: SolverStats,
    grad: bool,
    grid: list[float] | None = None,
    f_first: Callable | None = None,
    callbacks: Callbacks | None = None,
    observer: Callable | None = None,
) -> list[Tensor]:
    """Solve from ``y0`` (N,) with ``f(t, y, out=None)``; a list of states, one per time of
    ``ts``: the fixed-step loop on ``grid`` (or for a method without an error estimate), else the
    adaptive one; a method of :data:`EXTRA_SOLVERS` is called by its contract.  ``odeint`` and
    ``odeint_adjoint`` (forward and backward) call this.

    ``f_first`` (default ``f``) makes the first evaluation, e.g. with output checks;
    ``callbacks`` are the user's step callbacks; ``observer(t0, t1, y0, y1, interp) -> bool``
    (adaptive tableaus only) sees every accepted step with its dense output ``interp(t)`` and
    stops the solve by returning True (events, ``odeint_dense``).

    The contract of an :data:`EXTRA_SOLVERS` solve function, called with the same positional
    arguments ``solve(f, y0, ts, rtol, atol, norm, o, stats, grad, grid, f_first)``: ``f(t, y,
    out=None)`` the field on the flat state (``t`` a Python float), ``y0`` (N,), ``ts`` the
    output times (floats, strictly monotone, ``len >= 2``), ``norm`` of a flat ratio vector,
    ``o`` the parsed options (solver-specific ones, listed in ``OPTION_KEYS``, in ``o.extra``),
    ``grid`` from ``step_size``/``grid_constructor`` or ``None``; returns one (N,) state per
    time of ``ts``, the first ``y0``.  The user's step callbacks are ``o.callbacks`` (a
    :class:`Callbacks` or ``None``).  Optional attributes: ``valid_callbacks`` (the
    callback names it calls; default none, and ``odeint`` warns about the others),
    ``differentiable = False`` (``odeint`` detaches; ``odeint_adjoint`` still works).  Events
    and ``odeint_dense`` need a tableau.
    """
    if len(ts) == 1:
        return [y0]
    f_first = f if f_first is None else f_first
    if not isinstance(tab, ButcherTableau):  # an EXTRA_SOLVERS solve function
        o.callbacks = callbacks
        return tab(f, y0, ts, rtol, atol, norm, o, stats, grad, grid, f_first)
    if o.extra:
        raise ValueError(
            f"option(s) {sorted(o.extra)} do not apply to the Runge–Kutta method {tab.name!r} "
            "(they are options of the Adams, implicit or scipy methods)"
        )
    if grid is not None or not tab.adaptive:
        g = grid if grid is not None else list(ts)
        return _fixed(f, y0, ts, tab, g, o, stats, grad, f_first, callbacks)
    return _adaptive(f, y0, ts, tab, rtol, atol, norm, o, stats, grad, f_first, callbacks, observer)


def runge_kutta_step(
    f: Callable,
    t: float,
    y: Tensor,
    h: float,
    k0: Tensor,
    tab: ButcherTableau,
    *,
    t_last: float | None = None,
    work: StageBuffers | None = None,
    error: bool = False,
) -> tuple[Tensor, list[Tensor] | Tensor, Tensor | None]:
    """One explicit Runge–Kutta step over the tableau ``tab`` (the only stage recursion).

    With ``k_1 = k0 = f(t, y)``::

        k_i = f(t + c_i h, y + h * sum_{j<i} a_ij k_j),   i = 2..s
        y1  = y + h * sum_i b_i k_i                        (the last stage's input when FSAL)
        err = h * sum_i e_i k_i                            (``error=True``, embedded pairs)

    Two ways to hold the stages, same arithmetic: under autograd (``work=None``) every stage
    input is a chain of scalar-weighted adds over the nonzero ``a_ij`` (no stacking, so the
    graph holds only the additions and ``f``'s own operations), and ``K`` is the list of stages;
    without autograd the stages are the rows of ``work.K`` (s, N) and each stage input is one
    ``addmv`` into a reused buffer, and ``K`` is the buffer's transposed view (N, s).  The node
    ``c_s = 1`` is evaluated at ``t_last`` (default ``t + h``), so a step lands exactly on its end
    (or just before a discontinuity).

    Args:
        f: ``f(t, y) -> dy/dt`` on flat states ``(N,)`` (``f(t, y, out)`` without autograd).
        t, h: start time and step (Python floats; ``h < 0`` integrates backwards).
        y, k0: state ``(N,)`` and ``f(t, y)``; with ``work``, ``k0`` may be ``work.rows[0]``.
        tab: the method.

    Returns:
        ``(y1, K, err)``; ``err`` is ``None`` unless ``error``.
    """
    t_last = t + h if t_last is None else t_last
    if work is None:
        rows, b_row, fsal = _plan(tab)
        ks = [k0]
        for ci, row in rows:
            yi = _combine_planned(y, ks, row, h)
            ks.append(f(t_last if ci == 1.0 else t + ci * h, yi))
        y1 = yi if fsal else _combine_planned(y, ks, b_row, h)
        err = None
        if error:
            with torch.no_grad():
                e = _coefficients(tab, y.dtype, y.device)[2]
                err = torch.stack([k.detach() for k in ks], -1).matmul(e).mul_(h)
        return y1, ks, err
    s, c, fsal = tab.stages, tab.c, tab.fsal
    A, B, E = work.A, work.B, work.E
    rows, Kt, g = work.rows, work.Kt, work.g
    if k0 is not rows[0]:
        rows[0].copy_(k0)
    for i in range(1, s):
        ti = _stage_time(t, c[i], h, t_last)
        if fsal and i == s - 1:
            yi = torch.addmv(y, Kt[i], A[i], alpha=h)  # y1: a fresh tensor
            f(ti, yi, rows[i])
        elif g is not None:
            torch.addmv(y, Kt[i], A[i], alpha=h, out=work.Y[i])
            g(ti, work.Yv[i], work.Kv[i])
        else:
            yi = torch.addmv(y, Kt[i], A[i], alpha=h)
            work.fs[i](ti, yi, rows[i])
    y1 = yi if fsal else torch.addmv(y, Kt[s], B, alpha=h)
    err = torch.addmv(y, Kt[s], E, beta=0, alpha=h) if error else None
    return y1, Kt[s], err


def _combine(y: Tensor, ks: Sequence[Tensor], w: Sequence[float], h: float) -> Tensor:
    """``y + h * sum_j w_j k_j`` as scalar-weighted adds, skipping zero weights.

    The increment is summed first and added to ``y`` once (as ``addmv`` does): adding each
    term to ``y`` would round at ``y``'s magnitude once per stage, which in float32 adds up
    over many steps."""
    terms = [(wj, kj) for wj, kj in zip(w, ks) if wj != 0.0]
    if not terms:
        return y
    w0, acc = terms[0]  # y + h w0 (k0 + sum_j (w_j / w0) k_j): one op per term, as before
    for wj, kj in terms[1:]:
        acc = torch.add(acc, kj, alpha=wj / w0)
    return torch.add(y, acc, alpha=h * w0)


def _weights(w: Sequence[float]) -> tuple[int, float, tuple[tuple[int, float], ...]] | None:
    """``y + h sum_j w_j k_j`` as ``(j0, w0, ((j, w_j / w0), ...))`` over the nonzero weights
    (``None`` when all are zero): the recipe :func:`_combine` follows, made once."""
    terms = [(j, wj) for j, wj in enumerate(w) if wj != 0.0]
    if not terms:
        return None
    j0, w0 = terms[0]
    return j0, w0, tuple((j, wj / w0) for j, wj in terms[1:])


def _plan(tab: ButcherTableau):
    """``(rows, b_row, fsal)`` of a tableau for the autograd stage recursion, made once: the
    node and weight recipe (:func:`_weights`) of stages ``2..s``, that of ``b``."""
    key = (tab, "plan")
    hit = _COEFF_CACHE.get(key)
    if hit is None:
        rows = tuple((tab.c[i], _weights(tab.a[i])) for i in range(1, tab.stages))
        hit = _COEFF_CACHE[key] = (rows, _weights(tab.b), tab.fsal)
    return hit


def _combine_planned(y: Tensor, ks: Sequence[Tensor], row, h: float) -> Tensor:
    """:func:`_combine` with the weights' recipe made beforehand (same operations)."""
    if row is None:
        return y
    j0, w0, rest = row
    acc = ks[j0]
    for j, r in rest:
        acc = torch.add(acc, ks[j], alpha=r)
    return torch.add(y, acc, alpha=h * w0)


class StageBuffers:
    """The stages of a step without autograd, reused from step to step.

    ``K`` (s, N) holds the stages as rows (``rows``), ``Kt[i]`` is ``K[:i]^T`` for one ``addmv``
    per stage input, ``A``/``B``/``E`` the tableau as tensors; for a single-tensor state (``f``
    has ``f.shaped``) the stage inputs ``Y`` live in a buffer too, with state-shaped views ``Yv``,
    ``Kv`` (no view ops in the hot loop).  ``fs[i]`` evaluates stage ``i`` (the adjoint's
    ``lean`` dynamics for stages whose weights are zero).
    """

    def __init__(self, f: Callable, tab: ButcherTableau, y0: Tensor, lean: list | None = None):
        s, n = tab.stages, y0.numel()
        self.A, self.B, self.E = _coefficients(tab, y0.dtype, y0.device)
        self.K = torch.empty(s, n, dtype=y0.dtype, device=y0.device)
        self.rows = list(self.K.unbind(0))
        self.Kt = [None] + [self.K[:i].t() for i in range(1, s + 1)]
        self.fs = lean if lean is not None else [f] * s
        self.g = None if lean is not None else getattr(f, "shaped", None)
        if self.g is not None:
            Y = torch.empty(s, n, dtype=y0.dtype, device=y0.device)
            self.Y = list(Y.unbind(0))
            self.Yv = [r.view(self.g.shape) for r in self.Y]
            self.Kv = [r.view(self.g.shape) for r in self.rows]


def _fixed(f, y0, ts, tab, grid, o, stats, grad, f_first, callbacks=None) -> list[Tensor]:
    """Fixed steps on ``grid``; outputs at ``ts`` by linear or cubic Hermite interpolation.

    ``perturb``: the first stage of a step is evaluated one ulp (of the state's dtype) after
    the step's start and the last (node 1) one ulp before its end, so a field with jumps at the
    grid points sees each step's own side of them."""
    s = tab.stages
    work = None if grad else StageBuffers(f, tab, y0)
    cubic = o.interp == "cubic"
    out, j, n = [y0], 1, len(ts)
    y, direction = y0, (1.0 if ts[-1] > ts[0] else -1.0)
    dtype = y0.dtype
    on_step = None if callbacks is None else callbacks.step
    f_next = None
    if on_step is None:  # else the first evaluation comes after the first callback
        f_next = f_first(nextafter(grid[0], grid[1], dtype) if o.perturb else grid[0], y0)
        stats.nfe += 1
        _check_initial_field(f_next, grid[0])
    for g0, g1 in zip(grid[:-1], grid[1:]):
        h = g1 - g0
        t0p = nextafter(g0, g1, dtype) if o.perturb else g0
        t1p = nextafter(g1, g0, dtype) if o.perturb else g1
        if on_step is not None:
            on_step(g0, y, h)
            if f_first is not None:
                k0 = f_first(t0p, y) if work is None else f_first(t0p, y, work.rows[0])
                stats.nfe += 1
                _check_initial_field(k0, g0)
                f_next, f_first = k0, None
        if f_next is None:
            k0 = f(t0p, y) if work is None else f(t0p, y, work.rows[0])
        else:
            k0 = f_next
        y1, K, _ = runge_kutta_step(f, g0, y, h, k0, tab, t_last=t1p, work=work)
        k_first = K[0] if work is None else work.rows[0]
        stats.nfe += s - (f_next is not None)
        stats.n_steps += 1
        stats.n_accepted += 1
        f_next = None
        while j < n and (ts[j] - g1) * direction <= 0:
            tj = ts[j]
            if tj == g1:
                out.append(y1)
            elif cubic:
                if f_next is None:
                    f_next = f(t1p, y1)
                    stats.nfe += 1
                out.append(_hermite(y, k_first, y1, f_next, g0, h, tj))
            else:
                out.append(torch.lerp(y, y1, (tj - g0) / h))
            j += 1
        if o.perturb:
            f_next = None  # the next step starts just after g1, not at its left limit
        y = y1
    return out


_COEFF_CACHE: dict = {}


def _coefficients(tab: ButcherTableau, dtype: torch.dtype, device: torch.device):
    """The tableau's rows ``a_i``, ``b`` and ``e`` as tensors, made once per dtype and device."""
    key = (tab, dtype, device)
    hit = _COEFF_CACHE.get(key)
    if hit is None:
        A = [None] + [torch.tensor(r, dtype=dtype, device=device) for r in tab.a[1:]]
        B = torch.tensor(tab.b, dtype=dtype, device=device)
        E = None if tab.e is None else torch.tensor(tab.e, dtype=dtype, device=device)
        hit = _COEFF_CACHE[key] = (A, B, E)
    return hit


def _dense(tab: ButcherTableau) -> list[list[float]]:
    key = (tab, "dense")
    if key not in _COEFF_CACHE:
        _COEFF_CACHE[key] = tab.dense_weights().tolist()
    return _COEFF_CACHE[key]


def _hermite(y0, f0, y1, f1, t0, h, t) -> Tensor:
    th = (t - t0) / h
    h00, h10 = (1 + 2 * th) * (1 - th) ** 2, th * (1 - th) ** 2
    h01, h11 = th * th * (3 - 2 * th), th * th * (th - 1)
    return y0 * h00 + f0 * (h10 * h) + y1 * h01 + f1 * (h11 * h)


def _stability_boundary(tab: ButcherTableau) -> float:
    """Length of the stability interval on the negative real axis: the largest ``x`` with
    ``|R(-x')| <= 1`` for all ``0 <= x' <= x``, where ``R(z) = 1 + sum_k z^k b^T A^(k-1) 1`` is
    the stability polynomial of the explicit method (Hairer & Wanner, Solving ODEs II, sec.
    IV.2).  dopri5: 3.31, bosh3: 2.51, euler: 2."""
    key = (tab, "stability")
    if key not in _COEFF_CACHE:
        s = tab.stages
        coef, v = [1.0], [1.0] * s
        for _ in range(s):
            coef.append(sum(bi * vi for bi, vi in zip(tab.b, v)))
            v = [sum(a * v[j] for j, a in enumerate(tab.a[i])) for i in range(s)]
        x = 0.0
        while x < 50.0:
            z = -(x + 1e-3)
            if abs(sum(ck * z**k for k, ck in enumerate(coef))) > 1.0 + 1e-12:
                break
            x += 1e-3
        _COEFF_CACHE[key] = x
    return _COEFF_CACHE[key]


class _Monitor:
    """Cheap watch over a long adaptive solve: stiffness detection and a long-solve notice.

    The loop only compares its count of accepted steps with ``next``.  At every
    ``STIFF_EVERY``-th accepted step, and then at every accepted step while the test keeps
    firing, it estimates ``h |lambda|`` from the last two stages of the step (Hairer & Wanner,
    Solving ODEs II, sec. IV.2, as in Hairer's DOPRI5 code):
    ``h ||f(Y_s) - f(Y_j)|| / ||Y_s - Y_j||`` with ``Y_s = y1`` and ``Y_j`` the stage with the
    largest node below it.  An explicit method whose step is held by stability, not accuracy,
    sits at its stability boundary; 15 estimates above 98 % of that boundary, without 6 below it
    in a row, make the problem stiff: one :class:`StiffnessWarning` per solve.  At ``LONG`` accepted
    steps a :class:`LongSolveWarning` says the solve is still going.
    """

    STIFF_EVERY = 1000
    LONG = 10**6

    def __init__(self, tab: ButcherTableau, ts, rtol: float, atol: float, max_steps: int):
        self.tab, self.ts, self.rtol, self.atol, self.max_steps = tab, ts, rtol, atol, max_steps
        self.limit = 0.98 * _stability_boundary(tab)
        below = [i for i in range(tab.stages - 1) if tab.c[i] <= tab.c[-1]]
        self.j = max(below, key=lambda i: (tab.c[i], i))
        self.hits = self.misses = 0
        self.stiff_at: tuple[float, float] | None = None
        self.next = min(self.STIFF_EVERY, self.LONG)

    def check(self, n_acc: int, t1: float, h: float, y: Tensor, y1: Tensor, K: Tensor, A) -> int:
        """After accepted step ``n_acc``, ``y -> y1`` ending at ``t1`` with step ``h``, stages
        ``K`` (N, s) and tableau rows ``A``.  Returns the next step count to call at."""
        if n_acc >= self.LONG and n_acc % self.LONG == 0:
            warnings.warn(
                f"odeint({self.tab.name!r}) has taken {n_acc:,} accepted steps and is at "
                f"t={t1!r} of [{self.ts[0]!r}, {self.ts[-1]!r}] with step size h={h!r}. If "
                f"accuracy limits the step, a higher-order method ('dopri5', 'dopri8') or larger "
                f"rtol={self.rtol}, atol={self.atol} take fewer steps; if stability does (a "
                f"StiffnessWarning says so), an implicit method; {self._budget()}.",
                LongSolveWarning,
                stacklevel=_stacklevel(),
            )
        if self.stiff_at is None:
            if _h_lambda(self.j, y, y1, K, A, h) > self.limit:
                self.hits, self.misses = self.hits + 1, 0
                if self.hits == 15:
                    self._warn_stiff(n_acc, t1, h)
            else:
                self.misses += 1
                if self.misses == 6:
                    self.hits = 0
        if self.stiff_at is None and self.hits > 0:
            nxt = n_acc + 1
        elif self.stiff_at is None:
            nxt = (n_acc // self.STIFF_EVERY + 1) * self.STIFF_EVERY
        else:
            nxt = self.LONG
        return min(nxt, (n_acc // self.LONG + 1) * self.LONG)

    def _warn_stiff(self, n_acc: int, t1: float, h: float) -> None:
        self.stiff_at = (t1, h)
        left = abs(self.ts[-1] - t1) / abs(h)
        warnings.warn(
            f"odeint: the problem seems stiff at t={t1!r}: after {n_acc} accepted steps the "
            f"step size h={h!r} is held at the stability limit of the explicit method "
            f"{self.tab.name!r} (h |lambda| ~ {self.limit / 0.98:.2f}), not by rtol={self.rtol}, "
            f"atol={self.atol}; reaching t={self.ts[-1]!r} at this step size takes about "
            f"{left:.2g} more steps" + self._remedies(),
            StiffnessWarning,
            stacklevel=_stacklevel(),
        )

    def _budget(self) -> str:
        if self.max_steps >= 2**31 - 1:
            return "options=dict(max_num_steps=...) stops the solve early"
        return f"the solve stops after max_num_steps={self.max_steps} steps per output interval"

    def _remedies(self) -> str:
        return (
            ". Remedies: an implicit method for stiff problems (method='radauIIA5', "
            "'radauIIA3', 'trbdf2', 'sdirk2' or 'implicit_euler', or "
            "scipy.integrate.solve_ivp(..., method='Radau' or 'BDF')); larger rtol/atol where "
            "accuracy rather than stability "
            f"limits the step; {self._budget()}."
        )


def _stacklevel() -> int:
    """Stack level of the first frame outside ``genmodels.integrate`` (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        "genmodels.integrate"
    ):
        frame, level = frame.f_back, level + 1
    return level


def _nonfinite(k: Tensor) -> str | None:
    """``"nan"`` or ``"inf"`` when the stage ``k`` holds one (NaN first), else ``None``."""
    k = k.detach()
    if bool(torch.isfinite(k).all()):
        return None
    return "nan" if bool(torch.isnan(k).any()) else "inf"


def _check_initial_field(k0: Tensor, t0: float) -> None:
    """One check per solve: a non-finite ``f(t0, y0)`` at the finite ``y0`` is the vector
    field's doing, and no step size can cure it."""
    bad = _nonfinite(k0)
    if bad is not None:
        raise NonFiniteSolutionError(
            f"the vector field returned non-finite values ({bad}) at t={t0!r}, at the initial "
            "state (which is finite)",
            t0,
        )


def _first_bad_stage(ks: Sequence[Tensor]) -> tuple[int, str] | None:
    for i, k in enumerate(ks):
        bad = _nonfinite(k)
        if bad is not None:
            return i, bad
    return None


def _adaptive(
    f, y0, ts, tab, rtol, atol, norm, o, stats, grad, f_first, callbacks=None, observer=None
) -> list[Tensor]:
    """Adaptive steps with an embedded pair, FSAL, dense output at the requested ``ts``.

    Step sizes are kept within ``[min_step, max_step]`` (in magnitude); a step of at most
    ``min_step`` is accepted whatever its error (torchdiffeq's rule).  At a ``jump_t`` the last
    stage is evaluated one ulp (in the state's dtype) before the discontinuity and the next
    step starts from the field one ulp after it."""
    s, c, dtype, device = tab.stages, tab.c, y0.dtype, y0.device
    if not (tab.fsal or tab.reuse_last):
        raise ValueError(f"adaptive method {tab.name!r} must have an FSAL tableau")
    A = _coefficients(tab, dtype, device)[0]
    P = _dense(tab)
    expo = 1.0 / (tab.error_order + 1)
    safety, ifactor, dfactor, max_steps = o.safety, o.ifactor, o.dfactor, o.max_num_steps
    min_step, max_step = o.min_step, o.max_step
    clamp = min_step > 0 or max_step < math.inf
    on_step = on_accept = on_reject = None
    if callbacks is not None:
        on_step, on_accept, on_reject = callbacks.step, callbacks.accept, callbacks.reject
    n = len(ts)
    t = ts[0]
    direction = 1.0 if ts[-1] > t else -1.0
    # times the steps must land on, ahead of t0 and before the end, in the direction of time
    landings = o.step_t + o.jump_t
    if tab.c_mid is None and tab.order > 5:
        # a cubic Hermite interpolant would spoil an 8th-order method: step onto the outputs
        landings = landings + list(ts[1:])
    ahead = [x for x in landings if (x - t) * direction > 0]
    stops = sorted({x for x in ahead if (ts[-1] - x) * direction >= 0}, key=lambda x: x * direction)
    jumps = set(o.jump_t)
    t_first = nextafter(t, t + direction, dtype) if t in jumps else t
    lean = None
    if not grad and hasattr(f, "lean"):
        # adjoint: stages weighted zero in b (and in e, when the parameters are in the norm)
        # need no parameter vector-Jacobian product
        skip = [tab.b[i] == 0 and (tab.e[i] == 0 or not f.params_in_norm) for i in range(s)]
        lean = [f.lean if k else f for k in skip] if any(skip[1 : s - 1]) else None
        if lean is not None:
            lean[s - 1] = f  # the FSAL stage is the next step's first
    work = None if grad else StageBuffers(f, tab, y0, lean)
    k0 = f_first(t_first, y0) if grad else f_first(t_first, y0, work.rows[0])
    stats.nfe += 1
    _check_initial_field(k0, t_first)
    if o.first_step is not None:
        h = direction * o.first_step
    else:
        h = direction * _initial_step(
            f, t, y0, k0, direction, tab.error_order, rtol, atol, norm, stats
        )
    if clamp:
        h = direction * min(max(abs(h), min_step), max_step)
    out, j = [y0], 1
    y = y0
    abs_y = y0.detach().abs()
    steps_here = 0
    mon = _Monitor(tab, ts, rtol, atol, max_steps)
    n_acc, check_at = 0, mon.next
    bad = None  # (time, "nan"/"inf") of a non-finite stage in the latest rejections
    while j < n:
        landing = None
        if stops and (t + h - stops[0]) * direction >= 0:
            landing = stops[0]
            h = landing - t
        t1 = landing if landing is not None else t + h
        if t1 == t or not math.isfinite(t1):
            _underflow(t, h, rtol, atol, bad, mon)
        if steps_here >= max_steps:
            raise MaxStepsExceededError(
                f"max_num_steps={max_steps} exceeded at t={t!r} before reaching t={ts[j]!r}"
                + _stiff_note(mon),
                t,
            )
        steps_here += 1
        stats.n_steps += 1
        if on_step is not None:
            on_step(t, y, h)
        t_last = nextafter(t1, t, dtype) if landing in jumps else t1
        y1, K, err = runge_kutta_step(f, t, y, h, k0, tab, t_last=t_last, work=work, error=True)
        stats.nfe += s - 1
        with torch.no_grad():
            abs_y1 = y1.detach().abs()
            scale = torch.maximum(abs_y, abs_y1).mul_(rtol).add_(atol)
            ratio = norm(err.div_(scale))
        accept = ratio <= 1.0 or (clamp and abs(h) <= min_step)
        if accept:
            if on_accept is not None:
                on_accept(t, y, h)
            stats.n_accepted += 1
            n_acc += 1
            if n_acc >= check_at:  # the only per-step cost of the monitor: one compare
                if grad:
                    Ks = torch.stack([k.detach().reshape(-1) for k in K], 1)
                    check_at = mon.check(n_acc, t1, h, y.reshape(-1), y1.reshape(-1), Ks, A)
                else:
                    check_at = mon.check(n_acc, t1, h, y, y1, K, A)
            if observer is not None:
                # the stage buffer is reused by the next step: the observer keeps a copy
                Kc = K if grad else K.clone()
                interp = _step_interpolant(P, t, h, y, Kc, grad)
                # a fresh step of the method from (t, y) to any time inside this one (events)
                interp.restep = _restep(f, t, y, Kc[0] if grad else Kc[:, 0], tab, work, stats)
                if observer(t, t1, y, y1, interp):
                    out.append(observer.y_event)
                    return out
            while j < n and (ts[j] - t1) * direction <= 0:
                tj = ts[j]
                if tj == t1:
                    out.append(y1)
                else:
                    out.append(_dense_at(P, y, K, h, (tj - t) / h, grad))
                j += 1
                steps_here = 0
            if landing is not None:
                stops.pop(0)
            if landing is not None and landing in jumps and j < n:
                # discontinuity: the next step starts from the right limit of f
                tn = nextafter(t1, t1 + direction, dtype)
                k0 = f(tn, y1) if grad else f(tn, y1, work.rows[0])
                stats.nfe += 1
            elif grad:
                k0 = K[-1]
            else:
                work.rows[0].copy_(work.rows[s - 1])
                k0 = work.rows[0]
            t, y, abs_y = t1, y1, abs_y1
        else:
            if on_reject is not None:
                on_reject(t, y, h)
            stats.n_rejected += 1
            if math.isfinite(ratio):
                bad = None
            else:  # rare: find the stage that went non-finite, for the error message
                hit = _first_bad_stage(K if grad else work.rows)
                bad = None if hit is None else (_stage_time(t, c[hit[0]], h, t_last), hit[1])
        if ratio == 0.0:
            factor = ifactor
        elif not math.isfinite(ratio):
            factor = dfactor
        else:
            factor = min(ifactor, max(safety * ratio**-expo, 1.0 if ratio < 1.0 else dfactor))
        h = h * factor
        if clamp:
            h = direction * min(max(abs(h), min_step), max_step)
    return out


def _restep(f, t0: float, y: Tensor, k0: Tensor, tab: ButcherTableau, work, stats) -> Callable:
    """``restep(t)``: the method's own step from ``(t0, y)`` to ``t`` (for events: its accuracy
    does not depend on the interpolant's; reuses the stage buffers, so only once the loop
    is done with them)."""

    def restep(tm: float) -> Tensor:
        stats.nfe += tab.stages - 1
        return runge_kutta_step(f, t0, y, tm - t0, k0, tab, work=work)[0]

    return restep


def _step_interpolant(P, t0: float, h: float, y: Tensor, K, grad: bool) -> Callable:
    """``interp(t)``: the dense output of the step of size ``h`` from ``(t0, y)``."""

    def interp(tj: float) -> Tensor:
        return _dense_at(P, y, K, h, (tj - t0) / h, grad)

    return interp


def _dense_at(P, y: Tensor, K, h: float, th: float, grad: bool) -> Tensor:
    """Dense output ``y + h * sum_i B_i(theta) k_i`` of a step at ``theta = th`` (``K``: the
    list of stages under autograd, else the (N, s) stage matrix)."""
    pw = [th ** (p + 1) for p in range(len(P[0]))]
    w = [sum(pi * q for pi, q in zip(row, pw)) for row in P]
    if grad:
        return _combine(y, K, w, h)
    return torch.addmv(y, K, torch.tensor(w, dtype=y.dtype, device=y.device), alpha=h)


def _h_lambda(j: int, y: Tensor, y1: Tensor, K: Tensor, A, h: float) -> float:
    """``|h| ||k_s - k_j|| / ||y1 - Y_j||``: the stiffness estimate of :class:`_Monitor`, from
    the stage matrix ``K`` (N, s) of the step ``y -> y1`` and the stage inputs it implies."""
    with torch.no_grad():
        y, y1 = y.detach(), y1.detach()
        yj = y if j == 0 else torch.addmv(y, K[:, :j], A[j], alpha=h)
        den = torch.linalg.vector_norm(y1 - yj).item()
        num = torch.linalg.vector_norm(K[:, -1] - K[:, j]).item()
    return abs(h) * num / den if den > 0 else 0.0


def _stiff_note(mon: _Monitor) -> str:
    if mon.stiff_at is None:
        return ""
    return (
        f"; the problem seemed stiff from t={mon.stiff_at[0]!r} (step size "
        f"{mon.stiff_at[1]!r}; see the StiffnessWarning)"
    )


def _underflow(t: float, h: float, rtol: float, atol: float, bad, mon: _Monitor) -> None:
    """Raise the error for a step size that no longer advances time, naming the likely cause."""
    if bad is not None and bad[1] == "nan":
        raise NonFiniteSolutionError(
            f"the vector field returned non-finite values (nan) at t={bad[0]!r} from a finite "
            f"state; the step size underflowed at t={t!r} (h={h!r}) trying to step past it",
            t,
        )
    if bad is not None:
        raise NonFiniteSolutionError(
            f"the vector field returned non-finite values (inf) at t={bad[0]!r} from a finite "
            f"state and the step size underflowed at t={t!r} (h={h!r}): the solution may blow "
            "up in finite time there, or func divides by zero",
            t,
        )
    raise StepSizeUnderflowError(
        f"step size underflow at t={t!r} (h={h!r}); the problem may be stiff, "
        f"have a singularity, or the tolerances rtol={rtol}, atol={atol} are too tight"
        + _stiff_note(mon),
        t,
    )


def setup_problem(func, y0, t, rtol, atol, method, options, event_fn):
    """The checked pieces of a solve: ``(flat, ts, rtol, atol, solver, options, y0_flat)``;
    ``solver`` is a :class:`ButcherTableau` or a function of :data:`EXTRA_SOLVERS`."""
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
    flat = FlatState(y0)
    ts = check_times(t)
    rtol = check_tolerance("rtol", rtol, strict=True)
    atol = check_tolerance("atol", atol, strict=False)
    solver = get_method("dopri5" if method is None else method)
    o = parse_options(options)
    if event_fn is not None:
        _check_event_setup(event_fn, ts, solver, o, method)
    y0f = flat.flatten(y0)
    if not bool(torch.isfinite(y0f.detach()).all()):
        raise ValueError("y0 contains NaN or infinite values")
    return flat, ts, rtol, atol, solver, o, y0f


def _check_event_setup(event_fn, ts, solver, o: _Options, method) -> None:
    if not callable(event_fn):
        raise TypeError(f"event_fn must be callable(t, y) -> tensor, got {type(event_fn).__name__}")
    if len(ts) != 2:
        raise ValueError(
            f"with event_fn, t must hold 2 times (the initial time and one that gives the "
            f"direction of time), got len(t)={len(ts)}"
        )
    if not isinstance(solver, ButcherTableau):
        if getattr(solver, "event", None) is None:
            raise ValueError(
                f"event_fn is not supported with method={method!r}: it needs a Runge–Kutta "
                "method (dopri5, tsit5, bosh3, dopri8, euler, ...) or an Adams method"
            )
        fixed, name = True, method
    else:
        fixed = not solver.adaptive or o.step_size is not None or o.grid_constructor is not None
        name = solver.name
    if fixed and o.step_size is None:
        raise ValueError(
            f"event_fn with the fixed-step method {name!r} needs options['step_size'] "
            "(as torchdiffeq); grid_constructor is not supported with events"
        )


def integrate_event(f, y0, ts, tab, rtol, atol, norm, o, stats, grad, f_first, callbacks, g):
    """Solve from ``ts[0]`` in the direction of ``ts[1]`` until the event function ``g`` (the
    combined one, positive at the start) reaches zero.  Returns ``(t_event, [y0, y_event])``."""
    t0 = ts[0]
    direction = 1.0 if ts[1] > t0 else -1.0
    with torch.no_grad():
        if not bool(g(t0, y0) > 0):  # an event at t0 itself (torchdiffeq returns at once)
            return t0, [y0, y0]
    tol = atol if atol > 0 else 1e-12
    search = EventSearch(g, tol)
    if not isinstance(tab, ButcherTableau):  # an EXTRA_SOLVERS method with an event search
        o.callbacks = callbacks
        out = tab.event(f, y0, t0, direction, rtol, atol, o, stats, grad, f_first, search)
    elif tab.adaptive and o.step_size is None:
        out = _adaptive(f, y0, [t0, direction * math.inf], tab, rtol, atol, norm, o, stats,
                        grad, f_first, callbacks, search)  # fmt: skip
    else:
        out = _fixed_event(f, y0, t0, direction, tab, o, stats, grad, f_first, callbacks, search)
    if search.t_event is None:
        raise ODESolverError("the event search ended without an event", t0)
    return search.t_event, out


def _fixed_event(f, y0, t0, direction, tab, o, stats, grad, f_first, callbacks, search):
    """Fixed steps of ``options['step_size']`` from ``t0`` until ``search`` finds the event in a
    step (dense output: linear or cubic Hermite, the ``interp`` option).  At most
    ``max_num_steps`` steps (20000 unless given, as torchdiffeq)."""
    h = direction * o.step_size
    work = None if grad else StageBuffers(f, tab, y0)
    limit = o.max_num_steps if o.max_num_steps_given else 20000
    on_step = None if callbacks is None else callbacks.step
    t, y = t0, y0
    k0 = f_first(t0, y0) if grad else f_first(t0, y0, work.rows[0])
    stats.nfe += 1
    _check_initial_field(k0, t0)
    for _ in range(limit):
        if on_step is not None:
            on_step(t, y, h)
        t1 = t + h
        y1, K, _ = runge_kutta_step(f, t, y, h, k0, tab, work=work)
        stats.nfe += tab.stages - 1
        stats.n_steps += 1
        stats.n_accepted += 1
        k_first = K[0] if grad else work.rows[0].clone()
        f1 = []

        def interp(tj, t=t, y=y, y1=y1, k_first=k_first, f1=f1, t1=t1, h=h):
            if o.interp != "cubic":
                return torch.lerp(y, y1, (tj - t) / h)
            if not f1:
                f1.append(f(t1, y1))
                stats.nfe += 1
            return _hermite(y, k_first, y1, f1[0], t, h, tj)

        interp.restep = _restep(f, t, y, k_first, tab, work, stats)

        if search(t, t1, y, y1, interp):
            return [y0, search.y_event]
        k0 = f(t1, y1) if grad else f(t1, y1, work.rows[0])
        stats.nfe += 1
        t, y = t1, y1
    raise MaxStepsExceededError(
        f"no event after {limit} fixed steps of {o.step_size!r} from t={t0!r} (reached "
        f"t={t!r}); options['max_num_steps'] allows more",
        t,
    )


def get_method(method):
    """A solve function of ``EXTRA_SOLVERS`` or a tableau (:func:`get_tableau`) for ``method``."""
    if isinstance(method, str) and method in EXTRA_SOLVERS:
        return EXTRA_SOLVERS[method]
    try:
        return get_tableau(method)
    except ValueError:
        names = ", ".join(sorted([*TABLEAUS, *EXTRA_SOLVERS]))
        raise ValueError(f"unknown method {method!r}; available: {names}") from None


def make_grid(o: _Options, func, y0, t: Tensor, ts: list[float]) -> list[float] | None:
    """The fixed-step grid from ``step_size`` or ``grid_constructor``; ``None`` for adaptive."""
    if o.grid_constructor is not None:
        g = o.grid_constructor(func, y0, t)
        grid = _floats("grid_constructor", g)
        if len(grid) < 2 or grid[0] != ts[0] or grid[-1] != ts[-1]:
            raise ValueError("grid_constructor must return a grid from t[0] to t[-1]")
        return grid
    if o.step_size is None:
        return None
    t0, t1 = ts[0], ts[-1]
    span = abs(t1 - t0)
    steps = max(1, math.ceil(round(span / o.step_size, 9)))
    d = math.copysign(o.step_size, t1 - t0)
    return [t0 + i * d for i in range(steps)] + [t1]


def error_norm(o: _Options, flat: FlatState) -> Callable[[Tensor], float]:
    """The adaptive error norm on the flat state: the user's ``norm`` or max-of-RMS."""
    if callable(o.norm):
        return user_norm(o.norm, flat)
    segs = list(zip(flat.offsets[:-1], flat.offsets[1:]))
    return make_norm(segs, flat.numel)


def _needs_grad(func, y0f: Tensor, t: Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    if y0f.requires_grad or t.requires_grad:
        return True
    if isinstance(func, torch.nn.Module):
        return any(p.requires_grad for p in func.parameters())
    return True  # a closure may capture tensors that require grad


def odeint(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
    stats: SolverStats | None = None,
) -> State:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, returning ``y`` at every time in ``t``.

    Args:
        func: ``func(t, y)`` with ``t`` a 0-dim tensor (the state's dtype) and ``y`` shaped like
            ``y0``; returns a tensor (or tuple) shaped like ``y``.
        y0: initial state, a tensor of any shape ``(*S)`` or a tuple of tensors.
        t: 1-D tensor ``(T,)`` of strictly increasing or strictly decreasing times; ``t[0]`` is
            the initial time.  Times are handled in float64 whatever their dtype.
        rtol, atol: relative and absolute tolerance of adaptive methods: a step is accepted when
            ``norm(err / (atol + rtol * max(|y0|, |y1|))) <= 1`` (RMS norm; for a tuple state
            the maximum of the components' RMS).
        method: ``"dopri5"`` (default), ``"tsit5"``, ``"bosh3"``, ``"dopri8"`` (adaptive) or
            ``"euler"``, ``"midpoint"``, ``"rk4"`` (3/8 rule, as torchdiffeq), ``"rk4_classic"``;
            or any :class:`~genmodels.integrate.ButcherTableau`; also ``"heun2"``, ``"heun3"``,
            ``"adaptive_heun"``, ``"fehlberg2"``, the Adams methods ``"explicit_adams"``,
            ``"implicit_adams"`` (= ``"fixed_adams"``; options ``max_order``, ``max_iters``) and,
            for stiff problems, ``"radauIIA5"``, ``"radauIIA3"``, ``"trbdf2"``, ``"sdirk2"``,
            ``"implicit_euler"``, ``"trapezoid"``, ``"implicit_midpoint"``, ``"gl4"``,
            ``"gl6"`` (options ``jacobian``, ``newton_tol``, ``max_iters``; see
            :mod:`genmodels.integrate.implicit`); ``"scipy_solver"`` (scipy's ``solve_ivp``,
            options ``solver``, ``jac``; not differentiable, see
            :mod:`genmodels.integrate.scipy_solver`).
        options: torchdiffeq's options.  Fixed step: ``step_size``, ``grid_constructor``
            (``f(func, y0, t) -> grid``), ``perturb``, ``interp`` (``"linear"``/``"cubic"``).
            Adaptive: ``first_step``, ``max_num_steps`` (per output interval), ``norm``,
            ``safety`` (0.9), ``ifactor`` (10), ``dfactor`` (0.2), ``step_t`` (times to step
            onto), ``jump_t`` (discontinuities: step onto them and re-evaluate ``func``),
            ``min_step``/``max_step`` (bounds on the step size; a step of at most
            ``min_step`` is accepted whatever its error), ``dtype`` (accepted; time is always
            float64).  ``step_size`` or ``grid_constructor`` with an adaptive method runs its
            tableau at fixed steps.  ``perturb`` and ``jump_t`` shift time by one ulp of the
            state's dtype (the precision in which ``func`` sees time).
        event_fn: ``event_fn(t, y) -> tensor``: solve from ``t[0]`` (``t`` holds 2 times; the
            second only gives the direction) until it crosses zero and return
            ``(event_t, solution at [t[0], event_t])`` (see :mod:`genmodels.integrate.events`;
            the event time is differentiable, the state at the event is differentiated at the
            fixed event time: :func:`~genmodels.integrate.odeint_event` gives the total
            derivative).  Fixed-step methods need ``options['step_size']``.
        stats: a :class:`SolverStats` whose counters (``nfe``, steps) this solve adds to.

    Step callbacks: when ``func`` has ``callback_step(t0, y0, dt)`` (called before each step),
    ``callback_accept_step`` / ``callback_reject_step`` (after the error test of an adaptive
    step), they are called with ``t0``, ``dt`` as float64 0-d tensors (``dt`` signed: the step
    ends at ``t0 + dt``) and ``y0`` in the state's structure; a callback the method never calls
    warns (torchdiffeq's rule).  Without callbacks the loop pays one ``is None`` test per step.

    Returns:
        ``(T, *S)`` tensor, or a tuple of ``(T, *S_i)`` for a tuple ``y0``; differentiable by
        backpropagation through the solver's operations (see ``odeint_adjoint`` for O(1) memory).
        With ``event_fn``: ``(event_t, solution)``, ``solution`` of 2 times.

    Raises:
        ValueError/TypeError for bad input, :class:`StepSizeUnderflowError`,
        :class:`MaxStepsExceededError`, :class:`NonFiniteSolutionError` (all RuntimeError
        subclasses with the time ``.t`` reached).  A vector field that returns ``None`` or a
        non-tensor raises TypeError; one that returns NaN/inf raises
        :class:`NonFiniteSolutionError` naming the time (checked once at ``t[0]`` and, in
        adaptive solves, only when a step's error estimate is non-finite: no per-step cost).

    Warns:
        :class:`StiffnessWarning` (once per adaptive solve) when the step size is held at the
        method's stability limit (Hairer's test, checked every 1000 accepted steps): the
        problem is stiff and an explicit method will crawl; :class:`LongSolveWarning` every
        million accepted steps.  The default ``max_num_steps`` is torchdiffeq's 2**31 - 1, so
        a stiff solve may run for a very long time: pass a finite one to stop early.

    Example:
        >>> y = odeint(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 5))
        >>> y.shape
        torch.Size([5, 3])
    """
    problem = setup_problem(func, y0, t, rtol, atol, method, options, event_fn)
    flat, ts, rtol, atol, tab, o, y0f = problem
    stats = SolverStats() if stats is None else stats
    is_rk = isinstance(tab, ButcherTableau)
    grid = None if event_fn is not None else make_grid(o, func, y0, t, ts)
    differentiable = is_rk or getattr(tab, "differentiable", True)
    grad = differentiable and _needs_grad(func, y0f, t)
    if not differentiable:
        y0f = y0f.detach()
    callbacks = find_callbacks(func, lambda y: flat.unflatten(y.reshape(-1)))
    warn_unused_callbacks(callbacks, method or "dopri5", valid_callbacks(tab, grid is not None))
    # under autograd a single-tensor state keeps its own shape: no view ops per evaluation
    shaped = grad and is_rk and not flat.is_tuple and not callable(o.norm)
    if shaped:
        y0f, f = y0, flat.wrap_shaped(func)
    else:
        f = flat.wrap(func)
    norm = error_norm(o, flat)
    first = checked_field(f, func, flat, shaped)
    if event_fn is not None:
        to_user = (lambda y: y) if shaped else flat.unflatten
        g = combined_event_fn(event_fn, to_user, ts[0], y0f, flat.dtype, flat.device)
        t_ev, out = integrate_event(f, y0f, ts, tab, rtol, atol, norm, o, stats, grad, first,
                                    callbacks, g)  # fmt: skip
        ys = torch.stack(out)
        check_finite(ys, [ts[0], t_ev])
        event_t = torch.tensor(t_ev, dtype=t.dtype, device=t.device)
        if ys.requires_grad:
            link = {"f": lambda tt, y: f(float(tt), y), "g": g}
            event_t = EventTime.apply(link, ys[-1], event_t)
        return event_t, (ys if shaped else flat.unflatten(ys))
    time_grad = grad and t.requires_grad
    if time_grad:
        link = {"f": f, "ts": ts}
        y0f = _TimeIn.apply(link, y0f, t)
    out = integrate_flat(f, y0f, ts, tab, rtol, atol, norm, o, stats, grad, grid, first,
                         callbacks)  # fmt: skip
    ys = torch.stack(out)
    if time_grad:
        ys = _TimeOut.apply(link, ys, t)
    check_finite(ys, ts)
    return ys if shaped else flat.unflatten(ys)


def odeint_dense(
    func: Callable[[Tensor, State], State],
    y0: State,
    t0: float | Tensor,
    t1: float | Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    stats: SolverStats | None = None,
) -> Callable[[float | Tensor], State]:
    """Solve once on ``[t0, t1]`` and return the continuous solution ``y(t)`` (torchdiffeq's
    ``odeint_dense``).

    Every accepted step of the adaptive solve keeps its stages, so ``y(t)`` anywhere in the
    interval is that step's dense output (``y + h sum_i B_i(theta) k_i``, the same
    interpolant ``odeint`` uses for its output times) at no further evaluations of ``func``.

    Args:
        func, y0, rtol, atol, options, stats: as :func:`odeint`; ``method`` an adaptive
            Runge–Kutta method (default ``"dopri5"``; ``dopri8``'s interpolant is the cubic
            Hermite one, of lower order than the method).
        t0, t1: the interval (``t1 < t0`` integrates backwards).

    Returns:
        ``sol(t)`` for a float or 0-d tensor ``t`` -> the state (shaped like ``y0``); for a 1-D
        tensor ``(T,)`` -> ``(T, *y0.shape)`` (tuples for a tuple ``y0``).  Differentiable
        when the solve was (backpropagation through the stored stages).

    Example:
        >>> sol = odeint_dense(lambda t, y: -y, torch.tensor([1.0]), 0.0, 2.0)
        >>> float(sol(1.0))  # e^-1
        0.3678...
    """
    a, b = float(t0), float(t1)
    t = torch.tensor([a, b], dtype=torch.float64)
    problem = setup_problem(func, y0, t, rtol, atol, method, options, None)
    flat, ts, rtol, atol, tab, o, y0f = problem
    if not isinstance(tab, ButcherTableau) or not tab.adaptive or o.step_size is not None:
        raise ValueError(f"odeint_dense needs an adaptive Runge–Kutta method, got {method!r}")
    if o.grid_constructor is not None:
        raise ValueError("odeint_dense does not take options['grid_constructor']")
    stats = SolverStats() if stats is None else stats
    grad = _needs_grad(func, y0f, t)
    f = flat.wrap(func)
    steps: list[tuple[float, float, Callable]] = []

    def record(t0_: float, t1_: float, y_: Tensor, y1_: Tensor, interp: Callable) -> bool:
        steps.append((t0_, t1_, interp))
        return False

    integrate_flat(f, y0f, ts, tab, rtol, atol, error_norm(o, flat), o, stats, grad, None,
                   checked_field(f, func, flat), find_callbacks(func, flat.unflatten),
                   record)  # fmt: skip
    starts = [st[0] for st in steps]
    direction = 1.0 if b > a else -1.0

    def one(tq: float) -> Tensor:
        if (tq - a) * direction < 0 or (tq - b) * direction > 0:
            raise ValueError(f"odeint_dense: t={tq!r} is outside the solved interval "
                             f"[{a!r}, {b!r}]")  # fmt: skip
        if tq == a:
            return y0f
        keys = [x * direction for x in starts]
        i = max(0, bisect.bisect_left(keys, tq * direction) - 1)
        return steps[i][2](tq)

    def sol(tq: float | Tensor) -> State:
        if isinstance(tq, Tensor) and tq.ndim == 1:
            ys = torch.stack([one(float(x)) for x in tq.detach().double().tolist()])
            return flat.unflatten(ys)
        if isinstance(tq, Tensor) and tq.ndim > 1:
            raise ValueError(f"odeint_dense: t must be a scalar or 1-D, got shape "
                             f"{tuple(tq.shape)}")  # fmt: skip
        return flat.unflatten(one(float(tq)))

    return sol


class _TimeOut(torch.autograd.Function):
    """Gradients for the output times: ``dL/dt_i = dL/dy(t_i) . f(t_i, y(t_i))``, i > 0."""

    @staticmethod
    def forward(ctx, link: dict, ys: Tensor, t: Tensor) -> Tensor:
        ctx.link = link
        ctx.save_for_backward(ys.detach(), t)
        return ys.view_as(ys)

    @staticmethod
    def backward(ctx, g: Tensor):
        ys, t = ctx.saved_tensors
        link = ctx.link
        link["g0"] = g[0]
        gt = torch.zeros_like(t)
        with torch.no_grad():
            for i in range(1, len(link["ts"])):
                fi = link["f"](link["ts"][i], ys[i])
                gt[i] = torch.dot(fi.reshape(-1), g[i].reshape(-1)).to(t.dtype)
        return None, g, gt


class _TimeIn(torch.autograd.Function):
    """Gradient for the initial time: ``dL/dt_0 = -a(t_0) . f(t_0, y_0)``, where ``a(t_0)`` is
    the gradient reaching ``y0`` through the solution (not through the output ``y(t_0) = y0``)."""

    @staticmethod
    def forward(ctx, link: dict, y0: Tensor, t: Tensor) -> Tensor:
        ctx.link = link
        ctx.save_for_backward(y0.detach(), t)
        return y0.view_as(y0)

    @staticmethod
    def backward(ctx, g: Tensor):
        y0, t = ctx.saved_tensors
        link = ctx.link
        a = g - link.get("g0", torch.zeros_like(g))
        gt = torch.zeros_like(t)
        with torch.no_grad():
            f0 = link["f"](link["ts"][0], y0)
            gt[0] = -torch.dot(f0.reshape(-1), a.reshape(-1)).to(t.dtype)
        return None, g, gt


def checked_field(f: Callable, func: Callable, flat: FlatState, shaped: bool = False) -> Callable:
    """``f`` whose first call checks the structure and shapes of ``func``'s output (``shaped``:
    ``f`` takes the state in its own shape, not flat)."""
    state = {"checked": False}

    def first(t: float, y: Tensor, out: Tensor | None = None) -> Tensor:
        if not state["checked"]:
            tt = torch.scalar_tensor(t, dtype=flat.dtype, device=flat.device)
            r = func(tt, y if shaped else flat.unflatten(y))
            check_output(r, flat, t)
            state["checked"] = True
            r = r if shaped else flat.flatten(r)
            return r if out is None else out.copy_(r)
        return f(t, y, out)

    return first


def check_finite(ys: Tensor, ts: Sequence[float]) -> None:
    """``NonFiniteSolutionError`` naming the first output time ``ts[i]`` where ``ys`` (T, ...)
    is NaN or infinite."""
    ok = torch.isfinite(ys.detach()).reshape(len(ts), -1).all(1)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0, 0])
        raise NonFiniteSolutionError(
            f"the solution is NaN or infinite at t={ts[i]!r} (output index {i}); "
            f"last finite output at t={ts[i - 1]!r}",
            ts[i - 1],
        )
