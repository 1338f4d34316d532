"""A flow as the variational family: VI on a banana posterior a Gaussian cannot fit.

Target (normalised, log Z = 0, so KL(q‖p) = -ELBO):
θ1 ~ N(0, 1), θ2 | θ1 ~ N(b(θ1² - 1), σ²), b = 1, σ = 0.5. Fits mean-field and full-rank
Gaussians and affine (RealNVP) and spline (NSF) coupling flows with ``fit_vi`` (the settings
and seeds of tests/inference/test_flow_vi.py), prints KL and IWAE_64, and draws the figure.

    PYTHONPATH=src python benchmarks/flow_vi_banana.py   # table + docs/figures/flow_vi_banana.png
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from genmodels.inference import (
    FlowFamily,
    FullRankGaussian,
    MeanFieldGaussian,
    elbo,
    fit_vi,
    iwae_bound,
)

B, SIGMA, N_EVAL = 1.0, 0.5, 20000


def log_banana(theta):
    t1, t2 = theta[..., 0], theta[..., 1]
    z2 = (t2 - B * (t1**2 - 1)) / SIGMA
    return -0.5 * t1**2 - 0.5 * z2**2 - math.log(2 * math.pi) - math.log(SIGMA)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _flow(kind):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FlowFamily(2, transforms=4, hidden=(32, 32), kind=kind)


def run(out: Path):
    torch.set_num_threads(1)
    setups = {
        "mean-field Gaussian": (MeanFieldGaussian(2), dict(steps=300, n_samples=16, lr=0.05)),
        "full-rank Gaussian": (FullRankGaussian(2), dict(steps=300, n_samples=16, lr=0.05)),
        "affine flow (4 couplings)": (_flow("affine"), dict(steps=1000, n_samples=32, lr=1e-2)),
        "spline flow (4 couplings)": (_flow("spline"), dict(steps=1000, n_samples=32, lr=1e-2)),
    }
    print("| q | Adam steps | fit (s) | KL(q‖p) = −ELBO (nats) | IWAE_64 (nats) |")
    print("|---|---:|---:|---:|---:|")
    fitted = {}
    for name, (q, kw) in setups.items():
        seed = 1 if "flow" in name else 2
        t0 = time.perf_counter()
        fit_vi(log_banana, q, kw.pop("steps"), generator=_gen(seed), **kw)
        wall = time.perf_counter() - t0
        with torch.no_grad():
            kl = -elbo(log_banana, q, N_EVAL, generator=_gen(10), reduce=False)
            iw = iwae_bound(log_banana, q, 64, 400, generator=_gen(20), reduce=False)
        print(
            f"| {name} | {1000 if 'flow' in name else 300} | "
            f"{wall:.1f} | {kl.mean():.4f} ± {kl.std() / math.sqrt(N_EVAL):.4f} | "
            f"{iw.mean():.4f} ± {iw.std() / math.sqrt(iw.numel()):.4f} |"
        )
        fitted[name] = q

    from genmodels.plot.inference import plt, posterior_panel

    g1, g2 = np.linspace(-3.5, 3.5, 300), np.linspace(-2.5, 8.0, 300)
    t = torch.tensor(np.stack(np.meshgrid(g1, g2), -1))
    dens = log_banana(t).exp().numpy()
    gaussians = {}
    for name in ("full-rank Gaussian", "mean-field Gaussian"):
        d = fitted[name].distribution()
        cov = getattr(d, "covariance_matrix", None)
        cov = torch.diag_embed(d.variance) if cov is None else cov
        gaussians[name] = (d.mean.detach().numpy(), cov.detach().numpy())
    samples = {}
    for i, name in enumerate(("affine flow (4 couplings)", "spline flow (4 couplings)")):
        x = fitted[name].distribution().sample((400,), generator=_gen(30 + i))
        samples[name] = x.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, (name, pts) in zip(axes, samples.items()):
        posterior_panel(ax, g1, g2, dens, gaussians=gaussians, samples={name: pts})
        ax.set_xlabel("θ1")
        ax.set_ylabel("θ2")
        ax.set_xlim(g1[0], g1[-1])
        ax.set_ylim(g2[0], g2[-1])
    axes[0].set_title("banana posterior, Gaussian VI (2-sd) and flow VI draws")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "flow_vi_banana.png", dpi=110)
    print(f"wrote {out / 'flow_vi_banana.png'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    run(ap.parse_args().out)
