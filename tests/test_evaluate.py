"""evaluate: dispatch on the declared task; ECE; process metrics; density bound and exact NLL."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from genmodels import data, registry
from genmodels.data.batches import Tasks
from genmodels.evaluate import (
    TASKS,
    context_mean_baseline,
    evaluate_model,
    expected_calibration_error,
    process_metrics,
)
from genmodels.evaluate import images as img
from genmodels.evaluate import run as ev

# ---------------------------------------------------------------- dispatch


def test_evaluate_model_refuses_an_unknown_task_and_series_metrics_need_clean_curves():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"task must be one of 'density', 'classifier'.*'nope'"):
        evaluate_model(model, "moons", task="nope")
    with pytest.raises(ValueError, match="noise-free curves"):
        evaluate_model(model, "moons", task="series")


def test_every_registered_model_has_a_task_evaluate_knows():
    for name in registry.names():
        assert registry.get(name).task in TASKS
    assert registry.get("logreg").task == "classifier" and registry.get("vae").task == "density"
    assert set(TASKS) == set(registry.TASKS)  # evaluate covers every task a model may declare


# ---------------------------------------------------------------- classifier: ECE


def test_ece_hand_computed_pools_within_a_bin():
    probs = torch.tensor(
        [
            [0.95, 0.03, 0.02],  # conf 0.95, correct    } both in bin (14/15, 1]:
            [0.02, 0.96, 0.02],  # conf 0.96, wrong      } acc 0.5, conf 0.955
            [0.50, 0.30, 0.20],  # conf 0.50, correct: bin (7/15, 8/15]
            [0.20, 0.35, 0.45],  # conf 0.45, wrong:   bin (6/15, 7/15]
        ],
        dtype=torch.float64,
    )
    y = torch.tensor([0, 0, 0, 1])
    # (2 |0.5 - 0.955| + |1 - 0.5| + |0 - 0.45|) / 4; unpooled it would be 0.49
    assert expected_calibration_error(probs, y) == pytest.approx(0.465, abs=1e-9)
    # one bin: |accuracy - mean confidence| = |0.5 - 0.715|
    assert expected_calibration_error(probs, y, bins=1) == pytest.approx(0.215, abs=1e-9)
    with pytest.raises(ValueError, match="probs must be"):
        expected_calibration_error(probs[:, 0], y)


def _binary_predictor(n, shift, seed):
    """Confidence c ~ U(0.5, 1) on a random class; the prediction is right w.p. c - shift."""
    g = torch.Generator().manual_seed(seed)
    c = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)
    k = torch.randint(0, 2, (n,), generator=g)
    probs = torch.stack([c, 1 - c], 1)
    probs[k == 1] = probs[k == 1].flip(1)
    right = torch.rand(n, generator=g, dtype=torch.float64) < c - shift
    return probs, torch.where(right, k, 1 - k)


def test_ece_of_a_calibrated_predictor_is_sampling_noise_and_overconfidence_shows():
    # 200k predictions over ~7.5 bins: each bin's accuracy has sd ~ 0.003, so ECE ~ 0.0025
    probs, y = _binary_predictor(200_000, 0.0, seed=0)
    assert expected_calibration_error(probs, y) < 0.008
    # claiming 0.1 more confidence than is earned: ECE = 0.1 up to the same noise
    probs, y = _binary_predictor(200_000, 0.1, seed=1)
    assert expected_calibration_error(probs, y) == pytest.approx(0.1, abs=0.008)


# ---------------------------------------------------------------- classifier: any input


class NearestMeanImages(nn.Module):
    """p(y|x) ∝ exp(-||x - m_y||² / tau): a classifier of (n, 1, 8, 8) digit images."""

    def __init__(self, x, y, tau=8.0):
        super().__init__()
        self.register_buffer("means", torch.stack([x[y == k].mean(0) for k in range(10)]))
        self.tau = tau

    def predict(self, x):
        d2 = ((x[:, None] - self.means[None]) ** 2).flatten(2).sum(-1)
        return Categorical(logits=-d2 / self.tau)


def test_a_classifier_of_images_gets_accuracy_nll_and_ece_but_no_point_diagnostics():
    train, test = data.load("digits"), data.load("digits", "test")
    model = NearestMeanImages(train.x, train.y)
    m = evaluate_model(model, "digits", task="classifier")
    probs = model.predict(test.x).probs.double()
    acc = float((probs.argmax(1) == test.y).double().mean())
    assert m["accuracy"] == pytest.approx(acc, abs=1e-6) and m["accuracy"] > 0.8
    nll = float(-probs[torch.arange(len(test.y)), test.y].log().mean())
    assert m["nll_nats"] == pytest.approx(nll, rel=1e-4)
    assert m["ece"] == pytest.approx(expected_calibration_error(probs, test.y), abs=1e-5)
    assert 0 < m["ece"] < 1
    assert not any(k.startswith(("auroc", "ood", "accuracy_missing", "missing")) for k in m)


def test_a_classifier_of_points_also_gets_ood_and_missing_coordinates():
    model = registry.get("logreg").build(
        registry.get("logreg").make_config(), data.load("moons").info
    )
    m = evaluate_model(model, "moons", task="classifier")
    for key in ("accuracy", "nll_nats", "ece", "auroc_ood", "accuracy_missing_x1"):
        assert math.isfinite(m[key])
    assert "mmd2" not in m and "nll_bound_nats" not in m


# ---------------------------------------------------------------- density: exact and bound


class GaussDensity(nn.Module):
    """N(0, I) on 2-D points or images, with a bound ``gap`` nats above the exact NLL."""

    def __init__(self, event_shape, gap=0.5):
        super().__init__()
        self.event_shape, self.gap = tuple(event_shape), gap
        self.dummy = nn.Parameter(torch.zeros(()))

    def sample(self, n, *, generator=None):
        return torch.randn(n, *self.event_shape, generator=generator)

    def log_prob(self, x):
        return Normal(0.0, 1.0).log_prob(x.double()).flatten(1).sum(1)

    def nll_bound(self, x, *, generator=None):
        return -self.log_prob(x) + self.gap


def test_a_density_model_with_both_likelihood_and_bound_reports_both(monkeypatch):
    from genmodels.evaluate import density

    # the sample distances are tested in test_metrics.py; here only what reaches them
    monkeypatch.setattr(density, "sample_metrics", lambda s, t, f: {"swd_floor": len(s)})
    m = evaluate_model(GaussDensity((2,)), "moons", task="density", n=300)
    test = data.load("moons", "test")
    exact = float(-Normal(0.0, 1.0).log_prob(test.x.double()).sum(1).mean())
    assert m["nll_nats"] == pytest.approx(exact, rel=1e-9)
    assert m["nll_bound_nats"] - m["nll_nats"] == pytest.approx(0.5, abs=1e-9)
    gap_bits = 0.5 / (2 * math.log(2))
    assert m["bits_per_dim_bound"] - m["bits_per_dim"] == pytest.approx(gap_bits, abs=1e-9)
    assert m["bound_n"] == len(test) and m["eval_n"] == m["swd_floor"] == 300


def test_test_n_and_nll_n_evaluate_seeded_subsets_of_the_test_split(monkeypatch):
    from genmodels.evaluate import density

    seen = {}

    def fake(s, t, f):
        seen["test"] = t
        return {}

    monkeypatch.setattr(density, "sample_metrics", fake)
    test = data.load("moons", "test")
    m = evaluate_model(GaussDensity((2,)), "moons", task="density", n=50, test_n=300, nll_n=40)
    sub = density.test_subset(test, 300, 0)
    assert m["test_n"] == 300 and m["nll_n"] == 40 and m["bound_n"] == 300
    assert torch.equal(seen["test"], sub.x)  # the distances compare against the subset
    again = density.test_subset(test, 300, 0)
    other = density.test_subset(test, 300, 1)
    assert torch.equal(again.x, sub.x) and not torch.equal(other.x, sub.x)
    # the exact NLL on 40 of those 300 points, the bound on all 300 (closed forms)
    g = torch.Generator().manual_seed(0 + 3)
    x40 = sub.x[torch.randperm(300, generator=g)[:40]].double()
    assert m["nll_nats"] == pytest.approx(float(-Normal(0.0, 1.0).log_prob(x40).sum(1).mean()))
    exact300 = float(-Normal(0.0, 1.0).log_prob(sub.x.double()).sum(1).mean())
    assert m["nll_bound_nats"] == pytest.approx(exact300 + 0.5)
    none = evaluate_model(GaussDensity((2,)), "moons", task="density", n=50, test_n=100, nll_n=0)
    assert "nll_nats" not in none and none["test_n"] == 100 and "nll_bound_nats" in none
    with pytest.raises(ValueError, match="test_n"):
        evaluate_model(GaussDensity((2,)), "moons", task="density", n=50, test_n=1)
    spec = registry.get("logreg")
    clf = spec.build(spec.make_config(), test.info)
    c = evaluate_model(clf, "moons", task="classifier", test_n=200)
    sub = density.test_subset(test.labelled(), 200, 0)
    x, y = sub.x, sub.y
    acc = float((clf.predict(x).probs.argmax(1) == y).double().mean())
    assert c["test_n"] == 200 and c["accuracy"] == pytest.approx(acc, abs=1e-6)


def test_an_image_flow_on_quantised_images_reports_the_bound_only(monkeypatch):
    # log_prob at the stored grid values is a density at points, not a discrete likelihood
    monkeypatch.setattr(img, "image_metrics", lambda *a, **k: {})
    m = evaluate_model(GaussDensity((1, 8, 8)), "digits", task="density")
    assert "nll_bound_nats" in m and "bits_per_dim_bound" in m
    assert "nll_nats" not in m and "bits_per_dim" not in m


# ---------------------------------------------------------------- process


def f_true(x):
    return torch.sin(3 * x)


class TrueFunction(nn.Module):
    """Predicts the true function with the true observation noise ``sigma``."""

    def __init__(self, sigma, shape_bug=False):
        super().__init__()
        self.sigma, self.shape_bug = sigma, shape_bug

    def predict(self, x_context, y_context, x_target):
        mu = f_true(x_target)
        if self.shape_bug:
            mu = mu[..., 0]  # (B, nt) instead of (B, nt, 1)
        return Normal(mu, torch.full_like(mu, self.sigma))


def _tasks(b, nc, nt, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    xc = 4 * torch.rand(b, nc, 1, generator=g, dtype=torch.float64) - 2
    xt = 4 * torch.rand(b, nt, 1, generator=g, dtype=torch.float64) - 2
    yc = f_true(xc) + sigma * torch.randn(xc.shape, generator=g, dtype=torch.float64)
    yt = f_true(xt) + sigma * torch.randn(xt.shape, generator=g, dtype=torch.float64)
    return Tasks(xc, yc, xt, yt)


def test_process_target_ll_is_the_gaussian_closed_form():
    sigma = 0.2
    batch = _tasks(64, 10, 50, sigma, seed=0)
    m = process_metrics(TrueFunction(sigma), [batch])
    mse = float(((batch.y_target - f_true(batch.x_target)) ** 2).mean())
    closed = -0.5 * math.log(2 * math.pi * sigma**2) - 0.5 * mse / sigma**2
    assert m["target_ll_nats"] == pytest.approx(closed, rel=1e-6)
    assert m["target_mse"] == pytest.approx(mse, rel=1e-6)
    # and with E[(y - f)^2] = sigma^2 over 3200 values (sd of the mean of chi²/2: 0.0125)
    expected = -0.5 * math.log(2 * math.pi * sigma**2) - 0.5
    assert m["target_ll_nats"] == pytest.approx(expected, abs=0.05)
    assert m["target_mse"] == pytest.approx(sigma**2, rel=0.1)
    assert m["n_tasks"] == 64
    # the truth beats the context mean
    assert m["target_ll_nats"] > m["baseline_target_ll_nats"] + 0.5
    assert m["target_mse"] < m["baseline_target_mse"] / 5
    # batches of different sizes combine by values, exactly as one batch
    parts = [Tasks(*(t[:20] for t in batch)), Tasks(*(t[20:] for t in batch))]
    m2 = process_metrics(TrueFunction(sigma), parts)
    for k in m:
        assert m2[k] == pytest.approx(m[k], rel=1e-9)


def test_context_mean_baseline_by_hand_and_its_floor():
    one = Tasks(
        torch.zeros(1, 2, 1),
        torch.tensor([[[1.0], [3.0]]]),  # mean 2, std (1/n) 1
        torch.zeros(1, 2, 1),
        torch.tensor([[[2.0], [4.0]]]),
    )

    class Zero(nn.Module):
        def predict(self, xc, yc, xt):
            return Normal(torch.zeros_like(xt), torch.ones_like(xt))

    m = process_metrics(Zero(), [one])
    # log N(2; 2, 1), log N(4; 2, 1): -½ log 2π - {0, 2}
    assert m["baseline_target_ll_nats"] == pytest.approx(-0.5 * math.log(2 * math.pi) - 1, abs=1e-6)
    assert m["baseline_target_mse"] == pytest.approx(2.0, abs=1e-6)
    assert m["target_mse"] == pytest.approx(10.0, abs=1e-6)  # (4 + 16) / 2
    # one context point: the std is floored (0.01 by default)
    d = context_mean_baseline(torch.tensor([[[5.0]]]))
    assert float(d.mean) == 5.0 and float(d.stddev) == pytest.approx(0.01)
    assert float(context_mean_baseline(torch.tensor([[[5.0]]]), std_floor=0.3).stddev) == (
        pytest.approx(0.3)
    )
    with pytest.raises(ValueError, match="n_context >= 1"):
        context_mean_baseline(torch.zeros(2, 0, 1))


def test_process_metrics_names_the_shapes_when_predict_is_wrong():
    batch = _tasks(4, 3, 5, 0.1, seed=1)
    with pytest.raises(ValueError, match=r"mean \(4, 5\).*y_target's shape \(4, 5, 1\)"):
        process_metrics(TrueFunction(0.1, shape_bug=True), [batch])

    class NotNormal(nn.Module):
        def predict(self, xc, yc, xt):
            return Categorical(logits=xt)

    with pytest.raises(TypeError, match="Normal"):
        process_metrics(NotNormal(), [batch])
    bad = batch._replace(y_target=batch.y_target[:, :4])
    with pytest.raises(ValueError, match="x_target \\(B, nt, dx\\)"):
        process_metrics(TrueFunction(0.1), [bad])
    with pytest.raises(ValueError, match="no target values"):
        process_metrics(TrueFunction(0.1), [])


def test_evaluate_model_scores_a_process_on_the_test_splits_batches(monkeypatch):
    sigma, seen = 0.1, []

    class FakeSplit:
        def batches(self, size):
            seen.append(size)
            yield from (_tasks(size, 5, 20, sigma, seed=s) for s in (3, 4))

    monkeypatch.setattr(ev.data_mod, "load", lambda name, split="train": FakeSplit())
    m = evaluate_model(TrueFunction(sigma), "some-tasks", task="process")
    assert seen == [256] and m["n_tasks"] == 512 and m["data"] == "some-tasks"
    assert m["target_mse"] == pytest.approx(sigma**2, rel=0.05)
