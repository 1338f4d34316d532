"""MCMC: invariance of MALA/HMC, ULA's closed-form step-size bias, bad input."""

import math

import pytest
import torch
from scipy import stats

from genmodels.inference.mcmc import NonFiniteError, hmc, mala, ula

DT = torch.float64
# A correlated 3-d Gaussian target N(0, C); precision P has eigenvalues ~0.46, 0.57, 13.1.
C = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 2.0]], dtype=DT)
P = torch.linalg.inv(C)
L_CHOL = torch.linalg.cholesky(C)


def log_p(x):
    return -0.5 * ((x @ P) * x).sum(-1)


def exact_draws(n, g):
    return torch.randn(n, 3, generator=g, dtype=DT) @ L_CHOL.T


def two_sample_pvalue(a, b):
    """Bonferroni-corrected p-value of H0: a and b come from the same law.

    On 7 fixed projections (the eigenvectors of P, the axes, the diagonal) it runs
    Welch's t-test (means), the F-test (variances) and Kolmogorov–Smirnov (whole
    marginal): 21 tests, the smallest p-value times 21.
    """
    dirs = torch.cat([torch.linalg.eigh(P)[1].T, torch.eye(3, dtype=DT), torch.ones(1, 3) / 3**0.5])
    ps = []
    for u in dirs:
        pa, pb = (a @ u).numpy(), (b @ u).numpy()
        n, m = len(pa), len(pb)
        ps.append(stats.ttest_ind(pa, pb, equal_var=False).pvalue)
        f = pa.var(ddof=1) / pb.var(ddof=1)
        ps.append(2 * min(stats.f.cdf(f, n - 1, m - 1), stats.f.sf(f, n - 1, m - 1)))
        ps.append(stats.ks_2samp(pa, pb).pvalue)
    return min(1.0, min(ps) * len(ps))


ALPHA = 1e-3


def test_mala_leaves_target_invariant_and_ula_does_not():
    g = torch.Generator().manual_seed(1)
    x0 = exact_draws(5000, g)
    eps = 0.2
    r = mala(x0, eps, 10, generator=g, log_prob=log_p)
    assert 0.5 <= r.mean_accept_prob <= 0.8
    assert 0.5 <= float(r.accept_rate.mean()) <= 0.8
    assert two_sample_pvalue(r.x, exact_draws(5000, g)) > ALPHA
    # negative control: the same proposal without the accept/reject step is biased
    u = ula(x0, eps, 10, log_prob=log_p, generator=g)
    assert two_sample_pvalue(u.x, exact_draws(5000, g)) < ALPHA


def test_hmc_leaves_target_invariant_and_ula_does_not():
    g = torch.Generator().manual_seed(2)
    x0 = exact_draws(5000, g)
    eps = 0.5
    r = hmc(x0, eps, 10, n_leapfrog=3, generator=g, log_prob=log_p)
    assert 0.5 <= r.mean_accept_prob <= 0.8
    assert r.n_evals == 10 * 3 + 1
    assert two_sample_pvalue(r.x, exact_draws(5000, g)) > ALPHA
    # negative control: one leapfrog step with fresh momentum is a Langevin step of
    # ε_ULA = ε_HMC²; without the accept/reject step the chain leaves the target
    u = ula(x0, eps**2, 10, log_prob=log_p, generator=g)
    assert two_sample_pvalue(u.x, exact_draws(5000, g)) < ALPHA


@pytest.mark.parametrize("sampler", ["mala", "hmc"])
def test_moments_of_correlated_gaussian_from_a_bad_start(sampler):
    g = torch.Generator().manual_seed(3)
    n = 2000
    x0 = 3.0 * torch.randn(n, 3, generator=g, dtype=DT) + 2.0
    if sampler == "mala":
        r = mala(x0, 0.15, 300, generator=g, keep_chain=False, log_prob=log_p)
    else:
        r = hmc(x0, 0.4, 60, n_leapfrog=5, generator=g, keep_chain=False, log_prob=log_p)
    x = r.x
    mean, cov = x.mean(0), torch.cov(x.T)
    # standard errors of i.i.d. Gaussian moments: sd/√n and √((C_ii C_jj + C_ij²)/n)
    se_mean = (torch.diagonal(C) / n).sqrt()
    se_cov = ((torch.diagonal(C)[:, None] * torch.diagonal(C)[None] + C**2) / n).sqrt()
    assert ((mean.abs() / se_mean) < 4.5).all()
    assert (((cov - C).abs() / se_cov) < 4.5).all()


