"""Speed of genmodels' sdeint and BrownianMotion against torchsde, in the same process.

    PYTHONPATH=src python benchmarks/sde_speed.py [--batch 1024] [--dim 8] [--steps 1000]
        [--threads 1] [--repeats 3] [--cases euler,milstein,...] [--no-adaptive] [--only-adaptive]
        [--no-brownian] [--adjoint-batch 256] [--adjoint-steps 200] [--only-adjoint] [--no-adjoint]

Prints a Markdown table: median thread CPU seconds (``time.thread_time``, so other jobs on a
shared machine count less) over repeats that interleave the three contestants, and the
ratios ours / torchsde. Each fixed-step solve integrates over [0, 1] with dt = 1/steps and
returns y at 11 times. torchsde uses its defaults (BrownianInterval for the noise); genmodels
uses its default (increments drawn from a generator on the grid), then torchsde's own
BrownianInterval (made as torchsde's sdeint makes it: the solvers alone on the same kind of
path) and its BrownianMotion tree (a seeded queryable path; its cost is the seeded normals,
see docs/integrate_sde.md). Adaptive cases (``adaptive=True``, first step 0.01) need a
queryable path: there genmodels' default is a ForwardBrownian drawn from the generator as
the steps ask for it, and a BrownianMotion is a tree walked to its tolerance at every new
time. Adaptive cases are timed over at least 9 interleaved repeats. The #20 target (at most
0.7x torchsde's time) is read on the "drawn" and "their BI" columns; the BrownianMotion
column is reported, with no target.

The second table times forward + backward of ``sdeint_adjoint`` against
``torchsde.sdeint_adjoint`` (loss ys[-1].sum(), gradients wrt y0 and the SDE's parameters) in
thread CPU time, the variants interleaved (order alternating); the ratio column is ours
(default noise) / torchsde (default noise). "ours (their BI)" drives our solver with
torchsde's BrownianInterval: the solver alone, on the same kind of path.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genmodels.integrate.brownian import BrownianMotion
from genmodels.integrate.sde_adjoint import sdeint_adjoint
from genmodels.integrate.sdeint import sdeint


class MLPSDE(torch.nn.Module):
    """Drift: a 2-layer MLP of (t, y); diffusion by noise type."""

    def __init__(self, dim: int, noise_type: str, sde_type: str):
        super().__init__()
        self.noise_type, self.sde_type = noise_type, sde_type
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, 64), torch.nn.Tanh(), torch.nn.Linear(64, dim)
        )
        self.scale = torch.nn.Parameter(torch.tensor(0.3))

    def f(self, t, y):
        return self.net(torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1))

    def g(self, t, y):
        if self.noise_type == "diagonal":
            return self.scale * torch.sin(y) + 0.1
        if self.noise_type == "scalar":
            return (self.scale * torch.sin(y) + 0.1).unsqueeze(-1)
        return (self.scale * (1 + t)).expand(*y.shape, 1)  # additive, one channel


def _interleaved(fns, repeats: int) -> list[float]:
    """Median thread CPU seconds of each of ``fns``, run in turn ``repeats`` times (the order
    rotating from one repeat to the next)."""
    times = [[] for _ in fns]
    for r in range(repeats):
        for k in [(k + r) % len(fns) for k in range(len(fns))]:
            fn = fns[k]
            t0 = time.thread_time()
            fn()
            times[k].append(time.thread_time() - t0)
    return [statistics.median(t) for t in times]


_APPROX = {"srk": "space-time", "log_ode": "foster"}  # torchsde's sdeint, bm=None


def _their_bi(torchsde, method, size, dtype):
    """The BrownianInterval torchsde's sdeint makes when bm=None (on [0, 1])."""
    approx = _APPROX.get(method, "none")
    return torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=size, dtype=dtype, levy_area_approximation=approx
    )


# (sde_type, noise_type, method, adaptive)
CASES = [
    ("ito", "diagonal", "euler", False),
    ("ito", "diagonal", "milstein", False),
    ("ito", "diagonal", "srk", False),
    ("ito", "scalar", "srk", False),
    ("ito", "additive", "srk", False),
    ("stratonovich", "diagonal", "heun", False),
    ("stratonovich", "diagonal", "midpoint", False),
    ("stratonovich", "diagonal", "euler_heun", False),
    ("stratonovich", "diagonal", "log_ode", False),
    ("stratonovich", "diagonal", "milstein", False),
    ("ito", "diagonal", "milstein", True),
    ("ito", "additive", "srk", True),
    ("stratonovich", "diagonal", "heun", True),
]


