"""Song et al. (2021), "Score-Based Generative Modeling through SDEs", Figure 2, with exact scores.

A 1-D data distribution, p_0 = 0.35 N(-1.4, 0.2²) + 0.65 N(1.2, 0.3²), its perturbed densities
p_t(x) as a heat map over (t, x), and on the same axes: forward-SDE paths from data to noise,
reverse-SDE paths (Euler–Maruyama, 500 steps) from the prior back to data, and probability-flow
ODE paths (dopri5) from the same prior draws. p_t is a Gaussian mixture in closed form under
every SDE here, so the score is exact (``models.sde.gaussian_mixture_marginal``); the paths come
from ``genmodels.tour.lecture.score_sde_paths`` (the library's SDE objects, ``integrate.sdeint``,
``models.samplers.euler_maruyama`` and ``ode``), the picture from ``score_sde_figure`` (the
same picture as the tour's section 7 page). One row per SDE: VP (β 0.1 → 20) and VE with
σ_max = 5 by default (``--sdes vp,subvp,ve`` adds sub-VP).

It prints the end points' mean, standard deviation and share at x > 0 of each process against
the exact values (the forward SDE's against p_1, the reverse SDE's and the ODE's against p_0).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde_figure2.py  # writes the PNG
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from genmodels.tour.lecture import FIGURE2_SDES, mixture_moments, score_sde_figure, score_sde_paths


def end_point_table(sde: str, *, n: int, steps: int, seed: int) -> list[str]:
    r = score_sde_paths(n, steps=steps, seed=seed, sde=sde)
    mean, var, w_pos = mixture_moments()
    m1, s1 = (float(v) for v in r["sde"].marginal(1.0))
    exact = {  # p_1 = the mixture pushed through p(x_1 | x_0) = N(m x_0, σ²)
        "forward": (m1 * mean, math.sqrt(m1 * m1 * var + s1 * s1), None),
        "reverse": (mean, math.sqrt(var), w_pos),
        "ode": (mean, math.sqrt(var), w_pos),
    }
    rows = []
    for key, (mu, sd, w) in exact.items():
        end = r[key][-1]
        share = float((end > 0).double().mean())
        rows.append(
            f"| {sde} | {key} | {float(end.mean()):+.3f} ({mu:+.3f}) | "
            f"{float(end.std()):.3f} ({sd:.3f}) | "
            + (f"{share:.3f} ({w:.3f})" if w is not None else "–")
            + " |"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/figures/sde_figure2.png")
    ap.add_argument("--sdes", default="vp,ve", help=f"rows, among {','.join(FIGURE2_SDES)}")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sdes = [s.strip() for s in args.sdes.split(",") if s.strip()]
    t0 = time.thread_time()
    score_sde_figure(args.out, seed=args.seed, sdes=sdes, n=args.n, steps=args.steps)
    print(f"wrote {args.out} ({time.thread_time() - t0:.1f} s thread CPU)")
    print("| SDE | process | end mean (exact) | end std (exact) | share x > 0 (exact) |")
    print("|---|---|---|---|---|")
    for sde in sdes:  # the same paths as the picture's (same seed, n, steps)
        print("\n".join(end_point_table(sde, n=args.n, steps=args.steps, seed=args.seed)))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
