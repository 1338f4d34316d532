"""``odeint_adjoint``: gradients of an ODE solve in O(1) memory by the adjoint method.

The lecture's Algorithm 1 (Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural Ordinary
Differential Equations", Algorithm 1), line by line with :func:`_backward`:

=====================================================================  ===========================
Algorithm 1 (reverse-mode derivative of an ODE initial value problem)  code
=====================================================================  ===========================
Input: theta, t0, t1, z(t1), dL/dz(t1)                                 ``params``, ``ts``,
                                                                       ``ys[i]``, ``grad_ys[i]``
s0 = [z(t1), dL/dz(t1), 0_|theta|]                                     ``s = cat([z, a, g])``
def aug_dynamics([z(t), a(t), .], t, theta):                           ``_AugmentedDynamics``
    return [f(z, t, theta), -a^T df/dz, -a^T df/dtheta]                ``autograd.grad(f, (z,
                                                                       theta), -a)``: one vjp
[z(t0), dL/dz(t0), dL/dtheta] = ODESolve(s0, aug_dynamics, t1, t0)     ``integrate_flat(aug, s,
                                                                       [t_i, t_(i-1)])``
return dL/dz(t0), dL/dtheta                                            ``return grad_y0, ...``
=====================================================================  ===========================

For a grid ``t_0 .. t_(T-1)`` the backward solve runs interval by interval from the last time to
the first; at every ``t_i`` the state ``z`` is reset to the forward solution and ``dL/dy(t_i)``
is added to the adjoint.  The time gradients need no extra ODE: ``dL/dt_i = dL/dy(t_i) .
f(t_i, y(t_i))`` for ``i > 0`` and ``dL/dt_0 = -a(t_0) . f(t_0, y_0)`` with ``a(t_0)`` the
adjoint arriving at ``t_0`` (since ``d/dt [a . f] = a . df/dt`` along the trajectory, this
equals the integral torchdiffeq accumulates).

Error control of the backward solve: by default the maximum RMS over the state, its adjoint
and every parameter's adjoint (torchdiffeq's default); ``adjoint_options=dict(norm="seminorm")``
drops the parameter adjoints from the norm (Kidger, Chen & Lyons 2021, "'Hey, that's not an ODE':
Faster ODE Adjoints via Seminorms"), which takes larger steps with the same accuracy on the
state and adjoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ._flat import FlatState, State, make_norm
from .events import EventTime, combined_event_fn
from .odeint import (
    NonFiniteSolutionError,
    SolverStats,
    check_finite,
    check_tolerance,
    checked_field,
    error_norm,
    find_callbacks,
    get_method,
    integrate_event,
    integrate_flat,
    make_grid,
    parse_options,
    setup_problem,
    valid_callbacks,
    warn_unused_callbacks,
)

__all__ = ["odeint_adjoint"]


def _seg_norm(segments: list[tuple[int, int]], numel: int) -> Callable[[Tensor], float]:
    """Max-of-RMS over segments; equal contiguous segments from 0 are one reshaped norm."""
    sizes = {b - a for a, b in segments}
    contiguous = all(a == i * (b - a) for i, (a, b) in enumerate(segments))
    if len(segments) > 1 and len(sizes) == 1 and contiguous:
        m, n = len(segments), sizes.pop()
        inv = 1.0 / math.sqrt(max(n, 1))

        def equal(r: Tensor) -> float:
            return torch.linalg.vector_norm(r[: m * n].view(m, n), dim=1).max().item() * inv

        return equal
    return make_norm(segments, numel)


class _AugmentedDynamics:
    """``aug_dynamics`` of Algorithm 1 on the flat state ``[z, a, g]`` (N + N + P,)."""

    def __init__(self, func, flat: FlatState, params: tuple[Tensor, ...], params_in_norm: bool):
        self.func, self.flat, self.params = func, flat, params
        self.n = flat.numel
        self.dtype, self.device = flat.dtype, flat.device
        self.params_in_norm = params_in_norm  # read by the stepping loop
        self._zeros = None

    def lean(self, t: float, s: Tensor, out: Tensor) -> Tensor:
        """``aug_dynamics`` without ``-a^T df/dtheta`` (left zero), for stages whose weights in
        the solution and the error estimate are zero (dopri5's second stage)."""
        n = self.n
        with torch.enable_grad():
            z = s[:n].detach().requires_grad_(True)
            tt = torch.scalar_tensor(t, dtype=self.dtype, device=self.device)
            fz = self.flat.flatten(self.func(tt, self.flat.unflatten(z)))
            (vjp,) = torch.autograd.grad(fz, (z,), -s[n : 2 * n])
        if self._zeros is None:
            self._zeros = s.new_zeros(s.numel() - 2 * n)
        return torch.cat([fz.detach(), vjp, self._zeros], out=out)

    def __call__(self, t: float, s: Tensor, out: Tensor | None = None) -> Tensor:
        n = self.n
        a = s[n : 2 * n]
        with torch.enable_grad():
            z = s[:n].detach().requires_grad_(True)
            tt = torch.scalar_tensor(t, dtype=self.dtype, device=self.device)
            fz = self.flat.flatten(self.func(tt, self.flat.unflatten(z)))
            # -a^T df/dz and -a^T df/dtheta in one vector-Jacobian product
            vjp = torch.autograd.grad(fz, (z, *self.params), -a, allow_unused=True)
        pieces = [fz.detach()]
        for g, p in zip(vjp, (z, *self.params)):
            pieces.append(torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1))
        if out is None:
            return torch.cat(pieces)
        return torch.cat(pieces, out=out)


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, setup: dict, y0f: Tensor, t: Tensor, *params: Tensor) -> Tensor:
        s = setup
        with torch.no_grad():
            if s["event"] is not None:
                # integrate to the event, then differentiate as a solve on [t0, t_event]
                t_ev, out = integrate_event(
                    s["f"], y0f, s["ts"], s["tab"], s["rtol"], s["atol"], s["norm"], s["o"],
                    s["stats"], False, s["f_first"], s["callbacks"], s["event"],
                )  # fmt: skip
                s["t_event"] = t_ev
                s["ts"] = [s["ts"][0], t_ev]
            else:
                out = integrate_flat(
                    s["f"], y0f, s["ts"], s["tab"], s["rtol"], s["atol"], s["norm"], s["o"],
                    s["stats"], False, s["grid"], s["f_first"], s["callbacks"],
                )  # fmt: skip
            ys = torch.stack(out)
        ctx.setup = setup
        # torchdiffeq exposes the backward's options on the graph node: xs.grad_fn.adjoint_options
        ctx.adjoint_options = setup["adjoint_options"]
        ctx.save_for_backward(ys, *params)
        flat = setup["flat"]
        if not flat.is_tuple:  # the state's own shape, so the node is the output's grad_fn
            return ys.view((len(out), *flat.shapes[0]))
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        ys, *params = ctx.saved_tensors
        grad_ys = grad_ys.reshape(ys.shape)
        grad_y0, grad_t, grad_params = _backward(ctx.setup, ys, grad_ys, tuple(params))
        t_needs = ctx.needs_input_grad[2]
        return (None, grad_y0, grad_t if t_needs else None, *grad_params)


