"""Time-series benchmarks (issue 14): spline coefficients, Neural CDE, latent ODE (CPU, 1 thread).

    PYTHONPATH=src python benchmarks/series.py coeffs        # NaN-aware spline coefficients
                                                           # vs torchcde (1000 x 3 x 100, 50% NaN)

Each part prints one table; docs/series.md holds the numbers and the commands.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from genmodels.integrate import natural_cubic_coeffs


def _time(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_coeffs(args) -> None:
    """``natural_cubic_coeffs`` vs ``torchcde.natural_cubic_coeffs`` on the issue's workload:
    1000 series x 3 channels x 100 points, each value NaN with probability 0.5, float32."""
    import torchcde

    g = torch.Generator().manual_seed(0)
    n, length, c = args.series, 100, 3
    x = torch.randn(n, length, c, generator=g)
    x[torch.rand(x.shape, generator=g) < 0.5] = float("nan")
    t = torch.linspace(0.0, 4 * torch.pi, length)
    ours_s, ours = _time(lambda: natural_cubic_coeffs(t, x), 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_s, ref = _time(lambda: torchcde.natural_cubic_coeffs(x, t), 1)
    a, b, two_c, three_d = ref.chunk(4, -1)
    diff = max(
        float((m - r).abs().max() / r.abs().max())
        for m, r in zip(ours, (a, b, two_c / 2, three_d / 3))
    )
    print(
        f"| {n} x {c} x {length}, 50% NaN | genmodels {ours_s:.3f} s | torchcde {ref_s:.2f} s "
        f"| speed-up {ref_s / ours_s:.0f}x | max |diff| / max |coef| {diff:.1e} (float32) |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    c = sub.add_parser("coeffs")
    c.add_argument("--series", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    {"coeffs": bench_coeffs}[args.part](args)


if __name__ == "__main__":
    main()
