"""Gaussian processes: agreement with scikit-learn, gradients, interpolation, sample paths,
the jitter policy and bad input."""

import math
import warnings

import numpy as np
import pytest
import torch

from genmodels.models.gp import (
    GP,
    RBF,
    CholeskyError,
    Linear,
    Matern,
    Periodic,
    White,
    _GaussianLogLik,
    cholesky,
)

sk_gp = pytest.importorskip("sklearn.gaussian_process")
sk_k = pytest.importorskip("sklearn.gaussian_process.kernels")

D = torch.float64


def _data(n=25, m=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 1))
    y = np.sin(3 * x) + 0.1 * rng.standard_normal((n, 1))
    xs = np.linspace(-2.5, 2.5, m)[:, None]
    return x, y, xs


def _sklearn(kernel, x, y, xs):
    reg = sk_gp.GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None, normalize_y=False)
    reg.fit(x, y[:, 0])
    mu, sd = reg.predict(xs, return_std=True)
    return mu, sd, reg.log_marginal_likelihood_value_


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda: RBF(lengthscale=0.7, variance=1.3),
            lambda: sk_k.ConstantKernel(1.3) * sk_k.RBF(0.7),
        ),
        (
            lambda: Matern(0.5, lengthscale=0.7, variance=1.3),
            lambda: sk_k.ConstantKernel(1.3) * sk_k.Matern(0.7, nu=0.5),
        ),
        (
            lambda: Matern(1.5, lengthscale=0.7, variance=1.3),
            lambda: sk_k.ConstantKernel(1.3) * sk_k.Matern(0.7, nu=1.5),
        ),
        (
            lambda: Matern(2.5, lengthscale=0.7, variance=1.3),
            lambda: sk_k.ConstantKernel(1.3) * sk_k.Matern(0.7, nu=2.5),
        ),
        (
            lambda: Periodic(period=1.7, lengthscale=0.9, variance=1.3),
            lambda: sk_k.ConstantKernel(1.3) * sk_k.ExpSineSquared(0.9, 1.7),
        ),
        (
            lambda: RBF(0.5, 0.8) + RBF(2.0, 0.3) * Periodic(1.0, 1.0, 1.0),
            lambda: (
                sk_k.ConstantKernel(0.8) * sk_k.RBF(0.5)
                + sk_k.ConstantKernel(0.3) * sk_k.RBF(2.0) * sk_k.ExpSineSquared(1.0, 1.0)
            ),
        ),
    ],
)
def test_posterior_and_lml_equal_sklearn_to_1e_10(ours, theirs):
    x, y, xs = _data()
    noise = 0.05
    mu_s, sd_s, lml_s = _sklearn(theirs() + sk_k.WhiteKernel(noise), x, y, xs)
    gp = GP(ours(), noise=noise).double()
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    pred = gp.predict(t(x), t(y), t(xs))
    np.testing.assert_allclose(pred.mean[:, 0].detach().numpy(), mu_s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pred.stddev[:, 0].detach().numpy(), sd_s, rtol=1e-10)
    lml = gp.log_marginal_likelihood(t(x), t(y)).item()
    assert lml == pytest.approx(lml_s, rel=1e-10)


def test_full_cov_marginals_match_and_batch_dim_matches_single_tasks():
    x, y, xs = _data(n=10, m=7)
    gp = GP(RBF(0.6), noise=0.02).double()
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    mvn = gp.predict(t(x), t(y), t(xs), full_cov=True)
    nrm = gp.predict(t(x), t(y), t(xs))
    assert mvn.loc.shape == (1, 7)
    torch.testing.assert_close(mvn.loc[0], nrm.mean[:, 0])
    torch.testing.assert_close(mvn.covariance_matrix[0].diagonal().sqrt(), nrm.stddev[:, 0])
    # a batch of two tasks gives what each task gives alone
    x2, y2, _ = _data(n=10, m=7, seed=1)
    xb, yb = torch.stack([t(x), t(x2)]), torch.stack([t(y), t(y2)])
    xsb = torch.stack([t(xs), t(xs) * 0.5])
    pb = gp.predict(xb, yb, xsb)
    p1 = gp.predict(t(x2), t(y2), t(xs) * 0.5)
    torch.testing.assert_close(pb.mean[1], p1.mean)
    torch.testing.assert_close(pb.stddev[1], p1.stddev)
    lb = gp.log_marginal_likelihood(xb, yb)
    assert lb.shape == (2,)
    assert lb[1].item() == pytest.approx(gp.log_marginal_likelihood(t(x2), t(y2)).item())


