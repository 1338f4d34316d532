"""VI vs MCMC in numbers: Bayesian logistic regression with two weights.

The posterior p(w|D) ∝ Π_i σ(y_i x_iᵀw) N(w; 0, τ²I) (labels y_i ∈ {-1, +1}) is
computed "exactly" by quadrature on a fine grid; mean-field VI, full-rank VI, ULA,
MALA and HMC are then run at increasing budgets and compared on the error of
the posterior mean and covariance, against wall time and the number of
log-density (+gradient) evaluations.

    PYTHONPATH=src python benchmarks/vi_vs_mcmc.py            # table + docs/figures/vi_vs_mcmc.png
    PYTHONPATH=src python benchmarks/vi_vs_mcmc.py --quick    # smaller budgets
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genmodels.inference import FullRankGaussian, MeanFieldGaussian, fit_vi, hmc, mala, ula

DT = torch.float64
PRIOR_STD = 2.0


def make_problem(seed: int = 0, n: int = 25):
    """Correlated 2-d features, few points: a skewed, correlated posterior."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=DT)
    X = torch.stack([z[:, 0], 0.8 * z[:, 0] + 0.6 * z[:, 1]], 1)
    w_true = torch.tensor([1.5, -1.0], dtype=DT)
    p = torch.sigmoid(X @ w_true)
    y = torch.where(torch.rand(n, generator=g, dtype=DT) < p, 1.0, -1.0).to(DT)
    return X, y


def make_log_post(X, y):
    def log_post(w):  # (..., 2) -> (...), unnormalised, nats
        return F.logsigmoid((w @ X.T) * y).sum(-1) - 0.5 * (w**2).sum(-1) / PRIOR_STD**2

    return log_post


def exact_moments(log_post, lo=-15.0, hi=15.0, n=1201):
    """Posterior mean and covariance by a Riemann sum on an n×n grid."""
    t = torch.linspace(lo, hi, n, dtype=DT)
    W1, W2 = torch.meshgrid(t, t, indexing="xy")
    w = torch.stack([W1, W2], -1)  # (n, n, 2), [iy, ix]
    lp = log_post(w)
    p = torch.softmax(lp.reshape(-1), 0).reshape(lp.shape)
    mean = (p[..., None] * w).sum((0, 1))
    d = w - mean
    cov = (p[..., None, None] * d[..., :, None] * d[..., None, :]).sum((0, 1))
    edge = float(p[0].sum() + p[-1].sum() + p[:, 0].sum() + p[:, -1].sum())
    return mean, cov, (t, p), edge


def errors(mean, cov, ref_mean, ref_cov):
    return float((mean - ref_mean).norm()), float((cov - ref_cov).norm() / ref_cov.norm())


def tune_step(sampler, log_post, x0, target, grid, g, **kw):
    """Pick from ``grid`` the step size whose pilot acceptance is closest to ``target``."""
    best = None
    for eps in grid:
        r = sampler(x0, eps, 50, log_prob=log_post, generator=g, keep_chain=False, **kw)
        score = abs(r.mean_accept_prob - target)
        if best is None or score < best[0]:
            best = (score, eps, r.mean_accept_prob)
    return best[1], best[2]


