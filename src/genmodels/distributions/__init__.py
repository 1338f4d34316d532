"""genmodels.distributions: invertible transforms (value and log|det J| together) and flows."""

from .coupling import AdditiveCoupling, AffineCoupling, Coupling, SplineCoupling, alternating_mask
from .flow import Flow, standard_normal_log_prob
from .layers import ActNorm, DiagonalScale, LULinear, Planar
from .splines import rational_quadratic_spline
from .transforms import Compose, Inverse, Permutation, Reverse, Standardize, Transform

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Compose",
    "Coupling",
    "DiagonalScale",
    "Flow",
    "Inverse",
    "LULinear",
    "Permutation",
    "Planar",
    "Reverse",
    "SplineCoupling",
    "Standardize",
    "Transform",
    "alternating_mask",
    "rational_quadratic_spline",
    "standard_normal_log_prob",
]
