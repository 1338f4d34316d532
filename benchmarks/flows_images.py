"""Image flows: train NICE, RealNVP and NSF with their registered defaults, report bits/dim.

    PYTHONPATH=src python benchmarks/flows_images.py --data digits
    PYTHONPATH=src python benchmarks/flows_images.py --data digits --models nsf --steps 500
    PYTHONPATH=src python benchmarks/flows_images.py --data mnist5k --steps 1000

Each model is trained exactly as ``genmodels train MODEL --data DATA`` does (the image
training defaults of the registry; ``--steps`` overrides the step budget), then on the test
split the dequantised bound ``-log p(x + w u)`` is averaged over ``--draws`` noise draws and
turned into bits/dim by ``genmodels.data.bits_per_dim`` (an upper bound on the bits/dim of
the discrete data). Beside it: the independent-pixel histogram baseline computed in the same
run and the VAE's numbers from docs/vae.md. Writes a sample grid per model to
``FIGURES/flow_MODEL_DATA_samples.png`` and merges the numbers into ``--json``
(default ``FIGURES/flows_DATA.json``), so models run in separate processes share one table.

``inside``: the fraction of (unquantised) samples whose every value lies in the data domain
[-1, 1 + w). The logit pre-transform maps the domain onto [logit a, logit(1 - a)], so the
density puts the rest of its mass just outside; the discrete model loses that mass (its
probabilities sum to ``inside``), which makes the bound looser, never invalid.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from genmodels import cli
from genmodels import data as data_mod
from genmodels.evaluate.vae import histogram_bits_per_dim
from genmodels.plot import image_grid
from genmodels.train.checkpoint import load_run

# docs/vae.md (same splits, same convention): the VAE's best bound on each data set.
VAE = {"digits": ("IWAE-512", 2.087), "mnist5k": ("IWAE-64", 1.473)}


def _evaluate(model, train, test, draws: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    nll = model.nll_bound(test.x, generator=g, draws=draws).double()
    out = {
        "nll_bound_nats": float(nll.mean()),
        "bits_per_dim": float(data_mod.bits_per_dim(float(nll.mean()), test.info)),
        "bits_per_dim_se": float(
            nll.std() / math.sqrt(len(nll)) / (math.prod(test.info.event_shape) * math.log(2))
        ),
        "draws": draws,
    }
    raw = model.sample(2000, generator=g, quantize=False)
    hi = 1 + model.bin_width
    out["inside"] = float(((raw >= -1) & (raw < hi)).flatten(1).all(1).double().mean())
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _table(results: dict, data: str) -> str:
    name, vae = VAE.get(data, ("VAE", float("nan")))
    hist = next(iter(results.values()))["histogram_bits_per_dim"]
    lines = [
        "| model | steps (best) | train wall | test bits/dim (± SE) | inside | "
        f"VAE {name} | histogram |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m, r in results.items():
        lines.append(
            f"| `{m}` | {r['steps_trained']} ({r['best_step']}) | {r['train_seconds']:.0f} s | "
            f"**{r['bits_per_dim']:.3f}** ± {r['bits_per_dim_se']:.3f} | {r['inside']:.3f} | "
            f"{vae:.3f} | {hist:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits", choices=("digits", "mnist5k"))
    ap.add_argument("--models", default="nice,realnvp,nsf")
    ap.add_argument("--steps", type=int, help="override the registered step budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draws", type=int, default=4, help="dequantisation draws per test image")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--json", type=Path, help="default FIGURES/flows_DATA.json (merged)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    train, test = data_mod.load(a.data, "train"), data_mod.load(a.data, "test")
    hist = histogram_bits_per_dim(train.x, test.x, test.info.levels)
    path = a.json or a.figures / f"flows_{a.data}.json"
    a.figures.mkdir(parents=True, exist_ok=True)
    for m in a.models.split(","):
        run = a.runs / f"{m}-{a.data}-bench"
        argv = ["train", m, "--data", a.data, "--out", str(run), "--no-progress"]
        if a.steps is not None:
            argv += ["--steps", str(a.steps)]
        for s in a.set:
            argv += ["--set", s]
        t0 = time.perf_counter()
        if cli.main(argv) != 0:
            raise SystemExit(f"training {m} failed")
        r = {"train_seconds": round(time.perf_counter() - t0, 1), "threads": a.threads}
        log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        r["steps_trained"] = max(x.get("step", 0) for x in log)
        vals = [x for x in log if "val_loss" in x]
        r["best_step"] = min(vals, key=lambda x: x["val_loss"])["step"] if vals else None
        model = load_run(run)
        r.update(_evaluate(model, train, test, a.draws, a.seed))
        r["histogram_bits_per_dim"] = hist
        r["model_config"] = model.run_config.get("model_config")
        r["train_config"] = model.run_config.get("train_config")
        grid = model.sample(64, generator=torch.Generator().manual_seed(a.seed))
        image_grid(grid, a.figures / f"flow_{m}_{a.data}_samples.png", title=f"{m}, {a.data}")
        results = json.loads(path.read_text()) if path.exists() else {}  # other processes'
        results[m] = r
        path.write_text(json.dumps(results, indent=1))
        print(json.dumps({m: {k: v for k, v in r.items() if "config" not in k}}, indent=1))
    print(_table(results, a.data))


if __name__ == "__main__":
    main()
