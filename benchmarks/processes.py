"""Processes: context-mean baseline, CNP, NP, NDP, ND2P (and the GP oracle) per task family.

Every model trains with its registered budget (the NDP paper's: batch 5, Adam 1e-3, 30 epochs
of 490 functions = 2940 steps; 9800 on lv) unless ``--steps`` shortens it, on one thread, and
is scored on the family's 100 fixed test tasks (targets: the whole series):

    target log-likelihood per value (nats) and MSE, for predict() (the latent's mean) and, for
    NP/NDP, n_samples=1 ("single z"); training seconds and, for NDP, field evaluations.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/processes.py \\
        --data sine exp --models cnp np ndp --seeds 0 1 2 [--steps 1000] [--set r_dim=0 ...]
        # --set: model config fields (or training fields such as lr) for an ablation
    PYTHONPATH=src python benchmarks/processes.py --gp-speed     # GP vs GPyTorch, n = 1000
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/processes.py --step-time --models np ndp
        # one training step's thread CPU time (forward, backward + Adam) on sine
    python benchmarks/processes.py --table docs/figures/processes_table.jsonl
        # the markdown table of saved lines: mean ± sd over seeds per (data, model)

Lines are JSON, one per (data, model, seed).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from genmodels import data, registry
from genmodels.evaluate.process import process_metrics
from genmodels.train import TrainConfig, fit


class _SingleZ(torch.nn.Module):
    """``predict`` at one draw of the latent (``n_samples=1``), seeded per batch."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.g = torch.Generator().manual_seed(0)

    def predict(self, xc, yc, xt):
        p = self.model.predict(xc, yc, xt, n_samples=1, generator=self.g)
        return torch.distributions.Normal(p.mean[0], p.stddev[0])


def _sig(v: float) -> float:
    """4 significant digits: an MSE near 1e-5 (lv) keeps its digits."""
    return float(f"{v:.4g}")


def _split_sets(sets: dict) -> tuple[dict, dict]:
    """``--set`` pairs into (model config, training budget) by the TrainConfig's fields."""
    fields = set(TrainConfig.__dataclass_fields__)
    return ({k: v for k, v in sets.items() if k not in fields},
            {k: v for k, v in sets.items() if k in fields})  # fmt: skip


def run(name: str, model_name: str, seed: int, steps: int | None, sets: dict | None = None):
    train, test = data.load(name), data.load(name, "test")
    spec = registry.get(model_name)
    model_sets, train_sets = _split_sets(sets or {})
    torch.manual_seed(seed)
    model = spec.build(spec.make_config(model_sets), train.info)
    budget = dict(model.train_defaults, **train_sets)
    if steps is not None:
        budget["steps"] = steps
    cfg = TrainConfig(seed=seed, progress=False, **budget)
    t, c = time.perf_counter(), time.thread_time()
    fit(model, train, cfg)
    secs, cpu = time.perf_counter() - t, time.thread_time() - c
    m = process_metrics(model, test.batches(100))
    out = {
        "data": name,
        "model": model_name,
        "seed": seed,
        "steps": cfg.steps,
        **({"set": sets} if sets else {}),
        "train_s": round(secs, 1),
        "train_cpu_s": round(cpu, 1),
        "ll": round(m["target_ll_nats"], 4),
        "mse": _sig(m["target_mse"]),
        "baseline_ll": round(m["baseline_target_ll_nats"], 4),
        "baseline_mse": _sig(m["baseline_target_mse"]),
    }
    if model_name in ("np", "ndp", "nd2p"):
        s = process_metrics(_SingleZ(model), test.batches(100))
        out["ll_single_z"] = round(s["target_ll_nats"], 4)
        out["mse_single_z"] = _sig(s["target_mse"])
    if hasattr(model, "stats"):
        out["nfe_per_epoch"] = round(model.stats.nfe / (cfg.steps * cfg.batch_size / len(train)))
    return out


