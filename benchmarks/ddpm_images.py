"""DDPM on images: train and evaluate through the CLI with its defaults, report the quality ratio.

Runs ``genmodels train ddpm --data DATA`` (no other flags unless given) and
``genmodels evaluate`` on the run, times both, and reports

    ratio = (fd - fd_floor) / (fd_gaussian - fd_floor)

(0: as good as real training data; 1: no better than a pixel-wise Gaussian
fitted to the training split; the target is <= 0.25). It also writes a sample
grid and a reverse-chain grid (x_T ... x_0) into ``--figures``.

    python benchmarks/ddpm_images.py                       # digits, CLI defaults
    python benchmarks/ddpm_images.py --threads 2 --json out.json
    python benchmarks/ddpm_images.py --data mnist5k            # U-Net, its own 3000-step budget

Per-step time is also measured in isolation (``--time-steps``) with
``torch.set_num_threads(threads)`` so that a budget can be extrapolated when the
machine is shared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def _run(cmd: list[str], threads: int) -> float:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def _time_steps(data_name: str, overrides: dict, n: int = 30) -> float:
    """Seconds per optimiser step of the CLI's default image DDPM (median of ``n``)."""
    from genmodels import data, registry

    spec = registry.get("ddpm")
    info = data.info(data_name)
    train = spec.train_defaults(info.kind, data_name)
    torch.manual_seed(0)
    model = spec.build(spec.make_config(overrides), info)
    x = data.load(data_name).x
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    times = []
    for k in range(n + 3):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(x), (train["batch_size"],), generator=g)
        loss = model.loss(x[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= 3:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, help="override the CLI default number of steps")
    p.add_argument("--set", action="append", default=[], help="model/train overrides, as the CLI")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench-ddpm-images")
    p.add_argument("--figures", default="docs/figures")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--time-steps", action="store_true", help="also time steps in isolation")
    p.add_argument("--skip-train", action="store_true", help="evaluate an existing --out run")
    p.add_argument("--n", type=int, help="evaluate's --n (default: the training split's size)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    res: dict = {"data": a.data, "threads": a.threads}
    gm = [sys.executable, "-m", "genmodels"]
    if not a.skip_train:
        cmd = gm + ["train", "ddpm", "--data", a.data, "--out", str(out), "--no-progress"]
        if a.steps:
            cmd += ["--steps", str(a.steps)]
        for s in a.set:
            cmd += ["--set", s]
        res["train_seconds"] = round(_run(cmd, a.threads), 1)
    ev = gm + ["evaluate", str(out)] + (["--n", str(a.n)] if a.n else [])
    res["evaluate_seconds"] = round(_run(ev, a.threads), 1)
    m = json.loads((out / "metrics.json").read_text())
    res.update({k: m[k] for k in ("fd", "fd_floor", "fd_gaussian", "classifier_accuracy")})
    keys = ("eval_n", "eval_sampler", "eval_steps", "sampling_seconds", "bits_per_dim_bound")
    res.update({k: m.get(k) for k in keys + ("bound_n",)})
    res["ratio"] = (m["fd"] - m["fd_floor"]) / (m["fd_gaussian"] - m["fd_floor"])
    cfg = json.loads((out / "config.json").read_text())
    res["train_config"] = cfg["train_config"]
    res["model_config"] = cfg["model_config"]
    if a.time_steps:
        from genmodels.config import parse_set

        over = {k: v for k, v in parse_set(a.set).items() if k in res["model_config"]}
        res["seconds_per_step"] = _time_steps(a.data, over)
    # pictures
    from genmodels.plot import image_grid
    from genmodels.plot.chain import chain_grid
    from genmodels.train.checkpoint import load_run

    figs = Path(a.figures)
    figs.mkdir(parents=True, exist_ok=True)
    model = load_run(out)
    g = torch.Generator().manual_seed(0)
    s = model.sample(100, generator=g, sampler="ddim", steps=100)
    image_grid(s, figs / f"ddpm_{a.data}_samples.png", nrow=10, title=f"DDPM on {a.data}")
    chain_grid(
        model, figs / f"ddpm_{a.data}_chain.png", n=8, frames=11,
        generator=torch.Generator().manual_seed(1), sampler="ddim", steps=100,
    )  # fmt: skip
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
