"""ODE solver speed: genmodels.integrate vs torchdiffeq on neural vector fields (CPU, 1 thread).

Vector field: MLP d -> 64 -> 64 -> d with tanh, float32, t in [0, 1].  Rows per (d, batch):
dopri5 rtol=atol=1e-5 forward (no grad), forward+backward by backprop, by adjoint (default
norm, and seminorm on both sides), rk4 with step 0.01 forward (no grad) and forward+backward by
backprop (``rk4-backprop``: the fixed-step path the section 4 models train through).  Each row:
median of interleaved paired runs (order alternates), NFE counted by the same wrapper on both sides,
solutions/gradients compared (max relative difference), and the solver overhead
``wall - NFE * t_eval`` as a share of wall, with ``t_eval`` the no-grad time of one evaluation.
The methods added for torchdiffeq compatibility have one forward (no grad) row each, against
torchdiffeq's method of the same name: ``heun2``, ``heun3``, ``explicit_adams``,
``implicit_adams`` with step 0.01 and ``adaptive_heun``, ``fehlberg2`` with rtol=atol=1e-5
(``--modes heun2 heun3 adaptive_heun fehlberg2 explicit_adams implicit_adams``).
Backprop rows also print the field-only floor: the same number of field evaluations, forward and
backward, and nothing else (the time no solver can beat), as ms and as a share of torchdiffeq.

    PYTHONPATH=src python benchmarks/ode_speed.py            # full (>= 9 pairs per row)
    PYTHONPATH=src python benchmarks/ode_speed.py --quick    # short run
    PYTHONPATH=src python benchmarks/ode_speed.py --profile  # where a small solve's time goes

``rows(quick)`` is the entry of ``genmodels bench --only ode`` (thread CPU time, targets of
issues #4 and #13 beside each row).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchdiffeq
from torch import nn

from genmodels.integrate import odeint, odeint_adjoint

# The clock of every timing: wall time for the script, the thread's CPU time under
# ``genmodels bench`` (one torch thread, so a busy machine's waiting is not counted).
CLOCK = time.perf_counter


class MLP(nn.Module):
    def __init__(self, d: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, d)
        )
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.net(y)


def _run(lib: str, mode: str, f: MLP, y0: torch.Tensor, t: torch.Tensor):
    """One solve (and backward); returns (wall seconds, nfe, result tensors)."""
    ours = lib == "ours"
    kw = dict(rtol=1e-5, atol=1e-5, method="dopri5")
    params = list(f.parameters())
    f.nfe = 0
    t0 = CLOCK()
    if mode == "forward":
        with torch.no_grad():
            y = (odeint if ours else torchdiffeq.odeint)(f, y0, t, **kw)
        res = [y]
    elif mode == "rk4":
        with torch.no_grad():
            y = (odeint if ours else torchdiffeq.odeint)(
                f, y0, t, method="rk4", options=dict(step_size=0.01)
            )
        res = [y]
    elif mode in FIXED_NEW or mode in ADAPTIVE_NEW:
        kw_m = (
            dict(method=mode, options=dict(step_size=0.01)) if mode in FIXED_NEW
            else dict(method=mode, rtol=1e-5, atol=1e-5)
        )  # fmt: skip
        with torch.no_grad():
            y = (odeint if ours else torchdiffeq.odeint)(f, y0, t, **kw_m)
        res = [y]
    elif mode == "rk4-backprop":
        x0 = y0.clone().requires_grad_(True)
        y = (odeint if ours else torchdiffeq.odeint)(
            f, x0, t, method="rk4", options=dict(step_size=0.01)
        )
        loss = y[-1].square().sum()
        grads = torch.autograd.grad(loss, [x0, *params])
        res = [y.detach(), *grads]
    else:
        x0 = y0.clone().requires_grad_(True)
        if mode == "backprop":
            y = (odeint if ours else torchdiffeq.odeint)(f, x0, t, **kw)
        else:
            extra = dict(adjoint_options=dict(norm="seminorm")) if mode == "adjoint-semi" else {}
            y = (odeint_adjoint if ours else torchdiffeq.odeint_adjoint)(f, x0, t, **kw, **extra)
        loss = y[-1].square().sum()
        grads = torch.autograd.grad(loss, [x0, *params])
        res = [y.detach(), *grads]
    wall = CLOCK() - t0
    return wall, f.nfe, res


def _eval_time(f: MLP, y0: torch.Tensor, reps: int) -> float:
    tt = torch.zeros(())
    with torch.no_grad():
        for _ in range(3):
            f(tt, y0)
        times = []
        for _ in range(reps):
            t0 = CLOCK()
            f(tt, y0)
            times.append(CLOCK() - t0)
    return statistics.median(times)


def _floor(f: MLP, y0: torch.Tensor, nfe: int, reps: int = 3) -> float:
    """Field-only floor: ``nfe`` evaluations of ``f`` and their backward, nothing else."""
    x0 = y0.clone().requires_grad_(True)
    params, times = list(f.parameters()), []
    ones = torch.ones_like(y0)
    for _ in range(reps + 1):
        t0 = CLOCK()
        outs = [f.net(x0) for _ in range(nfe)]
        torch.autograd.grad(outs, [x0, *params], [ones] * nfe)
        times.append(CLOCK() - t0)
    return statistics.median(times[1:])


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-12)) for x, y in zip(a, b))


FIXED_NEW = ("heun2", "heun3", "explicit_adams", "implicit_adams")
ADAPTIVE_NEW = ("adaptive_heun", "fehlberg2")
MODES = ("forward", "backprop", "adjoint", "adjoint-semi", "rk4", "rk4-backprop")


def measure(d: int, batch: int, mode: str, pairs: int, floor: bool = False) -> dict:
    """One row: medians of ``pairs`` interleaved runs (order alternating) of ours and
    torchdiffeq's ``mode`` on an MLP field of dimension ``d`` at ``batch``, after a warm-up."""
    torch.manual_seed(0)
    f = MLP(d)
    y0 = torch.randn(batch, d)
    t = torch.linspace(0.0, 1.0, 2)
    t_eval = _eval_time(f, y0, 50 if batch < 4096 else 10)
    _run("ours", mode, f, y0, t)  # warm-up both
    _run("tdq", mode, f, y0, t)
    walls = {"ours": [], "tdq": []}
    nfes, results = {}, {}
    for r in range(pairs):
        for lib in ("ours", "tdq") if r % 2 == 0 else ("tdq", "ours"):
            w, n, res = _run(lib, mode, f, y0, t)
            walls[lib].append(w)
            nfes[lib], results[lib] = n, res
    mo, mt = statistics.median(walls["ours"]), statistics.median(walls["tdq"])
    fl = None
    if floor and mode in ("backprop", "rk4-backprop"):
        fl = _floor(f, y0, nfes["tdq"])
    return {
        "ours_s": mo,
        "tdq_s": mt,
        "nfe_ours": nfes["ours"],
        "nfe_tdq": nfes["tdq"],
        "overhead_ours": max(0.0, mo - nfes["ours"] * t_eval) / mo,
        "overhead_tdq": max(0.0, mt - nfes["tdq"] * t_eval) / mt,
        "max_rel_diff": _rel(results["ours"], results["tdq"]),
        "floor_s": fl,
    }


