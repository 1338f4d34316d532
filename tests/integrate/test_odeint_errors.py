"""odeint: bad input raises a clear error naming the cause (and the time reached)."""

import math

import pytest
import torch

from genmodels.integrate import (
    MaxStepsExceededError,
    NonFiniteSolutionError,
    ODESolverError,
    StepSizeUnderflowError,
    odeint,
)

T = torch.tensor([0.0, 1.0], dtype=torch.float64)
Y0 = torch.ones(2, dtype=torch.float64)


def decay(t, y):
    return -y


@pytest.mark.parametrize("t", [[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [1.0, 2.0, 2.0], [2.0, 1.0, 1.5]])
def test_non_monotone_time(t):
    t = torch.tensor(t)
    with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
        odeint(decay, Y0, t)


@pytest.mark.parametrize("bad", [torch.zeros(2, 2), torch.tensor([0.0, math.nan]), [0.0, 1.0]])
def test_bad_time_tensor(bad):
    with pytest.raises((ValueError, TypeError), match="t "):
        odeint(decay, Y0, bad)


@pytest.mark.parametrize("rtol,atol", [(0.0, 1e-6), (-1e-3, 1e-6), (1e-6, -1.0), (math.nan, 1)])
def test_bad_tolerances(rtol, atol):
    with pytest.raises(ValueError, match="rtol|atol"):
        odeint(decay, Y0, T, rtol=rtol, atol=atol)


def test_nan_in_y0():
    with pytest.raises(ValueError, match="y0 contains NaN"):
        odeint(decay, torch.tensor([1.0, math.nan]), T)


def test_mismatched_output_shape():
    with pytest.raises(ValueError, match=r"shape \(3,\).*expected \(2,\)"):
        odeint(lambda t, y: torch.ones(3), Y0, T)
    with pytest.raises(ValueError, match="same structure"):
        odeint(lambda t, y: (y, y), Y0, T)


def test_unknown_method_and_option():
    with pytest.raises(ValueError, match="unknown method 'rk45'.*dopri5"):
        odeint(decay, Y0, T, method="rk45")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stepsize'\]"):
        odeint(decay, Y0, T, options=dict(stepsize=0.1))
    with pytest.raises(ValueError, match="interp"):
        odeint(decay, Y0, T, method="euler", options=dict(step_size=0.1, interp="quadratic"))


def test_event_fn_not_supported():
    with pytest.raises(NotImplementedError, match="event_fn"):
        odeint(decay, Y0, T, event_fn=lambda t, y: y[0])


def test_step_budget_runs_out():
    with pytest.raises(MaxStepsExceededError, match="max_num_steps=5 exceeded at t=") as e:
        odeint(lambda t, y: torch.cos(50 * t) * y, Y0, T, options=dict(max_num_steps=5))
    assert 0.0 <= e.value.t < 1.0 and isinstance(e.value, RuntimeError)


def test_step_size_underflow_at_blow_up():
    """y' = y^2, y(0) = 1 blows up at t = 1: the solver stops near 1 with the time reached."""
    with pytest.raises(ODESolverError, match=r"at t=(0\.99|1\.00)") as e:
        odeint(lambda t, y: y * y, torch.ones(1, dtype=torch.float64),
               torch.tensor([0.0, 2.0], dtype=torch.float64))  # fmt: skip
    assert isinstance(e.value, (StepSizeUnderflowError, NonFiniteSolutionError))
    assert 0.99 < e.value.t < 1.01


def test_fixed_step_nan_is_reported_not_returned():
    with pytest.raises(NonFiniteSolutionError, match="NaN or infinite at t="):
        y0, t = torch.full((1,), 10.0), torch.tensor([0.0, 0.5, 2.0])
        odeint(lambda t, y: y**4, y0, t, method="euler", options=dict(step_size=0.25))


def test_bad_option_values():
    with pytest.raises(ValueError, match="step_size"):
        odeint(decay, Y0, T, method="rk4", options=dict(step_size=-0.1))
    with pytest.raises(ValueError, match="max_num_steps"):
        odeint(decay, Y0, T, options=dict(max_num_steps=0))
    with pytest.raises(ValueError, match="share one dtype"):
        odeint(lambda t, y: y, (torch.ones(1), torch.ones(1, dtype=torch.float64)), T)
