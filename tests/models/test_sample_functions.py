"""The process contract's ``sample_functions`` for every process model (GP, CNP, NP, NDP, ND2P).

``sample_functions(x_context, y_context, x_target, n, generator=) -> (n, B, m, dy)``: a GP's
posterior paths, an NP's or NDP's decoder mean at ``n`` latent draws (coherent functions: one
latent per function), a CNP's independent marginal draws (it has no latent).
"""

import pytest
import torch

from genmodels.models.gp import GP, RBF
from genmodels.models.ndp import NDP
from genmodels.models.neural_process import CNP, NP


def _tasks(b=2, nc=5, m=6, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    xc = torch.rand(b, nc, 1, generator=g, dtype=dtype) * 3
    xt = torch.rand(b, m, 1, generator=g, dtype=dtype) * 3
    return xc, torch.sin(xc), xt


def _models():
    torch.manual_seed(0)
    return {
        "gp": GP(RBF(0.7), noise=0.01),
        "cnp": CNP(1, 1),
        "np": NP(1, 1),
        "ndp": NDP(1, 1, t0=-0.1),
        "nd2p": NDP(1, 1, t0=-0.1, l_dim=14, d_dim=18, second_order=True),
    }


@pytest.mark.parametrize("name", ["gp", "cnp", "np", "ndp", "nd2p"])
def test_shapes_seeding_and_bad_n(name):
    model = _models()[name]
    dt = torch.float64 if name == "gp" else torch.float32
    xc, yc, xt = _tasks(dtype=dt)
    with torch.no_grad():
        f = model.sample_functions(xc, yc, xt, 4, generator=torch.Generator().manual_seed(1))
        assert f.shape == (4, 2, 6, 1)
        again = model.sample_functions(xc, yc, xt, 4, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(f, again, rtol=0, atol=0)  # the generator is the randomness
        assert float((f[0] - f[1]).abs().max()) > 1e-4  # the draws differ
        one = model.sample_functions(xc[0], yc[0], xt[0], 3, generator=torch.Generator())
        assert one.shape == (3, 6, 1)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n .*positive int"):
            model.sample_functions(xc, yc, xt, bad)


def test_each_model_declares_whether_its_draws_are_functions():
    flags = {k: m.coherent_functions for k, m in _models().items()}
    assert flags == {"gp": True, "cnp": False, "np": True, "ndp": True, "nd2p": True}


@pytest.mark.parametrize("name", ["np", "ndp", "nd2p"])
def test_latent_models_draw_the_decoder_mean_at_predicts_latent_draws(name):
    model = _models()[name]
    xc, yc, xt = _tasks()
    with torch.no_grad():
        f = model.sample_functions(xc, yc, xt, 5, generator=torch.Generator().manual_seed(2))
        p = model.predict(xc, yc, xt, n_samples=5, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(f, p.mean, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["np", "ndp", "nd2p"])
def test_latent_functions_are_coherent_across_target_sets(name):
    """One latent per function: adding target points leaves a function's values at the old
    points unchanged (a CNP's marginal draws do not have this property)."""
    model = _models()[name]
    xc, yc, xt = _tasks()
    more = torch.cat([xt, xt[:, :3] + 0.05], 1)
    with torch.no_grad():
        f = model.sample_functions(xc, yc, xt, 3, generator=torch.Generator().manual_seed(3))
        g = model.sample_functions(xc, yc, more, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(g[:, :, :6], f, atol=1e-5, rtol=1e-5)
    cnp = _models()["cnp"]
    with torch.no_grad():
        f = cnp.sample_functions(xc, yc, xt, 3, generator=torch.Generator().manual_seed(3))
        g = cnp.sample_functions(xc, yc, more, 3, generator=torch.Generator().manual_seed(3))
    assert float((g[:, :, :6] - f).abs().max()) > 1e-3


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


def test_cnp_draws_are_independent_marginals_and_np_draws_are_correlated_functions():
    models = _models()
    xc, yc, _ = _tasks(b=1)
    xt = torch.tensor([[[1.0], [1.01]]])  # two nearby targets
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        c = models["cnp"].sample_functions(xc, yc, xt, 20000, generator=g)[:, 0, :, 0]
        pc = models["cnp"].predict(xc, yc, xt)
        z = models["np"].sample_functions(xc, yc, xt, 4000, generator=g)[:, 0, :, 0]
    # a CNP: each target's N(mu, sigma^2), independent of the other (std. error ~0.007)
    torch.testing.assert_close(c.mean(0), pc.mean[0, :, 0], atol=0.01, rtol=0)
    torch.testing.assert_close(c.std(0), pc.stddev[0, :, 0], atol=0.01, rtol=0)
    assert abs(_corr(c[:, 0], c[:, 1])) < 0.05
    # an NP: one z per function, so nearby values move together
    assert _corr(z[:, 0], z[:, 1]) > 0.9


def test_gp_functions_are_posterior_paths_with_the_posterior_covariance():
    gp = GP(RBF(0.7), noise=0.2)  # a noise large enough that paths with it would fail
    xc, yc, xt = _tasks(b=1, m=4, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    f = gp.sample_functions(xc, yc, xt, 40000, generator=g)[:, 0, :, 0]  # (n, 4)
    post = gp.predict(xc, yc, xt, full_cov=True)  # includes the observation noise
    cov = post.covariance_matrix[0, 0] - 0.2 * torch.eye(4, dtype=torch.float64)
    # standard errors: mean <= 0.004, covariance <= 0.005
    torch.testing.assert_close(f.mean(0), post.mean[0, 0], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(f.T), cov, atol=0.02, rtol=0)
    # an empty context: the prior, k(x, x)
    prior = gp.sample_functions(xc[:, :0], yc[:, :0], xt, 40000, generator=g)[:, 0, :, 0]
    torch.testing.assert_close(torch.cov(prior.T), gp.kernel(xt[0]), atol=0.03, rtol=0)
