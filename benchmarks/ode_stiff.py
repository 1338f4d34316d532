"""Stiff problems with the implicit methods: accuracy, steps, evaluations and CPU time.

Two problems: ``y' = -1e8 (y - cos t)``, ``y(0) = 0`` on [0, 1] at rtol 1e-6 against its closed
form, and Robertson's chemical kinetics to t = 1e5 at rtol 1e-8 against scipy's Radau at rtol
1e-11.  Thread CPU time of one solve under ``torch.no_grad()``; prints a markdown table.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ode_stiff.py
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.integrate
import torch

from genmodels.integrate import SolverStats, odeint

LAM = 1e8


def _linear_exact(t: float) -> float:
    d = LAM**2 + 1
    return LAM * (LAM * math.cos(t) + math.sin(t)) / d - LAM**2 / d * math.exp(-LAM * t)


def _robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack(
        [-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2]
    )


def _robertson_np(t, y):
    return [
        -0.04 * y[0] + 1e4 * y[1] * y[2],
        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
        3e7 * y[1] ** 2,
    ]


def _row(problem, method, rtol, atol, func, y0, t, ref):
    stats = SolverStats()
    t0 = time.thread_time()
    with torch.no_grad():
        y = odeint(func, y0, t, rtol=rtol, atol=atol, method=method, stats=stats)
    cpu = time.thread_time() - t0
    rel = (np.abs(y.numpy()[1:] - ref[1:]) / np.abs(ref[1:])).max()
    print(f"| {problem} | {method} | {rtol:g} / {atol:g} | {rel:.1e} | {stats.n_accepted} | "
          f"{stats.nfe} | {cpu:.2f} |", flush=True)  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    print("| problem | method | rtol / atol | max rel error | accepted steps | NFE | CPU s |")
    print("|---|---|---|---|---|---|---|")
    t = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    ref = np.array([[_linear_exact(ti)] for ti in t.tolist()])
    lin = lambda t, y: -LAM * (y - torch.cos(t))  # noqa: E731
    with torch.no_grad():  # warm-up: first-call costs out of the timed rows
        odeint(lin, torch.zeros(1, dtype=torch.float64), t[:2], method="radauIIA5")
    for m in ["radauIIA5", "radauIIA3", "trbdf2", "sdirk2", "implicit_euler", "gl6", "gl4"]:
        _row("y' = -1e8 (y - cos t)", m, 1e-6, 1e-9, lin, torch.zeros(1, dtype=torch.float64),
             t, ref)  # fmt: skip
    ts = np.array([0.0, 0.4, 4.0, 40.0, 400.0, 4e3, 4e4, 1e5])
    ref = scipy.integrate.solve_ivp(
        _robertson_np, (0, 1e5), [1, 0, 0], method="Radau", t_eval=ts, rtol=1e-11, atol=1e-16
    ).y.T
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for m in ["radauIIA5", "radauIIA3", "sdirk2"]:
        _row("Robertson to 1e5", m, 1e-8, 1e-14, _robertson, y0, torch.tensor(ts), ref)


if __name__ == "__main__":
    main()