def target(mode: str, batch: int) -> tuple[float, str]:
    """The issues' targets (ratio to torchdiffeq's time) and where each was set."""
    if batch == 1 and mode in ("forward", "backprop", "adjoint", "adjoint-semi"):
        return 0.5, "#4"
    if mode in ("adjoint", "adjoint-semi"):
        return 0.7, "#4"
    if mode == "rk4" and batch == 1:
        return 0.75, "#4"
    if mode == "rk4-backprop" and batch == 1:
        return 0.85, "#13"
    return 1.0, "#13" if mode == "rk4-backprop" else "not slower"


def rows(quick: bool, tiny: bool = False) -> list[dict]:
    """``genmodels bench`` rows: every mode at d in (2, 64) and batch in (1, 256) (quick:
    5 pairs per row; full: also batch 4096, 9 pairs), ratio of medians to torchdiffeq's."""
    from genmodels.bench import peer_version, row

    global CLOCK
    CLOCK = time.thread_time
    torch.set_num_threads(1)
    if tiny:
        grid, modes, pairs = [(2, 1)], ("forward",), 1
    else:
        batches = (1, 256) if quick else (1, 256, 4096)
        grid, modes, pairs = [(d, b) for d in (2, 64) for b in batches], MODES, 5 if quick else 9
    peer, out = peer_version("torchdiffeq"), []
    for d, batch in grid:
        for mode in modes:
            m = measure(d, batch, mode, pairs)
            limit, src = target(mode, batch)
            note = f"NFE {m['nfe_ours']}/{m['nfe_tdq']}, max rel diff {m['max_rel_diff']:.0e}"
            out.append(
                row(
                    "ode",
                    f"{mode} d={d} batch={batch}",
                    m["ours_s"] * 1e3,
                    m["tdq_s"] * 1e3,
                    peer,
                    unit="ms",
                    limit=limit,
                    note=f"{note}; target {src}",
                )
            )
    return out