def _backward(s: dict, ys: Tensor, grad_ys: Tensor, params: tuple[Tensor, ...]):
    flat: FlatState = s["flat"]
    ts: list[float] = s["ts"]
    n = flat.numel
    sizes = [p.numel() for p in params]
    grad_ys = grad_ys.to(ys.dtype)
    aug = _AugmentedDynamics(s["func"], flat, params, s["adj_params_in_norm"])
    adj_norm = s["adj_norm"]
    if s["adjoint_options"]["norm"] is not s["exposed_norm"]:
        # replaced on the graph node (torchdiffeq's xs.grad_fn.adjoint_options["norm"]): it
        # takes torchdiffeq's tuple (t, y, adj_y, *adj_params), y flat for a tuple state
        replaced = s["adjoint_options"]["norm"]
        adj_norm = _tuple_norm_caller(replaced, flat, params)
    stats = SolverStats()
    f_state = s["f"]
    need_t = s["t_requires_grad"]
    grad_t = torch.zeros(len(ts), dtype=ys.dtype, device=ys.device) if need_t else None
    # s0 = [z(t1), dL/dz(t1), 0_|theta|]
    a = grad_ys[-1]
    g = ys.new_zeros(sum(sizes))
    for i in range(len(ts) - 1, 0, -1):
        if need_t and not (s["event"] is not None and i == len(ts) - 1):
            # (with an event the last time is the event's, not one of t: no gradient to t[1])
            with torch.no_grad():
                grad_t[i] = torch.dot(f_state(ts[i], ys[i]), grad_ys[i])
            stats.nfe += 1
        if ts[i] == ts[i - 1]:  # an event at t0: nothing to integrate
            a = a + grad_ys[i - 1]
            continue
        state = torch.cat([ys[i], a, g])
        # [z(t0), dL/dz(t0), dL/dtheta] = ODESolve(s0, aug_dynamics, t1, t0, theta)
        with torch.no_grad():
            end = integrate_flat(
                aug, state, [ts[i], ts[i - 1]], s["adj_tab"], s["adj_rtol"], s["adj_atol"],
                adj_norm, s["adj_o"], stats, False, s["adj_grid"](ts[i], ts[i - 1]),
                callbacks=s["adj_callbacks"],
            )[-1]  # fmt: skip
        a, g = end[n : 2 * n], end[2 * n :]
        if not bool(torch.isfinite(end).all()):
            raise NonFiniteSolutionError(
                f"the adjoint solve became NaN or infinite on [{ts[i - 1]!r}, {ts[i]!r}]", ts[i]
            )
        if need_t and i == 1:
            with torch.no_grad():
                grad_t[0] = -torch.dot(f_state(ts[0], ys[0]), a)
            stats.nfe += 1
        a = a + grad_ys[i - 1]
    user = s["stats"]
    user.nfe_backward += stats.nfe
    user.n_steps_backward += stats.n_steps
    user.n_accepted_backward += stats.n_accepted
    user.n_rejected_backward += stats.n_rejected
    grad_params = [
        c.view_as(p) for c, p in zip(torch.split(g, sizes), params)
    ]  # return dL/dz(t0), dL/dtheta
    return a, grad_t, grad_params


