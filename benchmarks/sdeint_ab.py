"""Before/after of an sdeint change, in one process: the ``integrate`` package of another
checkout (``--old``, e.g. main's src/genmodels/integrate, loaded under another name) and this
one, interleaved with torchsde.sdeint (its defaults); sde_speed.py's SDE and sizes.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sdeint_ab.py \\
        --old /path/to/main/src/genmodels/integrate [--rounds 30] [--cases heun,milstein,srk]
        [--fixed]   # also fixed-step heun, 1000 steps (fewer rounds: ~1 s solves)

Each round runs old, new and torchsde once, the order rotating; prints median thread CPU ms,
the ratios of medians and the median of the per-round ratios (paired, less sensitive to load
drifting on a shared machine), and the largest difference between old's and new's solutions
from one generator state (0: bit-identical).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch
from sde_speed import MLPSDE

from genmodels.integrate.sdeint import sdeint

CASES = {  # method: (sde_type, noise_type)
    "milstein": ("ito", "diagonal"),
    "srk": ("ito", "additive"),
    "heun": ("stratonovich", "diagonal"),
}


def _load_old(path: str):
    """The package at ``path`` (an ``integrate`` folder) as ``old_integrate``: its sdeint."""
    folder = Path(path)
    spec = importlib.util.spec_from_file_location(
        "old_integrate", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_integrate"] = mod
    spec.loader.exec_module(mod)
    return sys.modules["old_integrate.sdeint"].sdeint


def _rounds(fns: dict, rounds: int) -> dict:
    for fn in fns.values():  # warm-up
        fn()
    names = list(fns)
    times = {k: [] for k in names}
    for r in range(rounds):
        for i in range(len(names)):
            k = names[(i + r) % len(names)]
            t0 = time.thread_time()
            fns[k]()
            times[k].append(time.thread_time() - t0)
    return times


def _row(name: str, times: dict, diff: float) -> str:
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    paired = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
    return (
        f"| {name} | {med['old']:.2f} | {med['new']:.2f} | {med['torchsde']:.2f} "
        f"| {med['old'] / med['torchsde']:.3f} | {med['new'] / med['torchsde']:.3f} "
        f"| {paired('old', 'torchsde'):.3f} | {paired('new', 'torchsde'):.3f} "
        f"| {paired('new', 'old'):.3f} | {diff:.1e} |"
    )


def _case(old, torchsde, method: str, adaptive: bool, y0, ts, rounds: int) -> str:
    sde = MLPSDE(8, CASES[method][1], CASES[method][0])
    name = f"{'/'.join(CASES[method])}/{method}"
    if adaptive:
        kw = dict(method=method, dt=0.01, adaptive=True, rtol=1e-3, atol=1e-3)
        name += " adaptive"
    else:  # ~1 s solves
        kw = dict(method=method, dt=1e-3)
        rounds = max(3, rounds // 6)
    a = old(sde, y0, ts, generator=torch.Generator().manual_seed(1), **kw)
    b = sdeint(sde, y0, ts, generator=torch.Generator().manual_seed(1), **kw)
    g_old, g_new = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    fns = {
        "old": lambda: old(sde, y0, ts, generator=g_old, **kw),
        "new": lambda: sdeint(sde, y0, ts, generator=g_new, **kw),
        "torchsde": lambda: torchsde.sdeint(sde, y0, ts, **kw),
    }
    return _row(name, _rounds(fns, rounds), float((a - b).abs().max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the other checkout's integrate folder")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--cases", default="milstein,srk,heun", help="adaptive methods to run")
    ap.add_argument("--fixed", action="store_true", help="also fixed-step heun (1000 steps)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import torchsde

    old = _load_old(args.old)
    torch.manual_seed(0)
    y0, ts = torch.randn(1024, 8), torch.linspace(0, 1, 11)
    rows = []
    cases = [(m, True) for m in filter(None, args.cases.split(","))]
    if args.fixed:
        cases.append(("heun", False))
    with torch.no_grad():
        for method, adaptive in cases:
            rows.append(_case(old, torchsde, method, adaptive, y0, ts, args.rounds))
    print(
        "| case | old (ms) | new (ms) | torchsde (ms) | old / torchsde | new / torchsde "
        "| paired old / torchsde | paired new / torchsde | paired new / old | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
