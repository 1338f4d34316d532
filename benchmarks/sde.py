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

``--coordinates``: the PF-ODE sampler in t, σ̄ = σ/m and log σ̄ (``ode(variable=)``) and on
fixed Heun steps (``ode(steps=K)``) with an exact score, for six noise processes (see
``coordinates``):

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde.py --coordinates

``--where RUN``: where in t the adaptive solve on a trained DDPM spends its evaluations
(2000 points), and the ε-network's output against its (real-valued) time input:

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde.py --where RUN

With ``--ddpm-run RUN`` (a trained ``ddpm`` on a 2-D toy, e.g. the registered default on
8gaussians) it compares instead, on those weights and from the **same** x_T ~ N(0, I) (one
seeded generator per sampler: the samplers draw x_T first and nothing else), the PF-ODE
sampler ``ode`` (dopri5, rtol = atol = 1e-5, in each integration ``variable``: t, σ̄,
log σ̄; in t at the looser tolerances 1e-4 and 1e-3; Heun on 75 fixed steps in t and in σ̄,
50 in σ̄) with deterministic DDIM at 1000 and
50 steps: the distance between paired outputs, each one's sliced W1 to the test split beside
the floor of ``genmodels evaluate`` (10k training points against the test split), and NFE;
``--stochastic`` adds ancestral, pc (snr 0.16 and 0.04) and Euler–Maruyama (1000 steps each)
from the same x_T (their
noise draws follow x_T in the same generator):

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde.py --ddpm-run RUN [--stochastic]

