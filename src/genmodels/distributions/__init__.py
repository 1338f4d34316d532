"""genmodels.distributions: invertible transforms (value and log|det J| together) and flows."""

from .coupling import AdditiveCoupling, AffineCoupling, Coupling, SplineCoupling, alternating_mask
from .flow import Flow, standard_normal_log_prob
from .image import (
    ElementwiseScale,
    FactorOut,
    ImageAdditiveCoupling,
    ImageAffineCoupling,
    ImageCoupling,
    ImageSplineCoupling,
    Logit,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    multi_scale,
)
from .layers import ActNorm, DiagonalScale, LULinear, Planar
from .splines import rational_quadratic_spline
from .standardize import Standardize, check_batch, check_count, model_dtype
from .transforms import Compose, Inverse, Permutation, Reverse, Transform

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Compose",
    "Coupling",
    "DiagonalScale",
    "ElementwiseScale",
    "FactorOut",
    "Flow",
    "ImageAdditiveCoupling",
    "ImageAffineCoupling",
    "ImageCoupling",
    "ImageSplineCoupling",
    "Inverse",
    "LULinear",
    "Logit",
    "Permutation",
    "Planar",
    "Reverse",
    "SplineCoupling",
    "Squeeze",
    "Standardize",
    "Transform",
    "alternating_mask",
    "check_batch",
    "check_count",
    "model_dtype",
    "channel_mask",
    "checkerboard_mask",
    "multi_scale",
    "rational_quadratic_spline",
    "standard_normal_log_prob",
]