def test_lml_gradient_equals_central_differences():
    x, y, _ = _data(n=15)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    gp = GP(Matern(2.5, 0.8, 1.2) + Periodic(1.5, 0.7, 0.4), noise=0.03).double()
    params = list(gp.parameters())
    lml = gp.log_marginal_likelihood(x, y)
    grads = torch.autograd.grad(lml, params)
    h = 1e-6
    for p, g in zip(params, grads):
        with torch.no_grad():
            p += h
            up = float(gp.log_marginal_likelihood(x, y))
            p -= 2 * h
            down = float(gp.log_marginal_likelihood(x, y))
            p += h
        fd = (up - down) / (2 * h)
        assert float(g) == pytest.approx(fd, rel=1e-6, abs=1e-7)
    assert max(abs(float(g)) for g in grads) > 0.1  # a non-trivial point


def test_closed_form_lml_gradient_equals_autograd_through_the_cholesky():
    """The closed-form gradient ½(ααᵀ - dy K⁻¹) against autograd through torch's own
    Gaussian log-density, batched and with two outputs, for the covariance and the residual."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 1, generator=g, dtype=D) * 4 - 2
    y = torch.randn(3, 20, 2, generator=g, dtype=D)
    gp = GP(RBF(0.6, 1.3) + Matern(1.5, 0.9, 0.5), noise=0.05).double()
    ours = gp.log_marginal_likelihood(x, y)
    grads = torch.autograd.grad(ours.sum(), list(gp.parameters()))

    cov = gp._cov(x)
    mvn = torch.distributions.MultivariateNormal(torch.zeros(3, 1, 20, dtype=D), cov[:, None])
    ref = mvn.log_prob((y - gp.mean(x).unsqueeze(-1)).transpose(-1, -2)).sum(-1)
    ref_grads = torch.autograd.grad(ref.sum(), list(gp.parameters()))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)

    r = torch.randn(20, 2, generator=g, dtype=D, requires_grad=True)
    (gr,) = torch.autograd.grad(_GaussianLogLik.apply(cov[0].detach(), r), r)
    torch.testing.assert_close(gr, -torch.cholesky_solve(r.detach(), torch.linalg.cholesky(cov[0])))


def test_posterior_interpolates_noise_free_data_and_empty_context_is_the_prior():
    x = torch.linspace(-2, 2, 8, dtype=D)[:, None]
    y = torch.cos(2 * x)
    gp = GP(RBF(0.5, 1.0), noise=1e-10).double()
    pred = gp.predict(x, y, x)
    torch.testing.assert_close(pred.mean, y, atol=1e-6, rtol=0)
    assert float(pred.stddev.max()) < 1e-4
    # away from the data the variance returns towards the prior's
    far = gp.predict(x, y, torch.tensor([[10.0]], dtype=D))
    assert float(far.stddev) == pytest.approx(1.0, abs=1e-6)
    prior = gp.predict(x[:0], y[:0], x)
    torch.testing.assert_close(prior.mean, torch.zeros_like(y))
    torch.testing.assert_close(prior.stddev, torch.full_like(y, math.sqrt(1 + 1e-10)))


def test_prior_and_posterior_paths_have_the_kernel_covariance():
    gp = GP(RBF(0.8, 1.5), noise=1e-3).double()
    x = torch.tensor([[-1.0], [-0.3], [0.2], [1.1]], dtype=D)
    g = torch.Generator().manual_seed(0)
    f = gp.sample_paths(x, 20000, generator=g)[..., 0]  # (n, 4)
    emp = torch.cov(f.T)
    k = gp.kernel(x).detach()
    # the standard error of a covariance estimate is <= var * sqrt(2/n) = 0.015
    torch.testing.assert_close(emp, k, atol=0.06, rtol=0)
    assert float(f.mean(0).abs().max()) < 0.05
    xc, yc = torch.tensor([[0.0], [0.5]], dtype=D), torch.tensor([[1.0], [0.2]], dtype=D)
    fp = gp.sample_paths(x, 20000, x_context=xc, y_context=yc, generator=g)[..., 0]
    post = gp.predict(xc, yc, x, full_cov=True)
    cov_f = post.covariance_matrix[0] - 1e-3 * torch.eye(4, dtype=D)
    torch.testing.assert_close(torch.cov(fp.T), cov_f.detach(), atol=0.04, rtol=0)
    torch.testing.assert_close(fp.mean(0), post.loc[0].detach(), atol=0.03, rtol=0)


def test_cholesky_jitter_on_duplicates_and_rank_deficient_linear_kernel():
    x = torch.tensor([[0.0], [0.0], [1.0]], dtype=D)
    k = RBF().double()(x).detach()
    with pytest.warns(RuntimeWarning, match="jitter 1e-08"):
        lower = cholesky(k)
    torch.testing.assert_close(lower @ lower.T, k, atol=1e-7, rtol=0)
    # no jitter and no warning where none is needed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cholesky(k + 0.1 * torch.eye(3, dtype=D))
    # a linear kernel on 5 points in 2-D has rank 2: float32 jitter starts at 1e-6
    xl = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    kl = Linear()(xl).detach()
    with pytest.warns(RuntimeWarning, match="jitter 1e-0[654]"):
        cholesky(kl)
    # a matrix no jitter rescues: one clear error with size, dtype and the jitters tried
    bad = -torch.eye(4, dtype=D)
    with pytest.raises(CholeskyError, match=r"4x4 \(torch.float64\).*1e-08, 1e-07, 1e-06.*float64"):
        cholesky(bad)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="lengthscale"):
        RBF(lengthscale=0.0)
    with pytest.raises(ValueError, match="noise"):
        GP(RBF(), noise=-1.0)
    with pytest.raises(ValueError, match="nu"):
        Matern(1.0)
    gp = GP(RBF(), noise=0.1).double()
    x, y = torch.zeros(5, 1, dtype=D), torch.zeros(5, 1, dtype=D)
    with pytest.raises(ValueError, match="y_context"):
        gp.predict(x, y[:4], x)
    with pytest.raises(ValueError, match="x_target"):
        gp.predict(x, y, torch.zeros(5, 2, dtype=D))
    with pytest.raises(ValueError, match="x_context"):
        gp.predict(torch.zeros(5), y, x)


def test_white_kernel_only_on_the_diagonal_of_k_x_x():
    w = White(0.5).double()
    x = torch.randn(4, 1, dtype=D)
    torch.testing.assert_close(w(x), 0.5 * torch.eye(4, dtype=D))
    assert float(w(x, x + 1).abs().max()) == 0.0


def test_fit_recovers_the_lengthscale_of_gp_drawn_data():
    g = torch.Generator().manual_seed(1)
    truth = GP(RBF(0.4, 1.0), noise=0.01).double()
    x = torch.rand(200, 1, generator=g, dtype=D) * 4 - 2
    f = truth.sample_paths(x, 1, generator=g)[0]
    y = f + 0.1 * torch.randn(f.shape, generator=g, dtype=D)
    gp = GP(RBF(1.0, 1.0), noise=0.1).double()
    before = float(gp.log_marginal_likelihood(x, y))
    gp.fit(x, y, steps=100)
    after = float(gp.log_marginal_likelihood(x, y))
    assert after > before + 10
    assert float(gp.kernel.lengthscale) == pytest.approx(0.4, rel=0.3)
    assert float(gp.noise) == pytest.approx(0.01, rel=0.5)


def test_registered_gp_learns_the_true_hyperparameters_of_gp_rbf_tasks():
    from genmodels import data, registry
    from genmodels.train import TrainConfig, fit

    train = data.load("gp-rbf")
    spec = registry.get("gp")
    model = spec.build(spec.make_config(), train.info)
    assert model.train_defaults["dtype"] == "float64"
    cfg = TrainConfig(progress=False, **dict(model.train_defaults, steps=200))
    fit(model, train, cfg)
    # the family's truth: lengthscale 0.4, variance 1, noise 0.01 (from lengthscale 1, noise 0.1)
    assert model.kernel.lengthscale.item() == pytest.approx(0.4, rel=0.1)
    assert model.kernel.variance.item() == pytest.approx(1.0, rel=0.2)
    assert model.noise.item() == pytest.approx(0.01, rel=0.2)
