"""torchdiffeq's step callbacks: ``callback_step``, ``callback_accept_step``,
``callback_reject_step`` and their ``*_adjoint`` variants."""

import warnings

import pytest
import torch

from genmodels.integrate import SolverStats, odeint, odeint_adjoint


class Field(torch.nn.Module):
    def __init__(self, *, adjoint=False, adaptive=True):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(2, 2)
        self.calls = {"step": [], "accept": [], "reject": []}
        self.adj = {"step": [], "accept": [], "reject": []}
        self.callback_step = lambda t0, y0, dt: self.calls["step"].append((t0, y0, dt))
        if adaptive:
            self.callback_accept_step = lambda t0, y0, dt: self.calls["accept"].append((t0, y0, dt))
            self.callback_reject_step = lambda t0, y0, dt: self.calls["reject"].append((t0, y0, dt))
        if adjoint:
            self.callback_step_adjoint = lambda t0, y0, dt: self.adj["step"].append((t0, y0, dt))
            self.callback_accept_step_adjoint = lambda *a: self.adj["accept"].append(a)
            self.callback_reject_step_adjoint = lambda *a: self.adj["reject"].append(a)

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * torch.sin(20 * t)


@pytest.mark.filterwarnings("ignore:implicit_adams")  # its corrector on this oscillating field
@pytest.mark.parametrize("method", ["rk4", "explicit_adams", "implicit_adams"])
def test_fixed_grid_calls_step_once_per_step_with_the_grid(method):
    f = Field(adaptive=False)
    odeint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method=method, options=dict(step_size=0.1))
    steps = f.calls["step"]
    assert len(steps) == 10
    t0s = [c[0].item() for c in steps]
    assert t0s == pytest.approx([0.1 * i for i in range(10)], abs=1e-12)
    assert all(c[0].dtype == torch.float64 and c[2].item() == pytest.approx(0.1) for c in steps)


def test_adaptive_calls_accept_or_reject_after_every_step():
    f, s = Field(), SolverStats()
    odeint(f, torch.ones(2), torch.tensor([0.0, 2.0]), rtol=1e-6, atol=1e-8, stats=s)
    c = f.calls
    assert len(c["step"]) == s.n_steps == len(c["accept"]) + len(c["reject"])
    assert len(c["accept"]) == s.n_accepted and len(c["reject"]) == s.n_rejected > 0
    # accepted steps chain: each starts where the previous one ended (t0 + dt)
    acc = [(a[0].item(), a[2].item()) for a in c["accept"]]
    for (t0, dt), (t1, _) in zip(acc[:-1], acc[1:]):
        assert t1 == pytest.approx(t0 + dt, abs=1e-12)
    assert acc[-1][0] < 2.0 <= acc[-1][0] + acc[-1][1]  # the last step covers t = 2 (dense output)


def test_backwards_in_time_gives_signed_steps_and_tuple_states():
    calls = []

    def f(t, y):
        return (-y[0], y[1])

    f.callback_accept_step = lambda t0, y0, dt: calls.append((t0.item(), y0, dt.item()))
    odeint(f, (torch.ones(()), torch.ones(3)), torch.tensor([1.0, 0.0]))
    assert calls and all(dt < 0 for _, _, dt in calls)
    y0 = calls[0][1]
    assert isinstance(y0, tuple) and y0[0].shape == () and y0[1].shape == (3,)
    assert calls[0][0] == 1.0


def test_adjoint_callbacks_run_in_the_backward_pass_only():
    f = Field(adjoint=True)
    y0 = torch.ones(2, requires_grad=True)
    y = odeint_adjoint(f, y0, torch.tensor([0.0, 1.0]))
    n_forward = len(f.calls["step"])
    assert n_forward > 0 and not f.adj["step"]
    y.sum().backward()
    assert len(f.calls["step"]) == n_forward
    assert len(f.adj["step"]) == len(f.adj["accept"]) + len(f.adj["reject"]) > 0
    z, a, gw, gb = f.adj["step"][0][1]  # (state, adjoint, dL/dweight, dL/dbias)
    assert z.shape == (2,) and a.shape == (2,) and gw.shape == (2, 2) and gb.shape == (2,)
    assert f.adj["step"][0][0].item() == 1.0 and f.adj["step"][0][2].item() < 0


def test_adjoint_fixed_grid_step_callback_count():
    f = Field(adjoint=True, adaptive=False)
    del f.callback_accept_step_adjoint, f.callback_reject_step_adjoint
    y = odeint_adjoint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method="euler",
                       options=dict(step_size=0.1))  # fmt: skip
    y.sum().backward()
    assert len(f.calls["step"]) == 10 and len(f.adj["step"]) == 10


@pytest.mark.parametrize(
    "method,name",
    [
        ("rk4", "callback_accept_step"),
        ("euler", "callback_reject_step"),
        ("scipy_solver", "callback_step"),
    ],  # fmt: skip
)
def test_a_callback_the_method_never_calls_warns(method, name):
    f = Field(adaptive=False)
    setattr(f, name, lambda t0, y0, dt: None)
    with pytest.warns(UserWarning, match=name):
        odeint(f, torch.ones(2), torch.tensor([0.0, 1.0]), method=method)


def test_no_warning_when_every_callback_is_called():
    f = Field()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        odeint(f, torch.ones(2), torch.tensor([0.0, 1.0]))
