"""The meta-learning task families: their functions and their context/target protocol."""

import math

import numpy as np
import pytest
import torch

from genmodels import data
from genmodels.data.functions import gp_kernel_matrix

NDP = ("sine", "exp", "oscil", "linear", "lv")
GPS = ("gp-rbf", "gp-matern", "gp-periodic")


@pytest.mark.parametrize("name", NDP)
def test_ndp_families_protocol(name):
    d = data.load(name)
    o = d.info.options
    assert len(d) == 490 and len(data.load(name, "test")) == 100
    n = d._x.shape[1]
    ks, es = set(), set()
    for s in range(40):
        b = d.batch(6, torch.Generator().manual_seed(s))
        k, m = b.x_context.shape[1], b.x_target.shape[1]
        ks.add(k)
        es.add(m - k)
        assert o["context_min"] <= k <= o["context_max"]
        # the first time point is always in the context, and the targets start with the context
        assert torch.equal(b.x_context[:, 0], d._x[0, :1].expand(6, 1))
        assert torch.equal(b.x_target[:, :k], b.x_context)
        assert torch.equal(b.y_target[:, :k], b.y_context)
        # no point twice
        assert all(len(set(row.tolist())) == m for row in b.x_target[..., 0])
    assert min(es) >= o["extra_min"] and max(es) <= o["extra_max"] and len(es) > 2
    assert len(ks) > 3
    # evaluation: the whole series in order, context drawn deterministically
    e1, e2 = next(d.batches(8)), next(d.batches(8))
    assert e1.x_target.shape[1] == n
    assert torch.equal(e1.y_target, d._y[:8]) and all(torch.equal(u, v) for u, v in zip(e1, e2))
    assert torch.equal(e1.x_context[:, 0], d._x[:8, 0])


def test_ndp_family_closed_forms():
    t = data.load("sine")._x[0, :, 0].double()
    assert float(t[0]) == pytest.approx(-math.pi) and float(t[-1]) == pytest.approx(math.pi)
    for name, lo, hi in (("exp", -1, 4), ("oscil", 0, 5), ("linear", 0, 5)):
        x = data.load(name)._x[0, :, 0]
        assert float(x[0]) == pytest.approx(lo) and float(x[-1]) == pytest.approx(hi)
    # linear: constant slope a in [-1, 1], intercept b in [-0.5, 0.5]
    lin = data.load("linear")
    slope = (lin._y[:, 1:, 0] - lin._y[:, :-1, 0]) / (lin._x[:, 1:, 0] - lin._x[:, :-1, 0])
    assert float((slope - slope[:, :1]).abs().max()) < 1e-4
    assert float(slope.abs().max()) <= 1 and float(lin._y[:, 0].abs().max()) <= 0.5
    # oscil: y exp(t/2) is a sine of amplitude |a| <= 1
    osc = data.load("oscil")
    assert float((osc._y * torch.exp(osc._x / 2)).abs().max()) <= 1 + 1e-5
    # exp: log(y / (a/60)) - t is constant (= -b) along each function
    ex = data.load("exp")
    r = torch.log(ex._y.abs().double()) - ex._x.double()
    assert float((r - r[:, :1]).abs().max()) < 1e-5


def test_lotka_volterra_conserves_its_first_integral():
    lv = data.load("lv")
    u, v = lv._y[..., 0].double(), lv._y[..., 1].double()
    # V = δu - γ ln u + βv - α ln v is constant along a solution
    inv = u - torch.log(u) + 4 / 3 * v - 2 / 3 * torch.log(v)
    assert float((inv - inv[:, :1]).abs().max()) < 1e-5
    p = lv._y[:, 0, 1]
    assert torch.allclose(lv._y[:, 0, 0], 2 * p) and 0.25 <= float(p.min()) < float(p.max()) <= 1
    assert float(lv._x[0, -1, 0]) == pytest.approx(1.5)


@pytest.mark.parametrize("name", GPS)
def test_gp_families_are_draws_of_their_gp(name):
    d = data.load(name)
    o = data.options(name, {})
    x, y = d._x.double().numpy(), d._y.double().numpy()
    k = gp_kernel_matrix(o, x) + o.noise * np.eye(x.shape[1])
    z = np.linalg.solve(np.linalg.cholesky(k), y)  # whitened: i.i.d. N(0, 1)
    assert np.mean(z**2) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(z)) < 0.02
    b = d.batch(4, torch.Generator().manual_seed(0))
    assert 3 <= b.x_context.shape[1] <= 50 and b.x_target.shape[1] == b.x_context.shape[1] + 50


def test_family_options_checked():
    with pytest.raises(ValueError, match="extra"):
        data.load("sine", extra_max=95)
    with pytest.raises(ValueError, match="kernel"):
        data.load("gp-rbf", kernel="cosine")
    assert data.load("sine", t0=-4.0).info.options["t0"] == -4.0
