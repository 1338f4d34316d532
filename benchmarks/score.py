"""Score matching benchmarks (issue #16; numbers in docs/score.md).

1. ``mixture``: the NCSN paper's mode-weight experiment (Song & Ermon 2019, sec. 3.2.2,
   Fig. 3) with a *trained* NCSN: 0.8 N((5,5), I) + 0.2 N((-5,-5), I), 20000 training
   samples, σ geometric from 20 to 1 (L = 10), λ(σ) = σ²; 1280 chains from U[-8, 8]²,
   annealed Langevin with T = 100, ε = 0.1 (no denoising, as in the paper's figure). The
   target: the first mode's weight within 0.05 of 0.8 (exact score: tests/models/test_score.py).
   Also writes the Figure-4 picture of the run (docs/figures/ncsn_mixture_levels.png).
2. ``cli DATA``: ``genmodels train ncsn --data DATA`` at its registered defaults, then
   ``genmodels evaluate``; prints the sample distances beside their floors and the user CPU
   (and wall) time of each command.
3. ``resample RUN``: a trained run's samples again with other sampling seeds, another ε
   (``--step-size``), T (``--steps``) or the raw weights (``--weights raw``), as
   ``genmodels evaluate`` measures them (points: sliced W1 against the test split over the
   floor of evaluate's seed 0; images: ``image_metrics``, the fraction
   (fd - floor)/(gaussian - floor)).
4. ``levels RUN``: the ε-network's error per level on the test split, the mean over pixels
   of (ε̂ - z)² for x̃ = x + σ_i z (the DSM loss of each level, per dimension).

Usage::

    python benchmarks/score.py mixture [--steps 3000] [--seeds 0 1]
    python benchmarks/score.py cli 8gaussians moons digits --out /tmp/ncsn [--seeds 0 1 2]
    python benchmarks/score.py resample /tmp/ncsn/ncsn-moons-0 --seeds 1 2 [--step-size 5e-6]
    python benchmarks/score.py levels /tmp/ncsn/ncsn-digits-0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from genmodels.data import TensorData
from genmodels.models.score import NCSN
from genmodels.nn import time_network
from genmodels.plot import annealed_chain
from genmodels.train import TrainConfig, fit

W, MU = torch.tensor([0.8, 0.2]), torch.tensor([[5.0, 5.0], [-5.0, -5.0]])


def mixture_samples(n: int, g: torch.Generator) -> torch.Tensor:
    k = (torch.rand(n, generator=g) > W[0]).long()
    return MU[k] + torch.randn(n, 2, generator=g)


def run_mixture(steps: int, seeds: list[int], figure: Path | None) -> list[float]:
    torch.set_num_threads(1)
    weights = []
    for seed in seeds:
        g = torch.Generator().manual_seed(1000 + seed)
        data = TensorData(mixture_samples(20000, g))
        torch.manual_seed(seed)
        model = NCSN(time_network((2,)), (2,), levels=10, sigma_max=20.0, sigma_min=1.0)
        t0 = time.perf_counter()
        cfg = TrainConfig(
            steps=steps,
            batch_size=512,
            lr=1e-3,
            ema_decay=0.999,
            ema_start=steps // 2,
            seed=seed,
            progress=False,
        )
        model = fit(model, data, cfg).model.eval()
        t_train = time.perf_counter() - t0
        x0 = torch.rand(1280, 2, generator=g) * 16 - 8
        t0 = time.perf_counter()
        from genmodels.models.samplers import annealed_langevin

        chain: list = []
        keep = chain.append
        x = annealed_langevin(
            model.eps,
            x0,
            model.noise,
            steps=100,
            step_size=0.1,
            denoise=False,
            generator=g,
            callback=lambda d, keep=keep: keep((d["sigma"], d["x"].clone())),
        )
        w = float((x.sum(1) > 0).float().mean())
        weights.append(w)
        print(
            f"seed {seed}: trained {steps} steps in {t_train:.0f}s; weight of (5,5) = {w:.3f} "
            f"(target 0.8 ± 0.05; binomial SE 0.011); sampling {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        if figure is not None and seed == seeds[0]:
            annealed_chain([chain[i] for i in (0, 3, 6, 9)], figure, lim=(-10, 10))
    return weights


def _children_cpu() -> float:
    """User CPU seconds of the finished child processes so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def run_cli(names: list[str], out: Path, seeds: list[int]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name, seed in ((n, s) for n in names for s in seeds):
        run = out / f"ncsn-{name}-{seed}"
        c0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "genmodels",
                "train",
                "ncsn",
                "--data",
                name,
                "--out",
                str(run),
                "--seed",
                str(seed),
                "--no-progress",
            ],
            check=True,
            env=env,
        )
        c1, t1 = _children_cpu(), time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "genmodels", "evaluate", str(run)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        c2, t2 = _children_cpu(), time.perf_counter()
        m = json.loads((run / "metrics.json").read_text())
        if "swd" in m:
            r = m["swd"] / m["swd_floor"]
            q = f"swd {m['swd']:.4f} floor {m['swd_floor']:.4f} ratio {r:.2f}"
        else:
            frac = (m["fd"] - m["fd_floor"]) / (m["fd_gaussian"] - m["fd_floor"])
            q = f"fd {m['fd']:.3f} floor {m['fd_floor']:.3f} gaussian {m['fd_gaussian']:.3f}"
            q += f" (fraction of the way {frac:.3f})"
        print(
            f"{name} seed {seed}: {q}; user CPU train {c1 - c0:.0f}s + evaluate {c2 - c1:.0f}s "
            f"(wall {t1 - t0:.0f}s + {t2 - t1:.0f}s)",
            flush=True,
        )


