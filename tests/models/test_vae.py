"""The VAE: decoders are normalised, bounds sit below log p(x) computed by quadrature."""

import math
from types import SimpleNamespace

import pytest
import torch

from genmodels.evaluate.vae import histogram_bits_per_dim, vae_metrics
from genmodels.models.vae import VAE, VAEConfig, build_vae, discretised_logistic_log_prob
from genmodels.registry import DataInfo

DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(decoder="auto", levels=5, event=(1, 1, 2), latent=1, kind="images", **kw):
    torch.manual_seed(0)
    info = DataInfo("t", kind, event, None, levels if kind == "images" else None)
    cfg = VAEConfig(latent_dim=latent, width=16, depth=1, decoder=decoder, **kw)
    return VAE(cfg, info).to(DT).eval()


def all_images(levels, d):
    """Every image with d pixels and `levels` levels, as (levels**d, 1, 1, d) values."""
    k = torch.cartesian_prod(*[torch.arange(levels)] * d).reshape(-1, d)
    return (2 * k.to(DT) / (levels - 1) - 1).reshape(-1, 1, 1, d)


def test_discretised_logistic_is_a_normalised_cdf_difference():
    levels = 9
    k = torch.arange(levels)
    for mean, log_s in [(0.1, -1.0), (-0.9, -3.0), (0.95, 0.5), (0.0, -6.0)]:
        m, s = torch.full((levels,), mean, dtype=DT), torch.full((levels,), log_s, dtype=DT)
        lp = discretised_logistic_log_prob(k, m, s, levels)
        assert abs(float(lp.exp().sum()) - 1) < 1e-12
        # interior bins: the logistic CDF difference, computed naively
        x = 2 * k.to(DT) / (levels - 1) - 1
        h, sc = 1 / (levels - 1), math.exp(log_s)
        naive = torch.sigmoid((x + h - mean) / sc) - torch.sigmoid((x - h - mean) / sc)
        ok = naive[1:-1] > 1e-4  # where the naive difference is itself accurate
        torch.testing.assert_close(lp[1:-1][ok], naive[1:-1][ok].log(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "decoder,levels", [("categorical", 5), ("logistic", 5), ("logistic", 256), ("bernoulli", 2)]
)
def test_image_decoders_sum_to_one_over_all_images(decoder, levels):
    m = tiny(decoder, levels)
    x = all_images(levels, 2)
    z = torch.randn(3, 1, 1, generator=torch.Generator().manual_seed(0), dtype=DT)  # (S, 1, latent)
    lp = m.log_likelihood(x, z.expand(3, x.shape[0], 1))  # (3, levels**2)
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(3, dtype=DT), rtol=0, atol=1e-10)


def exact_log_px(m, x, n=4001):
    """log p(x) = log ∫ p(x|z) N(z; 0, 1) dz for a 1-d latent, by the trapezoid rule."""
    z = torch.linspace(-12, 12, n, dtype=DT)
    lp = m.log_likelihood(x, z[:, None, None].expand(n, x.shape[0], 1))  # (n, B)
    lp = lp + torch.distributions.Normal(0.0, 1.0).log_prob(z)[:, None].to(DT)
    w = torch.full((n,), z[1] - z[0], dtype=DT)
    w[0] = w[-1] = w[0] / 2
    return torch.logsumexp(lp + w.log()[:, None], 0)


@pytest.mark.parametrize("kind", ["images", "points"])
def test_bounds_sit_below_log_px_and_iwae_closes_the_gap(kind):
    if kind == "images":
        m = tiny("categorical", 5)
        x = all_images(5, 2)[::4]
    else:
        m = tiny(kind="points", event=(2,), latent=1)
        m.init_from_data(torch.randn(100, 2, dtype=DT) * 3 + 1)
        x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=DT) * 3 + 1
    with torch.no_grad():
        exact = exact_log_px(m, x)
        g = torch.Generator().manual_seed(0)
        elbo = m.elbo(x, n_samples=4000, generator=g)
        reps = torch.stack([m.iwae_bound(x, 10000, generator=g) for _ in range(10)])
    iwae_big, se = reps.mean(0), reps.std(0) / math.sqrt(10)
    assert (elbo < exact).all()
    assert (iwae_big <= exact + 3 * se).all()  # a bound in expectation
    assert ((exact - iwae_big).abs() < 0.03).all()
    assert ((exact - iwae_big).abs() < 0.2 * (exact - elbo)).all()
    assert ((exact - elbo) > 0.01).any()  # the untrained encoder leaves a real gap


def test_iwae_1_matches_the_elbo_in_expectation():
    m = tiny("categorical", 5)
    x = all_images(5, 2)[:3]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        reps = torch.stack([m.iwae_bound(x, 1, generator=g) for _ in range(400)])
        elbo = m.elbo(x, n_samples=5000, generator=g)
    se = reps.std(0) / math.sqrt(400)
    assert ((reps.mean(0) - elbo).abs() < 4 * se + 1e-3).all()


