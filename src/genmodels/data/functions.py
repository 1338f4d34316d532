"""Meta-learning task families (the ``tasks`` data kind): functions observed at points.

GP-drawn 1-D functions, as the DeepMind CNP notebook (Garnelo et al. 2018) draws them:
``x ~ U(-2, 2)`` at ``points`` = 100 places per function, ``y = f(x) + eps`` with
``f ~ GP(0, k)`` and ``eps ~ N(0, noise)``; a context of 3..50 points and 50 further targets.

- ``gp-rbf``: RBF, lengthscale 0.4, variance 1, noise variance 0.01 (the notebook's numbers);
- ``gp-matern``: Matérn 5/2, lengthscale 0.4, variance 1, noise 0.01;
- ``gp-periodic``: ``exp(-2 sin²(π|x-x'|/p)/l²)`` with period p = 1, lengthscale l = 1,
  variance 1, noise 0.01.

The Neural ODE Processes paper's families (Norcliffe et al. 2021, and its public code's data
generators), ``a ~ U(-1, 1)``, ``b ~ U(-0.5, 0.5)`` per function, observed at fixed times:

- ``sine``: ``y = a sin(t - b)``, ``t = linspace(-π, π, 100)``, ``t0 = -3.2``;
- ``exp``: ``y = (a/60) exp(t - b)``, ``t = linspace(-1, 4, 100)``, ``t0 = -1.1``;
- ``oscil``: ``y = a sin(t - b) exp(-t/2)``, ``t = linspace(0, 5, 100)``, ``t0 = -0.1``;
- ``linear``: ``y = a t + b``, ``t = linspace(0, 5, 100)``, ``t0 = -0.1``;
- ``lv``: Lotka–Volterra ``u' = αu - βuv``, ``v' = -γv + δuv``,
  ``(α, β, γ, δ) = (2/3, 4/3, 1, 1)``, ``(u0, v0) = (2p, p)``, ``p ~ U(0.25, 1)``, at 150 times
  in ``[0, 1.5]`` (2 outputs), ``t0 = -0.1``; solved by classical RK4 with 20 steps between
  observation times (error far below float32).

The protocol (the ``options`` below, recorded with every run): a training batch's context
holds ``k ~ U{context_min..context_max}`` points (1..10; 1..100 for ``lv``), always including
the first time point for the NDP families (``first_in_context``); its targets are the context
plus ``U{extra_min..extra_max}`` further points (0..5; 0..45 for ``lv``; 50 for the GP
families); evaluation targets are the whole series. ``t0`` (the initial time a Neural ODE
Process starts from) lives in the options, so a loaded model needs no data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TaskOptions",
    "GPTaskOptions",
    "SineOptions",
    "ExpOptions",
    "OscilOptions",
    "LinearOptions",
    "LVOptions",
    "FUNCTIONS",
]


@dataclass
class TaskOptions:
    """Options of a task family (``--set data.KEY=VALUE``).

    n_train, n_test: functions in each split (490 training functions, the NDP paper's);
    points: observation points per function; context_min..context_max: context sizes;
    extra_min..extra_max: training targets beyond the context; first_in_context: the context
    always holds the first point; t0: the initial time of a Neural ODE Process.
    """

    n_train: int = 490
    n_test: int = 100
    points: int = 100
    context_min: int = 1
    context_max: int = 10
    extra_min: int = 0
    extra_max: int = 5
    first_in_context: bool = True
    t0: float = 0.0

    def validate(self) -> None:
        for k in ("n_train", "n_test", "points", "context_min", "context_max"):
            if getattr(self, k) < 1:
                raise ValueError(f"data option {k} must be >= 1, got {getattr(self, k)}")
        if not self.context_min <= self.context_max < self.points:
            raise ValueError(
                f"data options need context_min <= context_max < points, got "
                f"{self.context_min}, {self.context_max}, {self.points}"
            )
        if not 0 <= self.extra_min <= self.extra_max <= self.points - self.context_max:
            raise ValueError(
                "data options need 0 <= extra_min <= extra_max <= points - context_max, got "
                f"{self.extra_min}, {self.extra_max}"
            )


@dataclass
class SineOptions(TaskOptions):
    t0: float = -3.2


@dataclass
class ExpOptions(TaskOptions):
    t0: float = -1.1


@dataclass
class OscilOptions(TaskOptions):
    t0: float = -0.1


@dataclass
class LinearOptions(TaskOptions):
    t0: float = -0.1


@dataclass
class LVOptions(TaskOptions):
    points: int = 150
    context_max: int = 100
    extra_max: int = 45
    t0: float = -0.1


@dataclass
class GPTaskOptions(TaskOptions):
    """A GP-drawn family: the kernel (``rbf``, ``matern52``, ``periodic``) and its true
    hyperparameters (the oracle uses them)."""

    context_min: int = 3
    context_max: int = 50
    extra_min: int = 50
    extra_max: int = 50
    first_in_context: bool = False
    t0: float = -2.1
    kernel: str = "rbf"
    lengthscale: float = 0.4
    variance: float = 1.0
    period: float = 1.0
    noise: float = 0.01

    def validate(self) -> None:
        super().validate()
        if self.kernel not in ("rbf", "matern52", "periodic"):
            raise ValueError(
                f"data option kernel must be rbf, matern52 or periodic, got {self.kernel!r}"
            )
        for k in ("lengthscale", "variance", "period", "noise"):
            if not getattr(self, k) > 0:
                raise ValueError(f"data option {k} must be > 0, got {getattr(self, k)}")


@dataclass
class GPMaternOptions(GPTaskOptions):
    kernel: str = "matern52"


@dataclass
class GPPeriodicOptions(GPTaskOptions):
    kernel: str = "periodic"
    lengthscale: float = 1.0


def _ab(n, rng):
    a = rng.uniform(-1.0, 1.0, size=(n, 1, 1))
    b = rng.uniform(-0.5, 0.5, size=(n, 1, 1))
    return a, b


def _grid(n, lo, hi, points):
    return np.linspace(lo, hi, points)[None, :, None].repeat(n, 0)


def make_sine(n: int, opts: TaskOptions, rng: np.random.Generator):
    """``(x, y)`` arrays ``(n, points, 1)``: ``y = a sin(t - b)`` on ``[-π, π]``."""
    a, b = _ab(n, rng)
    t = _grid(n, -math.pi, math.pi, opts.points)
    return t, a * np.sin(t - b)


def make_exp(n: int, opts: TaskOptions, rng: np.random.Generator):
    """``y = (a/60) exp(t - b)`` on ``[-1, 4]``."""
    a, b = _ab(n, rng)
    t = _grid(n, -1.0, 4.0, opts.points)
    return t, a / 60.0 * np.exp(t - b)


def make_oscil(n: int, opts: TaskOptions, rng: np.random.Generator):
    """``y = a sin(t - b) exp(-t/2)`` on ``[0, 5]``."""
    a, b = _ab(n, rng)
    t = _grid(n, 0.0, 5.0, opts.points)
    return t, a * np.sin(t - b) * np.exp(-t / 2)


def make_linear(n: int, opts: TaskOptions, rng: np.random.Generator):
    """``y = a t + b`` on ``[0, 5]``."""
    a, b = _ab(n, rng)
    t = _grid(n, 0.0, 5.0, opts.points)
    return t, a * t + b


def _lv_field(s):
    alpha, beta, gamma, delta = 2 / 3, 4 / 3, 1.0, 1.0
    u, v = s[:, 0], s[:, 1]
    return np.stack([alpha * u - beta * u * v, -gamma * v + delta * u * v], 1)


def make_lv(n: int, opts: TaskOptions, rng: np.random.Generator):
    """Lotka–Volterra ``(u, v)`` from ``(2p, p)`` at ``points`` times in ``[0, 1.5]``."""
    p = rng.uniform(0.25, 1.0, size=n)
    s = np.stack([2 * p, p], 1)
    t = np.linspace(0.0, 1.5, opts.points)
    out = [s]
    sub = 20
    for i in range(len(t) - 1):
        h = (t[i + 1] - t[i]) / sub
        for _ in range(sub):  # classical RK4
            k1 = _lv_field(s)
            k2 = _lv_field(s + h / 2 * k1)
            k3 = _lv_field(s + h / 2 * k2)
            k4 = _lv_field(s + h * k3)
            s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(s)
    return t[None, :, None].repeat(n, 0), np.stack(out, 1)


def gp_kernel_matrix(opts: GPTaskOptions, x: np.ndarray) -> np.ndarray:
    """The family's kernel ``k(x, x)`` for ``x`` ``(n, m, 1)`` -> ``(n, m, m)``."""
    r = np.abs(x - np.swapaxes(x, 1, 2))
    if opts.kernel == "rbf":
        g = np.exp(-0.5 * (r / opts.lengthscale) ** 2)
    elif opts.kernel == "matern52":
        s = math.sqrt(5.0) * r / opts.lengthscale
        g = (1 + s + s * s / 3) * np.exp(-s)
    else:
        g = np.exp(-2 * np.sin(math.pi * r / opts.period) ** 2 / opts.lengthscale**2)
    return opts.variance * g


def make_gp(n: int, opts: GPTaskOptions, rng: np.random.Generator):
    """``x ~ U(-2, 2)`` ``(n, points, 1)``; ``y = f(x) + eps``, ``f ~ GP(0, k)``."""
    x = rng.uniform(-2.0, 2.0, size=(n, opts.points, 1))
    k = gp_kernel_matrix(opts, x) + (opts.noise + 1e-10) * np.eye(opts.points)
    lower = np.linalg.cholesky(k)
    y = lower @ rng.standard_normal((n, opts.points, 1))
    return x, y


FUNCTIONS = {
    "gp-rbf": (make_gp, GPTaskOptions, "GP-drawn functions, RBF l=0.4, 100 points in [-2, 2]"),
    "gp-matern": (make_gp, GPMaternOptions, "GP-drawn functions, Matérn 5/2 l=0.4"),
    "gp-periodic": (make_gp, GPPeriodicOptions, "GP-drawn functions, periodic p=1 l=1"),
    "sine": (make_sine, SineOptions, "NDP sine tasks y = a sin(t - b), 100 points each"),
    "exp": (make_exp, ExpOptions, "NDP exponential tasks y = (a/60) exp(t - b)"),
    "oscil": (make_oscil, OscilOptions, "NDP damped oscillators y = a sin(t - b) exp(-t/2)"),
    "linear": (make_linear, LinearOptions, "NDP lines y = a t + b"),
    "lv": (make_lv, LVOptions, "NDP Lotka-Volterra predator-prey, 150 times, 2 outputs"),
}
