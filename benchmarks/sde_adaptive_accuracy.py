"""Adaptive sdeint against torchsde's at equal tolerances: drift evaluations and error.

    PYTHONPATH=src python benchmarks/sde_adaptive_accuracy.py [--batch 1024] [--dim 8]

Both solvers integrate benchmarks/sde_speed.py's MLP SDE (float64) on [0, 1] with 11 output
times, first step 0.01, rtol = atol = tol, driven by the *same* BrownianMotion path; the
error is the mean |y - y_ref| over all outputs, y_ref our fixed-step solution with 2^12 steps on
that path. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import torch
from sde_speed import MLPSDE

from genmodels.integrate.brownian import BrownianMotion
from genmodels.integrate.sdeint import sdeint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import torchsde

    torch.manual_seed(0)
    b, d = args.batch, args.dim
    y0 = torch.randn(b, d, dtype=torch.float64)
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    print("| method | tol | genmodels: f evals | error | torchsde: f evals | error |")
    print("|---|---|---|---|---|---|")
    for method, sde_type in [("heun", "stratonovich"), ("milstein", "ito")]:
        sde = MLPSDE(d, "diagonal", sde_type).double()
        count = [0]
        drift = sde.f

        def f(t, y, drift=drift, count=count):
            count[0] += 1
            return drift(t, y)

        sde.f = f
        bm = BrownianMotion(0.0, 1.0, size=(b, d), seed=1, dtype=torch.float64)
        with torch.no_grad():
            ref = sdeint(sde, y0, ts, bm, method=method, dt=2**-12)
            for tol in (1e-3, 1e-4):
                row = []
                for solve in (sdeint, torchsde.sdeint):
                    count[0] = 0
                    y = solve(sde, y0, ts, bm, method=method, dt=0.01, adaptive=True,
                              rtol=tol, atol=tol)  # fmt: skip
                    row += [count[0], float((y - ref).abs().mean())]
                print(f"| {method} | {tol:g} | {row[0]} | {row[1]:.2e} | {row[2]} | {row[3]:.2e} |")


if __name__ == "__main__":
    main()