def _tuple_norm_caller(norm: Callable, flat: FlatState, params) -> Callable[[Tensor], float]:
    """A norm of torchdiffeq's backward tuple ``(t, y, adj_y, *adj_params)`` (``y``, ``adj_y``
    in the state's shape, flat for a tuple state) as a norm of the flat ``[z, a, g]``."""
    n = flat.numel
    sizes = [p.numel() for p in params]
    shape = (n,) if flat.is_tuple else tuple(flat.shapes[0])

    def f(r: Tensor) -> float:
        t = r.new_zeros(())
        gs = torch.split(r[2 * n :], sizes) if sizes else ()
        ps = [g.view_as(p) for g, p in zip(gs, params)]
        return float(norm((t, r[:n].view(shape), r[n : 2 * n].view(shape), *ps)))

    return f


def _exposed_default_norm(flat: FlatState, seminorm: bool) -> Callable:
    """The default (or seminorm) backward norm written on torchdiffeq's tuple
    ``(t, y, adj_y, *adj_params)``: max of ``|t|``, the RMS of each state component and of its
    adjoint, and (unless ``seminorm``) the RMS of each parameter's adjoint."""

    def rms(x: Tensor) -> Tensor:
        return x.pow(2).mean().sqrt() if x.numel() else x.new_zeros(())

    def parts(y: Tensor) -> list[Tensor]:
        return list(flat.unflatten(y.reshape(-1))) if flat.is_tuple else [y]

    def norm(tensors) -> Tensor:
        t, y, a, *ps = tensors
        vals = [t.abs(), *map(rms, parts(y)), *map(rms, parts(a))]
        if not seminorm:
            vals += [rms(p) for p in ps]
        return torch.stack([v.reshape(()) for v in vals]).max()

    return norm


