"""The series data sets: ``spirals`` (torchdiffeq's latent ODE spirals) and
``spiral-chirality`` (torchcde's classification spirals), checked against their definitions."""

import math

import numpy as np
import pytest
import torch

from genmodels import data
from genmodels.config import ConfigError
from genmodels.data.series import spiral_curves


def test_spiral_curves_are_the_published_formulas():
    s, cw, cc = spiral_curves()
    assert s.shape == (1000,) and s[-1] == pytest.approx(6 * math.pi)
    z = 6 * math.pi + 1 - s
    # clockwise: radius 0.3 * 50 / z around (-5, 0); counter-clockwise: radius 0.3 s around (5, 0)
    np.testing.assert_allclose(np.hypot(cw[:, 0] + 5, cw[:, 1]), 15.0 / z, rtol=1e-12)
    np.testing.assert_allclose(np.hypot(cc[:, 0] - 5, cc[:, 1]), 0.3 * s, rtol=1e-12, atol=1e-12)

    # orientation: the cross product of successive steps around the centre
    def turn(p, c):
        q = p - np.asarray(c)
        return q[:-1, 0] * q[1:, 1] - q[:-1, 1] * q[1:, 0]

    assert (turn(cw, (-5, 0)) < 0).all() and (turn(cc[1:], (5, 0)) > 0).all()


def test_spirals_split_shapes_windows_and_noise():
    tr = data.load("spirals", n_obs=30, n_train=400, n_test=50)
    assert tr.info.kind == "series" and tr.info.event_shape == (2,)
    assert tr.times.shape == (400, 30, 1) and tr.values.shape == (400, 30, 2)
    assert tr.clean.shape == (400, 200, 2) and tr.grid.shape == (200,)
    assert int(tr.labels.sum()) == 200  # half of each direction
    dt = 6 * math.pi / 999
    k = tr.times[..., 0] / dt  # observed grid indices, irregular per series, among the first 100
    assert torch.allclose(k, k.round(), atol=1e-3) and k.max() < 99.5 and k.min() > -0.5
    assert (k[:, 1:] > k[:, :-1]).all()
    assert not torch.equal(k[0], k[1])
    # each window is 200 consecutive points of its spiral
    s, cw, cc = spiral_curves()
    for i in range(5):
        curve = torch.tensor(cw if tr.labels[i] else cc, dtype=torch.float32)
        start = int((curve - tr.clean[i, 0]).norm(dim=1).argmin())
        torch.testing.assert_close(tr.clean[i], curve[start : start + 200], atol=1e-5, rtol=0)
    # noise: values - clean at the observed times has std 0.1
    idx = k.round().long()
    at = tr.clean.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    resid = tr.values - at
    assert abs(float(resid.std()) - 0.1) < 0.005 and abs(float(resid.mean())) < 0.005


def test_spirals_options_and_fixed_splits():
    a = data.load("spirals", n_obs=50, noise=0.0, n_train=20, n_test=10)
    b = data.load("spirals", n_obs=50, noise=0.0, n_train=20, n_test=10)
    assert torch.equal(a.values, b.values)
    te = data.load("spirals", "test", n_obs=50, noise=0.0, n_train=20, n_test=10)
    assert len(te) == 10 and not torch.equal(te.clean[:10], a.clean[:10])
    idx = (a.times[..., 0] / (6 * math.pi / 999)).round().long()
    at = a.clean.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    torch.testing.assert_close(a.values, at, atol=1e-5, rtol=0)  # noise 0: on the curve
    batch = a.batch(4, torch.Generator().manual_seed(0))
    assert batch.times.shape == (4, 50, 1) and batch.mask.all()
    assert a.subset(slice(0, 3)).clean.shape == (3, 200, 2)
    with pytest.raises((ConfigError, ValueError), match="n_obs"):
        data.load("spirals", n_obs=1)
    with pytest.raises(ConfigError):
        data.load("spirals", nobs=30)


def test_chirality_definition_drop_and_labels():
    tr = data.load("spiral-chirality", drop=0.5, noise=0.0)
    x, y = tr.x, tr.y
    assert x.shape == (256, 100, 3) and y.dtype == torch.int64 and int(y.sum()) == 128
    assert tr.info.kind == "series" and tr.info.num_classes == 2
    t = x[..., 0]
    assert not torch.isnan(t).any()
    torch.testing.assert_close(t[0], torch.linspace(0, 4 * math.pi, 100), atol=1e-5, rtol=0)
    miss = torch.isnan(x[..., 1:])
    assert torch.equal(miss[..., 0], miss[..., 1])  # a dropped point loses both values
    assert (miss[..., 0].sum(1) == 50).all()
    assert miss[:, 0, 0].any() and miss[:, -1, 0].any()  # first and last points can be dropped
    # noise 0: radius 1 / (1 + t/2); label 1 turns clockwise
    r = torch.hypot(x[..., 1], x[..., 2])
    ok = ~miss[..., 0]
    torch.testing.assert_close(r[ok], (1 / (1 + t / 2))[ok], atol=1e-5, rtol=0)
    full = data.load("spiral-chirality", noise=0.0).x
    cross = full[:, :-1, 1] * full[:, 1:, 2] - full[:, :-1, 2] * full[:, 1:, 1]
    clockwise = (cross < 0).all(1)
    assert torch.equal(clockwise, data.load("spiral-chirality", noise=0.0).y == 1)


def test_chirality_noise_and_test_split():
    te = data.load("spiral-chirality", "test")  # defaults: drop 0, noise 0.3
    assert te.x.shape == (1000, 100, 3) and not torch.isnan(te.x).any()
    r = torch.hypot(te.x[..., 1], te.x[..., 2])
    clean = data.load("spiral-chirality", "test", noise=0.0).x
    resid = te.x[..., 1:] - clean[..., 1:]
    assert abs(float(resid.std()) - 0.3) < 0.01 and r.shape == (1000, 100)
    xb, yb = te.batch(8, torch.Generator().manual_seed(1))
    assert xb.shape == (8, 100, 3) and yb.shape == (8,)
    with pytest.raises((ConfigError, ValueError), match="drop"):
        data.load("spiral-chirality", drop=1.0)
