"""Neural CDE and the GRU-Δt baseline: shapes, NaN handling, agreement with torchcde on the same
field and spline, bad input, and a short run that separates the spirals' chirality."""

import math
import warnings

import pytest
import torch

from genmodels import data, registry
from genmodels.models.neural_cde import GRUClassifier, NeuralCDE, _forward_fill

NAN = float("nan")


def _inputs(b=5, length=12, c=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, 1 + c, generator=g, dtype=dtype)
    x[..., 0] = torch.linspace(0.0, 3.0, length, dtype=dtype)
    return x


@pytest.mark.parametrize("cls", [NeuralCDE, GRUClassifier])
def test_shapes_and_nan_anywhere(cls):
    torch.manual_seed(0)
    model = cls(2, 8, 3).double()
    x = _inputs()
    x[0, 0, 1:] = NAN  # first point missing
    x[1, -1, 1:] = NAN  # last point missing
    x[2, :, 2] = NAN  # an all-NaN channel
    x[3, 4:7, 1] = NAN  # an interior gap in one channel
    p = model.predict(x)
    assert p.probs.shape == (5, 3) and torch.isfinite(p.logits).all()
    loss = model.loss((x, torch.tensor([0, 1, 2, 0, 1])))
    loss.backward()
    assert torch.isfinite(loss) and all(
        torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None
    )


def test_an_all_nan_channel_is_a_constant_path():
    """A channel never observed drives nothing: its values may be anything else."""
    torch.manual_seed(1)
    model = NeuralCDE(2, 8, 2, intensity=False).double()
    x = _inputs()
    x[:, :, 2] = NAN
    y = x.clone()
    y[:, :, 2] = 0.0  # the constant 0 path: the same dX = 0
    torch.testing.assert_close(model.logits(x), model.logits(y), rtol=0, atol=1e-12)


def test_missing_point_is_the_spline_of_the_others():
    """Dropping a point that lies on a straight line changes nothing: the natural spline
    through the remaining (collinear) points is that line."""
    torch.manual_seed(2)
    model = NeuralCDE(1, 8, 2, intensity=False).double()
    x = _inputs(b=2, c=1)
    x[..., 1] = 0.5 + 2.0 * x[..., 0]
    y = x.clone()
    y[:, 5, 1] = NAN
    torch.testing.assert_close(model.logits(x), model.logits(y), rtol=0, atol=1e-10)


