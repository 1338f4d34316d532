"""What ``odeint``, ``odeint_adjoint``, ``cdeint`` and ``sdeint`` share: the check of a time
grid and the one family of errors a solve that cannot go on raises.

Every solver error is an :class:`ODESolverError` (a ``RuntimeError``) carrying ``.t``, the time
reached; :class:`NonFiniteSolutionError` is also a ``FloatingPointError``, so code that caught
``sdeint``'s non-finite state as one keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

__all__ = [
    "check_times",
    "ODESolverError",
    "StepSizeUnderflowError",
    "MaxStepsExceededError",
    "NonFiniteSolutionError",
]


class ODESolverError(RuntimeError):
    """A solve (ODE, CDE or SDE) that cannot go on; ``t`` is the time it reached."""

    def __init__(self, message: str, t: float):
        super().__init__(message)
        self.t = t


class StepSizeUnderflowError(ODESolverError):
    """The adaptive step size became too small to advance time."""


class MaxStepsExceededError(ODESolverError):
    """More than ``max_num_steps`` steps between two output times."""


class NonFiniteSolutionError(ODESolverError, FloatingPointError):
    """The solution became NaN or infinite."""


def check_times(
    t: Tensor | Sequence[float], *, name: str = "t", caller: str = "odeint", tensor: bool = True
) -> list[float]:
    """The time grid ``t`` (T,) as Python floats, after checking it.

    ``t`` must be 1-D, non-empty, finite and strictly monotone (increasing or decreasing); a
    ``ValueError`` names the argument (``name``), the solver (``caller``) and the first pair
    of times out of order.  ``tensor=True`` also requires a tensor (``TypeError`` otherwise);
    ``tensor=False`` accepts any sequence of numbers.

    Example:
        >>> check_times(torch.tensor([0.0, 0.5, 1.0]))
        [0.0, 0.5, 1.0]
    """
    if isinstance(t, Tensor):
        if t.ndim != 1:
            raise ValueError(f"{caller}: {name} must be a 1-D tensor of times, got shape "
                             f"{tuple(t.shape)}")  # fmt: skip
        ts = t.detach().double().tolist()
    elif tensor:
        raise TypeError(f"{caller}: {name} must be a 1-D tensor of times, got {type(t).__name__}")
    else:
        try:
            ts = [float(x) for x in t]
        except (TypeError, ValueError):
            raise TypeError(f"{caller}: {name} must be a sequence of times, got "
                            f"{type(t).__name__}") from None  # fmt: skip
    if len(ts) < 1:
        raise ValueError(f"{caller}: {name} must be a non-empty 1-D grid of times")
    if not all(math.isfinite(x) for x in ts):
        raise ValueError(f"{caller}: {name} contains NaN or infinite times")
    if len(ts) > 1:
        d = [b - a for a, b in zip(ts[:-1], ts[1:])]
        if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
            i = next(i for i, x in enumerate(d) if (x <= 0) != (d[0] <= 0) or x == 0)
            raise ValueError(
                f"{caller}: {name} must be strictly increasing or strictly decreasing (monotone); "
                f"{name}[{i}]={ts[i]!r}, {name}[{i + 1}]={ts[i + 1]!r}"
            )
    return ts