def oracle(name: str) -> dict:
    from genmodels.evaluate.process import gp_oracle

    o = gp_oracle(name, data.load(name, "test").info.options)
    m = process_metrics(o, data.load(name, "test").batches(100))
    return {"data": name, "model": "gp-oracle", "ll": round(m["target_ll_nats"], 4),
            "mse": _sig(m["target_mse"])}  # fmt: skip


def gp_speed(n: int = 1000, m: int = 200, reps: int = 5, clock=time.perf_counter) -> dict:
    """Our GP vs GPyTorch's exact GP on its Cholesky path, float64, one thread (best of
    ``reps`` by ``clock``)."""
    import gpytorch

    from genmodels.models.gp import GP, RBF

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    xs = torch.linspace(-2, 2, m, dtype=torch.float64)[:, None]
    ours = GP(RBF(0.5, 1.3), noise=0.05)

    class Exact(gpytorch.models.ExactGP):
        def __init__(self, lik):
            super().__init__(x, y, lik)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    theirs = Exact(lik).double()
    # float64 tensors: a Python float is set through a float32 tensor (1e-8 relative error)
    d = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    theirs.covar_module.base_kernel.lengthscale = d(0.5)
    theirs.covar_module.outputscale = d(1.3)
    lik.noise = d(0.05)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, theirs)

    def best(f):
        f()
        ts = []
        for _ in range(reps):
            t = clock()
            f()
            ts.append(clock() - t)
        return min(ts)

    def ours_post():
        with torch.no_grad():
            ours.predict(x, y[:, None], xs)

    def theirs_post():
        theirs.eval()
        lik.eval()
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**7):
            with gpytorch.settings.fast_pred_var(False):
                v = lik(theirs(xs)).variance
        theirs.train()  # drops GPyTorch's cached prediction strategy: a fresh posterior
        lik.train()
        return v

    def ours_lml():
        ours.zero_grad()
        ours.log_marginal_likelihood(x, y[:, None]).backward()

    def theirs_lml():
        theirs.zero_grad()
        with gpytorch.settings.max_cholesky_size(10**7):
            (mll(theirs(x), y) * n).backward()

    with gpytorch.settings.max_cholesky_size(10**7):
        lml_t = float(mll(theirs(x), y).detach()) * n
    lml_o = float(ours.log_marginal_likelihood(x, y[:, None]).detach())
    return {
        "n": n,
        "posterior_s": [best(ours_post), best(theirs_post)],
        "lml_grad_s": [best(ours_lml), best(theirs_lml)],
        "lml": [lml_o, lml_t],
        "lml_rel_diff": abs(lml_o - lml_t) / abs(lml_t),
        "gpytorch": gpytorch.__version__,
    }


def sklearn_gp(n: int = 1000, m: int = 200, reps: int = 5) -> dict:
    """Our GP vs scikit-learn's ``GaussianProcessRegressor`` at fixed hyperparameters (the same
    kernel 1.3 RBF(0.5) and noise 0.05 as a ``WhiteKernel``, no optimiser, ``normalize_y=False``):
    posterior mean and std at ``m`` points from scratch (fit + predict), and the log marginal
    likelihood; float64, one thread, best of ``reps`` in thread CPU time."""
    import numpy as np
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process import kernels as K

    from genmodels.models.gp import GP, RBF

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64) * 4 - 2
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    xs = torch.linspace(-2, 2, m, dtype=torch.float64)[:, None]
    ours = GP(RBF(0.5, 1.3), noise=0.05)
    kern = K.ConstantKernel(1.3, "fixed") * K.RBF(0.5, "fixed") + K.WhiteKernel(0.05, "fixed")
    xn, yn, xsn = x.numpy(), y.numpy(), xs.numpy()

    def ours_post():
        with torch.no_grad():
            p = ours.predict(x, y[:, None], xs)
            return p.mean, p.stddev

    def theirs_post():
        gpr = GaussianProcessRegressor(kern, alpha=0.0, optimizer=None, normalize_y=False)
        return gpr.fit(xn, yn).predict(xsn, return_std=True)

    def best(f):
        f()
        ts = []
        for _ in range(reps):
            t = time.thread_time()
            f()
            ts.append(time.thread_time() - t)
        return min(ts)

    gpr = GaussianProcessRegressor(kern, alpha=0.0, optimizer=None).fit(xn, yn)
    lml_t = float(gpr.log_marginal_likelihood_value_)
    lml_o = float(ours.log_marginal_likelihood(x, y[:, None]).detach())
    mean_o = ours_post()[0].reshape(-1).numpy()
    return {
        "posterior_s": [best(ours_post), best(theirs_post)],
        "lml": [lml_o, lml_t],
        "mean_max_diff": float(np.abs(mean_o - gpr.predict(xsn)).max()),
    }