def test_cde_solve_agrees_with_torchcde():
    torchcde = pytest.importorskip("torchcde")
    torch.manual_seed(3)
    model = NeuralCDE(2, 6, 2, intensity=False).double()
    x = _inputs(b=4, length=15, seed=3)
    x[0, [0, 3, 4], 1:] = NAN
    x[1, -2:, 2] = NAN
    x[2, :, 1] = NAN
    t = x[0, :, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
        z0 = model.initial(X.evaluate(X.interval[0]))
        h = float(t[1] - t[0])
        ref = torchcde.cdeint(
            X, model.field, z0, X.interval, method="rk4", options=dict(step_size=h)
        )[:, -1]
    torch.testing.assert_close(model.features(x), ref, rtol=0, atol=1e-10)


def test_rows_at_different_times():
    """Rows at different times are splined over the knot index; for a row at equally spaced
    times that is an affine change of the spline's parameter, under which the natural cubic
    spline and the CDE's solution are unchanged: the row predicts as it does alone."""
    torch.manual_seed(4)
    model = NeuralCDE(2, 8, 2).double()
    x = _inputs(b=3)
    x[1, :, 0] = torch.linspace(1.0, 20.0, 12, dtype=torch.float64)
    x[2, :, 0] = torch.cumsum(torch.rand(12, dtype=torch.float64) + 0.1, 0)
    x[0, 4, 1:] = NAN
    mixed = model.logits(x)
    assert mixed.shape == (3, 2) and torch.isfinite(mixed).all()
    alone = torch.cat([model.logits(x[:1]), model.logits(x[1:2])])
    torch.testing.assert_close(mixed[:2], alone, rtol=0, atol=1e-10)


def test_bad_input_names_the_argument():
    model = NeuralCDE(2, 8, 2)
    x = _inputs(dtype=torch.float32)
    bad = x.clone()
    bad[1, 3, 0] = bad[1, 2, 0]
    with pytest.raises(ValueError, match="increase within each row; row 1"):
        model.predict(bad)
    bad = x.clone()
    bad[2, :, 1:] = NAN
    with pytest.raises(ValueError, match="series 2 has no observed value"):
        model.predict(bad)
    with pytest.raises(ValueError, match=r"\(B, L >= 2, 1 \+ 2\)"):
        model.predict(x[..., :2])
    with pytest.raises(ValueError, match="labels"):
        model.loss((x, torch.zeros(4, dtype=torch.long)))


def test_forward_fill():
    v = torch.tensor([[[NAN], [1.0], [NAN], [3.0], [NAN]]])
    filled, mask = _forward_fill(v)
    assert filled.flatten().tolist() == [1.0, 1.0, 1.0, 3.0, 3.0]
    assert mask.flatten().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_registered_cde_separates_the_classes_at_low_noise():
    """A short run (60 steps of 32, 30% of the points dropped, noise 0.01) classifies the
    chirality of held-out spirals far above chance (the benchmark's 240 steps reach 100%)."""
    from genmodels.train import TrainConfig, fit

    opts = dict(noise=0.01, drop=0.3, n_test=200)
    tr = data.load("spiral-chirality", **opts)
    spec = registry.get("neural-cde")
    assert spec.task == "classifier" and spec.default_data == "spiral-chirality"
    torch.manual_seed(0)
    model = spec.build(spec.make_config({"hidden_channels": 8}), tr.info)
    assert model.train_defaults["steps"] == 240 and model.train_defaults["batch_size"] == 32
    fit(model, tr, TrainConfig(steps=60, batch_size=32, grad_clip=1.0, progress=False))
    te = data.load("spiral-chirality", "test", **opts)
    acc = float((model.predict(te.x).probs.argmax(1) == te.y).float().mean())
    assert acc > 0.9, acc
    assert math.isfinite(float(model.loss((te.x, te.y)).detach()))


def test_observational_intensity_channels():
    """``intensity=True`` appends each value channel's count of observations so far over the
    number of points (Kidger et al. 2020, §3.5): the same as a plain CDE fed those counts as
    extra channels (counted here point by point), and a dropped point now changes the path
    even where the spline would fill it in exactly."""
    torch.manual_seed(4)
    model = NeuralCDE(2, 8, 2, intensity=True).double()
    x = _inputs()
    x[0, 0, 1:] = NAN
    x[1, 3:6, 1] = NAN
    x[2, :, 2] = NAN
    counts = torch.zeros(5, 12, 2, dtype=torch.float64)
    for b in range(5):
        for c in range(2):
            seen = 0
            for i in range(12):
                seen += int(not math.isnan(float(x[b, i, 1 + c])))
                counts[b, i, c] = seen / 12
    plain = NeuralCDE(4, 8, 2, intensity=False).double()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        model.logits(x), plain.logits(torch.cat([x, counts], -1)), rtol=0, atol=1e-12
    )
    # a point on a straight line: without the count its removal is invisible
    line = _inputs(b=1, c=1)
    line[..., 1] = 0.5 + 2.0 * line[..., 0]
    gap = line.clone()
    gap[:, 5, 1] = NAN
    counted = NeuralCDE(1, 8, 2, intensity=True).double()
    with torch.no_grad():
        assert float((counted.logits(line) - counted.logits(gap)).abs().max()) > 1e-6
    spec = registry.get("neural-cde")
    info = data.load("spiral-chirality", n_train=8, n_test=8).info
    cfg = spec.make_config()
    assert spec.build(cfg, info).intensity == cfg.intensity
