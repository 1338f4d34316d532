"""A normalizing flow as the variational family, on a banana posterior a Gaussian cannot fit.

Target (normalised, so log Z = 0 and KL(q‖p) = -ELBO):

    θ1 ~ N(0, 1),   θ2 | θ1 ~ N(b(θ1² - 1), σ²),   b = 1, σ = 0.5.
"""

import math

import pytest
import torch

from genmodels.inference import (
    FlowFamily,
    FullRankGaussian,
    MeanFieldGaussian,
    elbo,
    fit_vi,
    iwae_bound,
    rsample,
)

B, SIGMA = 1.0, 0.5
N_EVAL = 20000


def log_banana(theta):
    t1, t2 = theta[..., 0], theta[..., 1]
    z2 = (t2 - B * (t1**2 - 1)) / SIGMA
    return -0.5 * t1**2 - 0.5 * z2**2 - math.log(2 * math.pi) - math.log(SIGMA)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _kl(q, seed):
    """KL(q‖p) = -ELBO (log Z = 0), with its Monte-Carlo standard error."""
    with torch.no_grad():
        v = -elbo(log_banana, q, N_EVAL, generator=_gen(seed), reduce=False)
    return float(v.mean()), float(v.std() / math.sqrt(N_EVAL))


@pytest.fixture(scope="module")
def fitted():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the conditioners' hidden layers are initialised from the global RNG
        flow = FlowFamily(2, transforms=4, hidden=(32, 32), kind="affine")
    fit_vi(log_banana, flow, 1000, n_samples=32, lr=1e-2, generator=_gen(1))
    gauss = {}
    for name, q in (("full-rank", FullRankGaussian(2)), ("mean-field", MeanFieldGaussian(2))):
        fit_vi(log_banana, q, 300, n_samples=16, lr=0.05, generator=_gen(2))
        gauss[name] = q
    torch.set_num_threads(before)
    return flow, gauss


def test_flow_fits_what_a_gaussian_cannot(fitted):
    flow, gauss = fitted
    kl_flow, se_flow = _kl(flow, 10)
    kl_fr, se_fr = _kl(gauss["full-rank"], 11)
    kl_mf, se_mf = _kl(gauss["mean-field"], 12)
    print(
        f"\nKL(q‖p) nats: flow {kl_flow:.4f} ± {se_flow:.4f}, full-rank {kl_fr:.4f} ± {se_fr:.4f}, "
        f"mean-field {kl_mf:.4f} ± {se_mf:.4f}"
    )
    assert kl_fr > 0.4  # the best Gaussian is far from the banana
    assert abs(kl_mf - kl_fr) < 0.05  # θ1, θ2 are uncorrelated: full rank buys nothing here
    assert kl_flow < 0.05
    assert kl_flow < kl_fr / 3


def test_iwae_between_elbo_and_log_evidence(fitted):
    flow, gauss = fitted
    for name, q in (("flow", flow), ("full-rank", gauss["full-rank"])):
        with torch.no_grad():
            g = _gen(20)
            e = elbo(log_banana, q, N_EVAL, generator=g, reduce=False)
            iw = iwae_bound(log_banana, q, 64, 400, generator=g, reduce=False)
        se_e = float(e.std() / math.sqrt(e.numel()))
        se_iw = float(iw.std() / math.sqrt(iw.numel()))
        print(f"\n{name}: ELBO {e.mean():.4f} ± {se_e:.4f}, IWAE_64 {iw.mean():.4f} ± {se_iw:.4f}")
        assert float(iw.mean()) >= float(e.mean()) - 3 * (se_e + se_iw)
        assert float(iw.mean()) <= 3 * se_iw  # log Z = 0
    # for the Gaussian the importance weights close most of its large gap
    assert float(iw.mean()) > float(e.mean()) + 0.1


def test_flow_samples_reproduce_the_banana(fitted):
    flow, gauss = fitted
    x = flow.distribution().sample((N_EVAL,), generator=_gen(30))
    t1, t2 = x[:, 0], x[:, 1]
    # exact: E θ2 = 0 (sd 1.5), Var θ1 = 1, E[θ2 | θ1] = b θ1² - b
    assert abs(float(t2.mean())) < 0.06
    assert abs(float(t1.var()) - 1.0) < 0.06
    design = torch.stack([torch.ones_like(t1), t1**2], 1)
    coef = torch.linalg.lstsq(design, t2.unsqueeze(1)).solution.squeeze(1)
    resid_sd = float((t2 - design @ coef).std())
    print(f"\nflow: θ2 ≈ {coef[0]:.3f} + {coef[1]:.3f} θ1², residual sd {resid_sd:.3f}")
    assert abs(float(coef[1]) - B) < 0.06 and abs(float(coef[0]) + B) < 0.06
    assert abs(resid_sd - SIGMA) < 0.05
    # negative control: the Gaussian's samples have no curvature
    with torch.no_grad():
        xg = rsample(gauss["full-rank"].distribution(), (N_EVAL,), _gen(31))
    dg = torch.stack([torch.ones_like(xg[:, 0]), xg[:, 0] ** 2], 1)
    cg = torch.linalg.lstsq(dg, xg[:, 1:]).solution.squeeze(1)
    assert abs(float(cg[1])) < 0.1


def test_flow_family_starts_gaussian_and_checks_arguments():
    with pytest.raises(ValueError):
        FlowFamily(1)
    with pytest.raises(ValueError):
        FlowFamily(2, kind="planar")
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    q = FlowFamily(3, transforms=2, kind="spline", loc=loc, scale=0.5, dtype=torch.float64)
    with torch.no_grad():
        x = q.distribution().rsample((4,), generator=_gen(0))
        want = torch.distributions.Normal(loc, 0.5).log_prob(x).sum(1)
        got = q.distribution().log_prob(x)
    assert x.dtype == torch.float64 and x.shape == (4, 3)
    assert torch.allclose(got, want, atol=1e-10)  # zero-initialised couplings: q = N(loc, s²I)
