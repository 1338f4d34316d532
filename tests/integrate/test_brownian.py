"""BrownianMotion: the four defining properties of the Wiener process, the Markov
property, the space-time Lévy area, and exact replay from a seed.

Statistical checks use fixed seeds and a margin of at least 5 standard errors, so a
failure means a wrong law, not bad luck."""

import math
import random

import pytest
import torch

from genmodels.integrate.brownian import BrownianMotion

N = 20_000  # independent paths per statistical check
Z = 5.0  # standard errors of margin


def _bm(seed=0, sigma=1.0, t0=0.0, t1=1.0, **kw):
    return BrownianMotion(t0, t1, size=(N,), sigma=sigma, seed=seed, dtype=torch.float64, **kw)


def _check_normal(x, var):
    """x ~ N(0, var): mean and variance within Z standard errors."""
    n = x.numel()
    assert abs(x.mean().item()) < Z * math.sqrt(var / n)
    assert abs(x.var().item() - var) < Z * var * math.sqrt(2.0 / (n - 1))
    # fourth moment of a normal is 3 var² (catches a wrong, non-Gaussian law)
    m4 = (x**4).mean().item()
    assert abs(m4 - 3 * var**2) < Z * math.sqrt(96.0 / n) * var**2


def _check_uncorrelated(x, y):
    r = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
    assert abs(r) < Z / math.sqrt(x.numel())


def test_starts_at_zero():
    bm = BrownianMotion(-1.0, 2.0, size=(3, 4), seed=5)
    assert torch.equal(bm(-1.0), torch.zeros(3, 4))
    assert torch.equal(bm(0.7, 0.7), torch.zeros(3, 4))


@pytest.mark.parametrize("sigma, levy", [(1.0, False), (0.3, False), (1.0, True)])
def test_marginal_is_normal_with_variance_sigma2_t(sigma, levy):
    bm = _bm(seed=1, sigma=sigma, t1=2.0, levy_area=levy)
    for t in [2.0, 1.0, 0.3, 1.2345, 1e-3]:
        _check_normal(bm(t), sigma**2 * t)


@pytest.mark.parametrize("levy", [False, True])
def test_stationary_increments(levy):
    # same law N(0, σ²(t - s)) wherever the interval sits, dyadic or not
    bm = _bm(seed=2, sigma=0.7, levy_area=levy)
    for s, t in [(0.0, 0.25), (0.5, 0.75), (0.1111, 0.3611), (0.8, 0.8001), (0.42, 0.9)]:
        _check_normal(bm(s, t), 0.49 * (t - s))


@pytest.mark.parametrize("levy", [False, True])
def test_independent_increments_over_disjoint_intervals(levy):
    bm = _bm(seed=3, levy_area=levy)
    pairs = [((0.0, 0.3), (0.3, 0.7)), ((0.1, 0.2), (0.6, 0.95)), ((0.5, 0.5625), (0.5625, 1.0))]
    for (a, b), (c, d) in pairs:
        x, y = bm(a, b), bm(c, d)
        _check_uncorrelated(x, y)
        _check_uncorrelated(x**2, y**2)  # independence, not only no correlation
    # overlapping intervals are correlated: Cov(W(0,0.6), W(0.3,1)) = 0.3
    x, y = bm(0.0, 0.6), bm(0.3, 1.0)
    cov = (x * y).mean().item()
    assert abs(cov - 0.3) < Z * math.sqrt((0.6 * 0.7 + 0.3**2) / N)


def test_continuous_paths():
    # E[ΔW²] = σ² h → 0, and the largest increment over N paths shrinks like √h
    bm = _bm(seed=4, sigma=2.0)
    prev = math.inf
    for h in [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]:
        d = bm(0.3, 0.3 + h)
        # inside the two end leaves (width ≤ tol = 2^-20) the path is interpolated, which
        # lowers the variance by at most tol / (2h) relative: the documented approximation
        assert abs(d.var().item() / (4.0 * h) - 1) < Z * math.sqrt(2.0 / N) + 2.0**-20 / (2 * h)
        m = d.abs().max().item()
        assert m < prev and m < 2.0 * math.sqrt(h) * 6.0
        prev = m
    # below the tree's tolerance the path is a smooth interpolant: still continuous
    tiny = bm(0.3, 0.3 + 1e-12).abs().max().item()
    assert tiny < 1e-4


@pytest.mark.parametrize("levy", [False, True])
def test_markov_property_and_bridge(levy):
    # past and future are independent given the present: W(t) - W(s) ⟂ W(r), r < s < t
    bm = _bm(seed=5, levy_area=levy)
    r, s, t = 0.2, 0.45, 0.8
    wr, ws, wt = bm(r), bm(s), bm(t)
    _check_uncorrelated(wt - ws, wr)
    _check_uncorrelated(wt - ws, ws)
    # the conditional law of W(u) given W(s), W(t) is the Brownian bridge
    # N(((t-u) W(s) + (u-s) W(t)) / (t-s), (u-s)(t-u)/(t-s)), independent of the ends
    for u in [0.5, 0.625, 0.7777]:
        resid = bm(u) - ((t - u) * ws + (u - s) * wt) / (t - s)
        _check_normal(resid, (u - s) * (t - u) / (t - s))
        _check_uncorrelated(resid, ws)
        _check_uncorrelated(resid, wt)
        _check_uncorrelated(resid, wr)