def test_nll_bound_is_in_continuous_coordinates():
    m = tiny("categorical", 17, event=(1, 2, 2), latent=2)
    x = all_images(17, 4)[::997].reshape(-1, 1, 2, 2)
    a = m.nll_bound(x, generator=torch.Generator().manual_seed(3))
    b = -m.elbo(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b + 4 * math.log(2 / 16))
    # bits/dim of the discrete data: NLL/(D ln 2) - log2(bin width) = -log2 P / D
    torch.testing.assert_close(a / (4 * math.log(2)) - math.log2(2 / 16), b / (4 * math.log(2)))


def test_loss_sample_reconstruct():
    info = DataInfo("digits", "images", (1, 8, 8), 10, 17)
    m = build_vae(VAEConfig(width=32, train_k=4), info)
    g = torch.Generator().manual_seed(0)
    x = m.sample(5, generator=g)
    assert x.shape == (5, 1, 8, 8)
    levels = (x + 1) * 8
    torch.testing.assert_close(levels, levels.round())  # on the data's grid
    loss = m.loss(x, generator=g)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in m.parameters())
    assert m.reconstruct(x).shape == x.shape
    assert m.sample(3, mean=True, generator=g).abs().max() <= 1


def test_logistic_mixture_samples_lie_on_the_grid():
    m = tiny("logistic", 256, event=(1, 3, 3), latent=2)
    assert m.config.mixtures == 5
    x = m.sample(6, generator=torch.Generator().manual_seed(0))
    k = (x + 1) * 127.5
    torch.testing.assert_close(k, k.round())
    assert torch.isfinite(m.loss(x, generator=torch.Generator().manual_seed(0)))


def test_points_gaussian_decoder_in_data_coordinates():
    m = tiny(kind="points", event=(2,), latent=2)
    m.init_from_data(torch.randn(50, 2, dtype=DT) * torch.tensor([2.0, 0.5], dtype=DT))
    x = torch.randn(4, 2, dtype=DT)
    z = torch.randn(4, 2, dtype=DT)
    mu, pre = m.decoder(z).chunk(2, -1)
    sd = torch.nn.functional.softplus(pre) + 1e-3
    want = torch.distributions.Normal(mu * m.scale + m.shift, sd * m.scale).log_prob(x).sum(-1)
    torch.testing.assert_close(m.log_likelihood(x, z), want)
    assert m.sample(7, generator=torch.Generator().manual_seed(0)).shape == (7, 2)


def test_histogram_baseline_matches_hand_count():
    tr = torch.tensor([[-1.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])  # 2 pixels, 3 levels
    te = torch.tensor([[-1.0, 0.0]])
    # pixel 0: level 0 seen 2/3 -> (2+1)/(3+3); pixel 1: level 1 seen 2/3 -> 3/6
    want = -(math.log2(3 / 6) + math.log2(3 / 6)) / 2
    assert abs(histogram_bits_per_dim(tr, te, 3) - want) < 1e-12


def test_vae_metrics_keys_and_order():
    info = DataInfo("digits", "images", (1, 8, 8), 10, 17)
    torch.manual_seed(0)
    m = build_vae(VAEConfig(width=16), info)
    g = torch.Generator().manual_seed(0)
    x = m.sample(40, generator=g)
    data = SimpleNamespace(x=x, info=info)
    out = vae_metrics(m, data, data, generator=g)
    assert set(out) == {
        "elbo_nats",
        "elbo_bits_per_dim",
        "iwae64_bits_per_dim",
        "iwae512_bits_per_dim",
        "histogram_bits_per_dim",
    }
    assert out["elbo_bits_per_dim"] >= out["iwae64_bits_per_dim"] >= out["iwae512_bits_per_dim"]
    assert abs(out["elbo_nats"] / (64 * math.log(2)) - out["elbo_bits_per_dim"]) < 1e-9


def test_bad_input():
    info = DataInfo("digits", "images", (1, 8, 8), 10, 17)
    m = build_vae(VAEConfig(width=8), info)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 8, 8\), got \(3, 64\)"):
        m.loss(torch.zeros(3, 64))
    with pytest.raises(ValueError, match="bernoulli"):
        build_vae(VAEConfig(decoder="bernoulli"), info)
    with pytest.raises(ValueError, match="decoder"):
        build_vae(VAEConfig(decoder="poisson"), info)
    with pytest.raises(ValueError, match="discrete"):
        build_vae(VAEConfig(decoder="categorical"), DataInfo("moons", "points", (2,)))
    with pytest.raises(ValueError, match="k must be"):
        m.iwae_bound(torch.zeros(2, 1, 8, 8), 0)


def test_cli_train_load_evaluate_round_trip(tmp_path):
    from genmodels import cli
    from genmodels.evaluate import evaluate_run
    from genmodels.train.checkpoint import load_run

    out = tmp_path / "run"
    argv = [
        "train",
        "vae",
        "--data",
        "digits",
        "--steps",
        "30",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "width=32",
        "--set",
        "val_every=10",
    ]
    assert cli.main(argv) == 0
    model = load_run(out)
    assert model.decoder_kind == "categorical" and model.latent_dim == 16
    m = evaluate_run(out, n=50)
    # the evaluator's bound in bits/dim is the discrete -log2 P(x)/D of the ELBO
    assert 0 < m["bits_per_dim_bound"] < math.log2(17) + 1
