"""``method="scipy_solver"``: scipy's solve_ivp behind odeint, against closed forms (a linear
system, a very stiff scalar problem) and through the adjoint."""

import math

import pytest
import scipy.linalg
import torch

from genmodels.integrate import SCIPY_SOLVERS, ODESolverError, SolverStats, odeint, odeint_adjoint

F64 = torch.float64


@pytest.mark.parametrize("solver", SCIPY_SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_linear_system_matches_expm(solver, dtype):
    torch.manual_seed(0)
    A = (torch.randn(4, 4, dtype=F64) * 0.5).to(dtype)
    y0 = torch.randn(2, 4, dtype=F64).to(dtype)
    t = torch.tensor([0.0, 0.5, 2.0], dtype=dtype)
    y = odeint(lambda t, y: y @ A.T, y0, t, method="scipy_solver", rtol=1e-9, atol=1e-11,
               options=dict(solver=solver))  # fmt: skip
    assert y.shape == (3, 2, 4) and y.dtype == dtype and not y.requires_grad
    E = torch.from_numpy(scipy.linalg.expm(2.0 * A.double().numpy()))
    exact = y0.double() @ E.T
    tol = 2e-5 if dtype == torch.float32 else 1e-6
    assert torch.allclose(y[-1].double(), exact, rtol=tol, atol=tol)
    assert torch.equal(y[0], y0)


@pytest.mark.parametrize("solver", ["Radau", "BDF", "LSODA"])
@pytest.mark.parametrize("jac", [None, "autograd"])
def test_very_stiff_problem_to_rtol_1e6(solver, jac):
    """y' = -1e8 (y - cos t), y(0) = 0: y = lam (lam cos t + sin t) / (lam^2 + 1) - lam^2
    e^{-lam t} / (lam^2 + 1).  Implicit solvers take a few hundred evaluations (an explicit
    one would need ~1e8 steps); the final value to rtol 1e-6."""
    lam = 1e8
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    s = SolverStats()
    y = odeint(lambda t, y: -lam * (y - torch.cos(t)), torch.zeros((), dtype=F64), t,
               method="scipy_solver", rtol=1e-6, atol=1e-12,
               options=dict(solver=solver, jac=jac), stats=s)  # fmt: skip
    exact = lam * (lam * torch.cos(t) + torch.sin(t)) / (lam**2 + 1) - lam**2 * torch.exp(
        -lam * t
    ) / (lam**2 + 1)
    assert abs(y[-1].item() / exact[-1].item() - 1) < 1e-6
    # (scipy's Radau interpolant between steps is less accurate on this problem: 1e-4)
    assert abs(y[1].item() / exact[1].item() - 1) < (3e-4 if solver == "Radau" else 1e-5)
    assert s.nfe < 2000


def test_adjoint_through_scipy_gradients():
    """y' = -k y: d y(1)/d y0 = e^{-k}, d y(1)/dk = -y0 e^{-k}; forward and adjoint by scipy."""

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(0.8, dtype=F64))

        def forward(self, t, y):
            return -self.k * y

    f = Field()
    y0 = torch.tensor([1.5], dtype=F64, requires_grad=True)
    y = odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver",
                       rtol=1e-10, atol=1e-12, options=dict(solver="DOP853"))  # fmt: skip
    gy0, gk = torch.autograd.grad(y[-1, 0], (y0, f.k))
    assert abs(gy0.item() - math.exp(-0.8)) < 1e-7
    assert abs(gk.item() + 1.5 * math.exp(-0.8)) < 1e-7


def test_bad_solver_and_failure_are_named():
    with pytest.raises(ValueError, match="options\\['solver'\\] must be one of"):
        odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="scipy_solver",
               options=dict(solver="rk4"))  # fmt: skip
    with pytest.raises(ValueError, match="do not apply to the Runge–Kutta method"):
        odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), method="dopri5",
               options=dict(solver="RK45"))  # fmt: skip
    with pytest.raises(ODESolverError, match="scipy_solver \\(RK45\\) failed"):
        odeint(lambda t, y: y**2, torch.ones(1, dtype=F64), torch.tensor([0.0, 2.0], dtype=F64),
               method="scipy_solver", options=dict(solver="RK45"))  # fmt: skip
