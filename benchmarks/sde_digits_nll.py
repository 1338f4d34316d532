"""Digits: per-image PF-ODE NLL of dequantised test images, paired across diffusion runs (#17).

``genmodels evaluate RUN --bound-n all`` reports each run's mean over the 360 test images,
but the dequantisation draw ``u`` and the Hutchinson probe come from the evaluation's random
stream, which differs between a ``ddpm`` (its bound draws first) and a ``subvp``/``vesde``.
Here every run sees the *same* ``x + w u`` (one ``u`` per image, seeded) and the same
Hutchinson probe, so the difference of two runs is paired per image: what is left of its
noise is the runs' own.

For each run: ``-log p(x + w u)`` per image (nats; bits/dim in the flows' convention,
``genmodels.data.bits_per_dim``, as ``evaluate``), the mean, median
and the images with the largest NLL; with ``--exact-top K`` those K images are solved again
with the exact trace (D vector-Jacobian products) and alone with Hutchinson's, to tell a
real outlier from the estimator's noise or from a tolerance shared by a joint solve. Then the
paired differences (sub-VP − VP, VE − VP, VE − sub-VP) per seed and per image averaged over
the seeds: mean ± SE, median, share of images lower. The runs are read, never written.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python benchmarks/sde_digits_nll.py \\
        --runs /tmp/dg/runs --out docs/figures/sde_digits_nll360.json --exact-top 3
    # the same report again from the saved values, and without some images:
    PYTHONPATH=src python benchmarks/sde_digits_nll.py \\
        --from docs/figures/sde_digits_nll360.json --drop 268,346
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from genmodels import data as gdata
from genmodels.models.sde import uniform_dequantize
from genmodels.train.run_dir import load_run

MODELS = ("ddpm", "subvp", "vesde")


def per_image(model, xd: torch.Tensor, *, seed: int, trace: str = "hutchinson") -> dict:
    stats: dict = {}
    g = torch.Generator().manual_seed(seed)
    t0 = time.thread_time()
    with torch.no_grad():
        lp = model.log_prob(xd, trace=trace, generator=g, stats=stats).double()
    return {"nll": (-lp).tolist(), "nfe": stats.get("nfe"), "cpu_s": time.thread_time() - t0}


def summary(nll: list[float], d: int, info) -> dict:
    v = torch.tensor(nll, dtype=torch.float64)
    mean = float(v.mean())
    return {
        "mean_nats": mean,
        "se_nats": float(v.std() / math.sqrt(len(v))),
        "bits_per_dim": float(gdata.bits_per_dim(mean, info)),
        "median_bits_per_dim": float(gdata.bits_per_dim(float(v.median()), info)),
        "se_bits_per_dim": float(v.std() / math.sqrt(len(v))) / (d * math.log(2)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="/tmp/dg/runs", help="folder of MODEL-sSEED run dirs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0, help="seeds u (seed) and the probe (seed+1)")
    ap.add_argument("--exact-top", type=int, default=0, help="re-solve the K worst exactly")
    ap.add_argument("--n", type=int, default=None, help="the first N images (a smoke run)")
    ap.add_argument("--out", default=None, help="JSON with every per-image value")
    ap.add_argument("--from", dest="from_json", default=None, help="report a saved --out JSON")
    ap.add_argument("--drop", default="", help="with --from: image indices to leave out, 1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        report(res)
        if args.drop:
            report(res, drop=[int(i) for i in args.drop.split(",")])
        return

    test = gdata.load("digits", "test")
    x = test.x if args.n is None else test.x[: args.n]
    d = x[0].numel()
    res: dict = {"n_images": len(x), "seed": args.seed, "runs": {}}
    xd = None
    for s in args.seeds.split(","):
        for m in args.models.split(","):
            run = Path(args.runs) / f"{m}-s{s}"
            model = load_run(run)
            if xd is None:  # one u per image, the same for every run
                g = torch.Generator().manual_seed(args.seed)
                xd = uniform_dequantize(x, model.dequant_width, g)
            r = per_image(model, xd, seed=args.seed + 1)
            r.update(summary(r["nll"], d, test.info))
            order = sorted(range(len(x)), key=lambda i: -r["nll"][i])
            r["worst"] = [[i, r["nll"][i]] for i in order[:5]]
            if args.exact_top:
                top = order[: args.exact_top]
                ex = per_image(model, xd[top], seed=args.seed + 1, trace="exact")
                r["worst_exact"] = [[i, v] for i, v in zip(top, ex["nll"])]
                r["exact_cpu_s"] = ex["cpu_s"]
                alone = per_image(model, xd[top], seed=args.seed + 1)  # Hutchinson, alone
                r["worst_alone"] = [[i, v] for i, v in zip(top, alone["nll"])]
            res["runs"][f"{m}-s{s}"] = r
            print(
                f"{m}-s{s}: {r['bits_per_dim']:.4f} ± {r['se_bits_per_dim']:.4f} bits/dim "
                f"(median {r['median_bits_per_dim']:.4f}), NFE {r['nfe']}, "
                f"{r['cpu_s']:.1f} CPU s; worst {[(i, round(v, 1)) for i, v in r['worst']]}"
                + (
                    f"; exact {[(i, round(v, 1)) for i, v in r['worst_exact']]}"
                    if args.exact_top
                    else ""
                ),
                flush=True,
            )
    res["paired"] = report(res, drop=())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.out}")


def report(res: dict, drop=()) -> dict:
    """Per-run summaries and the paired differences (bits/dim) of sub-VP − VP, VE − VP and
    VE − sub-VP: per seed (mean ± SE over images, median, share of images lower) and per image
    averaged over the seeds first. ``drop``: image indices left out (named in the output)."""
    info = gdata.load("digits", "test").info
    n = res["n_images"]
    keep = torch.tensor([i for i in range(n) if i not in set(drop)])
    k = 64 * math.log(2)  # digits: D = 64
    tag = f" without images {sorted(drop)}" if drop else ""
    print(f"\n== {len(keep)} of {n} images{tag} ==")
    print("| run | mean bits/dim ± SE | median |")
    for name, r in res["runs"].items():
        sm = summary(torch.tensor(r["nll"], dtype=torch.float64)[keep].tolist(), 64, info)
        print(
            f"| {name} | {sm['bits_per_dim']:.4f} ± {sm['se_bits_per_dim']:.4f} "
            f"| {sm['median_bits_per_dim']:.4f} |"
        )
    seeds = sorted({name.rsplit("-s", 1)[1] for name in res["runs"]})
    out = {}
    for a_m, b_m in (("subvp", "ddpm"), ("vesde", "ddpm"), ("vesde", "subvp")):
        diffs = []
        for s in seeds:
            a, b = res["runs"].get(f"{a_m}-s{s}"), res["runs"].get(f"{b_m}-s{s}")
            if a is None or b is None:
                continue
            diffs.append((torch.tensor(a["nll"]) - torch.tensor(b["nll"])).double()[keep] / k)
        if not diffs:
            continue
        rows = [_stats(dd) for dd in diffs]
        pooled = _stats(torch.stack(diffs).mean(0))  # per image, the seeds' mean first
        out[f"{a_m}-{b_m}"] = {"per_seed": rows, "seed_averaged": pooled}
        print(f"{a_m} − {b_m}, paired per image (bits/dim){tag}:")
        for s, st in zip(seeds, rows):
            print(f"  seed {s}: {_fmt(st)}")
        print(f"  per image, averaged over the seeds: {_fmt(pooled)}")
    return out


def _stats(d: torch.Tensor) -> dict:
    return {
        "mean": float(d.mean()),
        "se": float(d.std() / math.sqrt(len(d))),
        "median": float(d.median()),
        "share_lower": float((d < 0).double().mean()),
    }


def _fmt(st: dict) -> str:
    return (
        f"mean {st['mean']:+.4f} ± {st['se']:.4f}, median {st['median']:+.4f}, "
        f"lower on {100 * st['share_lower']:.1f}% of the images"
    )


if __name__ == "__main__":
    main()
