"""ForwardBrownian: the on-the-fly path of adaptive ``sdeint`` without a given ``bm``.

Its law (increments, space-time Lévy area, independence over disjoint intervals, whatever
the order in which the times are drawn), its consistency (a time asked twice, or covered by
several queries, is one value; a rejected and retried step sees the same path) and the
adaptive solver driven by it (equal to the same path passed in, within its tolerance of a
fine fixed-step solve on that path, the right law forwards and backwards in time).
"""

from __future__ import annotations

import math

import pytest
import torch

from genmodels.integrate.brownian import ForwardBrownian
from genmodels.integrate.sdeint import sdeint

F64 = torch.float64
N = 40_000  # paths for the moment checks: a relative standard error of ~0.7% on variances


def _path(levy: bool, seed: int = 0, n: int = N, dtype=F64, t0: float = 0.0) -> ForwardBrownian:
    gen = torch.Generator().manual_seed(seed)
    return ForwardBrownian(t0, (n,), levy_area=levy, dtype=dtype, generator=gen)


def _close(est: float, want: float, rel_se: float) -> bool:
    return abs(est / want - 1.0) < 5.0 * rel_se


def _check_interval(w, u, h):
    """(w, U) over an interval of length h: mean 0, Var w = h, Cov(w, U) = h²/2, Var U = h³/3
    (5 standard errors; for Gaussians the relative s.e. of a variance is √(2/N))."""
    se = math.sqrt(2.0 / w.numel())
    assert abs(w.mean().item()) < 5 * math.sqrt(h / w.numel())
    assert _close(w.var().item(), h, se), (h, w.var().item())
    if u is not None:
        assert _close(u.var().item(), h**3 / 3, se), (h, u.var().item())
        # Cov(w, U) / (h²/2): its s.e. is ≤ √(2/N) relative for this correlation (√3/2)
        assert _close((w * u).mean().item(), h * h / 2, se)


@pytest.mark.parametrize("levy", [False, True])
def test_increments_and_areas_have_the_law_of_brownian_motion_in_any_draw_order(levy):
    # far point first (an increment past the last point), then bridge points between known
    # points at uneven fractions, then past the end again
    p = _path(levy)
    times = [0.0, 1.0, 0.3, 0.05, 0.7, 0.69, 1.6]
    for t in times[1:]:
        p(0.0, t, return_U=levy)
    grid = sorted(times)
    pieces = []
    for a, b in zip(grid[:-1], grid[1:]):
        out = p(a, b, return_U=levy)
        w, u = out if levy else (out, None)
        _check_interval(w, u, b - a)
        pieces.append(w)
        if levy:
            pieces.append(u)
    # disjoint intervals are independent (the pair (w, U) of one interval is not)
    c = torch.corrcoef(torch.stack(pieces))
    k = 2 if levy else 1
    off = torch.ones_like(c, dtype=torch.bool)
    for i in range(0, c.shape[0], k):
        off[i : i + k, i : i + k] = False
    assert c[off].abs().max() < 5 / math.sqrt(N)


def test_a_time_is_one_value_and_queries_add_up():
    p = _path(True, n=64)
    w01, u01 = p(0.0, 1.0, return_U=True)
    w1, u1 = p(0.0, 0.4, return_U=True)  # bridge
    w2, u2 = p(0.4, 1.0, return_U=True)
    again = p(0.0, 1.0, return_U=True)
    assert torch.equal(again[0], w01) and torch.equal(again[1], u01)
    assert torch.equal(p(0.0, 0.4), w1)  # repeated queries return the same value
    torch.testing.assert_close(w1 + w2, w01, rtol=0, atol=1e-14)
    # U is additive: U(a, c) = U(a, b) + U(b, c) + (c - b) (W(b) - W(a))
    torch.testing.assert_close(u1 + u2 + 0.6 * w1, u01, rtol=0, atol=1e-14)
    assert torch.equal(p(0.3, 0.3), torch.zeros(64, dtype=F64))


def test_a_rejected_and_retried_step_sees_one_path_and_advance_keeps_it():
    # step doubling from t = 0.2: try [0.2, 0.6] with midpoint 0.4, reject, retry [0.2, 0.3]
    # with midpoint 0.25, accept; every value drawn earlier stays part of the path
    p = _path(False, n=32, t0=0.2)
    whole = p(0.2, 0.6)
    first, second = p(0.2, 0.4), p(0.4, 0.6)
    torch.testing.assert_close(first + second, whole, rtol=0, atol=1e-14)
    retry = p(0.2, 0.3)
    halves = p(0.2, 0.25) + p(0.25, 0.3)
    torch.testing.assert_close(halves, retry, rtol=0, atol=1e-14)
    p.advance(0.3)
    assert p.t_now == 0.3 and len(p) == 3  # 0.3, 0.4 and 0.6 kept, 0.2 and 0.25 forgotten
    rest = p(0.3, 0.4) + p(0.4, 0.6)
    torch.testing.assert_close(retry + rest, whole, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="before t_now"):
        p(0.25, 0.4)
    with pytest.raises(ValueError, match="not a drawn time"):
        p.advance(0.35)


