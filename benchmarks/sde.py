"""Score SDEs with an analytic score: the issue's first quality targets (docs/sde.md).

Data: FFJORD's 8 Gaussians (radius 2, std 0.3, equal weights), whose perturbed densities
p_t under VP, sub-VP and VE are Gaussian mixtures in closed form
(``genmodels.models.sde.gaussian_mixture_marginal``), so the score is exact and the only
errors are the methods'.

- ``pf_ode_log_prob`` on 500 points in one joint solve (dopri5, rtol = atol = 1e-5):
  mean |error| and error of the average NLL against the exact one, NFE of the augmented field;
- ``euler_maruyama`` and ``pc`` (1000 steps) and ``ode`` on ``--n`` samples: sliced W1 to a
  test draw, as a ratio to a fresh exact draw's.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde.py [--n 10000]

With ``--ddpm-run RUN`` (a trained ``ddpm`` on a 2-D toy, e.g. the registered default on
8gaussians) it compares instead, on those weights and from the **same** x_T ~ N(0, I) (one
seeded generator per sampler: the samplers draw x_T first and nothing else), the PF-ODE
sampler ``ode`` (dopri5, rtol = atol = 1e-5, in each integration ``variable``: t, σ̄,
log σ̄; and in t at the looser tolerances 1e-4 and 1e-3) with deterministic DDIM at 1000 and
50 steps: the distance between paired outputs, each one's sliced W1 to the test split beside
the floor of ``genmodels evaluate`` (10k training points against the test split), and NFE;
``--stochastic`` adds ancestral (1000 steps) and pc (1000 steps) from the same x_T (their
noise draws follow x_T in the same generator):

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde.py --ddpm-run RUN [--stochastic]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from genmodels.evaluate.sample_metrics import sliced_wasserstein
from genmodels.models.samplers import euler_maruyama, ode, pc, pf_ode_log_prob
from genmodels.models.sde import VESDE, VPSDE, SubVPSDE, gaussian_mixture_marginal


def ode_vs_ddim(run: str, n: int, seed: int, stochastic: bool = False) -> None:
    """The PF-ODE sampler against DDIM from the same x_T on a trained DDPM (module docstring)."""
    import genmodels
    from genmodels import data

    model = genmodels.load(run).eval()
    cfg = json.loads((Path(run) / "config.json").read_text())
    name, opts = cfg["data"], cfg.get("data_options") or {}
    test, train = data.load(name, "test", **opts), data.load(name, "train", **opts)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:n]
    floor = sliced_wasserstein(train.x[pick], test.x)
    print(f"{run} ({name}): sliced W1 floor (n={n} training points vs test): {floor:.4f}")
    out = {}
    runs = [
        ("ddim-1000", dict(sampler="ddim", steps=1000)),
        ("ddim-50", dict(sampler="ddim", steps=50)),
        ("ode", dict(sampler="ode")),
        ("ode-sigma", dict(sampler="ode", variable="sigma")),
        ("ode-log_sigma", dict(sampler="ode", variable="log_sigma")),
        ("ode-1e-4", dict(sampler="ode", rtol=1e-4, atol=1e-4)),
        ("ode-1e-3", dict(sampler="ode", rtol=1e-3, atol=1e-3)),
    ]
    if stochastic:
        runs += [("ancestral", dict(sampler="ancestral")), ("pc", dict(sampler="pc"))]
    for label, opts in runs:
        st, t0 = {}, time.thread_time()
        g = torch.Generator().manual_seed(seed)  # the same x_T for every sampler
        out[label] = y = model.sample(n, generator=g, stats=st, **opts)
        r = sliced_wasserstein(y, test.x)
        print(
            f"{label:>13}: sliced W1 {r:.4f} = {r / floor:.3f}x floor, NFE {st.get('nfe')}, "
            f"{time.thread_time() - t0:.1f} s CPU",
            flush=True,
        )
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, *model.event_shape, generator=g)
    pairs = [(a, "ddim-1000") for a, _ in runs if a.startswith("ode")]
    for a, b in pairs + [("ode", "ddim-50"), ("ddim-50", "ddim-1000")]:
        d = (out[a] - out[b]).norm(dim=-1)
        print(
            f"|{a} - {b}| from the same x_T: mean {float(d.mean()):.4f}, median "
            f"{float(d.median()):.4f}, 99th pct {float(d.quantile(0.99)):.4f} "
            f"(|x_T| mean {float(x_T.norm(dim=-1).mean()):.2f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ddpm-run", default=None)
    ap.add_argument("--stochastic", action="store_true", help="with --ddpm-run: also ancestral, pc")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.ddpm_run is not None:
        ode_vs_ddim(a.ddpm_run, a.n, a.seed, a.stochastic)
        return
    K = 8
    ang = torch.arange(K) * 2 * math.pi / K
    means = 2.0 * torch.stack([ang.cos(), ang.sin()], 1)
    w, s = torch.full((K,), 1 / K), torch.full((K,), 0.3)

    def draw(n, g):
        k = torch.multinomial(w, n, True, generator=g)
        return means[k] + s[k, None] * torch.randn(n, 2, generator=g)

    g = torch.Generator().manual_seed(a.seed)
    test, fresh = draw(a.n, g), draw(a.n, g)
    floor = sliced_wasserstein(fresh, test)
    print(f"sliced W1 floor (fresh exact draw vs test, n={a.n}): {floor:.4f}")
    for sde in (VPSDE(), SubVPSDE(), VESDE()):
        lp_t, score = gaussian_mixture_marginal(w, means, s, sde)
        x = draw(500, g).double()
        st, t0 = {}, time.perf_counter()
        with torch.no_grad():
            lp = pf_ode_log_prob(score, sde, x, stats=st)
        err = lp - lp_t(x, 0.0)
        print(
            f"{sde.name:>5} pf_ode_log_prob: mean|err| {float(err.abs().mean()):.2e} nats, "
            f"avg-NLL err {float(-err.mean()):+.2e}, NFE {st['nfe']}, "
            f"{time.perf_counter() - t0:.1f}s"
        )
        x_T = sde.prior_sample((a.n, 2), generator=g)
        for name, fn, kw in (
            ("euler_maruyama", euler_maruyama, dict(generator=g)),
            ("pc", pc, dict(generator=g)),
            ("ode", ode, {}),
        ):
            st, t0 = {}, time.perf_counter()
            y = fn(score, sde, x_T, stats=st, **kw)
            r = sliced_wasserstein(y, test) / floor
            print(
                f"{sde.name:>5} {name:>14}: sliced W1 {r:.2f}x floor, NFE {st['nfe']}, "
                f"{time.perf_counter() - t0:.1f}s"
            )


if __name__ == "__main__":
    main()