def profile(d: int = 64, batch: int = 1, solves: int = 100) -> None:
    """cProfile of dopri5 forward solves: time per solve and the share spent inside ``func``."""
    import cProfile
    import io
    import pstats

    torch.manual_seed(0)
    f, y0, t = MLP(d), torch.randn(batch, d), torch.linspace(0.0, 1.0, 2)
    for lib, solve in (("genmodels", odeint), ("torchdiffeq", torchdiffeq.odeint)):
        with torch.no_grad():
            for _ in range(5):
                solve(f, y0, t, rtol=1e-5, atol=1e-5)
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(solves):
                solve(f, y0, t, rtol=1e-5, atol=1e-5)
            pr.disable()
        st = pstats.Stats(pr)
        inside = sum(v[3] for k, v in st.stats.items() if k[2] == "forward" and k[0] == __file__)
        print(
            f"{lib}: {st.total_tt / solves * 1e3:.2f} ms/solve under cProfile, "
            f"{inside / st.total_tt:.0%} inside func"
        )
        out = io.StringIO()
        pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(8)
        print("\n".join(out.getvalue().splitlines()[6:16]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 pairs per row, smaller batches")
    ap.add_argument("--pairs", type=int, default=None, help="paired runs per row (default 9)")
    ap.add_argument("--dims", type=int, nargs="*", default=[2, 64])
    ap.add_argument("--batches", type=int, nargs="*", default=None)
    ap.add_argument("--modes", nargs="*", default=list(MODES))
    ap.add_argument("--profile", action="store_true", help="cProfile dopri5 forward, d=64, batch 1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.profile:
        profile()
        return
    pairs = args.pairs or (3 if args.quick else 9)
    batches = args.batches or ([1, 256] if args.quick else [1, 256, 4096])
    print(f"torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}, 1 thread, "
          f"{pairs} interleaved pairs per row, medians\n")  # fmt: skip
    print("| d | batch | row | ours ms | torchdiffeq ms | ratio | NFE ours/tdq | "
          "overhead ours / tdq | max rel diff | field-only floor ms (/ tdq) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in args.dims:
        for batch in batches:
            for mode in args.modes:
                m = measure(d, batch, mode, pairs, floor=True)
                mo, mt = m["ours_s"], m["tdq_s"]
                fl = m["floor_s"]
                floor = "-" if fl is None else f"{fl * 1e3:.2f} ({fl / mt:.2f}x)"
                print(
                    f"| {d} | {batch} | {mode} | {mo * 1e3:.2f} | {mt * 1e3:.2f} | "
                    f"{mo / mt:.2f}x | {m['nfe_ours']}/{m['nfe_tdq']} | "
                    f"{m['overhead_ours']:.0%} / {m['overhead_tdq']:.0%} | "
                    f"{m['max_rel_diff']:.1e} | {floor} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
