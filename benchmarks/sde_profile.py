"""Where the time of sdeint / sdeint_adjoint goes, against torchsde, in the same process.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde_profile.py adaptive [--repeats 11]
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sde_profile.py adjoint [--repeats 3]

``adaptive``: the adaptive cases of ``sde_speed.py`` (``bm=None`` for ours, torchsde's
defaults), thread CPU time of the whole solve and of the time spent inside the SDE's f and g
(each call bracketed by ``time.thread_time``), medians over interleaved repeats; the rest is
the solver's own work (steps, Brownian path, error norm, Python).

``adjoint``: the adjoint cases of ``sde_speed.py`` on torchsde's ``BrownianInterval`` for both
libraries, forward + backward; thread CPU time inside the ``BrownianInterval`` queries and the
rest.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sde_speed import ADJOINT_CASES, MLPSDE

from genmodels.integrate.sde_adjoint import sdeint_adjoint
from genmodels.integrate.sdeint import sdeint


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def _timed(fn, inside: list[float]):
    """``fn`` with the thread CPU time of each call added to ``inside[0]``."""

    def call(*args, **kwargs):
        a = time.thread_time()
        out = fn(*args, **kwargs)
        inside[0] += time.thread_time() - a
        return out

    return call


def _split(fns, inside: list[float], repeats: int) -> list[float]:
    """Interleaved repeats of ``fns``: median ms of [total, inside, rest] for each, flat."""
    total, within = [[] for _ in fns], [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            inside[0] = 0.0
            a = time.thread_time()
            fn()
            total[k].append(time.thread_time() - a)
            within[k].append(inside[0])
    cells = []
    for tot, inn in zip(total, within):
        rest = [t - e for t, e in zip(tot, inn)]
        cells += [_median_ms(tot), _median_ms(inn), _median_ms(rest)]
    return cells


def _adaptive_case(torchsde, sde_type, noise_type, method, y0, ts, repeats) -> list[float]:
    sde = MLPSDE(8, noise_type, sde_type)
    inside = [0.0]
    sde.f, sde.g = _timed(sde.f, inside), _timed(sde.g, inside)
    gen = torch.Generator().manual_seed(0)
    kw = dict(method=method, dt=0.01, adaptive=True, rtol=1e-3, atol=1e-3)
    fns = [lambda: sdeint(sde, y0, ts, generator=gen, **kw),
           lambda: torchsde.sdeint(sde, y0, ts, **kw)]  # fmt: skip
    with torch.no_grad():
        return _split(fns, inside, repeats)


def adaptive(torchsde, repeats: int) -> None:
    torch.manual_seed(0)
    y0, ts = torch.randn(1024, 8), torch.linspace(0, 1, 11)
    cases = [("ito", "diagonal", "milstein"), ("ito", "additive", "srk"),
             ("stratonovich", "diagonal", "heun")]  # fmt: skip
    print("| case (ms) | ours: total | inside f, g | rest | torchsde: total | inside f, g "
          "| rest | ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        cells = _adaptive_case(torchsde, *case, y0, ts, repeats)
        row = " | ".join(f"{c:.2f}" for c in cells)
        print(f"| {'/'.join(case)} adaptive | {row} | {cells[0] / cells[3]:.2f} |")


def _adjoint_case(torchsde, bi_cls, inside, sde_type, noise_type, method, y0, ts, repeats):
    b, d = y0.shape
    torch.manual_seed(0)
    sde = MLPSDE(d, noise_type, sde_type)
    size = (b, d if noise_type == "diagonal" else 1)
    approx = "space-time" if method == "srk" else "none"

    def run(solver, own_bm):
        y = y0.clone().requires_grad_()
        bm = None if own_bm else bi_cls(0.0, 1.0, size=size, levy_area_approximation=approx)
        solver(sde, y, ts, bm=bm, method=method, dt=1.0 / 200)[-1].sum().backward()
        sde.zero_grad(set_to_none=True)

    fns = [lambda: run(sdeint_adjoint, False), lambda: run(torchsde.sdeint_adjoint, True)]
    return _split(fns, inside, repeats)


def adjoint(torchsde, repeats: int) -> None:
    bi_cls = torchsde.BrownianInterval
    call = bi_cls.__call__
    inside = [0.0]
    bi_cls.__call__ = _timed(call, inside)
    torch.manual_seed(0)
    ts, y0 = torch.linspace(0, 1, 11), torch.randn(256, 8)
    print("| case (ms; 256 x 8, 200 steps) | ours: total | in BrownianInterval | rest "
          "| torchsde: total | in BrownianInterval | rest | ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    try:
        for case in ADJOINT_CASES:
            cells = _adjoint_case(torchsde, bi_cls, inside, *case, y0, ts, repeats)
            row = " | ".join(f"{c:.1f}" for c in cells)
            print(f"| sdeint_adjoint {'/'.join(case)} | {row} | {cells[0] / cells[3]:.2f} |")
    finally:
        bi_cls.__call__ = call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["adaptive", "adjoint"])
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import torchsde

    if args.what == "adaptive":
        adaptive(torchsde, args.repeats or 11)
    else:
        adjoint(torchsde, args.repeats or 3)


if __name__ == "__main__":
    main()