def test_ula_stationary_bias_matches_closed_form():
    # x' = x + (ε/2)∇log p + √ε z on N(0, P⁻¹) is a Gaussian AR(1) chain whose stationary
    # law is N(0, (P(I - εP/4))⁻¹) for ε < 4/λ_max(P).
    g = torch.Generator().manual_seed(4)
    eps = 0.2
    assert eps < 4 / torch.linalg.eigvalsh(P).max()
    n = 8000
    r = ula(torch.zeros(n, 3, dtype=DT), eps, 150, score=lambda x: -x @ P, generator=g)
    biased = torch.linalg.inv(P @ (torch.eye(3, dtype=DT) - eps * P / 4))
    cov = torch.cov(r.x.T)
    se = ((torch.diagonal(biased)[:, None] * torch.diagonal(biased)[None] + biased**2) / n).sqrt()
    assert (((cov - biased).abs() / se) < 4.5).all()
    # ...and the bias is real: the exact covariance is far outside those errors
    assert (((cov - C).abs() / se) > 5).any()
    # in P's stiffest eigendirection the variance is 1/(λ(1 - ελ/4)) instead of 1/λ (2.9x)
    lam, vecs = torch.linalg.eigh(P)
    v = (r.x @ vecs[:, -1]).var()
    target = 1 / (lam[-1] * (1 - eps * lam[-1] / 4))
    assert abs(v / target - 1) < 4.5 * math.sqrt(2 / n)
    assert v * lam[-1] > 2.5
    assert r.mean_accept_prob == 1.0 and bool((r.accept_rate == 1).all())


def test_ula_score_and_log_prob_give_the_same_chain():
    x0 = torch.zeros(10, 3, dtype=DT)
    a = ula(x0, 0.1, 5, log_prob=log_p, generator=torch.Generator().manual_seed(0))
    b = ula(x0, 0.1, 5, score=lambda x: -x @ P, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.chain, b.chain)
    assert a.chain.shape == (5, 10, 3)


def test_chain_thinning_and_image_shaped_events():
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(4, 1, 2, 2, dtype=DT)
    r = mala(x0, 0.5, 10, generator=g, thin=5, log_prob=lambda x: -0.5 * (x**2).flatten(1).sum(-1))
    assert r.chain.shape == (2, 4, 1, 2, 2) and r.x.shape == x0.shape
    torch.testing.assert_close(r.chain[-1], r.x)
    assert r.n_evals == 11


def test_per_chain_step_sizes():
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(3, 2, dtype=DT)
    r = mala(
        x0, torch.tensor([0.1, 1.0, 3.0]), 5, generator=g, log_prob=lambda x: -0.5 * (x**2).sum(-1)
    )
    assert r.accept_rate.shape == (3,)


def test_nonfinite_log_density_names_the_step():
    calls = {"n": 0}

    def bad(x):
        calls["n"] += 1
        out = -0.5 * (x**2).sum(-1)
        return out if calls["n"] < 4 else out + math.nan

    with pytest.raises(NonFiniteError, match="step 2"):
        mala(torch.zeros(5, 2), 0.1, 10, generator=torch.Generator().manual_seed(0), log_prob=bad)
    calls["n"] = 0
    with pytest.raises(NonFiniteError, match="step"):
        hmc(torch.zeros(5, 2), 0.1, 10, generator=torch.Generator().manual_seed(0), log_prob=bad)
    with pytest.raises(NonFiniteError, match="step 0"):
        ula(torch.zeros(5, 2), 0.1, 3, score=lambda x: x * math.inf)
    with pytest.raises(NonFiniteError):  # +inf density also refused
        mala(torch.ones(5, 2), 0.1, 3, log_prob=lambda x: x.sum(-1) * math.inf)


@pytest.mark.parametrize("eps", [0.0, -0.1, math.nan, math.inf])
def test_bad_step_sizes(eps):
    for call in (
        lambda: mala(torch.zeros(2, 3, dtype=DT), eps, 3, log_prob=log_p),
        lambda: hmc(torch.zeros(2, 3, dtype=DT), eps, 3, log_prob=log_p),
        lambda: ula(torch.zeros(2, 3, dtype=DT), eps, 3, log_prob=log_p),
    ):
        with pytest.raises(ValueError, match="step_size"):
            call()


def test_bad_shapes_and_arguments():
    x0 = torch.zeros(4, 3, dtype=DT)
    with pytest.raises(ValueError, match="chains"):
        mala(torch.zeros(3, dtype=DT), 0.1, 3, log_prob=log_p)  # no event dimension
    with pytest.raises(ValueError, match=r"one value per chain"):
        mala(x0, 0.1, 3, log_prob=lambda x: -0.5 * (x**2))  # (chains, d) instead of (chains,)
    with pytest.raises(ValueError, match="shape of x"):
        ula(x0, 0.1, 3, score=lambda x: x[:, :2])
    with pytest.raises(ValueError, match=r"step_size.*\(chains,\)"):
        mala(x0, torch.ones(3), 3, log_prob=log_p)
    with pytest.raises(ValueError, match="exactly one"):
        ula(x0, 0.1, 3)
    with pytest.raises(ValueError, match="exactly one"):
        ula(x0, 0.1, 3, log_prob=log_p, score=lambda x: -x)
    with pytest.raises(ValueError, match="n_steps"):
        hmc(x0, 0.1, -1, log_prob=log_p)
    with pytest.raises(ValueError, match="n_leapfrog"):
        hmc(x0, 0.1, 3, n_leapfrog=0, log_prob=log_p)
    with pytest.raises(TypeError, match="floating"):
        mala(torch.zeros(4, 3, dtype=torch.int64), 0.1, 3, log_prob=log_p)
