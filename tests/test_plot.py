"""plot/ computes the flow's base density itself (it imports nothing above it)."""

import torch

from genmodels.plot.flows import _standard_normal_log_prob


def test_standard_normal_log_prob_of_the_flow_pictures():
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(_standard_normal_log_prob(z), want, rtol=0, atol=1e-12)
