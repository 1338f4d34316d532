"""Generative (one flow per class) vs discriminative classifiers: Bayes' rule and the contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical

from genmodels.models import classifier  # noqa: F401  (registers the classifiers)
from genmodels.registry import DataInfo, get

INFO = DataInfo("blobs", "points", (2,), num_classes=3)
CENTERS = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])


def _blobs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=g)
    return CENTERS[y] + torch.randn(n, 2, generator=g), y


def _build(name: str, perturb: bool = False, **overrides):
    spec = get(name)
    torch.manual_seed(0)
    model = spec.build(spec.make_config(overrides), INFO)
    model.init_from_data(_blobs(1000)[0])
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                s = 0.5 / math.sqrt(p.shape[-1]) if p.ndim == 2 else 0.3
                p.add_(torch.randn(p.shape, generator=g) * s)
    return model


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["flow-classifier", "logreg", "mlp-classifier"])
def test_contract(name):
    model = _build(name, perturb=True)
    x, y = _blobs(40, seed=1)
    pred = model.predict(x)
    assert isinstance(pred, Categorical) and pred.probs.shape == (40, 3)
    torch.testing.assert_close(pred.probs.sum(1), torch.ones(40))
    loss = model.loss((x, y))
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(TypeError):
        model.loss(x)
    with pytest.raises(ValueError, match="int64"):
        model.loss((x, y.float()))


def test_generative_posterior_is_bayes_rule_and_marginal_is_the_mixture():
    model = _build("flow-classifier", perturb=True, transforms=2)
    x, _ = _blobs(30, seed=2)
    cond = torch.stack([f.log_prob(x) for f in model.flows], 1)  # log p(x|k)
    prior = torch.log_softmax(model.class_logits, 0)
    joint = cond + prior
    post = joint.exp() / joint.exp().sum(1, keepdim=True)
    torch.testing.assert_close(model.predict(x).probs, post)
    torch.testing.assert_close(model.log_prob(x), joint.exp().sum(1).log())


def test_generative_loss_is_the_joint_nll_and_classes_do_not_mix():
    model = _build("flow-classifier", perturb=True, transforms=2)
    x, y = _blobs(64, seed=3)
    y[y == 2] = 0  # class 2 absent from this batch
    joint = model.log_joint(x)
    expected = -joint[torch.arange(64), y].mean()
    loss = model.loss((x, y))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.flows[2].parameters())
    assert all(p.grad.abs().sum() > 0 for p in model.flows[0].parameters())


def test_generative_samples_follow_the_prior_and_the_class_flows():
    model = _build("flow-classifier", transforms=2)  # untrained flows: standardised Gaussians
    with torch.no_grad():
        model.class_logits.copy_(torch.tensor([0.0, math.log(3.0), -20.0]))
    x, y = model.sample(4000, generator=torch.Generator().manual_seed(0), return_labels=True)
    assert x.shape == (4000, 2) and y.dtype == torch.long
    frac1 = float((y == 1).float().mean())
    assert abs(frac1 - 0.75) < 0.03 and int((y == 2).sum()) == 0


@pytest.mark.parametrize("name", ["flow-classifier", "logreg", "mlp-classifier"])
def test_short_training_classifies_separable_blobs(name, one_thread):
    model = _build(name, transforms=2) if name == "flow-classifier" else _build(name)
    x, y = _blobs(2000)
    opt = torch.optim.Adam(model.parameters(), 1e-2 if name == "logreg" else 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        idx = torch.randint(2000, (256,), generator=g)
        loss = model.loss((x[idx], y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = _blobs(1000, seed=9)
    with torch.no_grad():
        acc = float((model.predict(xt).probs.argmax(1) == yt).float().mean())
    assert acc > 0.97, acc


def test_builders_need_labels():
    with pytest.raises(ValueError, match="num_classes"):
        get("logreg").build(get("logreg").config(), DataInfo("8gaussians", "points", (2,)))


class _Data:
    def __init__(self, x, y):
        self.x, self.y = x, y


def _gaussian_classifier():
    """A flow classifier whose class flows are exactly N(c_k, I): identity couplings after a
    standardisation set to (c_k, 1)."""
    model = _build("flow-classifier", transforms=2)
    with torch.no_grad():
        for k, f in enumerate(model.flows):
            f.standardize.loc.copy_(CENTERS[k])
            f.standardize.scale.fill_(1.0)
    return model


def test_integrating_out_a_coordinate_matches_the_closed_form(one_thread):
    from genmodels.evaluate.classification import predict_with_missing

    model = _gaussian_classifier()
    x, _ = _blobs(50, seed=4)
    train_x, _ = _blobs(5000, seed=5)
    for j in (0, 1):
        probs, method = predict_with_missing(model, x, j, train_x)
        keep = 1 - j
        # p(y=k | x_keep) ∝ N(x_keep; c_k,keep, 1) p(k), p(k) uniform here
        logits = -0.5 * (x[:, keep : keep + 1] - CENTERS[:, keep]) ** 2
        torch.testing.assert_close(probs, torch.softmax(logits, 1), atol=1e-4, rtol=0)
        assert method == "integrated"


def test_classifier_metrics_generative_vs_discriminative(one_thread):
    from genmodels.evaluate.classification import classifier_metrics, ood_points

    train, test = _Data(*_blobs(5000, seed=6)), _Data(*_blobs(2000, seed=7))
    ood = ood_points(train.x, test.x)
    assert len(ood) > 100 and torch.cdist(ood, train.x).min() > 1.0
    gen = classifier_metrics(
        _gaussian_classifier(), train, test, generator=torch.Generator(), max_missing=300
    )
    # Bayes-optimal on these blobs, p(x) separates far-away inputs perfectly.
    assert gen["accuracy"] > 0.97 and gen["auroc_ood"] > 0.99
    assert gen["missing_integrated"] == 1.0
    # Hiding x1 leaves classes 0 and 1 apart (x0 = -3 vs 3) but class 2 overlaps.
    assert 0.6 < gen["accuracy_missing_x1"] < gen["accuracy"]
    lr = _build("logreg")
    with torch.no_grad():  # the Bayes-optimal linear classifier for equal-covariance blobs
        lr.standardize.loc.zero_()
        lr.standardize.scale.fill_(1.0)
        lr.net.weight.copy_(CENTERS)
        lr.net.bias.copy_(-0.5 * (CENTERS**2).sum(1))
    disc = classifier_metrics(lr, train, test, generator=torch.Generator(), max_missing=300)
    torch.testing.assert_close(torch.tensor(disc["accuracy"]), torch.tensor(gen["accuracy"]))
    assert disc["missing_integrated"] == 0.0
    # Softmax confidence grows away from the data: max-prob cannot flag far-away inputs.
    assert disc["auroc_ood"] < 0.5 < gen["auroc_ood"]


@pytest.mark.parametrize("name", ["flow-classifier", "logreg", "mlp-classifier"])
def test_init_from_data_takes_x_or_the_labelled_batch(name):
    x, y = _blobs(500, seed=3)
    spec = get(name)
    a = spec.build(spec.make_config({}), INFO)
    b = spec.build(spec.make_config({}), INFO)
    a.init_from_data(x)
    b.init_from_data((x, y))
    sa, sb = a.state_dict(), b.state_dict()
    loc = [k for k in sa if k.endswith("loc")]
    assert loc and all(torch.equal(sa[k], x.mean(0)) for k in loc)
    assert all(torch.equal(sa[k], sb[k]) for k in loc)
    assert not hasattr(a, "uses_labels")


def test_a_bad_batch_says_how_to_get_labelled_data():
    model = _build("logreg")
    x, y = _blobs(8)
    hint = r"batch must be \(x, y\) with y int64 \(B,\); train on labelled data, e\.g\. "
    hint += r"genmodels\.data\.load\(name\)\.labelled\(\)"
    with pytest.raises(TypeError, match=hint):
        model.loss(x)
    with pytest.raises(ValueError, match=hint):
        model.loss((x, y.float()))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\), got \(8, 3\)"):
        model.loss((torch.zeros(8, 3), y))
