import pytest
import torch

from genmodels.inference.linear_gaussian import BayesianLinearRegression


@pytest.fixture
def blr():
    """A 3-d Bayesian linear regression with strongly correlated features (float64)."""
    g = torch.Generator().manual_seed(0)
    n, d = 40, 3
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    mix = torch.tensor([[1.0, 0.8, 0.0], [0.0, 0.6, 0.5], [0.0, 0.0, 0.9]], dtype=torch.float64)
    X = z @ mix
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = X @ w + 0.8 * torch.randn(n, generator=g, dtype=torch.float64)
    return BayesianLinearRegression(X, y, noise_std=0.8, prior_std=0.7)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests use tiny tensors: one intra-op thread avoids oversubscribing shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
