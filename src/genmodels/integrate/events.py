"""Event handling: solve until ``event_fn(t, y)`` crosses zero, and the event time's gradient.

An event is a time ``t*`` with ``g(t*, y(t*)) = 0``.  ``odeint(..., event_fn=g)`` steps until the
sign of ``g`` at the end of an accepted step differs from its sign at ``t0``, then bisects the
step's dense output to the tolerance ``atol`` in time (as torchdiffeq).  A vector-valued ``g``
stops at the first of its components to cross zero: each component is multiplied by its sign at
``t0`` and the minimum taken, which is positive until the first crossing.

Gradients of the event time follow from the implicit function theorem (Chen, Amos & Nickel
2021, "Learning Neural Event Functions for Ordinary Differential Equations", sec. 3): for a
parameter ``theta`` the state at a fixed time ``T`` has ``dy/dtheta``, and differentiating
``g(t*(theta), y(t*(theta); theta)) = 0`` gives

    dt*/dtheta = -(dg/dy . dy/dtheta) / (dg/dt + dg/dy . f(t*, y(t*)))

(the denominator is the total time derivative of ``g`` along the solution).  The state at the
event, ``Y = y(t*; theta)``, moves with the event time too: ``dY/dtheta = dy/dtheta +
f(t*, Y) dt*/dtheta``.  ``odeint`` with ``event_fn`` returns the event time with the first
gradient (:class:`EventTime`) and the state with its gradient at the fixed time ``t*``;
:func:`odeint_event` adds the second term (:class:`_ImplicitReroute`), as torchdiffeq does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._flat import FlatState, State

__all__ = ["odeint_event", "EventSearch", "EventTime", "combined_event_fn"]


def combined_event_fn(
    event_fn: Callable, to_user: Callable[[Tensor], State], t0: float, y0: Tensor, dtype, device
) -> Callable:
    """``g(t, y) = min_i(event_fn(t, y)_i * sign_i(t0))`` on the solver's state ``y`` (converted
    to the user's structure by ``to_user``), ``t`` a float or a tensor; positive until the
    first component crosses zero (zero at ``t0`` when a component starts at zero)."""

    def raw(t, y):
        tt = t if isinstance(t, Tensor) else torch.scalar_tensor(t, dtype=dtype, device=device)
        c = event_fn(tt, to_user(y))
        if not isinstance(c, Tensor):
            raise TypeError(f"event_fn(t, y) must return a tensor, got {type(c).__name__}")
        return c

    with torch.no_grad():
        sign0 = torch.sign(raw(t0, y0.detach())).detach()

    def g(t, y) -> Tensor:
        return torch.min(raw(t, y) * sign0)

    return g


class EventSearch:
    """Observer of accepted steps that stops at the first sign change of the event function.

    Called as ``search(t0, t1, y0, y1, interp)`` after each accepted step (``interp(t)`` is the
    step's dense output); returns True, with ``t_event`` and ``y_event`` set, when
    ``g(t1, y1) <= 0``: ``t_event`` is located by bisection of ``g(t, interp(t))`` on
    ``[t0, t1]`` to ``tol`` (``ceil(log2(|t1 - t0| / tol))`` halvings, as torchdiffeq), then,
    when ``interp.restep(t)`` (a fresh step of the method from ``t0`` to ``t``) is given,
    polished by a few secant iterations on ``g(t, restep(t))``, so the event is as accurate
    as the method's steps rather than its interpolant; ``y_event`` is ``restep(t_event)``
    (else ``interp(t_event)``), differentiable when the solve records a graph.
    """

    def __init__(self, g: Callable, tol: float):
        self.g, self.tol = g, tol
        self.t_event: float | None = None
        self.y_event: Tensor | None = None
        self.nfe = 0

    def __call__(self, t0: float, t1: float, y0: Tensor, y1: Tensor, interp: Callable) -> bool:
        g = self.g
        with torch.no_grad():
            if bool(g(t1, y1) > 0):
                return False
            a, b = t0, t1
            n = max(0, math.ceil(math.log2(abs(t1 - t0) / self.tol))) if t1 != t0 else 0
            for _ in range(min(n, 200)):
                m = 0.5 * (a + b)
                if bool(g(m, interp(m)) > 0):
                    a = m
                else:
                    b = m
        te = 0.5 * (a + b)
        restep = getattr(interp, "restep", None)
        if restep is None:
            self.t_event, self.y_event = te, interp(te)
            return True
        # The interpolant may be less accurate than the method's steps (a cubic Hermite over
        # dopri8's long steps): polish the zero of G(t) = g(t, step(t0 -> t)), the method's
        # own step, by secant iterations from the interpolant's zero.
        lo, hi = min(t0, t1), max(t0, t1)
        with torch.no_grad():
            ta, ga = te, float(g(te, restep(te)))
            best_t, best_g = ta, abs(ga)
            d = 1e-3 * (hi - lo)
            tb = te + d if te + d <= hi else te - d
            gb = float(g(tb, restep(tb)))
            for _ in range(6):
                if not math.isfinite(gb):
                    break
                if abs(gb) < best_g:  # keep the point of least residual: never worse
                    best_t, best_g = tb, abs(gb)
                if gb == ga or abs(tb - ta) <= 1e-3 * self.tol:
                    break
                tc = tb - gb * (tb - ta) / (gb - ga)
                if not lo <= tc <= hi:
                    break
                ta, ga, tb = tb, gb, tc
                gb = float(g(tb, restep(tb)))
            if math.isfinite(gb) and abs(gb) < best_g:
                best_t = tb
            te = best_t
        self.t_event = te
        self.y_event = restep(te)
        return True


def _ift_terms(f: Callable, g: Callable, t: Tensor, y: Tensor):
    """``(dg/dy, dg/dt + dg/dy . f, f)`` at ``(t, y)``: the pieces of the implicit function
    theorem for the event time (``f(t, y)`` the vector field, ``g`` the event function)."""
    with torch.enable_grad():
        tt = t.detach().to(y.dtype).requires_grad_(True)
        yy = y.detach().requires_grad_(True)
        c = g(tt, yy)
        g_t, g_y = torch.autograd.grad(c, (tt, yy), allow_unused=True)
    with torch.no_grad():
        fv = f(tt.detach(), y.detach())
    g_y = torch.zeros_like(yy) if g_y is None else g_y
    g_t = torch.zeros_like(tt) if g_t is None else g_t
    dcdt = g_t + (g_y * fv).sum()
    return g_y, dcdt, fv


class EventTime(torch.autograd.Function):
    """The event time ``t*`` as a function of the state at the (fixed) event time:
    ``dL/dy += -(dL/dt*) dg/dy / (dg/dt + dg/dy . f)`` (implicit function theorem)."""

    @staticmethod
    def forward(ctx, link: dict, y_event: Tensor, t_event: Tensor) -> Tensor:
        ctx.link = link
        ctx.save_for_backward(y_event.detach(), t_event.detach())
        return t_event.detach().clone()

    @staticmethod
    def backward(ctx, grad_t: Tensor):
        y, t = ctx.saved_tensors
        g_y, dcdt, _ = _ift_terms(ctx.link["f"], ctx.link["g"], t, y)
        return None, g_y * (-grad_t.to(y.dtype) / dcdt), None


class _ImplicitReroute(torch.autograd.Function):
    """``odeint_event``'s link: the returned event time and state, detached, whose gradients
    are rerouted into the state at the fixed event time (what the solver differentiates):
    ``dL/dy = dL/dY + dg/dy * (-(dL/dt* + dL/dY . f) / (dg/dt + dg/dy . f))``."""

    @staticmethod
    def forward(ctx, link: dict, event_t: Tensor, state: Tensor):
        ctx.link = link
        ctx.save_for_backward(event_t.detach(), state.detach())
        return event_t.detach().clone(), state.detach().clone()

    @staticmethod
    def backward(ctx, grad_t: Tensor, grad_state: Tensor):
        t, y = ctx.saved_tensors
        g_y, dcdt, fv = _ift_terms(ctx.link["f"], ctx.link["g"], t, y)
        total_t = grad_t.to(y.dtype) + (grad_state * fv).sum()
        return None, None, grad_state + g_y * (-total_t / dcdt)


def odeint_event(
    func: Callable,
    y0: State,
    t0: Tensor,
    *,
    event_fn: Callable,
    reverse_time: bool = False,
    odeint_interface: Callable | None = None,
    **kwargs,
) -> tuple[Tensor, State]:
    """Solve from ``t0`` until ``event_fn(t, y)`` crosses zero; gradients through the event time.

    ``odeint_interface`` (default :func:`~genmodels.integrate.odeint`; or ``odeint_adjoint``)
    is called as ``odeint_interface(func, y0, [t0, t0 +- 1], event_fn=event_fn, **kwargs)``
    (backwards in time when ``reverse_time``); the returned ``(event_t, solution)`` then carry
    the total derivative of the implicit function theorem (module docstring): the loss may
    depend on both the event time and the state at the event, and gradients reach ``y0`` and
    the parameters of ``func`` (those of ``event_fn`` are not differentiated, as in
    torchdiffeq).

    Args:
        func: the vector field ``func(t, y)``.
        y0: the initial state (tensor or tuple of tensors).
        t0: 0-d or one-element tensor, the initial time.
        event_fn: ``event_fn(t, y) -> tensor``; the solve stops at its first zero crossing.
        reverse_time: integrate towards decreasing time.

    Returns:
        ``(event_t, solution)``: the event time (0-d, ``t0``'s dtype) and the solution at
        ``[t0, event_t]`` (``(2, *y0.shape)``, or a tuple of such).

    Example:
        >>> t_hit, ys = odeint_event(lambda t, y: -torch.ones_like(y), torch.tensor(1.0),
        ...                          torch.tensor(0.0), event_fn=lambda t, y: y - 0.25)
        >>> round(float(t_hit), 4)
        0.75
    """
    if odeint_interface is None:
        from .odeint import odeint as odeint_interface
    if not isinstance(t0, Tensor) or t0.numel() != 1:
        raise TypeError("odeint_event: t0 must be a one-element tensor (the initial time)")
    if not callable(event_fn):
        raise TypeError("odeint_event: event_fn must be callable(t, y) -> tensor")
    step = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + step])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    flat = FlatState(y0)
    last = solution[-1] if not flat.is_tuple else tuple(s[-1] for s in solution)
    state = flat.flatten(last)

    def f(tt: Tensor, y: Tensor) -> Tensor:
        return flat.flatten(func(tt, flat.unflatten(y)))

    y0f = flat.flatten(y0).detach()
    g = combined_event_fn(event_fn, flat.unflatten, float(t0), y0f, flat.dtype, flat.device)
    event_t, state = _ImplicitReroute.apply({"f": f, "g": g}, event_t, state)
    last = flat.unflatten(state)
    if not flat.is_tuple:
        return event_t, torch.cat([solution[:-1], last[None]], 0)
    return event_t, tuple(torch.cat([s[:-1], x[None]], 0) for s, x in zip(solution, last))
