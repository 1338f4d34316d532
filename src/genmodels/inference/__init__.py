"""Section 1 of the lecture: MLE/MAP, variational inference (ELBO, IWAE) and MCMC."""

from .families import FlowFamily, FullRankGaussian, MeanFieldGaussian, as_distribution, rsample
from .linear_gaussian import BayesianLinearRegression
from .mcmc import MCMCResult, NonFiniteError, hmc, mala, ula
from .point import PointEstimate, map_estimate, maximise, mle
from .vi import VIResult, elbo, elbo_analytic_kl, fit_vi, iwae_bound

__all__ = [
    "BayesianLinearRegression",
    "FlowFamily",
    "FullRankGaussian",
    "MCMCResult",
    "MeanFieldGaussian",
    "NonFiniteError",
    "PointEstimate",
    "VIResult",
    "as_distribution",
    "elbo",
    "elbo_analytic_kl",
    "fit_vi",
    "hmc",
    "iwae_bound",
    "mala",
    "map_estimate",
    "maximise",
    "mle",
    "rsample",
    "ula",
]
