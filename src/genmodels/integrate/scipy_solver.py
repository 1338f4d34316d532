"""``method="scipy_solver"``: scipy's ``solve_ivp`` behind the ``odeint`` interface.

``odeint(func, y0, t, method="scipy_solver", options=dict(solver="Radau"))`` hands the flat state
to :func:`scipy.integrate.solve_ivp` (``"RK45"``, ``"RK23"``, ``"DOP853"``: explicit pairs;
``"Radau"`` (Radau IIA, order 5), ``"BDF"`` (variable-order backward differentiation) and
``"LSODA"`` (Adams/BDF switching): implicit, for stiff problems; default ``"LSODA"`` as
torchdiffeq).  The vector field is evaluated by torch in the state's dtype; scipy keeps its
state in float64 and its outputs at ``t`` are cast back.

As in torchdiffeq the solve goes through NumPy and is not differentiable: ``odeint`` returns a
tensor without a graph.  ``odeint_adjoint(..., method="scipy_solver")`` does give gradients: the
adjoint ODE is solved backwards by scipy too.

Options: ``solver``; ``jac="autograd"`` gives the implicit solvers the Jacobian
``df/dy`` by autograd (``torch.func.jacrev``) instead of scipy's finite differences;
``first_step``, ``max_step`` and (LSODA only, as in scipy) ``min_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .checks import ODESolverError
from .odeint import EXTRA_SOLVERS, SolverStats, _Options

__all__ = ["SCIPY_SOLVERS", "solve_scipy"]

SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
_IMPLICIT = ("Radau", "BDF", "LSODA")


def solve_scipy(
    f: Callable,
    y0: Tensor,
    ts: Sequence[float],
    rtol: float,
    atol: float,
    norm: Callable,
    options: _Options,
    stats: SolverStats,
    grad: bool,
    grid: list[float] | None,
    f_first: Callable,
) -> list[Tensor]:
    """Solve on the flat state with ``solve_ivp`` (the :data:`EXTRA_SOLVERS` contract).

    ``norm`` (scipy uses its own RMS norm) and ``grid`` have no effect, no step callback is
    called; ``grad`` is ignored (the solve is not differentiable).  Raises
    :class:`ODESolverError` when scipy's solver fails (its message and the time reached).
    """
    solver = options.extra.get("solver", "LSODA")
    if solver not in SCIPY_SOLVERS:
        raise ValueError(
            f"options['solver'] must be one of {', '.join(SCIPY_SOLVERS)} for "
            f"method='scipy_solver', got {solver!r}"
        )
    jac_opt = options.extra.get("jac")
    if jac_opt not in (None, "autograd"):
        raise ValueError(f"options['jac'] must be None or 'autograd', got {jac_opt!r}")
    dtype, device = y0.dtype, y0.device
    first = [True]

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        stats.nfe += 1
        yt = torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=dtype)
        with torch.no_grad():
            field = f_first if first[0] else f
            first[0] = False
            r = field(float(t), yt)
        return r.detach().to(device="cpu", dtype=torch.float64).numpy()

    kwargs: dict = dict(method=solver, t_eval=list(ts), rtol=rtol, atol=atol)
    if options.first_step is not None:
        kwargs["first_step"] = options.first_step
    if options.max_step < math.inf:
        kwargs["max_step"] = options.max_step
    if options.min_step > 0 and solver == "LSODA":
        kwargs["min_step"] = options.min_step
    if jac_opt == "autograd" and solver in _IMPLICIT:

        def jac(t: float, y: np.ndarray) -> np.ndarray:
            yt = torch.from_numpy(np.ascontiguousarray(y)).to(device=device, dtype=dtype)
            with torch.enable_grad():
                J = torch.func.jacrev(lambda z: f(float(t), z))(yt)
            stats.extra["njev"] = stats.extra.get("njev", 0) + 1
            return J.detach().to(device="cpu", dtype=torch.float64).numpy()

        kwargs["jac"] = jac
    y0np = y0.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    sol = solve_ivp(fun, (ts[0], ts[-1]), y0np, **kwargs)
    if sol.status < 0 or sol.y.shape[1] != len(ts):
        reached = float(sol.t[-1]) if len(sol.t) else ts[0]
        raise ODESolverError(f"scipy_solver ({solver}) failed: {sol.message}", reached)
    ys = torch.from_numpy(sol.y.T.copy()).to(device=device, dtype=dtype)
    out = list(ys.unbind(0))
    out[0] = y0.detach()
    return out


solve_scipy.valid_callbacks = frozenset()
solve_scipy.differentiable = False
EXTRA_SOLVERS["scipy_solver"] = solve_scipy
