"""Training budgets: one table keyed by (model, data kind or data set).

``budget(model, kind, data)`` starts from ``BUDGETS[(model, kind)]`` and updates it with
``BUDGETS[(model, data)]`` (a data set's own budget, e.g. mnist5k's U-Net steps), so a
refinement states only what differs. Any ``TrainConfig`` field may appear; the command
line's flags and ``--set`` override these, and :func:`genmodels.train.fit` resolves
``lr=None`` from the same numbers (the model carries them as ``train_defaults``).

Where each number comes from:

- ``ddpm`` on points (docs/benchmarks.md, "DDPM on the 2D toys"): 20000 steps with EMA
  0.999 reach sliced W1 1.43-1.45x the floor on moons with the ancestral sampler (two
  seeds, unscaled time embedding; with the points default ``time_scale=0.1``, 1.35-1.46x over
  three seeds, docs/sde.md); the issue's benchmark workload (5000 steps, EMA 0.995) reaches
  2.0x. The EMA carries the quality (the raw weights of a 5000-step run: 7.8x the floor), hence a
  longer average over a longer run.
- ``ddpm`` on images (docs/images.md): measured to reach the quality target on 8x8 digits
  within the CPU budget; mnist5k's own budget for the U-Net (2000 steps, EMA from step
  1000, gradient clipping).
- ``ncsn`` (docs/score.md, "Quality at the registered defaults"): points 20000 steps of 1024
  (the DDPM's points budget; at 10000 steps moons sat at 1.3-2.1x the sliced-W1 floor
  over three sampling seeds); digits 15000 steps of 128 with the network's input scaled
  and ε = 3.3e-6 (at 5000 steps the Fréchet fraction was 0.35; at 15000, 0.14), well
  inside the 10-minute single-thread limit (about 5 minutes of CPU with evaluation).
- flows on images (docs/flows.md, "Images"): small batches, early stopping on a
  validation split.
- ``vae``: docs/vae.md.
- ``neural-cde``, ``gru-classifier`` on series, ``latent-ode``: docs/series.md (the issue's
  budgets: 240 steps of 32 series for the CDE; 1500 steps of 128 for the latent ODE;
  gradient clipping at 1.0; the latent ODE's baseline ``gru-seq2seq`` gets its budget, lr
  included, for a same-budget comparison). ``gru-classifier``'s lr 1e-2 is the best of a sweep over
  3e-3 / 1e-2 / 3e-2 at 240 steps (at 3e-3 it stays at chance).
- ``ffjord``, ``planar-cnf`` (docs/cnf.md): sized to the issue's 10-minute single-thread limit
  (an adaptive solve per step, its cost grows as the field learns); ``ffjord`` (tanh field):
  1000 steps reach test NLL 2.872 on 8gaussians (exact 2.833) in 1.7 min CPU with evaluation.
  Now 3000 steps with a 100-step linear warm-up and cosine decay to 0 (docs/cnf.md, "Quality
  at the registered budget"): no worse than realnvp on 7 of the 8 toys (2000 steps: 5 of 8),
  150-313 s of training CPU per toy (the field is ELU with one Fourier pair of t since stop 16:
  docs/cnf.md, "The registered field: one Fourier pair"). How the recipe was chosen: on
  rings, seed 0, 2000 steps reach test NLL 3.334 with the cosine schedule against 3.377 at a
  constant 2e-3 (a peak of 5e-3 was worse: 3.407 at step 1000 vs
  3.367), training at rtol = atol = 1e-4 (``train_rtol``, evaluation at 1e-5) 3.338 in 0.71x
  the CPU time; FFJORD's concatsquash layers were worse here (3.472 vs 3.367 at step 1000).
- neural processes (``cnp``, ``np``, ``ndp``, ``nd2p``) on tasks: the NDP paper's budget
  (Norcliffe et al. 2021, section 5): batch 5, learning rate 1e-3, 30 epochs of the 490
  training functions = 2940 steps (100 epochs = 9800 steps on ``lv``).
- ``gp`` on tasks (docs/processes.md): Adam at 0.05 on the log hyperparameters converges in
  a few hundred steps of 16 tasks; float64, as exact GP numerics want.
- ``odenet``, ``resnet`` on digits (docs/cnf.md, "ODE-Net vs ResNet"): 1500 steps of 128 give
  test accuracy 99.2% (odenet, 3.8 min CPU) and 98.1% (resnet, 17 s CPU), seed 0.
"""