def run(quick: bool = False, out: Path = Path("docs/figures")):
    torch.set_num_threads(1)
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # warm-up: first use imports dynamo
    X, y = make_problem()
    log_post = make_log_post(X, y)
    ref_mean, ref_cov, (grid, dens), edge = exact_moments(log_post)
    assert edge < 1e-12, "grid too small"
    rows, curves, pics = [], {}, {}
    g = torch.Generator().manual_seed(0)

    # --- variational inference
    budgets_vi = [100, 300, 1000] if quick else [100, 300, 1000, 3000]
    for name, family in (("mean-field VI", MeanFieldGaussian), ("full-rank VI", FullRankGaussian)):
        pts = []
        for steps in budgets_vi:
            q = family(2, dtype=DT, scale=0.5)
            t0 = time.perf_counter()
            r = fit_vi(log_post, q, steps, n_samples=16, lr=0.05, lr_final=1e-3, generator=g)
            wall = time.perf_counter() - t0
            d = q.distribution()
            cov = d.covariance_matrix if hasattr(d, "covariance_matrix") else torch.diag(d.variance)
            em, ec = errors(d.mean.detach(), cov.detach(), ref_mean, ref_cov)
            pts.append((r.n_evals, wall, em, ec))
            rows.append(
                dict(
                    method=name,
                    budget=f"{steps} steps",
                    evals=r.n_evals,
                    wall_s=wall,
                    mean_err=em,
                    cov_rel_err=ec,
                )
            )
        curves[name] = pts
        pics[name] = (d.mean.detach().numpy(), cov.detach().numpy())

    # --- MCMC: 16 chains from N(0, I), first 20% of each chain discarded, 5 repeats
    chains, reps = 16, 5
    x0 = torch.randn(chains, 2, generator=g, dtype=DT)
    eps_mala, acc_mala = tune_step(mala, log_post, x0, 0.574, [0.05, 0.1, 0.2, 0.4, 0.8], g)
    eps_hmc, acc_hmc = tune_step(
        hmc, log_post, x0, 0.8, [0.1, 0.2, 0.3, 0.5, 0.7, 1.0], g, n_leapfrog=10
    )
    budgets = [100, 300, 1000] if quick else [100, 300, 1000, 3000, 10000]
    samplers = {
        f"ULA (eps={eps_mala:g})": lambda n: ula(x0, eps_mala, n, log_prob=log_post, generator=g),
        f"ULA small step (eps={eps_mala / 4:g})": lambda n: ula(
            x0, eps_mala / 4, n, log_prob=log_post, generator=g
        ),
        f"MALA (eps={eps_mala:g}, acc {acc_mala:.2f})": lambda n: mala(
            x0, eps_mala, n, log_prob=log_post, generator=g
        ),
        f"HMC (eps={eps_hmc:g}, L=10, acc {acc_hmc:.2f})": lambda n: hmc(
            x0, eps_hmc, max(n // 10, 5), log_prob=log_post, n_leapfrog=10, generator=g
        ),
    }
    for name, call in samplers.items():
        pts = []
        for n in budgets:
            walls, ems, ecs = [], [], []
            for _ in range(reps):  # independent repeats: report the RMS error and mean time
                t0 = time.perf_counter()
                r = call(n)
                walls.append(time.perf_counter() - t0)
                kept = r.chain[r.chain.shape[0] // 5 :].reshape(-1, 2)
                em, ec = errors(kept.mean(0), torch.cov(kept.T), ref_mean, ref_cov)
                ems.append(em**2)
                ecs.append(ec**2)
            em, ec, wall = np.sqrt(np.mean(ems)), np.sqrt(np.mean(ecs)), float(np.mean(walls))
            evals = r.n_evals * chains
            pts.append((evals, wall, em, ec))
            rows.append(
                dict(
                    method=name,
                    budget=f"{chains}x{r.chain.shape[0]} steps",
                    evals=evals,
                    wall_s=wall,
                    mean_err=em,
                    cov_rel_err=ec,
                )
            )
        curves[name] = pts
        pics[name] = kept.numpy()

    # --- table
    print(
        f"exact posterior (grid quadrature): mean {ref_mean.numpy().round(4)}, "
        f"cov {ref_cov.numpy().round(4).tolist()}"
    )
    print(
        "| method | budget | log-density evals | wall (s) | mean error (L2) | cov error (rel. F) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['budget']} | {r['evals']} | {r['wall_s']:.3f} | "
            f"{r['mean_err']:.4f} | {r['cov_rel_err']:.4f} |"
        )

    # --- figure
    from genmodels.plot.inference import error_panel, plt, posterior_panel

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    gaussians = {k: v for k, v in pics.items() if "VI" in k}
    samples = {k.split(" (")[0]: v for k, v in pics.items() if "VI" not in k and "small" not in k}
    posterior_panel(
        axes[0], grid.numpy(), grid.numpy(), dens.numpy(), gaussians=gaussians, samples=samples
    )
    m, s = ref_mean.numpy(), np.sqrt(np.diag(ref_cov.numpy()))
    axes[0].set_xlim(m[0] - 4 * s[0], m[0] + 4 * s[0])
    axes[0].set_ylim(m[1] - 4 * s[1], m[1] + 4 * s[1])
    axes[0].set_title("posterior (grid), VI 2-sd ellipses, MCMC draws")
    error_panel(
        axes[1],
        {k: ([p[0] for p in v], [p[3] for p in v]) for k, v in curves.items()},
        xlabel="log-density + gradient evaluations",
        ylabel="covariance error (rel. F)",
    )
    error_panel(
        axes[2],
        {k: ([p[1] for p in v], [p[2] for p in v]) for k, v in curves.items()},
        xlabel="wall time (s)",
        ylabel="posterior mean error (L2)",
    )
    fig.tight_layout()
    fig.savefig(out / "vi_vs_mcmc.png", dpi=110)
    (out / "vi_vs_mcmc.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out / 'vi_vs_mcmc.png'}")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    a = ap.parse_args()
    run(a.quick, a.out)