def rows(quick: bool, tiny: bool = False) -> list[dict]:
    """``genmodels bench`` rows: the exact GP at n = 1000 (tiny: 100), float64, one thread,
    against GPyTorch's exact GP on its Cholesky path and scikit-learn's regressor. Targets
    (#15): posterior at most 0.5x GPyTorch's time, log marginal likelihood with its gradient at
    most 1x, the same log marginal likelihood to 1e-8 (against scikit-learn too); against
    scikit-learn's posterior no target was set (reported as "not slower")."""
    from genmodels.bench import peer_version, row

    n, reps = (100, 2) if tiny else (1000, 5 if quick else 11)
    g = gp_speed(n=n, reps=reps, clock=time.thread_time)
    s = sklearn_gp(n=n, reps=reps)
    gpt, skl = peer_version("gpytorch"), peer_version("sklearn")
    return [
        row(
            "gp",
            f"posterior at 200 points, n={n}",
            *g["posterior_s"],
            gpt,
            limit=0.5,
            note="from scratch, best of reps, thread CPU; target #15",
        ),
        row(
            "gp",
            f"log marginal likelihood + gradient, n={n}",
            *g["lml_grad_s"],
            gpt,
            limit=1.0,
            note="target #15",
        ),
        row(
            "gp",
            f"log marginal likelihood, n={n}",
            *g["lml"],
            gpt,
            unit="nats",
            measure="relative difference",
            limit=1e-8,
            note="target #15",
        ),
        row(
            "gp",
            f"posterior mean and std at 200 points, n={n}",
            *s["posterior_s"],
            skl,
            limit=1.0,
            note="fit + predict; no target set: not slower",
        ),
        row(
            "gp",
            f"log marginal likelihood, n={n}",
            *s["lml"],
            skl,
            unit="nats",
            measure="relative difference",
            limit=1e-8,
            note=f"posterior mean max diff {s['mean_max_diff']:.0e}",
        ),
    ]


def step_time(model_name: str, name: str = "sine", warm: int = 10, steps: int = 50) -> dict:
    """Thread CPU ms of one training step (batch 5: ``loss``, then backward and Adam), mean
    of ``steps`` steps after ``warm`` warm-up steps, split into forward and the rest; for
    NDP/ND2P also the forward's fixed-step ODE solve with its interpolation."""
    train = data.load(name)
    spec = registry.get(model_name)
    torch.manual_seed(0)
    model = spec.build(spec.make_config(), train.info)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [train.batch(5, torch.Generator().manual_seed(i)) for i in range(warm + steps)]
    fwd = rest = 0.0
    solve_s = [0.0]
    if hasattr(model, "_solve_fixed"):
        inner = model._solve_fixed

        def timed(*args):
            t = time.thread_time()
            out = inner(*args)
            solve_s[0] += time.thread_time() - t
            return out

        model._solve_fixed = timed
    for i, b in enumerate(batches):
        if i == warm:
            solve_s[0] = 0.0
        t0 = time.thread_time()
        opt.zero_grad()
        loss = model.loss(b, generator=g)
        t1 = time.thread_time()
        loss.backward()
        opt.step()
        if i >= warm:
            fwd, rest = fwd + t1 - t0, rest + time.thread_time() - t1
    ms = lambda v: round(1000 * v / steps, 2)  # noqa: E731
    out = {"data": name, "model": model_name, "step_ms": ms(fwd + rest), "forward_ms": ms(fwd),
           "backward_adam_ms": ms(rest)}  # fmt: skip
    if hasattr(model, "_solve_fixed"):
        out["forward_solve_ms"] = ms(solve_s[0])
    return out