def test_advance_re_expresses_the_area_exactly():
    p = _path(True, n=16)
    w, u = p(0.0, 1.0, return_U=True)
    wa, ua = p(0.0, 0.25, return_U=True)
    p(0.0, 0.5)
    p.advance(0.25)
    wb, ub = p(0.25, 1.0, return_U=True)
    torch.testing.assert_close(wa + wb, w, rtol=0, atol=1e-14)
    torch.testing.assert_close(ua + ub + 0.75 * wa, u, rtol=0, atol=1e-14)


def test_float32_path_and_bad_input():
    p = _path(True, n=8, dtype=torch.float32)
    w, u = p(0.0, 1e-5, return_U=True)
    assert w.dtype == u.dtype == torch.float32
    # stored relative to t_now: a tiny increment late in the path keeps its relative accuracy
    p = _path(False, n=20_000, dtype=torch.float32)
    p(0.0, 100.0)
    p.advance(100.0)
    tiny = p(100.0, 100.0 + 1e-6)
    assert _close(tiny.var().item(), 1e-6, math.sqrt(2 / 20_000))
    with pytest.raises(ValueError, match="return_U needs levy_area"):
        _path(False, n=2)(0.0, 1.0, return_U=True)
    with pytest.raises(ValueError, match="ta <= tb"):
        _path(False, n=2)(1.0, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        ForwardBrownian(0.0, (2,), sigma=0.0)
    with pytest.raises(TypeError, match="floating"):
        ForwardBrownian(0.0, (2,), dtype=torch.int64)


class _Nonlinear:
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return torch.sin(2 * y) - 0.5 * y

    def g(self, t, y):
        return 0.4 + 0.2 * torch.cos(y)


def test_adaptive_without_bm_is_the_forward_path_and_meets_its_tolerance():
    # bm=None draws a ForwardBrownian from the generator; passing one made from the same
    # generator state gives the same solve (it only keeps the past points, which bm=None
    # forgets). That path, kept whole, then drives a fine fixed-step reference solve.
    n, ts = 200, torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    y0 = torch.randn(n, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    kw = dict(method="milstein", dt=0.05, adaptive=True, rtol=1e-4, atol=1e-4)
    ys = sdeint(_Nonlinear(), y0, ts, generator=torch.Generator().manual_seed(3), **kw)
    bm = ForwardBrownian(0.0, (n, 1), dtype=F64, generator=torch.Generator().manual_seed(3))
    same = sdeint(_Nonlinear(), y0, ts, bm, **kw)
    torch.testing.assert_close(same, ys, rtol=0, atol=1e-12)
    ref = sdeint(_Nonlinear(), y0, ts, bm, method="milstein", dt=2**-13)
    err = (ys - ref).abs()
    assert err.mean() < 2e-3 and err.max() < 0.05, (err.mean(), err.max())
    loose = sdeint(_Nonlinear(), y0, ts, ForwardBrownian(0.0, (n, 1), dtype=F64,
                   generator=torch.Generator().manual_seed(3)), method="milstein", dt=0.05,
                   adaptive=True, rtol=1e-2, atol=1e-2)  # fmt: skip
    assert (loose - ref).abs().mean() > 2 * err.mean()  # the tolerance is what buys accuracy


@pytest.mark.parametrize("method", ["srk", "heun"])
def test_adaptive_without_bm_has_the_ou_law_backwards_in_time(method):
    # solved from t = 1 down to 0.4: in s = 1 - t, dy = -θ y (-ds) + σ dW̃ = θ y ds + σ dW̃,
    # so Var y = σ² (e^{2θs} - 1) / (2θ) at s = 0.6 (from y = 0)
    theta, sigma = 1.0, 0.8

    class OU:
        noise_type = "additive"
        sde_type = "ito" if method == "srk" else "stratonovich"

        def f(self, t, y):
            return -theta * y

        def g(self, t, y):
            return torch.full((*y.shape, 1), sigma, dtype=y.dtype)

    n = 20_000
    ys = sdeint(OU(), torch.zeros(n, 1, dtype=F64), [1.0, 0.4], method=method, dt=0.05,
                adaptive=True, rtol=1e-3, atol=1e-3,
                generator=torch.Generator().manual_seed(5))  # fmt: skip
    var = sigma**2 * (math.exp(2 * theta * 0.6) - 1) / (2 * theta)
    assert _close(ys[-1].var().item(), var, math.sqrt(2 / n) + 0.004)


def test_adaptive_log_ode_on_general_noise_without_bm():
    # log_ode needs the Lévy area matrix on general noise: Foster's approximation of each
    # queried interval, its normals from the generator; reproducible from the generator state
    class Rotation:
        noise_type, sde_type = "general", "stratonovich"

        def f(self, t, y):
            return -0.5 * y

        def g(self, t, y):  # non-commuting columns: (y2, -y1) and (1, 0) * y1
            return torch.stack([torch.stack([y[:, 1], -y[:, 0]], -1), 0.5 * y], -1)

    y0 = torch.ones(50, 2, dtype=F64)
    kw = dict(method="log_ode", dt=0.05, adaptive=True, rtol=1e-3, atol=1e-3)
    a = sdeint(Rotation(), y0, [0.0, 0.5, 1.0], generator=torch.Generator().manual_seed(2), **kw)
    b = sdeint(Rotation(), y0, [0.0, 0.5, 1.0], generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and torch.isfinite(a).all() and a[-1].std(0).min() > 0.05
