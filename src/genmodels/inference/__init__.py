"""Section 1 of the lecture: MLE/MAP, variational inference (ELBO, IWAE) and MCMC."""

from .mcmc import MCMCResult, NonFiniteError, hmc, mala, ula

__all__ = ["MCMCResult", "NonFiniteError", "hmc", "mala", "ula"]