def run_resample(
    run: Path, seeds: list[int], step_size: float | None, steps: int | None, weights: str
) -> None:
    from genmodels import data as data_mod
    from genmodels.evaluate.images import image_metrics
    from genmodels.evaluate.sample_metrics import sliced_wasserstein
    from genmodels.train.run_dir import load_run

    torch.set_num_threads(1)
    model = load_run(run, weights=weights)
    if step_size is not None:
        model.step_size = step_size
    if steps is not None:
        model.steps_per_level = steps
    name = model.run_config["data"]
    train, test = data_mod.load(name, "train"), data_mod.load(name, "test")
    for seed in seeds:
        c0 = time.thread_time()
        if model.data_info.kind == "images":
            m = image_metrics(model, name, seed=seed)
            frac = (m["fd"] - m["fd_floor"]) / (m["fd_gaussian"] - m["fd_floor"])
            q = f"fd {m['fd']:.3f} floor {m['fd_floor']:.3f} gaussian {m['fd_gaussian']:.3f}"
            q += f" fraction {frac:.3f}"
        else:  # evaluate's floor (seed 0): 10000 training points against the test split
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
            floor = sliced_wasserstein(train.x[pick[: len(test)]], test.x)
            x = model.sample(len(test), generator=torch.Generator().manual_seed(seed))
            swd = sliced_wasserstein(x.float(), test.x)
            q = f"swd {swd:.4f} floor {floor:.4f} ratio {swd / floor:.2f}"
        cpu = time.thread_time() - c0
        eps, T = model.step_size, model.steps_per_level
        print(f"{run} ε={eps:g} T={T} seed {seed}: {q} ({cpu:.0f} s CPU)", flush=True)


@torch.no_grad()
def run_levels(run: Path, every: int) -> None:
    from genmodels import data as data_mod
    from genmodels.train.run_dir import load_run

    torch.set_num_threads(1)
    model = load_run(run)
    x = data_mod.load(model.run_config["data"], "test").x
    g, L = torch.Generator().manual_seed(0), len(model.sigmas)
    for i in range(0, L, every):
        z = torch.randn(x.shape, generator=g)
        sigma = float(model.sigmas[i])
        t_net = model.noise.net_time(torch.full((len(x),), 1 - i / (L - 1), dtype=torch.float64))
        mse = float((model.eps(x + sigma * z, t_net.float()) - z).square().mean())
        print(f"level {i + 1} of {L}, σ = {sigma:.4f}: mean (ε̂ - z)² = {mse:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mixture")
    m.add_argument("--steps", type=int, default=3000)
    m.add_argument("--seeds", type=int, nargs="+", default=[0])
    m.add_argument("--figure", type=Path, default=Path("docs/figures/ncsn_mixture_levels.png"))
    c = sub.add_parser("cli")
    c.add_argument("data", nargs="+")
    c.add_argument("--out", type=Path, default=Path("/tmp/ncsn-bench"))
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    r = sub.add_parser("resample")
    r.add_argument("run", type=Path)
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--step-size", type=float)
    r.add_argument("--steps", type=int, help="T, Langevin steps per level")
    r.add_argument("--weights", choices=("ema", "raw"), default="ema")
    lv = sub.add_parser("levels")
    lv.add_argument("run", type=Path)
    lv.add_argument("--every", type=int, default=3)
    a = p.parse_args()
    if a.cmd == "mixture":
        run_mixture(a.steps, a.seeds, a.figure)
    elif a.cmd == "cli":
        run_cli(a.data, a.out, a.seeds)
    elif a.cmd == "resample":
        run_resample(a.run, a.seeds, a.step_size, a.steps, a.weights)
    else:
        run_levels(a.run, a.every)


if __name__ == "__main__":
    main()
