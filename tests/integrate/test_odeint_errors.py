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


def test_event_fn_bad_input():
    with pytest.raises(ValueError, match="len\\(t\\)=3"):
        odeint(decay, Y0, torch.tensor([0.0, 0.5, 1.0]), event_fn=lambda t, y: y[0])
    with pytest.raises(TypeError, match="event_fn must be callable"):
        odeint(decay, Y0, T, event_fn=1.0)
    with pytest.raises(ValueError, match="step_size"):
        odeint(decay, Y0, T, method="rk4", event_fn=lambda t, y: y[0])
    with pytest.raises(ValueError, match="scipy_solver"):
        odeint(decay, Y0, T, method="scipy_solver", event_fn=lambda t, y: y[0])


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


# --- a vector field that misbehaves is named as the cause --------------------------------------


@pytest.mark.parametrize("solve", ["odeint", "odeint_adjoint", "fixed"])
def test_vector_field_returning_none_or_a_list_is_named(solve):
    from genmodels.integrate import odeint_adjoint

    run = {
        "odeint": lambda f: odeint(f, Y0, T),
        "odeint_adjoint": lambda f: odeint_adjoint(f, Y0, T, adjoint_params=()),
        "fixed": lambda f: odeint(f, Y0, T, method="rk4", options=dict(step_size=0.5)),
    }[solve]
    with pytest.raises(TypeError, match=r"returned None; expected a tensor of shape \(2,\)"):
        run(lambda t, y: None)
    with pytest.raises(TypeError, match=r"returned a list; expected a tensor of shape \(2,\)"):
        run(lambda t, y: [0.0, 0.0])
    with pytest.raises(TypeError, match=r"returned a float for component 1"):
        odeint(lambda t, y: (y[0], 1.0), (Y0, Y0), T)


def test_sde_and_cde_fields_returning_none_are_named():
    from genmodels.integrate import cdeint, sdeint

    class SDE:
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self, f, g):
            self.f, self.g = f, g

    y0 = torch.ones(3, 2)
    ts = torch.tensor([0.0, 1.0])
    with pytest.raises(TypeError, match=r"drift f\(t, y\) returned None; expected a tensor"):
        sdeint(SDE(lambda t, y: None, lambda t, y: y), y0, ts, dt=0.1)
    with pytest.raises(TypeError, match=r"diffusion g\(t, y\) returned a tuple"):
        sdeint(SDE(lambda t, y: y, lambda t, y: (y,)), y0, ts, dt=0.1)

    class Line:
        def derivative(self, t):
            return torch.ones(1, 2)

    with pytest.raises(TypeError, match=r"returned None; expected a tensor of shape \(\.\.\., hid"):
        cdeint(Line(), lambda t, z: None, torch.zeros(1, 3), ts)


@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", dict(step_size=0.1))])
def test_nan_from_the_field_at_the_start_is_not_called_stiff(method, options):
    with pytest.raises(NonFiniteSolutionError, match=r"returned non-finite values \(nan\) at t=0"):
        odeint(lambda t, y: y * math.nan, Y0, T, method=method, options=options)


def test_nan_from_the_field_later_is_named_with_its_time():
    """sqrt(0.5 - t) is NaN past t = 0.5: the error names the field and t = 0.5, not stiffness."""
    with pytest.raises(NonFiniteSolutionError, match=r"returned non-finite values \(nan\)") as e:
        odeint(lambda t, y: torch.sqrt(0.5 - t) * y, Y0, T)
    assert "stiff" not in str(e.value)
    assert abs(e.value.t - 0.5) < 1e-9


# --- stiffness is reported early ---------------------------------------------------------------


def stiff(t, y):
    """y' = -1e8 (y - cos t): |lambda| = 1e8 holds dopri5's step at 3.3e-8 on [0, 1]."""
    return -1e8 * (y - torch.cos(t))


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_stiff_problem_warns_before_the_step_budget_runs_out(method):
    import warnings

    from genmodels.integrate import StiffnessWarning

    y0 = torch.zeros(1, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(MaxStepsExceededError, match="seemed stiff") as e:
            odeint(stiff, y0, T, method=method, options=dict(max_num_steps=5000))
    stiffness = [w for w in seen if issubclass(w.category, StiffnessWarning)]
    assert len(stiffness) == 1  # once per solve
    msg = str(stiffness[0].message)
    for remedy in ("implicit", "Radau", "BDF", "rtol", "max_num_steps"):
        assert remedy in msg
    assert stiffness[0].filename == __file__  # points at the caller's line
    # it came early (about 1000 steps in), at a collapsed step size it names
    t_warn = float(msg.split("stiff at t=")[1].split(":")[0])
    h = float(msg.split("step size h=")[1].split(" ")[0])
    assert 0 < t_warn < e.value.t and 1e-9 < h < 1e-7


def test_stiff_warning_as_an_error_stops_the_default_unbounded_solve_early():
    """With the default max_num_steps (2**31 - 1) this solve would run for many minutes."""
    import warnings

    from genmodels.integrate import SolverStats, StiffnessWarning

    s = SolverStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", StiffnessWarning)
        with pytest.raises(StiffnessWarning, match="seems stiff"):
            odeint(stiff, torch.zeros(1, dtype=torch.float64), T, stats=s)
    assert s.n_accepted < 3000


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_long_non_stiff_solves_do_not_warn(method):
    """A harmonic oscillator over many periods takes thousands of accurate steps: no warning."""
    import warnings

    from genmodels.integrate import SolverStats

    s = SolverStats()
    y0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint(lambda t, y: y @ A.T, y0, torch.tensor([0.0, 600.0]), rtol=1e-6, atol=1e-6,
               method=method, stats=s)  # fmt: skip
        odeint(decay, Y0, T)
    assert s.n_accepted > 1000  # the stiffness test ran


def test_long_solve_says_it_is_still_going(monkeypatch):
    from genmodels.integrate import LongSolveWarning
    from genmodels.integrate.odeint import _Monitor

    monkeypatch.setattr(_Monitor, "LONG", 300)
    A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    with pytest.warns(LongSolveWarning, match="accepted steps and is at t=") as rec:
        odeint(lambda t, y: y @ A.T, Y0, torch.tensor([0.0, 200.0]), rtol=1e-6, atol=1e-6)
    said = [str(w.message) for w in rec if issubclass(w.category, LongSolveWarning)]
    assert "has taken 300 accepted steps" in said[0]  # every 300 steps, the first at 300
    assert all(f"has taken {300 * (k + 1)} accepted" in m for k, m in enumerate(said))
