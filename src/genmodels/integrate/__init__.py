"""genmodels.integrate: ODE/SDE/CDE solvers, the adjoint method, splines, Brownian motion."""

from .adjoint import odeint_adjoint
from .cdeint import ControlPath, cdeint
from .odeint import (
    MaxStepsExceededError,
    NonFiniteSolutionError,
    ODESolverError,
    SolverStats,
    StepSizeUnderflowError,
    odeint,
)
from .tableaus import TABLEAUS, ButcherTableau, get_tableau

__all__ = [
    "odeint",
    "odeint_adjoint",
    "cdeint",
    "ControlPath",
    "SolverStats",
    "ODESolverError",
    "StepSizeUnderflowError",
    "MaxStepsExceededError",
    "NonFiniteSolutionError",
    "ButcherTableau",
    "TABLEAUS",
    "get_tableau",
]
