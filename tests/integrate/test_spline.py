"""NaturalCubicSpline: interpolation, C² continuity, natural ends, exactness on affine
data, agreement with scipy's natural CubicSpline and with torchcde, and missing values."""

import warnings

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from genmodels.integrate.spline import NaturalCubicSpline, natural_cubic_coeffs

KNOTS = torch.tensor([0.0, 0.3, 0.5, 1.1, 1.4, 2.0, 2.2, 3.0], dtype=torch.float64)


def _data(seed=0, batch=(4,), channels=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, len(KNOTS), channels, generator=g, dtype=torch.float64)


def test_interpolates_the_knots():
    x = _data()
    spline = NaturalCubicSpline(KNOTS, x)
    torch.testing.assert_close(spline.evaluate(KNOTS), x, rtol=0, atol=1e-13)
    for i, t in enumerate(KNOTS.tolist()):  # scalar queries give (..., channels)
        torch.testing.assert_close(spline.evaluate(t), x[..., i, :], rtol=0, atol=1e-13)


def test_c2_continuity_at_interior_knots_and_natural_ends():
    # one-sided limits at each interior knot agree for X, X' and X'' (a jump would be O(1);
    # eps = 1e-9 moves each by at most eps times the next derivative)
    spline = NaturalCubicSpline(KNOTS, _data(1))
    eps = 1e-9
    for fn in [spline.evaluate, spline.derivative, spline.second_derivative]:
        left, right = fn(KNOTS[1:-1] - eps), fn(KNOTS[1:-1] + eps)
        torch.testing.assert_close(left, right, rtol=0, atol=1e-5)
    ends = spline.second_derivative(KNOTS[[0, -1]])
    torch.testing.assert_close(ends, torch.zeros_like(ends), rtol=0, atol=1e-12)
    # and it is not trivially zero inside
    assert spline.second_derivative(KNOTS[3]).abs().max() > 0.1


def test_exact_on_affine_data():
    t = KNOTS
    slope = torch.tensor([1.5, -2.0], dtype=torch.float64)
    x = 0.7 + t.unsqueeze(-1) * slope  # (n, 2)
    spline = NaturalCubicSpline(t, x)
    q = torch.linspace(-0.5, 3.5, 41, dtype=torch.float64)  # extrapolation too
    torch.testing.assert_close(spline.evaluate(q), 0.7 + q.unsqueeze(-1) * slope)
    torch.testing.assert_close(spline.derivative(q), slope.expand(41, 2))
    torch.testing.assert_close(spline.second_derivative(q), torch.zeros(41, 2, dtype=q.dtype))


def test_equals_scipy_natural_cubic_spline():
    x = _data(2, batch=(2, 3), channels=2)  # two batch dims
    spline = NaturalCubicSpline(KNOTS, x)
    ref = CubicSpline(KNOTS.numpy(), x.numpy(), axis=-2, bc_type="natural")
    q = torch.linspace(0.0, 3.0, 301, dtype=torch.float64)
    for k, fn in enumerate([spline.evaluate, spline.derivative, spline.second_derivative]):
        got = fn(q).numpy()
        want = ref(q.numpy(), k)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 if k < 2 else 1e-9)


def test_two_knots_is_the_straight_line():
    t = torch.tensor([1.0, 3.0], dtype=torch.float64)
    x = torch.tensor([[0.0], [4.0]], dtype=torch.float64)
    spline = NaturalCubicSpline(t, x)
    torch.testing.assert_close(spline.evaluate(2.5), torch.tensor([3.0], dtype=torch.float64))
    torch.testing.assert_close(spline.derivative(1.2), torch.tensor([2.0], dtype=torch.float64))


def test_missing_values_use_the_spline_of_the_observed_knots():
    x = _data(3, batch=(1,), channels=2)
    nan = float("nan")
    x_missing = x.clone()
    x_missing[0, [2, 5], 0] = nan  # interior gaps in channel 0
    spline = NaturalCubicSpline(KNOTS, x_missing)
    keep = [i for i in range(len(KNOTS)) if i not in (2, 5)]
    ref = CubicSpline(KNOTS[keep].numpy(), x[0, keep, 0].numpy(), bc_type="natural")
    q = torch.linspace(0.0, 3.0, 61, dtype=torch.float64)
    np.testing.assert_allclose(spline.evaluate(q)[0, :, 0].numpy(), ref(q.numpy()), atol=1e-10)
    # channel 1 untouched by channel 0's gaps
    full = NaturalCubicSpline(KNOTS, x)
    torch.testing.assert_close(spline.evaluate(q)[..., 1], full.evaluate(q)[..., 1])
    assert torch.isfinite(spline.evaluate(q)).all()


def test_missing_ends_and_unobserved_channel():
    x = _data(4, batch=(1,), channels=3)
    x[0, :2, 0] = float("nan")  # leading gap: nearest observation
    x[0, -3:, 1] = float("nan")  # trailing gap
    x[0, :, 2] = float("nan")  # never observed: zero
    spline = NaturalCubicSpline(KNOTS, x)
    at_knots = spline.evaluate(KNOTS)
    torch.testing.assert_close(at_knots[0, :2, 0], x[0, 2, 0].expand(2))
    torch.testing.assert_close(at_knots[0, -3:, 1], x[0, -4, 1].expand(3))
    assert torch.equal(at_knots[0, :, 2], torch.zeros(len(KNOTS), dtype=torch.float64))


