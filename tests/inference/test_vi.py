"""VI on Bayesian linear regression, checked against closed forms (float64)."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence
from torch.distributions.transforms import AffineTransform

from genmodels.inference.families import (
    FullRankGaussian,
    MeanFieldGaussian,
    as_distribution,
    rsample,
)
from genmodels.inference.vi import _kl, elbo, elbo_analytic_kl, fit_vi, iwae_bound

DT = torch.float64


def mean_field_optimum(blr):
    """argmax over diagonal Gaussians of the ELBO: N(m, diag(1/Λ_ii)) (exact mean)."""
    lam = blr.posterior_precision()
    return Independent(Normal(blr.posterior().mean, torch.diagonal(lam).rsqrt()), 1)


def test_full_rank_vi_recovers_the_exact_posterior(blr):
    post = blr.posterior()
    q = FullRankGaussian(3, dtype=DT, scale=0.1)
    g = torch.Generator().manual_seed(1)
    r = fit_vi(blr.log_joint, q, 1500, n_samples=16, lr=0.05, lr_final=1e-4, generator=g)
    d = q.distribution()
    sd = post.covariance_matrix.diagonal().sqrt()
    assert ((d.mean - post.mean).abs() < 0.05 * sd).all()
    rel = (d.covariance_matrix - post.covariance_matrix).abs() / (sd[:, None] * sd[None])
    assert (rel < 0.05).all()
    assert r.n_evals == 1500 * 16 and len(r.history) == 1500


def test_mean_field_vi_has_exact_mean_and_precision_diagonal_variances(blr):
    post, lam = blr.posterior(), blr.posterior_precision()
    q = MeanFieldGaussian(3, dtype=DT, scale=0.1)
    g = torch.Generator().manual_seed(2)
    fit_vi(blr.log_joint, q, 1500, n_samples=16, lr=0.05, lr_final=1e-4, generator=g)
    sd = post.covariance_matrix.diagonal().sqrt()
    assert ((q.loc - post.mean).abs() < 0.05 * sd).all()
    var = q.scale.detach() ** 2
    assert ((var * torch.diagonal(lam) - 1).abs() < 0.05).all()
    # mean field under-estimates the marginal variances of a correlated posterior
    marg = post.covariance_matrix.diagonal()
    assert (var < marg).all() and (var[:2] < 0.5 * marg[:2]).all()


def test_elbo_gap_is_kl_to_the_posterior(blr):
    post, log_z = blr.posterior(), float(blr.log_evidence())
    q = MultivariateNormal(
        torch.tensor([0.5, -1.2, 0.3], dtype=DT),
        torch.tensor([[0.05, 0.01, 0.0], [0.01, 0.03, 0.0], [0.0, 0.0, 0.02]], dtype=DT),
    )
    kl = float(kl_divergence(q, post))
    assert kl > 1.0  # a visibly wrong q
    g = torch.Generator().manual_seed(3)
    for vals in (
        elbo(blr.log_joint, q, 20000, generator=g, reduce=False),
        elbo_analytic_kl(blr.log_likelihood, q, blr.prior(), 20000, generator=g, reduce=False),
    ):
        se = float(vals.std() / math.sqrt(len(vals)))
        assert abs(log_z - float(vals.mean()) - kl) < 4 * se


def test_exact_posterior_makes_every_bound_tight(blr):
    post, log_z = blr.posterior(), blr.log_evidence()
    g = torch.Generator().manual_seed(4)
    values = [elbo(blr.log_joint, post, 1, generator=g, reduce=False)]
    values += [elbo(blr.log_joint, post, 50, generator=g, reduce=False)]
    for k in (1, 4, 16, 64, 256):
        values.append(iwae_bound(blr.log_joint, post, k, 10, generator=g, reduce=False))
    for v in values:
        torch.testing.assert_close(v, log_z.expand_as(v), rtol=0, atol=1e-8)


def test_iwae_is_monotone_in_k_and_below_the_evidence(blr):
    q, log_z = mean_field_optimum(blr), float(blr.log_evidence())
    exact_elbo = log_z - float(_kl(q, blr.posterior()))
    # common random numbers: replicate r seeds every K alike, so IWAE_K uses the first K of
    # the same 256 draws (nested prefixes); differences in K then carry little noise
    ks, reps = (1, 4, 16, 64, 256), 200
    vals = torch.tensor(
        [
            [
                float(iwae_bound(blr.log_joint, q, k, generator=torch.Generator().manual_seed(r)))
                for k in ks
            ]
            for r in range(reps)
        ],
        dtype=DT,
    )
    means = vals.mean(0).tolist()
    ses = (vals.std(0) / math.sqrt(reps)).tolist()
    assert abs(means[0] - exact_elbo) < 3 * ses[0]  # IWAE_1 is the ELBO (closed form)
    assert all(a <= b for a, b in zip(means, means[1:]))
    assert all(m < log_z + 3 * s for m, s in zip(means, ses))
    assert log_z - means[0] > 0.1  # the bound is not trivially tight here
    assert log_z - means[-1] < 0.5 * (log_z - means[0])  # K = 256 closes most of the gap


def test_iwae_one_sample_is_the_one_sample_elbo(blr):
    q = mean_field_optimum(blr)
    a = iwae_bound(blr.log_joint, q, 1, 7, generator=torch.Generator().manual_seed(0), reduce=False)
    b = elbo(blr.log_joint, q, 7, generator=torch.Generator().manual_seed(0), reduce=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_batched_q_bounds_each_datum():
    # an amortised q with batch shape (B,): one bound per datum, as a VAE uses it
    q = Independent(Normal(torch.zeros(4, 2, dtype=DT), torch.ones(4, 2, dtype=DT)), 1)
    offsets = torch.arange(4, dtype=DT)
    lj = lambda z: q.log_prob(z) + offsets  # log Z_b = b
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(elbo(lj, q, 3, generator=g), offsets)
    torch.testing.assert_close(iwae_bound(lj, q, 5, 2, generator=g), offsets)


def test_rsample_is_reproducible_and_reparameterised():
    loc = torch.tensor([1.0, 2.0], dtype=DT, requires_grad=True)
    d = MultivariateNormal(loc, torch.eye(2, dtype=DT))
    a = rsample(d, (5,), torch.Generator().manual_seed(0))
    b = rsample(d, (5,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    a.sum().backward()
    torch.testing.assert_close(loc.grad, torch.full((2,), 5.0, dtype=DT))
    # any Distribution with rsample works, reproducibly, through a forked global RNG
    t = torch.distributions.TransformedDistribution(
        Normal(torch.zeros(2, dtype=DT), 1.0), [AffineTransform(loc, 2.0)]
    )
    state = torch.random.get_rng_state()
    c = rsample(t, (3,), torch.Generator().manual_seed(7))
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    torch.testing.assert_close(c, rsample(t, (3,), torch.Generator().manual_seed(7)))


def test_a_module_with_any_distribution_can_be_fitted():
    class AffineQ(torch.nn.Module):  # stands in for a flow's distribution()
        def __init__(self):
            super().__init__()
            self.shift = torch.nn.Parameter(torch.zeros(2, dtype=DT))

        def distribution(self):
            base = Independent(Normal(torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT)), 1)
            return torch.distributions.TransformedDistribution(
                base, [AffineTransform(self.shift, 1.0)]
            )

    q = AffineQ()
    target = torch.tensor([1.5, -0.5], dtype=DT)
    lj = lambda t: -0.5 * ((t - target) ** 2).sum(-1)
    fit_vi(lj, q, 300, n_samples=8, lr=0.05, generator=torch.Generator().manual_seed(0))
    assert (q.shift - target).abs().max() < 0.05


def test_bad_input(blr):
    q = mean_field_optimum(blr)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        iwae_bound(blr.log_joint, q, 0)
    with pytest.raises(ValueError, match="n_samples"):
        elbo(blr.log_joint, q, 0)
    with pytest.raises(ValueError, match="must return shape"):
        elbo(lambda t: blr.log_joint(t)[:, None], q, 3)
    with pytest.raises(TypeError, match="distribution"):
        elbo(blr.log_joint, object(), 3)
    with pytest.raises(ValueError, match="objective"):
        fit_vi(blr.log_joint, MeanFieldGaussian(3, dtype=DT), 3, objective="kl")
    assert as_distribution(q) is q
