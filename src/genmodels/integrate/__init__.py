"""genmodels.integrate: ODE/SDE/CDE solvers, the adjoint method, splines, Brownian motion."""

from .adjoint import odeint_adjoint
from .brownian import BrownianMotion
from .cdeint import ControlPath, cdeint
from .odeint import (
    MaxStepsExceededError,
    NonFiniteSolutionError,
    ODESolverError,
    SolverStats,
    StepSizeUnderflowError,
    odeint,
)
from .sdeint import METHODS as SDE_METHODS
from .sdeint import SDEProtocol, sdeint
from .spline import NaturalCubicSpline
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
    "sdeint",
    "SDEProtocol",
    "SDE_METHODS",
    "BrownianMotion",
    "NaturalCubicSpline",
]
