"""The score-SDE paper's Figure 2 (Song et al. 2021) on a 1-D mixture with the exact score:
the paths of every SDE end where they should (tour/lecture.py, benchmarks/sde_figure2.py)."""

from __future__ import annotations

import math

import pytest
import torch

from genmodels.models.sde import VESDE
from genmodels.tour import lecture


@pytest.mark.parametrize("name", ["subvp", "ve"])
def test_paths_end_at_the_data_and_at_p1(name):
    # (VP: tests/test_tour_page.py) n = 2000 paths, 200 Euler–Maruyama steps
    n = 2000
    r = lecture.score_sde_paths(n=n, steps=200, seed=1, sde=name)
    mean, var, w_pos = lecture.mixture_moments()
    se = math.sqrt(var / n)
    for key in ("reverse", "ode"):
        end = r[key][-1]
        assert end.shape == (n,) and bool(torch.isfinite(end).all())
        assert abs(float(end.mean()) - mean) < 5 * se, key
        assert abs(float(end.var()) / var - 1) < 0.1, key
        assert abs(float((end > 0).double().mean()) - w_pos) < 0.04, key
    # the forward SDE's end: p_1 = the mixture through N(m x_0, σ²), mean m·mean
    m1, s1 = (float(v) for v in r["sde"].marginal(1.0))
    sd1 = math.sqrt(m1 * m1 * var + s1 * s1)
    end = r["forward"][-1]
    assert abs(float(end.mean()) - m1 * mean) < 5 * sd1 / math.sqrt(n)
    assert abs(float(end.std()) / sd1 - 1) < 0.06
    # the shapes: (steps + 1, n) for the SDEs, 101 output times for the ODE
    assert r["forward"].shape == r["reverse"].shape == (201, n)
    assert r["ode"].shape == (101, n) and r["t_ode"][0] == 1.0


def test_ve_row_spreads_to_its_prior_and_the_ode_is_deterministic():
    r = lecture.score_sde_paths(n=500, steps=50, seed=3, sde="ve")
    assert isinstance(r["sde"], VESDE) and r["sde"].sigma_max == 5.0
    # the reverse SDE starts from the prior N(0, 5²): far wider than the data
    assert 4.0 < float(r["reverse"][0].std()) < 6.0
    assert float(r["reverse"][-1].std()) < 1.6
    again = lecture.score_sde_paths(n=500, steps=50, seed=3, sde=VESDE(0.01, 5.0))
    torch.testing.assert_close(again["ode"], r["ode"])


def test_figure_builds_at_a_tiny_size(tmp_path):
    out = lecture.score_sde_figure(
        tmp_path / "f2.png", sdes=("vp", "subvp", "ve"), n=40, steps=10, paths=3
    )
    assert out.exists() and out.stat().st_size > 10_000


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="sde: expected one of 'vp', 'subvp', 've'"):
        lecture.score_sde_paths(n=10, steps=10, sde="cosine")
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        lecture.score_sde_paths(n=10, steps=1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        lecture.score_sde_paths(n=0)
    with pytest.raises(ValueError, match="sdes: expected at least one SDE"):
        lecture.score_sde_figure(tmp_path / "x.png", sdes=())
