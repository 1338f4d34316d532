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
from .odeint import (
    NonFiniteSolutionError,
    SolverStats,
    check_finite,
    check_tolerance,
    checked_field,
    error_norm,
    get_method,
    integrate_flat,
    make_grid,
    parse_options,
    setup_problem,
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
            out = integrate_flat(
                s["f"], y0f, s["ts"], s["tab"], s["rtol"], s["atol"], s["norm"], s["o"],
                s["stats"], False, s["grid"], s["f_first"],
            )  # fmt: skip
            ys = torch.stack(out)
        ctx.setup = setup
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor):
        ys, *params = ctx.saved_tensors
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
    stats = SolverStats()
    f_state = s["f"]
    need_t = s["t_requires_grad"]
    grad_t = torch.zeros(len(ts), dtype=ys.dtype, device=ys.device) if need_t else None
    # s0 = [z(t1), dL/dz(t1), 0_|theta|]
    a = grad_ys[-1]
    g = ys.new_zeros(sum(sizes))
    for i in range(len(ts) - 1, 0, -1):
        if need_t:
            with torch.no_grad():
                grad_t[i] = torch.dot(f_state(ts[i], ys[i]), grad_ys[i])
            stats.nfe += 1
        state = torch.cat([ys[i], a, g])
        # [z(t0), dL/dz(t0), dL/dtheta] = ODESolve(s0, aug_dynamics, t1, t0, theta)
        with torch.no_grad():
            end = integrate_flat(
                aug, state, [ts[i], ts[i - 1]], s["adj_tab"], s["adj_rtol"], s["adj_atol"],
                s["adj_norm"], s["adj_o"], stats, False, s["adj_grid"](ts[i], ts[i - 1]),
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
    only (Kidger, Chen & Lyons 2021), a custom callable norm receives the tuple
    ``(z, a, g_1, .., g_P)`` flattened per component.

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
        unorm = adj_o.norm
        parts = FlatState(
            tuple(torch.empty(b - a) for a, b in state_segs + adj_segs + param_segs)
            if off > 0
            else (torch.empty(0),)
        )

        def adj_norm(r: Tensor, _u=unorm, _p=parts) -> float:
            return float(_u(_p.unflatten(r)))

    elif adj_o.norm == "seminorm":
        adj_norm = _seg_norm(state_segs + adj_segs, off)
    else:
        adj_norm = _seg_norm(state_segs + adj_segs + [s for s in param_segs if s[1] > s[0]], off)

    def adj_grid(t1: float, t0: float) -> list[float] | None:
        if adj_o.grid_constructor is None and adj_o.step_size is None:
            return None
        tt = torch.tensor([t1, t0], dtype=torch.float64)
        return make_grid(adj_o, None, None, tt, [t1, t0])

    setup = dict(
        func=func, flat=flat, f=f, f_first=checked_field(f, func, flat), ts=ts, tab=tab,
        rtol=rtol, atol=atol, norm=error_norm(o, flat), o=o,
        grid=make_grid(o, func, y0, t, ts), stats=stats,
        adj_tab=adj_tab, adj_rtol=adj_rtol, adj_atol=adj_atol, adj_o=adj_o, adj_norm=adj_norm,
        adj_grid=adj_grid, t_requires_grad=bool(t.requires_grad),
        adj_params_in_norm=callable(adj_o.norm) or adj_o.norm != "seminorm",
    )  # fmt: skip
    ys = _Adjoint.apply(setup, y0f, t, *params)
    check_finite(ys, ts)
    return flat.unflatten(ys)
