"""Before/after of a change to FFJORD's training step, in one process: the genmodels package of
another checkout (``--old``, e.g. main's src/genmodels, loaded as ``old_genmodels``) and this
one, each training the registered ``ffjord`` on the same toy from the same initial weights on
the same batches, their steps interleaved.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/cnf_step_ab.py \\
        --old /path/to/main/src/genmodels [--toy 2spirals] [--warm 300] [--steps 100]

``--warm`` steps of both first (untimed: a training solve takes more steps as the field
learns, so the timed steps are those of a trained-for-a-while field), then ``--steps`` timed
ones, old and new alternating (the order swapping every step). Prints the mean thread-CPU ms
per step of each, new/old as the ratio of the means and as the median of the per-step ratios
(paired: less sensitive to load drifting on a shared machine), and whether the two trainings'
losses stayed equal bit for bit (what a change that computes the same numbers must keep).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

import genmodels


def _load_old(path: str):
    """The package at ``path`` (a ``genmodels`` folder) as ``old_genmodels``."""
    folder = Path(path)
    if not (folder / "__init__.py").is_file():
        raise SystemExit(f"--old must be a genmodels package folder, got {path!r}")
    spec = importlib.util.spec_from_file_location(
        "old_genmodels", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_genmodels"] = mod
    spec.loader.exec_module(mod)
    return mod


def _side(pkg_name: str, toy: str, pool: torch.Tensor, lr: float):
    cnf = importlib.import_module(f"{pkg_name}.models.cnf")
    registry = importlib.import_module(f"{pkg_name}.registry")
    torch.manual_seed(0)
    model = cnf.build_ffjord(cnf.FFJORDConfig(), registry.DataInfo(toy, "points", (2,)))
    model.init_from_data(pool)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        i = torch.randint(len(pool), (256,), generator=gen)
        loss = model.loss(pool[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="the other checkout's src/genmodels folder")
    ap.add_argument("--toy", default="2spirals")
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    _load_old(args.old)
    from genmodels import data as gdata

    pool = gdata.load(args.toy, split="train").x.float()
    sides = {"old": _side("old_genmodels", args.toy, pool, args.lr)}
    sides["new"] = _side("genmodels", args.toy, pool, args.lr)
    same = True
    for _ in range(args.warm):
        same &= sides["old"]() == sides["new"]()
    times = {"old": [], "new": []}
    for s in range(args.steps):
        order = ("old", "new") if s % 2 == 0 else ("new", "old")
        losses = {}
        for k in order:
            t0 = time.thread_time()
            losses[k] = sides[k]()
            times[k].append(time.thread_time() - t0)
        same &= losses["old"] == losses["new"]
    mean = {k: sum(v) / len(v) * 1e3 for k, v in times.items()}
    paired = statistics.median(n / o for n, o in zip(times["new"], times["old"]))
    print(f"{args.toy}, steps {args.warm}..{args.warm + args.steps} (genmodels at "
          f"{Path(genmodels.__file__).parent} vs {args.old})")  # fmt: skip
    ratio = mean["new"] / mean["old"]
    print(f"ms/step old {mean['old']:.1f}  new {mean['new']:.1f}  new/old {ratio:.3f} "
          f"(median per-step ratio {paired:.3f})  losses equal bit for bit: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