def test_agrees_with_torchcde_including_missing_values():
    torchcde = pytest.importorskip("torchcde")
    x = _data(5, batch=(5,), channels=3)
    x[0, 2, 1] = float("nan")
    x[1, 0, 0] = float("nan")
    x[2, 5:, 2] = float("nan")
    x[3, [1, 2, 4], 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coeffs = torchcde.natural_cubic_coeffs(x, KNOTS)
    ref = torchcde.CubicSpline(coeffs, KNOTS)
    spline = NaturalCubicSpline(KNOTS, x)
    q = torch.linspace(0.0, 3.0, 77, dtype=torch.float64)
    torch.testing.assert_close(spline.evaluate(q), ref.evaluate(q), rtol=0, atol=1e-12)
    torch.testing.assert_close(spline.derivative(q), ref.derivative(q), rtol=0, atol=1e-11)


def test_gradients_flow_to_the_data():
    x = _data(6, channels=1).requires_grad_()
    spline = NaturalCubicSpline(KNOTS, x)
    spline.evaluate(torch.tensor([0.4, 1.7], dtype=torch.float64)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_float32_and_shapes():
    t = torch.linspace(0, 1, 6)
    x = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    spline = NaturalCubicSpline(t, x)
    assert spline.evaluate(0.3).shape == (2, 4) and spline.evaluate(0.3).dtype == torch.float32
    assert spline.derivative(torch.rand(7)).shape == (2, 7, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        NaturalCubicSpline(torch.tensor([0.0, 1.0, 1.0]), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="channels"):
        NaturalCubicSpline(torch.tensor([0.0, 1.0]), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="knots"):
        NaturalCubicSpline(torch.tensor([0.0]), torch.zeros(1, 1))


# -- natural_cubic_coeffs: the coefficients themselves, vectorised and NaN-aware -----------


def _torchcde_coeffs(x, t):
    torchcde = pytest.importorskip("torchcde")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torchcde.natural_cubic_coeffs(x, t)
    a, b, two_c, three_d = ref.chunk(4, dim=-1)
    return a, b, two_c / 2, three_d / 3


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.7])
def test_coeffs_equal_torchcde_at_random_missing_rates(frac):
    """Irregular knots, NaN anywhere (first and last points included) at rate ``frac``,
    plus an all-NaN series-channel: every coefficient matches torchcde's loop over scalar
    paths, far below the coefficients' size (round-off here is ~1e-13)."""
    g = torch.Generator().manual_seed(11)
    t = torch.cumsum(0.05 + torch.rand(40, generator=g, dtype=torch.float64), 0)
    x = torch.randn(6, 40, 3, generator=g, dtype=torch.float64)
    x[torch.rand(x.shape, generator=g) < frac] = float("nan")
    x[0, 0, :] = float("nan")
    x[1, -1, :] = float("nan")
    x[2, :, 1] = float("nan")
    ours = natural_cubic_coeffs(t, x)
    for mine, ref in zip(ours, _torchcde_coeffs(x, t)):
        assert mine.shape == (6, 39, 3)
        torch.testing.assert_close(mine, ref, rtol=0, atol=1e-9)
    # the never-observed channel is the constant 0 path
    assert torch.equal(ours.a[2, :, 1], torch.zeros(39, dtype=torch.float64))
    assert torch.equal(ours.b[2, :, 1], torch.zeros(39, dtype=torch.float64))


def test_coeffs_reproduce_the_spline_and_from_coeffs_round_trips():
    x = _data(7, batch=(3, 2), channels=2)
    x[0, 1, 3, 0] = float("nan")
    spline = NaturalCubicSpline(KNOTS, x)
    again = NaturalCubicSpline.from_coeffs(KNOTS, natural_cubic_coeffs(KNOTS, x))
    q = torch.linspace(0.0, 3.0, 31, dtype=torch.float64)
    torch.testing.assert_close(again.evaluate(q), spline.evaluate(q), rtol=0, atol=0)
    # a batch's rows of the coefficients give that batch's spline
    coeffs = natural_cubic_coeffs(KNOTS, x)
    part = NaturalCubicSpline.from_coeffs(KNOTS, type(coeffs)(*(c[1:] for c in coeffs)))
    torch.testing.assert_close(part.derivative(q), spline.derivative(q)[1:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="coefficients"):
        NaturalCubicSpline.from_coeffs(KNOTS[:-1], natural_cubic_coeffs(KNOTS, x))


def test_coeffs_are_differentiable_in_the_observed_values():
    x = _data(8, channels=2)
    x[0, 2, 0] = float("nan")
    x = x.requires_grad_()
    a, b, c, d = natural_cubic_coeffs(KNOTS, x)
    (b.sum() + c.pow(2).sum()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_coeffs_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        natural_cubic_coeffs(torch.tensor([0.0, 2.0, 1.0]), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="channels"):
        natural_cubic_coeffs(torch.tensor([0.0, 1.0]), torch.zeros(3, 2))
