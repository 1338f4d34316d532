"""``cdeint``: controlled differential equations dz = f(z) dX(t), solved as ODEs.

A neural CDE (Kidger, Morrill, Foster & Lyons 2020, "Neural Controlled Differential Equations
for Irregular Time Series") drives ``z`` by a path ``X``:

    z(t) = z(t0) + int_{t0}^{t} f(s, z(s)) dX(s),

and for a differentiable ``X`` this is the ODE ``dz/dt = f(t, z) @ dX/dt``.  So ``cdeint`` is
``odeint`` (or ``odeint_adjoint``) with that vector field — no second solver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor, nn

from ._flat import returned
from .adjoint import odeint_adjoint
from .odeint import odeint

__all__ = ["cdeint", "ControlPath"]


class ControlPath(Protocol):
    """What ``cdeint`` needs of ``X``: ``derivative(t) -> (..., input_channels)``."""

    def derivative(self, t: Tensor) -> Tensor: ...


class _CDEField(nn.Module):
    """The ODE vector field ``g(t, z) = f(t, z) @ dX/dt(t)``."""

    def __init__(self, X: ControlPath, func: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.X = X
        self.func = func  # registered as a submodule when it is an nn.Module

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        dX = self.X.derivative(t)
        fz = self.func(t, z)
        if not isinstance(fz, Tensor):
            raise TypeError(
                f"func(t, z) returned {returned(fz)}; expected a tensor of shape "
                f"(..., hidden={z.shape[-1]}, input_channels={dX.shape[-1]})"
            )
        if fz.dim() < 2 or fz.shape[-2] != z.shape[-1] or fz.shape[-1] != dX.shape[-1]:
            raise ValueError(
                f"func(t, z) must return (..., hidden={z.shape[-1]}, "
                f"input_channels={dX.shape[-1]}), got {tuple(fz.shape)}"
            )
        return (fz @ dX.unsqueeze(-1)).squeeze(-1)


def _path_tensors(X) -> list[Tensor]:
    if isinstance(X, nn.Module):
        return [p for p in X.parameters() if p.requires_grad]
    out = []
    for v in vars(X).values():
        if isinstance(v, Tensor) and v.requires_grad:
            out.append(v)
        elif isinstance(v, (tuple, list)):
            out.extend(x for x in v if isinstance(x, Tensor) and x.requires_grad)
    return out


def cdeint(
    X: ControlPath,
    func: Callable[[Tensor, Tensor], Tensor],
    z0: Tensor,
    t: Tensor,
    *,
    adjoint: bool = False,
    **odeint_kwargs,
) -> Tensor:
    """Solve ``dz = func(t, z) dX(t)`` from ``z(t[0]) = z0``; ``z`` at every time of ``t``.

    Args:
        X: a path with ``derivative(t)`` returning ``(..., input_channels)`` (for example a
            natural cubic spline of the observations).
        func: ``func(t, z)`` mapping ``z: (..., hidden)`` to ``(..., hidden, input_channels)``.
        z0: ``(..., hidden)`` initial state.
        t: ``(T,)`` monotone times inside the path's range.
        adjoint: solve by :func:`odeint_adjoint` (O(1) memory); its parameters are ``func``'s
            and any tensor of ``X`` that requires grad, unless ``adjoint_params`` is given.
        **odeint_kwargs: ``rtol``, ``atol``, ``method``, ``options``, ``stats``, ``adjoint_*``.

    Returns:
        ``(T, ..., hidden)``.

    Example:
        >>> class Line:
        ...     def derivative(self, t):
        ...         return torch.ones(1, 2)
        >>> z = cdeint(Line(), lambda t, z: torch.ones(1, 3, 2), torch.zeros(1, 3),
        ...            torch.tensor([0.0, 1.0]))
        >>> z[-1]  # z = z0 + f (X(1) - X(0)) = 2 per channel
        tensor([[2., 2., 2.]])
    """
    if not hasattr(X, "derivative"):
        raise TypeError("X must have a derivative(t) method returning (..., input_channels)")
    if not isinstance(z0, Tensor):
        raise TypeError(f"z0 must be a tensor (..., hidden), got {type(z0).__name__}")
    field = _CDEField(X, func)
    if not adjoint:
        return odeint(field, z0, t, **odeint_kwargs)
    if "adjoint_params" not in odeint_kwargs:
        params = [p for p in field.func.parameters()] if isinstance(func, nn.Module) else []
        seen = {id(p) for p in params}
        params += [p for p in _path_tensors(X) if id(p) not in seen]
        odeint_kwargs["adjoint_params"] = params
    return odeint_adjoint(field, z0, t, **odeint_kwargs)
