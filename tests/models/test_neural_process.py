"""CNP and NP: shapes, permutation invariance, the ELBO bound, and learning sine tasks."""

import math

import pytest
import torch

from genmodels import data, registry
from genmodels.data import Tasks
from genmodels.evaluate.process import process_metrics
from genmodels.models.neural_process import CNP, NP, mixture_log_prob
from genmodels.train import TrainConfig, fit


def _tasks(b=3, nc=6, nt=9, dy=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    xc, xt = torch.randn(b, nc, 1, generator=g), torch.randn(b, nt, 1, generator=g)
    return xc, torch.sin(xc).repeat(1, 1, dy), xt, torch.sin(xt).repeat(1, 1, dy)


@pytest.mark.parametrize("cls", [CNP, NP])
def test_shapes_batch_and_samples(cls):
    torch.manual_seed(0)
    m = cls(1, 2)
    xc, yc, xt, _ = _tasks(dy=2)
    p = m.predict(xc, yc, xt)
    assert p.mean.shape == (3, 9, 2) and p.stddev.min().item() >= 0.1
    p1 = m.predict(xc[0], yc[0], xt[0])
    torch.testing.assert_close(p1.mean, p.mean[0])
    pk = m.predict(xc, yc, xt, n_samples=4, generator=torch.Generator().manual_seed(0))
    assert pk.mean.shape == (4, 3, 9, 2)
    assert mixture_log_prob(pk, torch.zeros(3, 9, 2)).shape == (3,)
    with pytest.raises(ValueError, match="at least one context point"):
        m.predict(xc[:, :0], yc[:, :0], xt)
    with pytest.raises(ValueError, match="y_context"):
        m.predict(xc, yc[..., :1], xt)
    with pytest.raises(ValueError, match="context length"):
        m.predict(xc, yc[:, :4], xt)


@pytest.mark.parametrize("cls", [CNP, NP])
def test_context_permutation_invariance(cls):
    torch.manual_seed(1)
    m = cls(1, 1)
    xc, yc, xt, _ = _tasks()
    perm = torch.randperm(xc.shape[1])
    a, b = m.predict(xc, yc, xt), m.predict(xc[:, perm], yc[:, perm], xt)
    torch.testing.assert_close(a.mean, b.mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.stddev, b.stddev, atol=1e-6, rtol=1e-5)
    # and a different context changes the prediction (the test could fail)
    c = m.predict(xc, -yc, xt)
    assert float((a.mean - c.mean).abs().max()) > 1e-4


def test_np_elbo_is_below_the_log_likelihood():
    torch.manual_seed(2)
    m = NP(1, 1, z_dim=4).double()
    xc, yc, xt, yt = (t.double() for t in _tasks(b=2))
    batch = Tasks(xc, yc, xt, yt)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = m.elbo(batch, generator=g, n_samples=4000)
        # log p(y_T | C) = log E_{q(z|C)} p(y_T | z), by importance sampling from q(z | C ∪ T):
        # IWAE bounds increase with K towards it
        q_ct, q_c = m.q_latent(xt, yt), m.q_latent(xc, yc)

        def iwae(k):
            z = q_ct.sample((k,))
            mu, sd = m._decode_latent(xc, yc, xt, z)
            lw = torch.distributions.Normal(mu, sd).log_prob(yt).sum((-2, -1))
            lw = lw + q_c.log_prob(z).sum(-1) - q_ct.log_prob(z).sum(-1)
            return torch.logsumexp(lw, 0) - math.log(k)

        torch.manual_seed(3)
        i1, i1000 = iwae(1).mean(), iwae(20000)
    assert bool((elbo <= i1000 + 1e-3).all())
    assert float(i1000.mean()) >= float(elbo.mean())
    # the KL term is the gap's known part: the single-sample IWAE is an unbiased ELBO draw
    assert float(i1) == pytest.approx(float(elbo.mean()), abs=2.0)


@pytest.mark.parametrize("name", ["cnp", "np"])
def test_short_training_beats_the_context_mean_baseline_on_sine(name):
    torch.manual_seed(0)
    train = data.load("sine")
    test = data.load("sine", "test")
    model = registry.get(name).build(registry.get(name).make_config(), train.info)
    before = process_metrics(model, test.batches(100))
    fit(model, train, TrainConfig(steps=600, batch_size=16, progress=False, seed=0))
    after = process_metrics(model, test.batches(100))
    assert after["target_ll_nats"] > after["baseline_target_ll_nats"] + 0.3
    assert after["target_mse"] < after["baseline_target_mse"]
    assert after["target_ll_nats"] > before["target_ll_nats"] + 0.3
