"""genmodels.integrate: ODE/SDE/CDE solvers, the adjoint method, splines, Brownian motion,
trace estimators."""

from . import implicit, multistep  # noqa: F401  (register the Adams and implicit methods)
from .adjoint import odeint_adjoint
from .brownian import BrownianMotion
from .cdeint import ControlPath, cdeint
from .checks import (
    MaxStepsExceededError,
    NonFiniteSolutionError,
    ODESolverError,
    StepSizeUnderflowError,
    check_times,
)
from .odeint import LongSolveWarning, SolverStats, StiffnessWarning, odeint, runge_kutta_step
from .sde_adjoint import sdeint_adjoint
from .sdeint import METHODS as SDE_METHODS
from .sdeint import SDEProtocol, sdeint
from .spline import NaturalCubicSpline, SplineCoeffs, natural_cubic_coeffs
from .tableaus import TABLEAUS, ButcherTableau, get_tableau
from .trace import (
    divergence_exact,
    divergence_hutchinson,
    dynamics_with_divergence,
    hutchinson_noise,
)

__all__ = [
    "odeint",
    "odeint_adjoint",
    "runge_kutta_step",
    "check_times",
    "cdeint",
    "ControlPath",
    "SolverStats",
    "ODESolverError",
    "StepSizeUnderflowError",
    "MaxStepsExceededError",
    "NonFiniteSolutionError",
    "StiffnessWarning",
    "LongSolveWarning",
    "ButcherTableau",
    "TABLEAUS",
    "get_tableau",
    "sdeint",
    "sdeint_adjoint",
    "SDEProtocol",
    "SDE_METHODS",
    "BrownianMotion",
    "NaturalCubicSpline",
    "SplineCoeffs",
    "natural_cubic_coeffs",
    "dynamics_with_divergence",
    "divergence_exact",
    "divergence_hutchinson",
    "hutchinson_noise",
]