from __future__ import annotations

__all__ = ["BUDGETS", "budget"]

_FLOW_POINTS = dict(steps=5000, batch_size=512, lr=1e-3, ema_decay=None)
_FLOW_IMAGES = dict(
    steps=2000, batch_size=64, lr=1e-3, ema_decay=None, val_fraction=0.1, val_every=200, patience=4
)
_CLASSIFIER = dict(steps=3000, batch_size=512, lr=1e-3, ema_decay=None)
_SERIES_CLASSIFIER = dict(steps=240, batch_size=32, lr=3e-3, grad_clip=1.0, ema_decay=None)
_CNF_POINTS = dict(steps=2000, batch_size=256, lr=2e-3, ema_decay=None)
_LATENT_ODE = dict(steps=1500, batch_size=128, lr=1e-2, grad_clip=1.0, ema_decay=None)
_ODENET = dict(steps=1500, batch_size=128, lr=1e-3, ema_decay=None)
_PROCESS = dict(steps=2940, batch_size=5, lr=1e-3, ema_decay=None, checkpoint_every=1000)
_VAE = dict(steps=6000, batch_size=128, lr=1e-3, val_fraction=0.1, val_every=200, patience=8)

_DDPM = {
    "points": dict(steps=20000, batch_size=1024, lr=1e-3, ema_decay=0.999),
    "images": dict(steps=5000, batch_size=128, lr=1e-3, ema_decay=0.999, warmup_steps=200),
}

BUDGETS: dict[tuple[str, str], dict] = {
    ("ddpm", "points"): _DDPM["points"],
    ("ddpm", "images"): _DDPM["images"],
    ("ddpm", "mnist5k"): dict(steps=2000, grad_clip=1.0, ema_start=1000),
    ("ncsn", "points"): dict(steps=20000, batch_size=1024, lr=1e-3, ema_decay=0.999),
    ("ncsn", "images"): dict(
        steps=15000, batch_size=128, lr=1e-3, ema_decay=0.999, warmup_steps=200
    ),
    # the score SDEs share the DDPM's networks and budgets (docs/sde.md): digits 67-78 s of
    # training CPU over 3 seeds; moons (their default) subvp 141 s, vesde 150 s (+70 s evaluate)
    **{(m, k): BUDGET for m in ("subvp", "vesde") for k, BUDGET in _DDPM.items()},
    **{(m, "points"): _FLOW_POINTS for m in ("nice", "realnvp", "nsf")},
    **{(m, "images"): _FLOW_IMAGES for m in ("nice", "realnvp", "nsf")},
    ("vae", "points"): _VAE,
    ("vae", "images"): _VAE,
    ("flow-classifier", "points"): _CLASSIFIER,
    ("logreg", "points"): dict(_CLASSIFIER, lr=1e-2),
    ("mlp-classifier", "points"): _CLASSIFIER,
    ("neural-cde", "series"): _SERIES_CLASSIFIER,
    ("gru-classifier", "series"): dict(_SERIES_CLASSIFIER, lr=1e-2),
    ("latent-ode", "series"): _LATENT_ODE,
    ("gru-seq2seq", "series"): _LATENT_ODE,
    ("ffjord", "points"): dict(_CNF_POINTS, steps=3000, warmup_steps=100, lr_schedule="cosine"),
    ("planar-cnf", "points"): _CNF_POINTS,
    ("odenet", "images"): _ODENET,
    ("resnet", "images"): _ODENET,
    # the NDP paper's budget: batch 5, Adam 1e-3, 30 epochs of 490 functions (100 on lv)
    **{(m, "tasks"): _PROCESS for m in ("cnp", "np", "ndp", "nd2p")},
    **{(m, "lv"): dict(steps=9800) for m in ("cnp", "np", "ndp", "nd2p")},
    ("gp", "tasks"): dict(steps=300, batch_size=16, lr=0.05, ema_decay=None, dtype="float64"),
}


def budget(model: str, kind: str, data: str | None = None) -> dict:
    """The training budget of ``model`` on ``kind`` data (refined for data set ``data``)."""
    out = dict(BUDGETS.get((model, kind), {}))
    if data is not None:
        out.update(BUDGETS.get((model, data), {}))
    return out
