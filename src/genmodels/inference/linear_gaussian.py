"""Bayesian linear regression in closed form: the reference for MLE, MAP and VI.

Model: θ ~ N(0, τ²I_d), y | X, θ ~ N(Xθ, σ²I_n). Then

    posterior   p(θ|D) = N(m, Λ⁻¹),  Λ = XᵀX/σ² + I/τ²,  m = Λ⁻¹Xᵀy/σ²
    evidence    p(D)   = N(y; 0, σ²I_n + τ²XXᵀ)
    MLE                = least squares  (XᵀX)⁻¹Xᵀy
    MAP                = m = ridge with λ = σ²/τ²

Shapes: ``X`` is ``(n, d)``, ``y`` is ``(n,)``, θ is ``(d,)`` or ``(S, d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal

__all__ = ["BayesianLinearRegression"]


@dataclass
class BayesianLinearRegression:
    """Conjugate Gaussian linear regression with known noise σ and prior scale τ.

    Example::

        >>> X = torch.randn(20, 2, dtype=torch.float64); y = X @ torch.tensor([1.0, -1.0]).double()
        >>> blr = BayesianLinearRegression(X, y, noise_std=0.5, prior_std=1.0)
        >>> blr.posterior().mean.shape
        torch.Size([2])
    """

    X: Tensor
    y: Tensor
    noise_std: float
    prior_std: float

    def __post_init__(self):
        if self.X.dim() != 2 or self.y.shape != (self.X.shape[0],):
            raise ValueError(
                f"X must be (n, d) and y (n,), got {tuple(self.X.shape)} and {tuple(self.y.shape)}"
            )
        if not (self.noise_std > 0 and self.prior_std > 0):
            raise ValueError("noise_std and prior_std must be positive")

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    def prior(self) -> MultivariateNormal:
        d, X = self.dim, self.X
        eye = torch.eye(d, dtype=X.dtype, device=X.device)
        return MultivariateNormal(
            torch.zeros(d, dtype=X.dtype, device=X.device), eye * self.prior_std**2
        )

    def log_prior(self, theta: Tensor) -> Tensor:
        """log p(θ), ``(..., d) -> (...)`` nats."""
        return Normal(torch.zeros_like(theta), self.prior_std).log_prob(theta).sum(-1)

    def log_likelihood(self, theta: Tensor) -> Tensor:
        """log p(D|θ) = Σ_i log N(y_i; x_iᵀθ, σ²), ``(..., d) -> (...)`` nats."""
        mean = theta @ self.X.T  # (..., n)
        return Normal(mean, self.noise_std).log_prob(self.y).sum(-1)

    def log_joint(self, theta: Tensor) -> Tensor:
        """log p(θ, D) = log p(D|θ) + log p(θ), ``(..., d) -> (...)`` nats."""
        return self.log_likelihood(theta) + self.log_prior(theta)

    def posterior_precision(self) -> Tensor:
        """Λ = XᵀX/σ² + I/τ², ``(d, d)``."""
        eye = torch.eye(self.dim, dtype=self.X.dtype, device=self.X.device)
        return self.X.T @ self.X / self.noise_std**2 + eye / self.prior_std**2

    def posterior(self) -> MultivariateNormal:
        """p(θ|D) = N(Λ⁻¹Xᵀy/σ², Λ⁻¹)."""
        lam = self.posterior_precision()
        mean = torch.linalg.solve(lam, self.X.T @ self.y / self.noise_std**2)
        return MultivariateNormal(mean, precision_matrix=lam)

    def log_evidence(self) -> Tensor:
        """log p(D) = log N(y; 0, σ²I + τ²XXᵀ) in nats (a 0-d tensor)."""
        n = self.X.shape[0]
        eye = torch.eye(n, dtype=self.X.dtype, device=self.X.device)
        cov = self.noise_std**2 * eye + self.prior_std**2 * self.X @ self.X.T
        return MultivariateNormal(torch.zeros_like(self.y), cov).log_prob(self.y)

    def least_squares(self) -> Tensor:
        """The MLE, (XᵀX)⁻¹Xᵀy, ``(d,)``."""
        return torch.linalg.lstsq(self.X, self.y[:, None]).solution[:, 0]

    def ridge(self) -> Tensor:
        """The MAP, (XᵀX + λI)⁻¹Xᵀy with λ = σ²/τ², ``(d,)``."""
        lam = (self.noise_std / self.prior_std) ** 2
        eye = torch.eye(self.dim, dtype=self.X.dtype, device=self.X.device)
        return torch.linalg.solve(self.X.T @ self.X + lam * eye, self.X.T @ self.y)
