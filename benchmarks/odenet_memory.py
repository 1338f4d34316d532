"""ODE-Net vs ResNet on 8x8 digits: parameters, NFE, training-step memory and CPU time.

For the registered ``odenet`` (rk4, step 0.25 on [0, 1]) and ``resnet`` (one residual block),
and for the ODE-Net at 4x the default steps (step 0.0625) under backpropagation and under the
adjoint, one training step (loss forward + backward, batch 128 of random digits-shaped input):

- ``params``: trainable parameters;
- ``nfe fwd/bwd``: field evaluations of the forward solve and of the adjoint's backward solve;
- ``peak saved``: the peak over the step of the bytes autograd holds for backward (every tensor
  packed by ``saved_tensors_hooks``, counted once per storage while it is alive; the adjoint's
  own recomputation inside backward is counted too);
- ``cpu ms``: median thread CPU time of a step (one torch thread).

    PYTHONPATH=src python benchmarks/odenet_memory.py
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref

import torch

from genmodels.models.odenet import ODEBlock
from genmodels.registry import DataInfo, get

INFO = DataInfo("digits", "images", (1, 8, 8), num_classes=10)


class _Holder:
    __slots__ = ("t", "__weakref__")

    def __init__(self, t):
        self.t = t


def peak_saved_bytes(step) -> int:
    """Peak bytes of tensors alive for backward while ``step()`` runs (once per storage)."""
    live: dict[int, list[int]] = {}
    cur = peak = 0

    def release(key: int) -> None:
        nonlocal cur
        entry = live[key]
        entry[0] -= 1
        if entry[0] == 0:
            cur -= entry[1]
            del live[key]

    def pack(t):
        nonlocal cur, peak
        s = t.untyped_storage()
        key = s.data_ptr()
        if key in live:
            live[key][0] += 1
        else:
            live[key] = [1, s.nbytes()]
            cur += s.nbytes()
            peak = max(peak, cur)
        h = _Holder(t)
        weakref.finalize(h, release, key)
        return h

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
        step()
    return peak


def _block(model) -> ODEBlock | None:
    return model.body if isinstance(model.body, ODEBlock) else None


def measure(name: str, over: dict, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    spec = get(name)
    model = spec.build(spec.make_config(over), INFO)
    x = torch.randn(batch, 1, 8, 8)
    y = torch.randint(0, 10, (batch,))

    def step():
        model.zero_grad(set_to_none=True)
        model.loss((x, y)).backward()

    step()  # warm up
    block = _block(model)
    if block is not None:
        block.stats.nfe = block.stats.nfe_backward = 0
    peak = peak_saved_bytes(step)
    nfe = (block.stats.nfe, block.stats.nfe_backward) if block is not None else (1, 0)
    times = []
    for _ in range(reps):
        t0 = time.thread_time()
        step()
        times.append(time.thread_time() - t0)
    params = sum(p.numel() for p in model.parameters())
    return dict(params=params, nfe=nfe, peak=peak, ms=1e3 * statistics.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [
        ("resnet", "resnet", {}),
        ("odenet backprop, step 1/4", "odenet", {}),
        ("odenet adjoint, step 1/4", "odenet", {"adjoint": True}),
        ("odenet backprop, step 1/16", "odenet", {"step_size": 0.0625}),
        ("odenet adjoint, step 1/16", "odenet", {"step_size": 0.0625, "adjoint": True}),
    ]
    print(f"batch {args.batch}, one training step (loss forward + backward)")
    print(f"{'model':28s} {'params':>7s} {'nfe fwd/bwd':>12s} {'peak saved':>12s} {'cpu ms':>8s}")
    res = {}
    for label, name, over in rows:
        r = res[label] = measure(name, over, args.batch, args.reps)
        nfe = f"{r['nfe'][0]}/{r['nfe'][1]}"
        print(f"{label:28s} {r['params']:7d} {nfe:>12s} {r['peak']:12d} {r['ms']:8.1f}")
    for s in ("1/4", "1/16"):
        a, b = res[f"odenet adjoint, step {s}"], res[f"odenet backprop, step {s}"]
        print(f"adjoint / backprop peak saved bytes at step {s}: {a['peak'] / b['peak']:.3f}")


if __name__ == "__main__":
    main()