``--pc RUN`` (a ``ddpm`` on moons): why predictor–corrector at snr 0.16 loses to ancestral
sampling there. The moons distribution is known in closed form up to a fine mixture (the
arcs of ``make_moons`` with 200 Gaussians of std 0.2 each, ``moons_mixture``), so its score
is exact; on forward draws x_t of the test split at several t it prints the mean norms of
the network's ε̂, of the exact ε* = -σ ∇log p_t and of their difference, and the Langevin
step the corrector takes (as a multiple of σ(t)²; Song et al.'s rule ε = 2 α (snr ‖z‖/‖s‖)²);
then pc with the corrector only above / only below t = 0.1 (the same x_T as ``--ddpm-run``),
and Euler–Maruyama / pc (snr 0.16, 0.04) with the exact score (n = 5000, against a fresh
draw of the mixture):

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde.py --pc RUN
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
        ("ode-heun-75", dict(sampler="ode", steps=75)),
        ("ode-heun-75-sigma", dict(sampler="ode", steps=75, variable="sigma")),
        ("ode-heun-50-sigma", dict(sampler="ode", steps=50, variable="sigma")),
    ]
    if stochastic:
        runs += [
            ("ancestral", dict(sampler="ancestral")),
            ("pc-snr-0.16", dict(sampler="pc", snr=0.16)),  # pc()'s own default
            ("euler_maruyama", dict(sampler="euler_maruyama")),
            ("pc-snr-0.04", dict(sampler="pc", snr=0.04)),  # a points model's default
        ]
    for label, opts in runs:
        st, t0 = {}, time.thread_time()
        g = torch.Generator().manual_seed(seed)  # the same x_T for every sampler
        out[label] = y = model.sample(n, generator=g, stats=st, **opts)
        r = sliced_wasserstein(y, test.x)
        print(
            f"{label:>17}: sliced W1 {r:.4f} = {r / floor:.3f}x floor, NFE {st.get('nfe')}, "
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


def moons_mixture(per_arc: int = 200):
    """The moons data set (``genmodels.data``: scikit-learn's two arcs, noise 0.1, scaled by
    2 and shifted by (-1, -0.2)) as an equal-weight mixture of ``per_arc`` Gaussians of std 0.2
    at equal angles on each arc (spacing 0.03, far below 0.2: the mixture is the data's
    distribution up to that discretisation). Returns (weights, means, stds), float64."""
    th = torch.linspace(0, math.pi, per_arc, dtype=torch.float64)
    outer = torch.stack([2 * th.cos() - 1, 2 * th.sin() - 0.2], 1)
    inner = torch.stack([1 - 2 * th.cos(), 0.8 - 2 * th.sin()], 1)
    k = 2 * per_arc
    return (
        torch.full((k,), 1 / k, dtype=torch.float64),
        torch.cat([outer, inner]),
        torch.full((k,), 0.2, dtype=torch.float64),
    )


class _WindowedCorrector(VPSDE):
    """The DDPM's VP SDE with pc's Langevin corrector switched off (α = 0, so step 0)
    outside lo < t <= hi."""

    def __init__(self, process, lo: float, hi: float):
        super().__init__(process=process)
        self.lo, self.hi = lo, hi

    def corrector_alpha(self, t, dt: float) -> float:
        return super().corrector_alpha(t, dt) if self.lo < float(t) <= self.hi else 0.0


def pc_diagnosis(run: str, n: int, seed: int, snr: float = 0.16) -> None:
    """Where and why pc loses to ancestral on a trained moons DDPM (module docstring)."""
    import genmodels
    from genmodels import data
    from genmodels.models.sde import score_from_eps

    model = genmodels.load(run).eval()
    sde = model.sde
    net_score = score_from_eps(model.eps_model, sde)
    w, mu, sd = moons_mixture()
    _, exact_score = gaussian_mixture_marginal(w, mu, sd, sde)
    test = data.load("moons", "test").x
    g = torch.Generator().manual_seed(seed)
    x0 = test[:2000].double()
    print(
        "t, σ(t): mean ‖ε̂‖ (network), ‖ε*‖ (exact), ‖ε̂ - ε*‖; Langevin step / σ² (network, exact)"
    )
    for t in (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001):
        m, sig = (float(v) for v in sde.marginal(torch.tensor(t, dtype=torch.float64)))
        z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        xt = m * x0 + sig * z
        with torch.no_grad():
            e_net = -sig * net_score(xt.float(), t).double()
        e_ex = -sig * exact_score(xt, t)
        zn = torch.randn(x0.shape, generator=g, dtype=torch.float64).norm(dim=1).mean()
        alpha = sde.corrector_alpha(t, 1e-3)

        # the corrector's ε = 2 α (snr ‖z‖ / ‖s‖)² with s = -ε̂/σ, in units of σ²
        st_net, st_ex = (
            2 * alpha * float((snr * zn / e.norm(dim=1).mean()) ** 2) for e in (e_net, e_ex)
        )
        norms = [float(e.norm(dim=1).mean()) for e in (e_net, e_ex, e_net - e_ex)]
        print(
            f"t {t:<6g} σ {sig:.4f}: ‖ε̂‖ {norms[0]:.3f}, ‖ε*‖ {norms[1]:.3f}, "
            f"‖ε̂ - ε*‖ {norms[2]:.3f}; step/σ² {st_net:.3g} (exact {st_ex:.3g}), "
            f"step {st_net * sig * sig:.2e}",
            flush=True,
        )
    train = data.load("moons", "train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:n]
    floor = sliced_wasserstein(train.x[pick], test)
    for lo, hi in ((0.1, 1.0), (0.0, 0.1)):
        g = torch.Generator().manual_seed(seed)  # the x_T of --ddpm-run
        x_T = torch.randn(n, 2, generator=g)
        wsde = _WindowedCorrector(model.schedule, lo, hi)
        t0 = time.thread_time()
        y = pc(score_from_eps(model.eps_model, wsde), wsde, x_T, snr=snr, generator=g)
        r = sliced_wasserstein(y, test)
        print(
            f"pc (network), corrector on {lo:g} < t <= {hi:g} only: sliced W1 {r:.4f} = "
            f"{r / floor:.3f}x floor {floor:.4f}, {time.thread_time() - t0:.1f} s CPU",
            flush=True,
        )
    ne = 5000
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(w, ne, True, generator=g)
    fresh = (mu[k] + sd[k, None] * torch.randn(ne, 2, generator=g, dtype=torch.float64)).float()
    floor = sliced_wasserstein(fresh, test)
    x_T = torch.randn(ne, 2, generator=g)
    print(f"exact score of the moons mixture, n = {ne}; a fresh draw of it: {floor:.4f}")
    for label, fn, kw in (
        ("euler_maruyama", euler_maruyama, {}),
        (f"pc snr {snr:g}", pc, {"snr": snr}),
        ("pc snr 0.04", pc, {"snr": 0.04}),
    ):
        t0 = time.thread_time()
        y = fn(exact_score, sde, x_T, generator=torch.Generator().manual_seed(seed + 1), **kw)
        r = sliced_wasserstein(y, test)
        print(
            f"{label:>14} (exact score): sliced W1 {r:.4f} = {r / floor:.3f}x, "
            f"{time.thread_time() - t0:.1f} s CPU",
            flush=True,
        )


def where(run: str, n: int, seed: int) -> None:
    """Where in t the adaptive PF-ODE solve of a trained DDPM spends its evaluations (dopri5,
    rtol = atol = 1e-5, ``n`` points), per variable, and the ε-network's wiggle in t: its
    output at one point against the real-valued net time near steps 800, 100 and 5."""
    import genmodels
    from genmodels.models.sde import score_from_eps

    model = genmodels.load(run).eval()
    sde = model.sde
    score = score_from_eps(model.eps_model, sde)
    x_T = torch.randn(n, *model.event_shape, generator=torch.Generator().manual_seed(seed))
    edges = [0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0001]
    print("evaluations with t in " + " ".join(f"[{a:g},{b:.3g})" for a, b in zip(edges, edges[1:])))
    for v in ("t", "sigma", "log_sigma"):
        times = []

        def rec(x, t, times=times):
            times.append(float(t))
            return score(x, t)

        ode(rec, sde, x_T, variable=v)
        tt = torch.tensor(times)
        counts = [int(((tt >= a) & (tt < b)).sum()) for a, b in zip(edges, edges[1:])]
        print(f"{v:>9}: NFE {len(times)}: {counts}")
    x = torch.tensor([[0.5, -0.3]])
    with torch.no_grad():
        for base in (800.0, 100.0, 5.0):
            tn = base + torch.linspace(0, 6, 13, dtype=torch.float64)
            e = [float(model.eps_model(x, u.reshape(1))[0, 0]) for u in tn]
            print(
                f"ε̂_1((0.5, -0.3), net time {base:g} + 0..6 by 0.5): "
                + " ".join(f"{v:.4f}" for v in e)
            )


def coordinates(seed: int) -> None:
    """The PF-ODE sampler in t, σ̄ and log σ̄ with the exact score of the 4-component mixture
    of ``tests/test_pf_ode_coordinates.py`` (500 points, float64): NFE at the default
    rtol = atol = 1e-5 and the largest distance to a converged solve (σ̄ at 1e-10), for the
    linear VP, sub-VP, VE and two DDPM schedules (β piecewise constant in t); then Heun on
    K fixed steps (``steps=K``, 2K evaluations): mean distance to the converged solve; and
    ``pf_ode_log_prob`` in each variable on 300 data points: NFE, mean |error| in nats."""
    from genmodels.models.noise import NoiseSchedule

    means = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    w, s = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.3, 0.4, 0.3, 0.5])
    sdes = [
        ("VP (linear β)", VPSDE()),
        ("sub-VP", SubVPSDE()),
        ("VE", VESDE()),
        ("DDPM linear T=1000", VPSDE(process=NoiseSchedule.linear(1000))),
        ("DDPM linear T=100", VPSDE(process=NoiseSchedule.linear(100))),
        ("DDPM cosine T=100", VPSDE(process=NoiseSchedule.cosine(100))),
    ]
    for label, sde in sdes:
        g = torch.Generator().manual_seed(seed)
        _, score = gaussian_mixture_marginal(w, means, s, sde)
        x_T = sde.prior_sample((500, 2), generator=g, dtype=torch.float64)
        ref = ode(score, sde, x_T, variable="sigma", rtol=1e-10, atol=1e-10)
        row = []
        for v in ("t", "sigma", "log_sigma"):
            st = {}
            x = ode(score, sde, x_T, variable=v, stats=st)
            row.append(f"{v} {st['nfe']} ({float((x - ref).norm(dim=1).max()):.1e})")
        heun = []
        for v in ("t", "sigma", "log_sigma"):
            errs = []
            for k in (50, 75, 100):
                x = ode(score, sde, x_T, variable=v, steps=k)
                errs.append(f"{float((x - ref).norm(dim=1).mean()):.1e}")
            heun.append(f"{v} {'/'.join(errs)}")
        lp_t, _ = gaussian_mixture_marginal(w, means, s, sde)
        k = torch.multinomial(w, 300, True, generator=g)
        x0 = (means[k] + s[k, None] * torch.randn(300, 2, generator=g)).double()
        lik = []
        for v in ("t", "sigma", "log_sigma"):
            st = {}
            err = pf_ode_log_prob(score, sde, x0, variable=v, stats=st) - lp_t(x0, 0.0)
            lik.append(f"{v} {st['nfe']} ({float(err.abs().mean()):.1e})")
        print(f"{label:>19} dopri5 1e-5, NFE (max err): {', '.join(row)}", flush=True)
        print(f"{'':>19} Heun K = 50/75/100, mean err: {', '.join(heun)}", flush=True)
        print(f"{'':>19} likelihood, NFE (mean |err| nats): {', '.join(lik)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ddpm-run", default=None)
    ap.add_argument("--stochastic", action="store_true", help="with --ddpm-run: also ancestral, pc")
    ap.add_argument("--coordinates", action="store_true", help="the PF-ODE in t, σ̄, log σ̄")
    ap.add_argument("--where", default=None, help="RUN: where the PF-ODE solve spends its NFE")
    ap.add_argument("--pc", default=None, help="RUN: why pc loses to ancestral on moons")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.pc is not None:
        pc_diagnosis(a.pc, a.n, a.seed)
        return
    if a.coordinates:
        coordinates(a.seed)
        return
    if a.where is not None:
        where(a.where, min(a.n, 2000), a.seed)
        return
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