def odeint_adjoint(
    func: nn.Module,
    y0: State,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str | None = None,
    options: dict | None = None,
    event_fn: Callable | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: dict | None = None,
    adjoint_params: Iterable[Tensor] | None = None,
    stats: SolverStats | None = None,
) -> State:
    """``odeint`` whose gradients come from the adjoint ODE solved backwards (Algorithm 1).

    Memory is O(1) in the number of steps: the forward solve keeps no graph; the backward pass
    solves ``[z, a, dL/dtheta]`` from each ``t[i]`` to ``t[i-1]``.  Gradients flow to ``y0``,
    ``t`` (when it requires grad) and ``adjoint_params`` (default: ``func.parameters()`` that
    require grad).  Every ``adjoint_*`` setting defaults to its forward counterpart;
    ``adjoint_options=dict(norm="seminorm")`` measures the backward error on ``z`` and ``a``
    only (Kidger, Chen & Lyons 2021), a custom callable norm receives torchdiffeq's tuple
    ``(t, *z, *a, g_1, .., g_P)``: the state and its adjoint in the state's shapes (each
    component of a tuple state), the parameters' adjoints in their shapes, and ``t`` a 0-d zero
    (the adjoint of time is not integrated here).

    Step callbacks (see :func:`~genmodels.integrate.odeint`): ``func.callback_*`` run in the
    forward solve, ``func.callback_*_adjoint`` in the backward one, where ``y0`` is the tuple
    ``(z, a, *dL/dtheta)``.  With ``event_fn`` the forward solve stops at the event (as
    ``odeint``) and the backward pass integrates from the event time back to ``t[0]``.

    Args: as :func:`genmodels.integrate.odeint`; ``func`` must be an ``nn.Module`` unless
        ``adjoint_params`` is given.  ``stats`` gets ``nfe`` in the forward pass and
        ``nfe_backward`` when the backward pass has run.

    Returns:
        ``(T, *S)`` tensor (or tuple), like ``odeint``.

    Example:
        >>> f = nn.Linear(2, 2)
        >>> y = odeint_adjoint(lambda t, y: f(y), torch.ones(2), torch.tensor([0.0, 1.0]),
        ...                    adjoint_params=f.parameters())
        >>> y[-1].sum().backward()
    """
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise TypeError(
                "odeint_adjoint needs func to be an nn.Module (to find its parameters) "
                "or an explicit adjoint_params"
            )
        adjoint_params = func.parameters()
    params = tuple(p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad)
    flat, ts, rtol, atol, tab, o, y0f = setup_problem(
        func, y0, t, rtol, atol, method, options, event_fn
    )
    if adjoint_method is not None and adjoint_method != method and options and not adjoint_options:
        raise ValueError(
            "adjoint_method differs from method and options were given: pass adjoint_options too"
        )
    adj_tab = tab if adjoint_method is None else get_method(adjoint_method)
    tol = check_tolerance
    adj_rtol = rtol if adjoint_rtol is None else tol("adjoint_rtol", adjoint_rtol, True)
    adj_atol = atol if adjoint_atol is None else tol("adjoint_atol", adjoint_atol, False)
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
    adj_o = parse_options(adjoint_options)
    callbacks = find_callbacks(func, flat.unflatten)
    grid = None if event_fn is not None else make_grid(o, func, y0, t, ts)
    warn_unused_callbacks(callbacks, method or "dopri5", valid_callbacks(tab, grid is not None))
    sizes = [p.numel() for p in params]

    def aug_structure(s: Tensor) -> tuple:
        """The backward state ``[z, a, g]`` as ``(z, a, *dL/dtheta)`` for adjoint callbacks."""
        n = flat.numel
        gs = torch.split(s[2 * n :], sizes) if sizes else ()
        return (flat.unflatten(s[:n]), flat.unflatten(s[n : 2 * n]),
                *(gi.view_as(p) for gi, p in zip(gs, params)))  # fmt: skip

    adj_callbacks = find_callbacks(func, aug_structure, suffix="_adjoint")
    adj_fixed = adj_o.grid_constructor is not None or adj_o.step_size is not None
    warn_unused_callbacks(
        adj_callbacks, adjoint_method or method or "dopri5",
        valid_callbacks(adj_tab, adj_fixed), suffix="_adjoint",
    )  # fmt: skip
    stats = SolverStats() if stats is None else stats
    f = flat.wrap(func)
    n, p_sizes = flat.numel, [p.numel() for p in params]
    state_segs = list(zip(flat.offsets[:-1], flat.offsets[1:]))
    adj_segs = [(a + n, b + n) for a, b in state_segs]
    off, param_segs = 2 * n, []
    for size in p_sizes:
        param_segs.append((off, off + size))
        off += size
    if callable(adj_o.norm):
        # torchdiffeq's layout: (t, *y, *a, *dL/dtheta) in their shapes; t is the adjoint of
        # time, which this backward pass does not integrate (dL/dt comes from f at the
        # output times): a 0-d zero
        unorm = adj_o.norm
        shapes = [*flat.shapes, *flat.shapes, *(p.shape for p in params)]
        parts = FlatState(tuple(torch.empty(sh) for sh in shapes))
        t_adj = torch.zeros((), dtype=flat.dtype, device=flat.device)

        def adj_norm(r: Tensor, _u=unorm, _p=parts, _t=t_adj) -> float:
            return float(_u((_t, *_p.unflatten(r))))

    elif adj_o.norm == "seminorm":
        adj_norm = _seg_norm(state_segs + adj_segs, off)
    else:
        adj_norm = _seg_norm(state_segs + adj_segs + [s for s in param_segs if s[1] > s[0]], off)

    def adj_grid(t1: float, t0: float) -> list[float] | None:
        if adj_o.grid_constructor is None and adj_o.step_size is None:
            return None
        tt = torch.tensor([t1, t0], dtype=torch.float64)
        return make_grid(adj_o, None, None, tt, [t1, t0])

    event = None
    if event_fn is not None:
        event = combined_event_fn(event_fn, flat.unflatten, ts[0], y0f, flat.dtype, flat.device)
    if callable(adj_o.norm):
        exposed = adj_o.norm
    else:
        exposed = _exposed_default_norm(flat, adj_o.norm == "seminorm")
    setup = dict(
        adjoint_options={**(adjoint_options or {}), "norm": exposed}, exposed_norm=exposed,
        func=func, flat=flat, f=f, f_first=checked_field(f, func, flat), ts=ts, tab=tab,
        rtol=rtol, atol=atol, norm=error_norm(o, flat), o=o,
        grid=grid, stats=stats, callbacks=callbacks, adj_callbacks=adj_callbacks, event=event,
        adj_tab=adj_tab, adj_rtol=adj_rtol, adj_atol=adj_atol, adj_o=adj_o, adj_norm=adj_norm,
        adj_grid=adj_grid, t_requires_grad=bool(t.requires_grad),
        adj_params_in_norm=callable(adj_o.norm) or adj_o.norm != "seminorm",
    )  # fmt: skip
    ys = _Adjoint.apply(setup, y0f, t, *params)
    out = flat.unflatten(ys) if flat.is_tuple else ys  # (_Adjoint returns a tensor state shaped)
    if event is None:
        check_finite(ys, ts)
        return out
    check_finite(ys, setup["ts"])
    event_t = torch.tensor(setup["t_event"], dtype=t.dtype, device=t.device)
    if ys.requires_grad:
        link = {"f": lambda tt, y: f(float(tt), y), "g": event}
        event_t = EventTime.apply(link, ys[-1].reshape(-1), event_t)
    return event_t, out