def test_space_time_levy_area():
    # U = ∫_a^b (W(s) - W(a)) ds: Var U = σ² h³/3, Cov(U, ΔW) = σ² h²/2,
    # and H = U/h - ΔW/2 ~ N(0, σ² h/12) independent of ΔW
    sigma = 1.5
    bm = _bm(seed=6, sigma=sigma, levy_area=True)
    for a, b in [(0.0, 1.0), (0.25, 0.5), (0.3, 0.71)]:
        h = b - a
        w, u = bm(a, b, return_U=True)
        hh = u / h - w / 2
        _check_normal(hh, sigma**2 * h / 12)
        _check_uncorrelated(hh, w)
        cov = (u * w).mean().item()
        sd = math.sqrt((sigma**4 * h**4 / 3 + (sigma**2 * h**2 / 2) ** 2) / N)
        assert abs(cov - sigma**2 * h**2 / 2) < Z * sd


def test_levy_area_is_additive():
    # U(a, c) = U(a, b) + U(b, c) + (c - b) (W(b) - W(a)), exactly, on one path
    bm = BrownianMotion(size=(7,), seed=7, dtype=torch.float64, levy_area=True)
    for a, b, c in [(0.0, 0.5, 1.0), (0.1, 0.37, 0.9), (0.25, 0.2500001, 0.26)]:
        w_ab, u_ab = bm(a, b, return_U=True)
        w_bc, u_bc = bm(b, c, return_U=True)
        w_ac, u_ac = bm(a, c, return_U=True)
        torch.testing.assert_close(w_ac, w_ab + w_bc, rtol=0, atol=1e-13)
        torch.testing.assert_close(u_ac, u_ab + u_bc + (c - b) * w_ab, rtol=0, atol=1e-13)


@pytest.mark.parametrize("levy", [False, True])
def test_same_seed_same_path_in_any_query_order(levy):
    times = [0.0, 0.013, 0.25, 0.3333, 0.5, 0.61, 0.75, 0.999, 1.0]
    forward = BrownianMotion(size=(5,), seed=11, levy_area=levy)
    ref = [forward(t) for t in times]
    backward = BrownianMotion(size=(5,), seed=11, levy_area=levy)
    back = [backward(t) for t in reversed(times)][::-1]
    shuffled = BrownianMotion(size=(5,), seed=11, cache_size=1, levy_area=levy)  # evicts constantly
    order = list(range(len(times)))
    random.Random(0).shuffle(order)
    shuf = {i: shuffled(times[i]) for i in order}
    for i, r in enumerate(ref):
        assert torch.equal(r, back[i])
        assert torch.equal(r, shuf[i])
        assert torch.equal(r, forward(times[i]))  # replay on the same object
    assert torch.equal(forward(0.25, 0.75), backward(0.25, 0.75))
    other = BrownianMotion(size=(5,), seed=12, levy_area=levy)
    assert not torch.equal(other(0.5), ref[4])


def test_seed_from_generator_is_reproducible():
    a = BrownianMotion(size=(4,), generator=torch.Generator().manual_seed(3))
    b = BrownianMotion(size=(4,), generator=torch.Generator().manual_seed(3))
    assert a.seed == b.seed
    assert torch.equal(a(0.4, 0.9), b(0.4, 0.9))


def test_path_shape_dtype_and_protocol():
    bm = BrownianMotion(0.0, 2.0, size=(2, 3), seed=0, dtype=torch.float32, levy_area=True)
    p = bm.path(torch.linspace(0, 2, 9))
    assert p.shape == (9, 2, 3) and p.dtype == torch.float32
    assert bm.shape == (2, 3) and bm.dtype == torch.float32 and bm.device.type == "cpu"
    w, u = bm(0.5, 1.5, return_U=True)
    assert w.shape == u.shape == (2, 3)
    torch.testing.assert_close(bm(1.5), p[6])
    scalar = BrownianMotion(size=(), seed=0)
    assert scalar(0.5).shape == ()


def test_bad_input():
    with pytest.raises(ValueError, match="t0 < t1"):
        BrownianMotion(1.0, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        BrownianMotion(sigma=0.0)
    bm = BrownianMotion(size=(2,), seed=0)
    with pytest.raises(ValueError, match="outside"):
        bm(0.5, 1.5)
    with pytest.raises(NotImplementedError):
        bm(0.0, 0.5, return_A=True)
    with pytest.raises(ValueError, match="levy_area=True"):
        bm(0.0, 0.5, return_U=True)
    assert bm.levy_area_approximation == "none"
    assert BrownianMotion(levy_area=True).levy_area_approximation == "space-time"


def test_plot_paths_draws_and_saves(tmp_path):
    from genmodels.plot.paths import plot_paths

    ts = torch.linspace(0, 1, 65)
    bm = BrownianMotion(size=(7,), seed=0)
    fig = plot_paths(ts, bm.path(ts), band=2.0, path=tmp_path / "bm.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 7 + 1  # the paths and the zero line
    assert (tmp_path / "bm.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="paths"):
        plot_paths(ts, torch.zeros(10, 2))
