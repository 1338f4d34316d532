"""FFJORD at its registered defaults on the 2D toys: exact test NLL and CPU time, ours alone.

For each toy: ``registry.get("ffjord")`` with its default config, trained by
:func:`genmodels.train.fit` at the registered budget (``models/budgets.py``; the same call as
``genmodels train ffjord --data TOY``, seed 0), then the exact-trace test NLL (nats) on the
toy's whole test split under ``torch.no_grad()`` (dopri5 at the config's ``rtol``/``atol``).
Times are the thread CPU time of training and of the NLL evaluation (one torch thread), so a
loaded machine's waiting is not counted. The comparison with zuko's CNF at the same budget is
``flows_vs_zuko.py --models ffjord --budget``; this script is the cheaper half (no peer).

    python benchmarks/ffjord_toys.py --toys rings,circles --json /tmp/ffjord_toys.json
    python benchmarks/ffjord_toys.py --toys moons --set steps=500   # a TrainConfig override
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from genmodels import data as gdata
from genmodels.data.toys import TOYS
from genmodels.registry import get
from genmodels.train import TrainConfig, fit


def run_one(toy: str, seed: int = 0, train_overrides: dict | None = None) -> dict:
    """Train ``ffjord`` on ``toy`` at its registered defaults; the exact test NLL and times."""
    train, test = gdata.load(toy), gdata.load(toy, "test")
    spec = get("ffjord")
    cfg = spec.make_config({})
    model = spec.build(cfg, train.info)
    budget = dict(model.train_defaults, **(train_overrides or {}))
    t0 = time.thread_time()
    fit(model, train, TrainConfig(**budget, seed=seed, progress=False))
    train_cpu = time.thread_time() - t0
    model.eval()
    t0 = time.thread_time()
    with torch.no_grad():
        lp = torch.cat([model.log_prob(c) for c in test.x.float().split(5000)])
    return dict(
        toy=toy,
        seed=seed,
        budget=budget,
        config=vars(cfg),
        nll=-float(lp.mean()),
        train_cpu=train_cpu,
        eval_cpu=time.thread_time() - t0,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toys", default=",".join(TOYS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field of the budget (JSON value)")  # fmt: skip
    p.add_argument("--json", default=None, help="append one JSON line per toy here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    over = {}
    for kv in a.set:
        key, _, value = kv.partition("=")
        over[key] = json.loads(value)
    for toy in a.toys.split(","):
        r = run_one(toy, a.seed, over)
        print(json.dumps(r), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