def _case(torchsde, sde_type, noise_type, method, adaptive, y0, ts, dt, repeats):
    b, d = y0.shape
    sde = MLPSDE(d, noise_type, sde_type)
    m = d if noise_type == "diagonal" else 1
    gen = torch.Generator().manual_seed(0)
    levy = method in ("srk", "log_ode")
    approx = _APPROX.get(method, "none")
    kw = dict(method=method, dt=0.01 if adaptive else dt, adaptive=adaptive, rtol=1e-3, atol=1e-3)

    def ours():
        sdeint(sde, y0, ts, generator=gen, **kw)

    def ours_bi():  # torchsde's default path, made as its sdeint makes it
        sdeint(sde, y0, ts, _their_bi(torchsde, method, (b, m), y0.dtype), **kw)

    def ours_tree():
        bm = BrownianMotion(0.0, 1.0, size=(b, m), seed=0, levy_area=levy)
        if method == "log_ode":  # needs Davie/Foster areas: not in BrownianMotion
            bm = torchsde.BrownianInterval(0.0, 1.0, size=(b, m), levy_area_approximation=approx)
        sdeint(sde, y0, ts, bm, **kw)

    def theirs():
        torchsde.sdeint(sde, y0, ts, **kw)

    fns = [ours, ours_bi, ours_tree, theirs]
    name = f"{sde_type}/{noise_type}/{method}" + (" adaptive" if adaptive else "")
    if adaptive:  # ~30 ms solves: more repeats against the noise of a shared machine
        repeats = max(9, 3 * repeats)
    return (name, *_interleaved(fns, repeats))


def _adjoint_solvers(torchsde, sde, y0, ts, method, dt, size) -> dict:
    """Forward + backward (loss ys[-1].sum(), gradients wrt y0 and the parameters) of
    sdeint_adjoint with its default noise, on our BrownianMotion, on torchsde's
    BrownianInterval, and of torchsde.sdeint_adjoint with its defaults."""
    levy = method == "srk"

    def run(solver, make_bm=None):
        def go():
            y = y0.clone().requires_grad_()
            bm = None if make_bm is None else make_bm()
            solver(sde, y, ts, bm=bm, method=method, dt=dt)[-1].sum().backward()
            sde.zero_grad(set_to_none=True)

        return go

    approx = "space-time" if levy else "none"
    return {
        "ours": run(sdeint_adjoint),
        "tree": run(
            sdeint_adjoint, lambda: BrownianMotion(0.0, 1.0, size=size, seed=0, levy_area=levy)
        ),
        "bi": run(
            sdeint_adjoint,
            lambda: torchsde.BrownianInterval(0.0, 1.0, size=size, levy_area_approximation=approx),
        ),
        "theirs": run(torchsde.sdeint_adjoint),
    }


ADJOINT_CASES = [
    ("ito", "diagonal", "milstein"),  # adjoint: milstein (both libraries' default)
    ("ito", "additive", "srk"),  # adjoint: euler
    ("stratonovich", "diagonal", "midpoint"),  # adjoint: midpoint
    ("stratonovich", "diagonal", "reversible_heun"),  # adjoint: adjoint_reversible_heun
]


def _adjoint_rows(torchsde, b, d, steps, repeats):
    ts = torch.linspace(0, 1, 11)
    y0 = torch.randn(b, d)
    out = []
    for sde_type, noise_type, method in ADJOINT_CASES:
        torch.manual_seed(0)
        sde = MLPSDE(d, noise_type, sde_type)
        size = (b, d if noise_type == "diagonal" else 1)
        t = _paired(_adjoint_solvers(torchsde, sde, y0, ts, method, 1.0 / steps, size), repeats)
        med = [t["ours"], t["tree"], t["bi"], t["theirs"]]
        out.append((f"sdeint_adjoint {sde_type}/{noise_type}/{method}", *med, med[0] / med[3]))
    return out


def _adjoint_table(torchsde, args) -> None:
    table = _adjoint_rows(torchsde, args.adjoint_batch, args.dim, args.adjoint_steps, args.repeats)
    print(
        f"\nsdeint_adjoint, forward + backward: batch={args.adjoint_batch} dim={args.dim} "
        f"steps={args.adjoint_steps} threads={args.threads} (median of {args.repeats}, thread "
        "CPU seconds)\n"
    )
    print("| case | ours (default) | ours (BrownianMotion) | ours (their BI) | torchsde | ratio |")
    print("|---|---|---|---|---|---|")
    for name, *vals, ratio in table:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {ratio:.2f} |")


