"""BrownianMotion's query caches (the path stack, the last answers, lazy Lévy-area children)
change no value: every query equals, bit for bit, a plain walk from the root with no cache
(the implementation before the caches, kept here as the oracle), in any query pattern, and a
few values are pinned to the ones that implementation gave for a fixed seed."""

import math
import random

import pytest
import torch

from genmodels.integrate.brownian import BrownianMotion, _child_seed


def _oracle_split(bm, level, seed, state):
    """Both children of a node, computed eagerly, as before the caches."""
    h = bm._length / 2.0**level
    s = bm._sigma * math.sqrt(h)
    z = bm._normal(seed).to(bm._tree_dtype)
    if not bm._levy:
        wa, wb = state
        wm = torch.add(wa, wb).mul_(0.5).add_(z[0], alpha=0.5 * s)
        return (wa, wm), (wm, wb)
    k = s / math.sqrt(12.0)
    z1, z2 = z
    wa, wb, ia, hh = state
    wm = torch.add(wa, wb).mul_(0.5).add_(hh, alpha=1.5).add_(z1, alpha=0.25 * s)
    c = torch.add(hh, z1, alpha=-0.5 * s).mul_(0.25)
    im = torch.add(ia, wa, alpha=0.375 * h).add_(wb, alpha=0.125 * h)
    im = im.add_(hh, alpha=0.5 * h).add_(z2, alpha=0.25 * h * k)
    left = (wa, wm, ia, torch.add(c, z2, alpha=0.5 * k))
    return left, (wm, wb, im, torch.add(c, z2, alpha=-0.5 * k))


def _oracle_point(bm, t):
    """(W(t), I(t)): a walk from the root, splitting every node on the way, no cache."""
    a, b, state, seed, level, index = bm._t0, bm._t1, bm._root, bm._seed, 0, 0
    while True:
        if t == a:
            return state[0], (state[2] if bm._levy else None)
        h = b - a
        if t == b:
            return state[1], (bm._integral_at(h, h, state) if bm._levy else None)
        if h <= bm._tol:
            return bm._interpolate(t - a, h, state)
        children = _oracle_split(bm, level, seed, state)
        level += 1
        mid = bm._t0 + bm._length * ((2 * index + 1) / 2.0**level)
        side = 0 if t < mid else 1
        a, b = (a, mid) if side == 0 else (mid, b)
        state, seed, index = children[side], _child_seed(seed, side), 2 * index + side


def _oracle(bm, ta, tb):
    wa, ia = _oracle_point(bm, ta)
    wb, ib = _oracle_point(bm, tb)
    w = (wb - wa).to(bm.dtype)
    if not bm._levy:
        return (w,)
    return w, (ib - ia - (tb - ta) * wa).to(bm.dtype)


def _patterns(t0, t1, rng):
    """Query intervals as solvers ask them: a grid sweep, a backward sweep, step doubling
    with rejections, and random intervals and points."""
    grid = torch.linspace(t0, t1, 38).tolist()
    out = list(zip(grid[:-1], grid[1:]))
    out += [(a, b) for b, a in zip(grid[::-1][:-1], grid[::-1][1:])]
    t = t0
    while t < t1:
        h = min(rng.uniform(0.002, 0.06) * (t1 - t0), t1 - t)
        out += [(t, t + h), (t, t + h / 2), (t + h / 2, t + h)]
        if rng.random() < 0.7:  # accepted; else retried from t with the next h
            t += h
    for _ in range(60):
        a, b = sorted((rng.uniform(t0, t1), rng.uniform(t0, t1)))
        out += [(a, b), (t0, b)]
    return out


@pytest.mark.parametrize("levy", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        dict(t0=0.0, t1=1.0, size=(4, 3), seed=0),
        dict(t0=-2.0, t1=3.0, size=(5,), seed=7, sigma=2.0, cache_size=3, tol=1e-3),
        dict(t0=0.0, t1=1.0, size=(), seed=2**63 + 5, cache_size=1, dtype=torch.float32),
    ],
)
def test_queries_equal_an_uncached_walk_bit_for_bit(levy, kw):
    bm = BrownianMotion(levy_area=levy, **{"dtype": torch.float64, **kw})
    ref = BrownianMotion(levy_area=levy, **{"dtype": torch.float64, **kw})  # for the oracle
    for ta, tb in _patterns(kw["t0"], kw["t1"], random.Random(1)):
        got = bm(ta, tb, return_U=True) if levy else (bm(ta, tb),)
        want = _oracle(ref, ta, tb)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert torch.equal(g, w), (ta, tb)


def test_values_pinned_to_the_implementation_before_the_caches():
    """Values the pre-cache implementation gave (genmodels main, 64e7e84) for seed 2026."""
    bm = BrownianMotion(size=(3,), seed=2026, dtype=torch.float64)
    want = [-0.7687428542525296, 0.13343955234178817, -0.6139296758674169]
    assert bm(0.3, 0.7).tolist() == want
    assert bm(1 / 3).tolist() == [0.4249819408288593, 0.481564002851557, 1.0288895961407332]
    bm = BrownianMotion(size=(3,), seed=2026, dtype=torch.float64, levy_area=True)
    w, u = bm(0.3, 0.7, return_U=True)
    assert w.tolist() == [-0.23151742931610575, 0.18760227800710488, 0.6532104767642498]
    assert u.tolist() == [0.026799536150944242, 0.1793181270573328, 0.11120121684625461]
    assert bm(1 / 3).tolist() == [-0.3789067508621684, -0.48809092296411155, -0.5170666292721466]


def test_answers_are_not_aliased_by_the_memo():
    """A memoised answer feeds later queries; mutating a returned tensor must not leak."""
    bm = BrownianMotion(size=(2,), seed=3, dtype=torch.float64)
    first = bm(0.2, 0.4).clone()
    bm(0.2, 0.4).add_(100.0)
    bm(0.0, 0.4).add_(100.0)
    assert torch.equal(bm(0.2, 0.4), first)
