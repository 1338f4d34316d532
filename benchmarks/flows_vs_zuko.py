"""genmodels' coupling flows against zuko's, same run, same architecture, same budget.

For every 2D toy and seed: 8 coupling layers, conditioner MLP (64, 64), Adam 1e-3, batch 512
drawn from the fixed training pool with the *same* index stream for both libraries (paired
seeds), 5000 steps, float32, one CPU thread. Both see the data standardised with the training
pool's mean/std (zuko's NSF docs ask for it; ours does it inside the model) and both NLLs are
reported in the data's own coordinates (nats), so they are comparable with the exact density.

The two libraries train in lock-step on the same batches and each step is timed separately
in *CPU time of the thread* (``time.thread_time``; one torch thread), so waiting for a core on
a shared machine is not counted and both sides see the same cache/SMT pressure; "s/1000" is
the median step CPU time x 1000 (the mean is in the JSON). Sampling is wall time, best of 3.
Reports test NLL, its excess over the exact
density where one is known, training seconds per 1000 steps, and the time to draw 100k samples.

    python benchmarks/flows_vs_zuko.py                 # full: every toy, 3 seeds, 5000 steps
    python benchmarks/flows_vs_zuko.py --quick         # 2 toys, 1 seed, 1000 steps
    python benchmarks/flows_vs_zuko.py --models nsf --toys 8gaussians --seeds 3 --json out.json
    python benchmarks/flows_vs_zuko.py --summarise a.json b.json   # merge runs split by seed
    python benchmarks/flows_vs_zuko.py --models ffjord --toys 8gaussians --seeds 1 \
        --steps 400 --batch 256 --lr 2e-3 --no-sample   # FFJORD vs zuko.flows.CNF

For ``ffjord`` and ``planar-cnf`` the peer is ``zuko.flows.CNF`` (3 hidden layers of 64, exact
trace, dopri5 on both sides at our config's training tolerances while training (ffjord:
``train_rtol = train_atol = 1e-4``) and at rtol = atol = 1e-5 for the test NLL; our NLL is
evaluated with the exact trace). ``--budget`` trains both at the model's registered recipe.

Our side's model config can be changed with ``--config KEY=VALUE`` (JSON values, repeatable;
e.g. ``--config activation='"elu"' --config time_freqs=3``). ``--against SAVED.json`` skips
training zuko's side and copies its row (NLL, step times) from an earlier run of the same toy,
model, seed, steps, batch, lr and recipe: both sides draw the same batches from one index
stream and zuko's side touches no random state ours uses, so our side trains exactly as it
would beside zuko. The step-time ratio is then across two runs; for a same-process ratio run
a few hundred steps with zuko (``--steps 300 --batch 256 --lr 2e-3``).

    python benchmarks/flows_vs_zuko.py --models ffjord --toys circles --seeds 1 --budget \
        --no-sample --config activation='"elu"' --config time_freqs=3 \
        --config time_input='"first"' --against docs/figures/ffjord_vs_zuko_budget_3000.json

Needs ``zuko`` (a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from genmodels.data.toys import TOYS as TOY_GENERATORS

TOYS = tuple(TOY_GENERATORS)  # the 8 FFJORD toys, in the data module's order


CNFS = ("ffjord", "planar-cnf")  # zuko's peer for both: zuko.flows.CNF
CNF_TOL = 1e-5  # rtol = atol of both sides' dopri5 (our registered default)


def _ours(name: str, config: dict | None = None):
    from genmodels.models import cnf, flows  # noqa: F401  (registers the models)
    from genmodels.registry import DataInfo, get

    spec = get(name)
    model = spec.build(spec.make_config(config or {}), DataInfo("toy", "points", (2,)))
    return model


def _saved_peer(rows: list[dict], toy: str, model: str, seed: int, run: dict) -> dict:
    """Zuko's row of the saved run of ``toy``/``model``/``seed`` at the same ``run`` settings
    (steps, batch, lr, recipe); a clear error when there is none."""
    keys = ("steps", "batch", "lr", "recipe")
    for r in rows:
        same = all(r.get(k) == run[k] for k in keys)
        if r["toy"] == toy and r["model"] == model and r["seed"] == seed and same:
            return dict(r["zuko"])
    raise ValueError(f"--against: no saved row for {model} on {toy}, seed {seed}, "
                     f"{ {k: run[k] for k in keys} }")  # fmt: skip


def _zuko(name: str):
    import zuko

    if name in CNFS:
        # FFJORD's field at our ffjord's size (3 hidden layers of 64), exact trace, the same
        # tolerances; zuko's own time embedding (3 frequencies) and activation (ELU)
        return zuko.flows.CNF(
            2, hidden_features=(64, 64, 64), exact=True, rtol=CNF_TOL, atol=CNF_TOL
        )
    if name == "realnvp":
        return zuko.flows.RealNVP(2, transforms=8, hidden_features=(64, 64))
    # In 2D a coupling NSF (passes=2) is zuko's default autoregressive NSF.
    return zuko.flows.NSF(2, transforms=8, hidden_features=(64, 64), bins=8, passes=2)


def _train_paired(
    sides: dict,
    pool: torch.Tensor,
    steps: int,
    batch: int,
    seed: int,
    fused: bool = False,
    lr: float = 1e-3,
    recipe: dict | None = None,
) -> dict:
    """Train every side in lock-step on the same batches (one index stream), timing each
    side's step separately in thread CPU time, so both see the same machine load.

    ``sides``: name -> (loss_fn(batch indices) -> scalar, module). ``recipe``: the same
    optimizer recipe for every side, as ``genmodels.train.fit`` runs it (``warmup_steps``,
    ``lr_schedule``, ``optimizer``, ``weight_decay``, ``ema_decay``: the keys of a
    ``models/budgets.py`` entry); with ``ema_decay`` each module ends holding its EMA weights.
    Returns name -> (median seconds per 1000 steps, total seconds per 1000 steps, diverged).
    """
    from genmodels.train.ema import EMA
    from genmodels.train.loop import TrainConfig, _lr_at

    recipe = dict(recipe or {})
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, **recipe)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opts = {
        k: cls(list(m.parameters()), lr=lr, fused=fused, weight_decay=cfg.weight_decay)
        for k, (_, m) in sides.items()
    }
    emas = {k: EMA(m, cfg.ema_decay) for k, (_, m) in sides.items()} if cfg.ema_decay else {}
    times: dict[str, list[float]] = {k: [] for k in sides}
    diverged = dict.fromkeys(sides, False)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(len(pool), (batch,), generator=g)
        for k, (loss_fn, _) in sides.items():
            if diverged[k]:
                continue
            t0 = time.thread_time()
            for group in opts[k].param_groups:
                group["lr"] = _lr_at(step, cfg)
            loss = loss_fn(idx)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            if k in emas:
                emas[k].update(copy=step + 1 <= cfg.ema_start)
            times[k].append(time.thread_time() - t0)
            if not torch.isfinite(loss.detach()):
                diverged[k] = True
    for k, ema in emas.items():  # evaluate the averaged weights, as genmodels.train does
        sides[k][1].load_state_dict(ema.state_dict(sides[k][1]))
    return {
        k: (statistics.median(t) * 1000, sum(t) / len(t) * 1000, diverged[k])
        for k, t in times.items()
    }


@torch.no_grad()
def _nll(log_prob, x: torch.Tensor) -> float:
    return -float(torch.cat([log_prob(c) for c in x.split(8192)]).mean())


# The clock of the sampling times: wall time for the script, the thread's CPU time under
# ``genmodels bench`` (one torch thread: a busy machine's waiting is not counted).
SAMPLE_CLOCK = time.perf_counter


@torch.no_grad()
def _sample_seconds(sample, n: int = 100_000, repeats: int = 3) -> float:
    """Best of ``repeats`` times to draw ``n`` samples (seconds, ``SAMPLE_CLOCK``)."""
    sample(1000)
    best = math.inf
    for _ in range(repeats):
        t0 = SAMPLE_CLOCK()
        sample(n)
        best = min(best, SAMPLE_CLOCK() - t0)
    return best


def run_one(
    toy: str,
    model: str,
    seed: int,
    steps: int,
    batch: int,
    fused: bool = False,
    lr: float = 1e-3,
    sample: bool = True,
    recipe: dict | None = None,
    config: dict | None = None,
    peer: bool = True,
) -> dict:
    """Train ours and zuko's ``model`` on ``toy`` with paired seeds; return the numbers.

    ``recipe``: the optimizer recipe of both sides (see :func:`_train_paired`). For a CNF
    whose registered config trains with looser tolerances (``train_rtol``/``train_atol``),
    zuko's CNF trains with the same ones, and both evaluate at their own ``rtol``/``atol``.
    ``config``: overrides of our model's config. ``peer=False``: train ours alone (the same
    batches); the row's ``"zuko"`` is then None.
    """
    from genmodels import data as gdata

    train, test = gdata.load(toy, split="train"), gdata.load(toy, split="test")
    pool, xt = train.x.float(), test.x.float()
    loc, scale = pool.mean(0), pool.std(0)
    log_det = -float(scale.log().sum())  # of the standardisation, added to zuko's log p
    try:
        exact = -float(gdata.log_density(toy, xt).mean())
    except (NotImplementedError, ValueError, KeyError, TypeError):
        exact = None

    out = {"toy": toy, "model": model, "seed": seed, "exact_nll": exact}
    if config:
        out["config"] = dict(config)

    torch.manual_seed(seed)
    ours = _ours(model, config)
    ours.init_from_data(pool)
    sides = {"ours": (lambda i: ours.loss(pool[i]), ours)}
    cnf = getattr(ours, "cnf", None)
    if peer:
        torch.manual_seed(seed)
        flow = _zuko(model)
        zpool = (pool - loc) / scale
        if cnf is not None:  # zuko's tolerances follow ours: training, then evaluation
            flow.transform.rtol, flow.transform.atol = cnf.train_rtol, cnf.train_atol
        sides["zuko"] = (lambda i: -flow().log_prob(zpool[i]).mean(), flow)
    timing = _train_paired(
        sides,
        pool,
        steps,
        batch,
        seed,
        fused,
        lr,
        recipe,
    )
    if cnf is not None and peer:
        flow.transform.rtol, flow.transform.atol = cnf.rtol, cnf.atol
    ours.eval()
    out["ours"] = {
        "nll": _nll(ours.log_prob, xt),
        "sample_s_100k": _sample_seconds(lambda n: ours.sample(n, generator=torch.Generator()))
        if sample
        else None,
    }
    sides = ("ours", "zuko") if peer else ("ours",)
    out["zuko"] = None
    if peer:
        out["zuko"] = {
            "nll": _nll(lambda x: flow().log_prob((x - loc) / scale) + log_det, xt),
            "sample_s_100k": _sample_seconds(lambda n: flow().sample((n,))) if sample else None,
        }
    for side in sides:
        med, mean, div = timing[side]
        out[side].update(s_per_1000=med, s_per_1000_mean=mean)
        out[side]["diverged"] = div
    for side in sides:
        r = out[side]
        r["diverged"] = r["diverged"] or not math.isfinite(r["nll"])
        r["excess"] = r["nll"] - exact if exact is not None else None
    return out


def _fmt(v, digits=3):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def summarise(rows: list[dict]) -> str:
    """Markdown table: per model and toy, the mean over seeds (and the paired difference).

    Rows of different ``--config`` overrides (and, when they differ, step counts) are kept
    apart: the model column names them."""
    several = len({r.get("steps") for r in rows}) > 1

    def label(r):
        cfg = ",".join(f"{k}={v}" for k, v in (r.get("config") or {}).items())
        steps = f" @{r.get('steps')}" if several else ""
        return r["model"] + (f" [{cfg}]" if cfg else "") + steps

    rows = [dict(r, model=label(r)) for r in rows]
    lines = [
        "| model | toy | seeds | NLL ours | NLL zuko | Δ (ours−zuko) | excess ours | excess zuko "
        "| s/1000 ours | s/1000 zuko | time ratio | sample 100k ours (s) | zuko (s) |",
        "|" + "---|" * 13,
    ]
    for model in sorted({r["model"] for r in rows}):
        for toy in [t for t in TOYS if any(r["toy"] == t and r["model"] == model for r in rows)]:
            rs = [r for r in rows if r["toy"] == toy and r["model"] == model]

            def m(side, key, rs=rs):
                vals = [r[side][key] for r in rs if r[side][key] is not None]
                return statistics.fmean(vals) if vals else None

            diff = statistics.fmean(r["ours"]["nll"] - r["zuko"]["nll"] for r in rs)
            ratio = m("ours", "s_per_1000") / m("zuko", "s_per_1000")
            lines.append(
                f"| {model} | {toy} | {len(rs)} | {_fmt(m('ours', 'nll'))} | "
                f"{_fmt(m('zuko', 'nll'))} | {diff:+.3f} | {_fmt(m('ours', 'excess'))} | "
                f"{_fmt(m('zuko', 'excess'))} | {_fmt(m('ours', 's_per_1000'), 2)} | "
                f"{_fmt(m('zuko', 's_per_1000'), 2)} | {ratio:.2f} | "
                f"{_fmt(m('ours', 'sample_s_100k'), 3)} | {_fmt(m('zuko', 'sample_s_100k'), 3)} |"
            )
    div = [(r["model"], r["toy"], r["seed"], s) for r in rows for s in ("ours", "zuko")]
    div = [d for d, r in zip(div, [r[s] for r in rows for s in ("ours", "zuko")]) if r["diverged"]]
    lines.append("")
    lines.append(f"diverged runs: {div if div else 'none'}")
    return "\n".join(lines)


def rows(quick: bool, tiny: bool = False) -> list[dict]:
    """``genmodels bench`` rows, paired seeds on 8gaussians, one thread: training step (thread
    CPU time, median) and sampling time (100k points, thread CPU time, best of 3) of realnvp
    and nsf against zuko's RealNVP and NSF, and FFJORD's training step against zuko's CNF.
    Targets (#6, #13): coupling steps at most 0.8x zuko's, sampling at most zuko's time,
    FFJORD's step at most 0.6x zuko's CNF, NLL no worse than zuko's by more than 0.02 nats
    (judged only at the full budget: 5000 steps)."""
    from genmodels.bench import peer_version, row

    global SAMPLE_CLOCK
    SAMPLE_CLOCK = time.thread_time
    torch.set_num_threads(1)
    peer = peer_version("zuko")
    steps = 20 if tiny else 300 if quick else 5000
    out = []
    for model in ("realnvp",) if tiny else ("realnvp", "nsf"):
        r = run_one("8gaussians", model, 0, steps, 512, sample=not tiny)
        zname = "RealNVP" if model == "realnvp" else "NSF"
        out.append(
            row(
                "flows",
                f"{model} training step, 8gaussians, batch 512",
                r["ours"]["s_per_1000"],
                r["zuko"]["s_per_1000"],
                f"{peer} {zname}",
                unit="ms",
                limit=0.8,
                note=f"median of {steps} steps; target #6",
            )
        )
        out.append(
            row(
                "flows",
                f"{model} test NLL after {steps} steps",
                r["ours"]["nll"],
                r["zuko"]["nll"],
                f"{peer} {zname}",
                unit="nats",
                measure="difference",
                limit=None if steps < 5000 else 0.02,
                note="target +0.02 (#6) at 5000 steps" if steps < 5000 else "target #6",
            )
        )
        if not tiny:
            out.append(
                row(
                    "flows",
                    f"{model} sampling 100k points (trained)",
                    r["ours"]["sample_s_100k"],
                    r["zuko"]["sample_s_100k"],
                    f"{peer} {zname}",
                    limit=1.0,
                    note="thread CPU, best of 3; target #6",
                )
            )
    if not tiny:
        from genmodels import data as gdata

        pool = gdata.load("8gaussians", split="train").x.float()
        torch.manual_seed(0)
        ours = _ours("ffjord")
        ours.init_from_data(pool)
        torch.manual_seed(0)
        flow = _zuko("ffjord")
        # the same training tolerances on both sides (ours' train_rtol/train_atol)
        flow.transform.rtol, flow.transform.atol = ours.cnf.train_rtol, ours.cnf.train_atol
        zpool = (pool - pool.mean(0)) / pool.std(0)
        cnf_steps = 10 if quick else 100
        timing = _train_paired(
            {
                "ours": (lambda i: ours.loss(pool[i]), ours),
                "zuko": (lambda i: -flow().log_prob(zpool[i]).mean(), flow),
            },
            pool,
            cnf_steps,
            256,
            0,
            lr=2e-3,
        )
        out.append(
            row(
                "flows",
                "ffjord training step, 8gaussians, batch 256",
                timing["ours"][0],
                timing["zuko"][0],
                f"{peer} CNF",
                unit="ms",
                limit=0.6,
                note=f"median of {cnf_steps} steps; target #13",
            )
        )
    return out


def _budget(model: str) -> tuple[int, int, float, dict]:
    """``(steps, batch, lr, recipe)`` of ``model``'s registered budget on 2D points."""
    from genmodels.models.budgets import budget

    b = budget(model, "points")
    steps, batch, lr = b.pop("steps"), b.pop("batch_size"), b.pop("lr")
    unsupported = set(b) - {"warmup_steps", "lr_schedule", "optimizer", "weight_decay",
                            "ema_decay", "ema_start"}  # fmt: skip
    if unsupported:
        raise ValueError(f"--budget: {model}'s budget has fields this benchmark does not "
                         f"run: {sorted(unsupported)}")  # fmt: skip
    return steps, batch, lr, {k: v for k, v in b.items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="realnvp,nsf")
    p.add_argument("--toys", default=",".join(TOYS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. +seeds-1")
    p.add_argument(
        "--summarise",
        nargs="+",
        metavar="JSON",
        help="print the table of rows saved by earlier --json runs (merged), train nothing",
    )
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--no-sample", action="store_true", help="skip the 100k-sample timing")
    p.add_argument(
        "--budget",
        action="store_true",
        help="each model's registered budget (models/budgets.py: steps, batch, lr, warm-up, "
        "schedule, weight decay, EMA) for both sides, instead of --steps/--batch/--lr",
    )
    p.add_argument(
        "--fused-adam",
        action="store_true",
        help="torch's fused Adam for both sides (a shared cost that is ~5x cheaper on CPU)",
    )
    p.add_argument("--quick", action="store_true", help="2 toys, 1 seed, 1000 steps")
    p.add_argument("--json", default=None, help="also write the raw rows here")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of our model's config (JSON value; repeatable)",
    )
    p.add_argument("--against", default=None, metavar="SAVED.json",
                   help="do not train zuko's side: take its row from this earlier run "
                   "(same toy, model, seed, steps, batch, lr, recipe)")  # fmt: skip
    a = p.parse_args(argv)
    if a.summarise:
        rows = [r for f in a.summarise for r in json.load(open(f))]
        print(summarise(rows))
        return
    torch.set_num_threads(1)
    config = {}
    for kv in a.config:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--config wants KEY=VALUE, got {kv!r}")
        config[key] = json.loads(value)
    saved = json.load(open(a.against)) if a.against else None
    toys, seeds, steps = a.toys.split(","), a.seeds, a.steps
    if a.quick:
        toys, seeds, steps = ["8gaussians", "checkerboard"], 1, 1000
    rows = []
    for model in a.models.split(","):
        batch, lr, recipe = a.batch, a.lr, None
        if a.budget:
            steps, batch, lr, recipe = _budget(model)
            print(f"{model}: registered budget steps={steps} batch={batch} lr={lr} {recipe}")
        for toy in toys:
            for seed in range(a.first_seed, a.first_seed + seeds):
                run = dict(steps=steps, batch=batch, lr=lr, recipe=recipe)
                peer = None if saved is None else _saved_peer(saved, toy, model, seed, run)
                r = run_one(toy, model, seed, steps, batch, a.fused_adam, lr, not a.no_sample,
                            recipe, config, peer=saved is None)  # fmt: skip
                if peer is not None:
                    r["zuko"], r["zuko_from"] = peer, a.against
                r.update(run)
                rows.append(r)
                print(
                    f"{model:8s} {toy:12s} seed {seed}: ours {r['ours']['nll']:.4f} "
                    f"({r['ours']['s_per_1000']:.2f} s/1k)  zuko {r['zuko']['nll']:.4f} "
                    f"({r['zuko']['s_per_1000']:.2f} s/1k)  exact {_fmt(r['exact_nll'], 4)}",
                    flush=True,
                )
                if a.json:
                    with open(a.json, "w") as f:
                        json.dump(rows, f, indent=1)
    print()
    opt = "fused Adam" if a.fused_adam else "Adam"
    print(f"steps={steps} batch={batch} lr={lr} seeds={seeds} threads=1 float32 {opt} {recipe}")
    print(summarise(rows))


if __name__ == "__main__":
    main()
