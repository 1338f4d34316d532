import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from genmodels import data

TOYS = [
    "swissroll",
    "circles",
    "rings",
    "moons",
    "8gaussians",
    "pinwheel",
    "2spirals",
    "checkerboard",
]


def test_the_issue_names_every_toy():
    assert data.names()[: len(TOYS)] == TOYS


@pytest.mark.parametrize("name", TOYS)
def test_toy_pools_shapes_and_determinism(name):
    tr, te = data.load(name), data.load(name, "test")
    assert tr.x.shape == (100_000, 2) and te.x.shape == (10_000, 2)
    assert tr.x.dtype == torch.float32 and torch.isfinite(tr.x).all()
    assert tr.info.kind == "points" and tr.info.event_shape == (2,)
    data._load_cached.cache_clear()
    again = data.load(name)
    assert torch.equal(again.x, tr.x)  # drawn from a fixed seed
    assert not torch.equal(tr.x[:10_000], te.x)  # test set is a separate draw
    if tr.y is not None:
        assert tr.y.dtype == torch.int64 and tr.y.shape == (100_000,)
        # pools are in random order: labels are mixed in any prefix
        assert len(torch.unique(tr.y[:200])) == tr.info.num_classes


def test_ffjord_definitions():
    x = data.load("8gaussians").x.double()
    # centres at radius 4 / 1.414, std 0.5 / 1.414
    y = data.load("8gaussians").y
    c0 = x[y == 0].mean(0)
    assert abs(float(c0.norm()) - 4 / 1.414) < 0.02
    assert abs(float(x[y == 0].std(0).mean()) - 0.5 / 1.414) < 0.01
    m = data.load("moons").x.double()
    # sklearn's moons have mean (1/2, 1/4); times 2 and shifted by (-1, -0.2): (0, 0.3)
    assert torch.allclose(m.mean(0), torch.tensor([0.0, 0.3], dtype=torch.float64), atol=0.01)
    cb = data.load("checkerboard").x
    assert float(cb.abs().max()) <= 4.0
    assert torch.isfinite(data.log_density("checkerboard", cb)).all()


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_log_density_integrates_to_one(name):
    h = 0.02
    g = np.arange(-5, 5, h) + h / 2
    xx, yy = np.meshgrid(g, g)
    pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
    mass = float(data.log_density(name, pts).exp().sum()) * h * h
    assert abs(mass - 1) < 2e-3


def test_log_density_matches_samples():
    # the average log-density of real samples estimates minus the entropy; a shifted
    # copy of the data must score much worse
    x = data.load("8gaussians", "test").x
    assert (
        float(data.log_density("8gaussians", x).mean())
        > float(data.log_density("8gaussians", x + 1.0).mean()) + 1.0
    )


def test_images():
    d = data.load("digits")
    te = data.load("digits", "test")
    assert d.x.shape == (1437, 1, 8, 8) and te.x.shape == (360, 1, 8, 8)
    levels = torch.unique(d.x)
    assert len(levels) == 17 and float(levels.min()) == -1 and float(levels.max()) == 1
    assert torch.allclose((levels + 1) * 8, torch.arange(17.0))
    assert d.info.levels == 17 and d.y.bincount().min() > 130


def test_bits_per_dim_convention():
    info = data.info("digits")
    # a density of 1 per unit volume in stored coordinates -> -log2(1/8) = +3 bits/dim
    assert data.bits_per_dim(0.0, info) == pytest.approx(3.0, abs=1e-12)
    pts = data.info("moons")
    assert data.bits_per_dim(2 * math.log(2), pts) == pytest.approx(1.0)


def test_unknown_names():
    with pytest.raises(ValueError, match="known data sets: swissroll"):
        data.load("mnist")
    with pytest.raises(ValueError, match="split"):
        data.load("moons", "valid")
    with pytest.raises(ValueError, match="no closed-form density"):
        data.log_density("moons", torch.zeros(3, 2))


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=st.tuples(st.integers(0, 5), st.integers(0, 4)),
        elements=st.one_of(st.floats(-1e6, 1e6, width=32), st.just(float("nan"))),
    )
)
def test_log_density_random_input(arr):
    x = torch.from_numpy(arr)
    if arr.shape[1] != 2:
        with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
            data.log_density("8gaussians", x)
    else:
        out = data.log_density("8gaussians", x)
        assert out.shape == (arr.shape[0],)
        finite = np.isfinite(arr).all(1)
        assert torch.isfinite(out[torch.from_numpy(finite)]).all()
        assert (out[torch.from_numpy(finite)] <= 0).all()


@settings(max_examples=50, deadline=None)
@given(name=st.one_of(st.text(max_size=12), st.integers(), st.none()), split=st.text(max_size=6))
def test_load_random_names_error_clearly(name, split):
    if name in data.names() and split in ("train", "test"):
        assert len(data.load(name, split)) > 0
    else:
        with pytest.raises(ValueError, match="unknown data set|split must be"):
            data.load(name, split)
