import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from genmodels.evaluate import energy_distance, median_bandwidth, mmd2, sliced_wasserstein
from genmodels.evaluate.sample_metrics import _directions


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_mmd2_same_distribution_is_near_zero_and_shift_is_positive():
    x, y = _gauss(1500, 2, 0), _gauss(1500, 2, 1)
    h = median_bandwidth(y)
    same = mmd2(x, y, bandwidth=h)
    # unbiased: zero-mean with sd ~ O(1/n); a 0.5 shift is far above that
    assert abs(same) < 2e-3
    shifted = mmd2(x + 0.5, y, bandwidth=h)
    assert shifted > 20 * abs(same) and shifted > 0.02
    assert mmd2(y, x + 0.5, bandwidth=h) == pytest.approx(shifted, rel=1e-10)


def test_mmd2_matches_direct_formula():
    x, y = _gauss(50, 3, 2), _gauss(40, 3, 3, shift=0.3)
    h = 1.3
    k = lambda a, b: torch.exp(-(torch.cdist(a, b) ** 2) / (2 * h * h))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    direct = (
        (kxx.sum() - kxx.diag().sum()) / (50 * 49)
        + (kyy.sum() - kyy.diag().sum()) / (40 * 39)
        - 2 * kxy.mean()
    )
    assert mmd2(x, y, bandwidth=h) == pytest.approx(float(direct), rel=1e-10)


def _e_abs_normal(mu, s):
    # E|Z| for Z ~ N(mu, s^2)
    return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s * s)) + mu * (
        1 - 2 * stats.norm.cdf(-mu / s)
    )


def test_energy_distance_of_two_gaussians_matches_closed_form():
    m1, s1, m2, s2 = 0.0, 1.0, 1.0, 2.0
    closed = (
        2 * _e_abs_normal(m1 - m2, math.hypot(s1, s2))
        - _e_abs_normal(0, math.sqrt(2) * s1)
        - _e_abs_normal(0, math.sqrt(2) * s2)
    )
    x = _gauss(4000, 1, 4, shift=m1, scale=s1)
    y = _gauss(4000, 1, 5, shift=m2, scale=s2)
    assert energy_distance(x, y) == pytest.approx(closed, abs=0.03)
    assert abs(energy_distance(x, _gauss(4000, 1, 6))) < 0.01
    # agrees with scipy's 1-D energy distance (which is the square root of a V-statistic)
    ref = stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()) ** 2
    assert energy_distance(x, y) == pytest.approx(ref, rel=0.01)


def test_sliced_wasserstein_of_a_translation_is_exact():
    x = _gauss(500, 3, 7)
    v = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    theta = _directions(3, 512, 0, x.device)
    expected = float((theta @ v).abs().mean())
    assert sliced_wasserstein(x + v, x) == pytest.approx(expected, rel=1e-10)
    assert sliced_wasserstein(x, x) == 0.0
    # 1-D: equals scipy's W1, also for unequal sizes
    a, b = _gauss(300, 1, 8), _gauss(200, 1, 9, shift=0.7)
    ref = stats.wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy())
    assert sliced_wasserstein(a, b, n_directions=1) == pytest.approx(ref, rel=0.02)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 6),
    m=st.integers(0, 6),
    d=st.integers(1, 4),
    d2=st.integers(1, 4),
    bad=st.sampled_from([None, "nan", "inf", "int"]),
)
def test_metrics_on_random_input_error_clearly_or_answer(n, m, d, d2, bad):
    x = torch.randn(n, d)
    y = torch.randn(m, d2)
    if bad == "nan" and n:
        x[0, 0] = float("nan")
    if bad == "inf" and m:
        y[-1, -1] = float("inf")
    if bad == "int":
        x = x.round().long()
    fine = (
        n >= 2
        and m >= 2
        and d == d2
        and (bad in (None, "int") or (bad == "nan" and not n) or (bad == "inf" and not m))
    )
    for fn in (lambda a, b: mmd2(a, b, bandwidth=1.0), energy_distance, sliced_wasserstein):
        if fine:
            assert np.isfinite(fn(x, y))
        else:
            with pytest.raises(ValueError):
                fn(x, y)


def test_bad_bandwidth():
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2(torch.randn(5, 2), torch.randn(5, 2), bandwidth=0.0)
