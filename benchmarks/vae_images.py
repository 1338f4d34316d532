"""VAE benchmark: train with the CLI's defaults, then bound the test NLL in bits/dim.

    PYTHONPATH=src python benchmarks/vae_images.py --data digits
    PYTHONPATH=src python benchmarks/vae_images.py --data mnist5k --set width=512
    PYTHONPATH=src python benchmarks/vae_images.py --data moons
    PYTHONPATH=src python benchmarks/vae_images.py --run runs/vae-digits   # evaluate only

Trains exactly as ``genmodels train vae --data DATA`` does (no flags: the registered
defaults, early stopping on a validation split), times it, then reports on the
test split the ELBO, IWAE-64 and IWAE-512 bounds in bits/dim of the discrete data
beside the independent-pixel histogram baseline, and writes the VAE's pictures
to ``docs/figures/vae_DATA_*.png`` and the numbers to ``docs/figures/vae_DATA.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import genmodels.models.vae  # noqa: F401  (registers "vae")
from genmodels import cli
from genmodels import data as data_mod
from genmodels.evaluate.vae import vae_metrics
from genmodels.plot.vae import vae_pictures
from genmodels.train.checkpoint import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--run", type=Path, help="evaluate this run directory instead of training")
    ap.add_argument("--out", type=Path, help="run directory (default runs/vae-DATA-bench)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed")
    a = ap.parse_args()

    result: dict = {}
    run = a.run
    if run is None:
        run = a.out or Path(f"runs/vae-{a.data}-bench")
        argv = ["train", "vae", "--data", a.data, "--out", str(run), "--no-progress"]
        for s in a.set:
            argv += ["--set", s]
        t0 = time.perf_counter()
        code = cli.main(argv)
        result["train_seconds"] = round(time.perf_counter() - t0, 1)
        result["torch_threads"] = torch.get_num_threads()
        if code != 0:
            raise SystemExit(code)
    model = load_run(run, device="cpu")
    name = model.run_config["data"]
    train, test = data_mod.load(name, "train"), data_mod.load(name, "test")
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    result["steps_trained"] = max((r.get("step", 0) for r in steps), default=None)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    result.update(vae_metrics(model, train, test, generator=g))
    result["eval_seconds"] = round(time.perf_counter() - t0, 1)
    if "histogram_bits_per_dim" in result:
        result["iwae512_over_histogram"] = (
            result["iwae512_bits_per_dim"] / result["histogram_bits_per_dim"]
        )
    result.update(data=name, run=str(run), model_config=model.run_config.get("model_config"))
    pics = vae_pictures(model, test, a.figures, generator=g, prefix=f"vae_{name}")
    a.figures.mkdir(parents=True, exist_ok=True)
    (a.figures / f"vae_{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print("pictures:", ", ".join(str(p) for p in pics))


if __name__ == "__main__":
    main()
