"""Training is bit-identical across a refactor: hashes of the weights after 60 steps of
several registered models (points, images, labelled, a validation split) at their budgets.

Run it against two checkouts and compare the hashes:

    PYTHONPATH=OLD/src OMP_NUM_THREADS=1 python benchmarks/train_identity.py
    PYTHONPATH=NEW/src OMP_NUM_THREADS=1 python benchmarks/train_identity.py
"""

import hashlib
import time

import torch

from genmodels import data, registry
from genmodels.train import TrainConfig, fit

CASES = [
    ("ddpm", "moons"),  # points, EMA
    ("realnvp", "8gaussians"),  # points
    ("vae", "digits"),  # images, a validation split
    ("logreg", "moons"),  # labelled
    ("nsf", "digits"),  # images, ActNorm's data-dependent init
]


def main() -> None:
    for name, ds in CASES:
        spec = registry.get(name)
        info = data.info(ds)
        torch.manual_seed(0)
        model = spec.build(spec.config(), info)
        train = data.load(ds)
        if spec.name == "logreg" and hasattr(train, "labelled"):  # older checkouts: uses_labels
            train = train.labelled()
        d = spec.train_defaults(info.kind, ds)
        d.update(steps=60, progress=False, log_every=10, val_every=20, checkpoint_every=1000)
        t0 = time.perf_counter()
        res = fit(model, train, TrainConfig(**d))
        dt = time.perf_counter() - t0
        h = hashlib.sha256()
        for k, v in sorted(res.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        print(f"{name:8s} {ds:11s} {h.hexdigest()[:16]}  {dt:6.2f}s  loss {res.final_loss:.10g}")


if __name__ == "__main__":
    main()
