"""Before/after of a BrownianMotion change, in one process: sdeint driven by the BrownianMotion
of another checkout (``--old``, e.g. main's src/genmodels/integrate/brownian.py) and by this
one, interleaved with torchsde.sdeint (its default BrownianInterval); same sizes as
sde_speed.py. The solver is this checkout's in every column, so the columns differ only in
the Brownian path's code (which gives bit-identical values).

    PYTHONPATH=src python benchmarks/brownian_ab.py --old /path/to/old/brownian.py [--repeats 3]
        [--only-queries]   # just the sweep of sequential queries, W only and with Lévy area

Prints thread CPU seconds (median) and the ratios old / torchsde and new / torchsde.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch
from sde_speed import MLPSDE

import genmodels.integrate.sdeint as sdeint_module
from genmodels.integrate.brownian import BrownianMotion
from genmodels.integrate.sde_adjoint import sdeint_adjoint
from genmodels.integrate.sdeint import sdeint

CASES = [  # (sde_type, noise_type, method, adaptive)
    ("ito", "diagonal", "euler", False),
    ("ito", "diagonal", "milstein", False),
    ("ito", "additive", "srk", False),
    ("stratonovich", "diagonal", "heun", False),
    ("stratonovich", "diagonal", "midpoint", False),
    ("stratonovich", "diagonal", "euler_heun", False),
    ("ito", "diagonal", "milstein", True),
    ("ito", "additive", "srk", True),
    ("stratonovich", "diagonal", "heun", True),
]


def _load(path: str):
    spec = importlib.util.spec_from_file_location("old_brownian", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.BrownianMotion


def _median_times(fns: dict, repeats: int) -> dict:
    for fn in fns.values():  # warm-up
        fn()
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            t0 = time.thread_time()
            fns[k]()
            times[k].append(time.thread_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--only-queries", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import torchsde

    old_cls, new_cls = _load(args.old), BrownianMotion
    b, d, dt = args.batch, args.dim, 1.0 / args.steps
    ts = torch.linspace(0, 1, 11)
    y0 = torch.randn(b, d, generator=torch.Generator().manual_seed(0))
    print(f"batch={b} dim={d} steps={args.steps}, thread CPU s, median of {args.repeats}\n")
    print("| case | old BM | new BM | torchsde | old/torchsde | new/torchsde |")
    print("|---|---|---|---|---|---|")

    def show(name, t):
        o, n, r = t["old"], t["new"], t["theirs"]
        print(f"| {name} | {o:.3f} | {n:.3f} | {r:.3f} | {o / r:.2f} | {n / r:.2f} |", flush=True)

    if args.only_queries:
        return _queries(torchsde, old_cls, new_cls, b, d, args.steps, args.repeats, show)
    with torch.no_grad():
        for sde_type, noise_type, method, adaptive in CASES:
            torch.manual_seed(0)
            sde = MLPSDE(d, noise_type, sde_type)
            size = (b, d if noise_type == "diagonal" else 1)
            levy = method == "srk"
            kw = dict(method=method, dt=0.01 if adaptive else dt, adaptive=adaptive)
            kw.update(rtol=1e-3, atol=1e-3)

            def with_bm(cls, sde=sde, size=size, levy=levy, kw=kw):
                return lambda: sdeint(
                    sde, y0, ts, cls(0.0, 1.0, size=size, seed=0, levy_area=levy), **kw
                )

            fns = {
                "old": with_bm(old_cls),
                "new": with_bm(new_cls),
                "theirs": lambda sde=sde, kw=kw: torchsde.sdeint(sde, y0, ts, **kw),
            }
            reps = max(9, 3 * args.repeats) if adaptive else args.repeats
            name = f"{sde_type}/{noise_type}/{method}" + (" adaptive" if adaptive else "")
            show(name + ", bm=BrownianMotion", _median_times(fns, reps))
            if adaptive:  # bm=None: sdeint makes its own trees, with the class swapped in

                def internal(cls, sde=sde, kw=kw):
                    def go():
                        sdeint_module.BrownianMotion = cls
                        try:
                            sdeint(sde, y0, ts, generator=torch.Generator().manual_seed(0), **kw)
                        finally:
                            sdeint_module.BrownianMotion = new_cls

                    return go

                fns = {"old": internal(old_cls), "new": internal(new_cls), "theirs": fns["theirs"]}
                show(name + ", bm=None", _median_times(fns, reps))

        grid = torch.linspace(0, 1, args.steps + 1).tolist()

        def queries(make):
            def go():
                bm = make()
                for a, c in zip(grid[:-1], grid[1:]):
                    bm(a, c)

            return go

        fns = {
            "old": queries(lambda: old_cls(0.0, 1.0, size=(b, d), seed=0)),
            "new": queries(lambda: new_cls(0.0, 1.0, size=(b, d), seed=0)),
            "theirs": queries(lambda: torchsde.BrownianInterval(0.0, 1.0, size=(b, d))),
        }
        show(f"{args.steps} sequential bm(t_k, t_k+1) queries", _median_times(fns, args.repeats))

    # the adjoint (forward + backward) on a BrownianMotion, batch 256, 200 steps
    ab, asteps = 256, 200
    for sde_type, noise_type, method in [
        ("ito", "diagonal", "milstein"),
        ("ito", "additive", "srk"),
    ]:
        torch.manual_seed(0)
        sde = MLPSDE(d, noise_type, sde_type)
        size = (ab, d if noise_type == "diagonal" else 1)
        ya = y0[:ab]

        def adj(solver, make, sde=sde, ya=ya, method=method):
            def go():
                y = ya.clone().requires_grad_()
                solver(sde, y, ts, bm=make(), method=method, dt=1.0 / asteps)[-1].sum().backward()
                sde.zero_grad(set_to_none=True)

            return go

        levy = method == "srk"
        fns = {
            "old": adj(
                sdeint_adjoint,
                lambda s=size, lv=levy: old_cls(0.0, 1.0, size=s, seed=0, levy_area=lv),
            ),
            "new": adj(
                sdeint_adjoint,
                lambda s=size, lv=levy: new_cls(0.0, 1.0, size=s, seed=0, levy_area=lv),
            ),
            "theirs": adj(torchsde.sdeint_adjoint, lambda: None),
        }
        show(
            f"sdeint_adjoint {sde_type}/{noise_type}/{method} 256x8, 200 steps",
            _median_times(fns, args.repeats),
        )


def _queries(torchsde, old_cls, new_cls, b, d, steps, repeats, show):
    """A sweep of sequential bm(t_k, t_k+1) (with U under Lévy area) vs BrownianInterval."""
    grid = torch.linspace(0, 1, steps + 1).tolist()
    for levy in (False, True):

        def sweep(make, levy=levy):
            def go():
                bm = make()
                for a, c in zip(grid[:-1], grid[1:]):
                    bm(a, c, return_U=True) if levy else bm(a, c)

            return go

        approx = "space-time" if levy else "none"
        fns = {
            "old": sweep(lambda lv=levy: old_cls(0.0, 1.0, size=(b, d), seed=0, levy_area=lv)),
            "new": sweep(lambda lv=levy: new_cls(0.0, 1.0, size=(b, d), seed=0, levy_area=lv)),
            "theirs": sweep(
                lambda ap=approx: torchsde.BrownianInterval(
                    0.0, 1.0, size=(b, d), levy_area_approximation=ap
                )
            ),
        }
        name = f"{steps} sequential queries" + (", with U (space-time)" if levy else "")
        show(name, _median_times(fns, repeats))


if __name__ == "__main__":
    main()