def table(lines: list[dict]) -> str:
    """The markdown table of ``run``/``oracle`` lines: per family the GP oracle (GP-drawn
    families), the context-mean baseline (the same test tasks for every run), then each model
    as mean ± sample standard deviation over its seeds (a single seed: the value)."""
    from statistics import mean, stdev

    def cell(rs, key, nd):
        if key not in rs[0]:
            return ""
        v = [r[key] for r in rs]
        e = nd == 4 and mean(v) < 1e-3  # an MSE below 1e-3 (lv): e-notation
        f = lambda x: f"{x:.1e}" if e else f"{x:.{nd}f}"  # noqa: E731
        return f(v[0]) if len(v) == 1 else f"{f(mean(v))} ± {f(stdev(v))}"

    head = ("| data | model | seeds | ll/value (nats) | MSE | ll, single z | MSE, single z "
            "| train CPU s | NFE/epoch |")  # fmt: skip
    out = [head, "|" + "---|" * 9]
    for name in dict.fromkeys(r["data"] for r in lines):
        rs = [r for r in lines if r["data"] == name]
        for r in rs:
            if r["model"] == "gp-oracle":
                out.append(
                    f"| {name} | GP oracle | | {r['ll']:.3f} | {cell([r], 'mse', 4)} | | | | |"
                )
        runs = [r for r in rs if r["model"] != "gp-oracle"]
        if runs:
            b = runs[0]
            out.append(f"| {name} | context-mean baseline | | {b['baseline_ll']:.3f} "
                       f"| {cell([b], 'baseline_mse', 4)} | | | | |")  # fmt: skip
        for model in dict.fromkeys(r["model"] for r in runs):
            m = sorted((r for r in runs if r["model"] == model), key=lambda r: r["seed"])
            seeds = ",".join(str(r["seed"]) for r in m)
            cpu = f"{mean(r['train_cpu_s'] for r in m):.1f}"
            cells = [
                cell(m, "ll", 3),
                cell(m, "mse", 4),
                cell(m, "ll_single_z", 3),
                cell(m, "mse_single_z", 4),
                cpu,
                str(m[0].get("nfe_per_epoch", "")),
            ]
            out.append(f"| {name} | {model} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["sine"])
    ap.add_argument("--models", nargs="+", default=["cnp", "np", "ndp"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--gp-speed", action="store_true")
    ap.add_argument("--step-time", action="store_true")
    ap.add_argument("--table", nargs="+", metavar="JSONL", help="print saved lines as a table")
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model config or training fields (JSON values), e.g. r_dim=0 n_steps=16",
    )
    a = ap.parse_args()
    if a.table:
        lines = [json.loads(s) for f in a.table for s in open(f) if s.strip()]
        print(table(lines))
        return
    sets = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            sets[k] = json.loads(v)
        except json.JSONDecodeError:
            sets[k] = v
    torch.set_num_threads(1)
    if a.step_time:
        for model in a.models:
            print(json.dumps(step_time(model, a.data[0])), flush=True)
        return
    if a.gp_speed:
        print(json.dumps(gp_speed()), flush=True)
        return
    for name in a.data:
        if name.startswith("gp-"):
            print(json.dumps(oracle(name)), flush=True)
        for model in a.models:
            for seed in a.seeds:
                print(json.dumps(run(name, model, seed, a.steps, sets)), flush=True)


if __name__ == "__main__":
    main()