def _paired(fns: dict, pairs: int) -> dict:
    """Median thread CPU seconds of each function over ``pairs`` interleaved rounds (the order
    alternating), after one warm-up call each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for r in range(pairs):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            t0 = time.thread_time()
            fns[k]()
            times[k].append(time.thread_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="", help="comma-separated methods to run (default all)")
    ap.add_argument("--no-adaptive", action="store_true")
    ap.add_argument("--only-adaptive", action="store_true", help="only the adaptive cases")
    ap.add_argument("--no-brownian", action="store_true")
    ap.add_argument("--adjoint-batch", type=int, default=256)
    ap.add_argument("--adjoint-steps", type=int, default=200)
    ap.add_argument("--only-adjoint", action="store_true", help="skip the sdeint table")
    ap.add_argument("--no-adjoint", action="store_true", help="skip the sdeint_adjoint table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchsde

    if args.only_adjoint:
        return _adjoint_table(torchsde, args)

    b, d, dt = args.batch, args.dim, 1.0 / args.steps
    ts = torch.linspace(0, 1, 11)
    y0 = torch.randn(b, d)
    wanted = set(filter(None, args.cases.split(",")))
    rows = []
    with torch.no_grad():
        # warm-up (imports, allocator) on a tiny problem
        for st, nt, meth, ad in CASES[:1]:
            _case(torchsde, st, nt, meth, ad, y0[:4, :2], ts, 0.1, 1)
        for sde_type, noise_type, method, adaptive in CASES:
            if (wanted and method not in wanted) or (adaptive and args.no_adaptive):
                continue
            if args.only_adaptive and not adaptive:
                continue
            rows.append(
                _case(torchsde, sde_type, noise_type, method, adaptive, y0, ts, dt, args.repeats)
            )
        if (not wanted or "euler" in wanted) and not args.only_adaptive:  # per-step overhead
            name, *times = _case(
                torchsde, "ito", "diagonal", "euler", False, y0[:16, :2], ts, dt, args.repeats
            )
            rows.append((name + " (batch 16, d 2)", *times))

        if not args.no_brownian:
            grid = torch.linspace(0, 1, args.steps + 1).tolist()

            def queries(bm):
                for a, c in zip(grid[:-1], grid[1:]):
                    bm(a, c)

            ours_bm, bi, bt = _interleaved(
                [
                    lambda: queries(BrownianMotion(0.0, 1.0, size=(b, d), seed=0)),
                    lambda: queries(torchsde.BrownianInterval(0.0, 1.0, size=(b, d))),
                    lambda: queries(
                        torchsde.BrownianTree(0.0, torch.zeros(b, d), t1=1.0, tol=1e-5)
                    ),
                ],
                args.repeats,
            )
            name = f"{args.steps} sequential bm(t_k, t_k+1) queries"
            rows.append((name, None, None, ours_bm, bi))
            rows.append(("  ... torchsde.BrownianTree(tol=1e-5)", None, None, None, bt))

    print(
        f"batch={b} dim={d} steps={args.steps} threads={args.threads} "
        f"(median of {args.repeats} interleaved runs, thread CPU seconds)\n"
    )
    print(
        "| case | genmodels (drawn) | genmodels (their BI) | genmodels (BrownianMotion) "
        "| torchsde | ratios drawn / BI / BrownianMotion |"
    )
    print("|---|---|---|---|---|---|")
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    for name, a, bi_, c, r in rows:
        ratio = " / ".join("-" if x is None else f"{x / r:.2f}" for x in (a, bi_, c))
        print(f"| {name} | {fmt(a)} | {fmt(bi_)} | {fmt(c)} | {fmt(r)} | {ratio} |")
    if not args.no_adjoint:
        _adjoint_table(torchsde, args)


def _solvers(torchsde, sde, y0, ts, method, dt, size) -> dict:
    """The four solves of one case: ours with drawn increments, ours on torchsde's default
    BrownianInterval, ours on a BrownianMotion tree, torchsde's with its defaults."""
    gen = torch.Generator().manual_seed(0)
    levy = method in ("srk", "log_ode")
    return {
        "ours": lambda: sdeint(sde, y0, ts, method=method, dt=dt, generator=gen),
        "tree": lambda: sdeint(
            sde,
            y0,
            ts,
            method=method,
            dt=dt,
            bm=BrownianMotion(0.0, 1.0, size=size, seed=0, levy_area=levy),
        ),
        "bi": lambda: sdeint(
            sde, y0, ts, _their_bi(torchsde, method, size, y0.dtype), method=method, dt=dt
        ),
        "theirs": lambda: torchsde.sdeint(sde, y0, ts, method=method, dt=dt),
    }


