"""FFJORD's exact trace: the fused one-node field (``ConcatField.with_divergence``) against the
D vector-Jacobian products (``dynamics_with_divergence``), per field evaluation + backward.

One evaluation of ``(f, tr ∂f/∂z)`` at a state that requires grad, then one backward with
random cotangents on both outputs to ``z`` and every parameter: what each stage of a dopri5
solve costs under backprop (and what the adjoint's vector-Jacobian product of the augmented
dynamics costs). Batch 256, the ffjord field 2 -> 64 -> 64 -> 64 -> 2, float32, one thread.
The two sides are timed interleaved in one process, in CPU time of the thread
(``time.thread_time``), median over repeats of ``--inner`` calls; the ratio is fused / vjp.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/cnf_fused.py
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/cnf_fused.py --frobenius --no-grad
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genmodels.integrate import dynamics_with_divergence
from genmodels.models.cnf import ConcatField

FORMS = {
    "tanh, t at every layer (FFJORD's toy field)": dict(activation="tanh"),
    "elu, t at every layer": dict(activation="elu"),
    "elu, 1 Fourier pair at every layer": dict(activation="elu", time_freqs=1),
    "zuko form (elu, 3 Fourier pairs, first layer)": dict(
        activation="elu", time_freqs=3, time_input="first"
    ),
}


def _step(field, t, z, fused: bool, frobenius: bool, grad: bool) -> None:
    if not grad:
        with torch.no_grad():
            if fused:
                field.with_divergence(t, z, frobenius=frobenius)
            else:
                dynamics_with_divergence(field, t, z, frobenius=frobenius)
        return
    zz = z.detach().requires_grad_(True)
    if fused:
        out = field.with_divergence(t, zz, frobenius=frobenius)
    else:
        out = dynamics_with_divergence(field, t, zz, frobenius=frobenius)
    torch.autograd.backward(out, [torch.ones_like(o) for o in out])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--frobenius", action="store_true", help="also the Jacobian's norm")
    ap.add_argument("--no-grad", action="store_true", help="forward only, under no_grad")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    grad = not args.no_grad
    for name, kw in FORMS.items():
        field = ConcatField(2, 64, 3, **kw)
        for p in field.parameters():  # a trained-looking field: the last layer is not zero
            torch.nn.init.normal_(p, std=0.3)
        z = torch.randn(args.batch, 2)
        t = torch.tensor(0.4)
        times = {True: [], False: []}
        for _ in range(3):  # warm-up
            for fused in (True, False):
                _step(field, t, z, fused, args.frobenius, grad)
        for _ in range(args.repeats):
            for fused in (True, False):
                t0 = time.thread_time()
                for _ in range(args.inner):
                    _step(field, t, z, fused, args.frobenius, grad)
                times[fused].append((time.thread_time() - t0) / args.inner)
        f, v = statistics.median(times[True]), statistics.median(times[False])
        what = "forward" if args.no_grad else "eval+backward"
        extra = " +frobenius" if args.frobenius else ""
        print(f"{name}{extra}, {what}, batch {args.batch}: fused {f * 1e3:.3f} ms, "
              f"vjp {v * 1e3:.3f} ms, ratio {f / v:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