def rows(quick: bool, tiny: bool = False) -> list[dict]:
    """``genmodels bench`` rows: each method's sdeint (drawn increments and, like for like, a
    queryable paths: torchsde's BrownianInterval, our BrownianMotion) against torchsde.sdeint,
    and sequential Brownian queries against torchsde's BrownianInterval; thread CPU time,
    interleaved, one thread. Target (#20): every method at most 0.7x torchsde's time with each
    library's default path and with both on torchsde's BrownianInterval; the BrownianMotion
    rows carry no target (their floor is the seeded normals, docs/integrate_sde.md); the
    Brownian path at most torchsde's."""
    import torchsde

    from genmodels.bench import peer_version, row

    torch.set_num_threads(1)
    b, d, steps, pairs = (
        (16, 2, 20, 1) if tiny else (256, 8, 200, 3) if quick else (1024, 8, 1000, 5)
    )
    dt, ts = 1.0 / steps, torch.linspace(0, 1, 11)
    y0 = torch.randn(b, d, generator=torch.Generator().manual_seed(0))
    peer = peer_version("torchsde")
    cases = [("ito", "diagonal", "euler")]
    if not tiny:
        cases += [
            ("ito", "diagonal", "milstein"),
            ("ito", "additive", "srk"),
            ("stratonovich", "diagonal", "heun"),
            ("ito", "diagonal", "srk"),
            ("stratonovich", "diagonal", "euler_heun"),
        ]
    out = []
    with torch.no_grad():
        for sde_type, noise_type, method in cases:
            torch.manual_seed(0)
            sde = MLPSDE(d, noise_type, sde_type)
            m = d if noise_type == "diagonal" else 1
            t = _paired(_solvers(torchsde, sde, y0, ts, method, dt, (b, m)), pairs)
            name = f"sdeint {sde_type}/{noise_type}/{method} {b}x{d}, {steps} steps"
            out.append(
                row(
                    "sde",
                    name,
                    t["ours"],
                    t["theirs"],
                    peer,
                    limit=0.7,
                    note="drawn increments; target #20",
                )
            )
            out.append(
                row(
                    "sde",
                    name + ", their BrownianInterval",
                    t["bi"],
                    t["theirs"],
                    peer,
                    limit=None,
                    note="both on torchsde's default path: the solvers alone, no target "
                    "(the shared path's cost bounds it, docs/integrate_sde.md)",
                )
            )
            out.append(
                row(
                    "sde",
                    name + ", BrownianMotion",
                    t["tree"],
                    t["theirs"],
                    peer,
                    limit=None,
                    note="seeded tree: no target, its draws bound it (docs/integrate_sde.md)",
                )
            )
        grid = torch.linspace(0, 1, steps + 1).tolist()

        def queries(bm):
            for a, c in zip(grid[:-1], grid[1:]):
                bm(a, c)

        t = _paired(
            {
                "ours": lambda: queries(BrownianMotion(0.0, 1.0, size=(b, d), seed=0)),
                "theirs": lambda: queries(torchsde.BrownianInterval(0.0, 1.0, size=(b, d))),
            },
            pairs,
        )
        out.append(
            row(
                "sde",
                f"{steps} sequential Brownian queries {b}x{d}",
                t["ours"],
                t["theirs"],
                f"{peer} BrownianInterval",
                limit=1.0,
                note="no target set; not slower",
            )
        )
    for sde_type, noise_type, method in ADJOINT_CASES[: 1 if tiny else None]:
        torch.manual_seed(0)
        sde = MLPSDE(d, noise_type, sde_type)
        size = (b, d if noise_type == "diagonal" else 1)
        t = _paired(_adjoint_solvers(torchsde, sde, y0, ts, method, dt, size), pairs)
        name = f"sdeint_adjoint {sde_type}/{noise_type}/{method} {b}x{d}, {steps} steps"
        note = "forward + backward; target #20"
        out.append(row("sde", name, t["ours"], t["theirs"], peer, limit=0.7, note=note))
        out.append(
            row(
                "sde",
                name + ", BrownianMotion",
                t["tree"],
                t["theirs"],
                peer,
                limit=0.7,
                note="queryable path, like for like; " + note,
            )  # fmt: skip
        )
    return out


if __name__ == "__main__":
    main()
