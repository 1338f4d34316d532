"""Evaluate a trained model (or a run directory) with comparable, labelled numbers.

What is computed is decided by the model's declared task (``ModelSpec.task`` in the
registry), one module per task:

- ``"density"`` (DDPM, VAE, flows; :mod:`genmodels.evaluate.density`): sample distances
  ``mmd2``, ``energy_distance``, ``swd`` beside their ``*_floor`` (points) or the Fréchet
  distance ``fd`` beside ``fd_floor``/``fd_gaussian`` (images); ``nll_nats``/``bits_per_dim``
  where the model has an exact ``log_prob``; ``nll_bound_nats``/``bits_per_dim_bound`` where
  it has a bound (both when it has both, except an image flow on quantised images: bound
  only); a VAE's ELBO/IWAE bounds (:mod:`genmodels.evaluate.vae`);
- ``"classifier"`` (:mod:`genmodels.evaluate.classification`): ``accuracy``, ``nll_nats`` of
  the labels, ``ece``; for points also ``auroc_ood`` and accuracy with a coordinate missing;
- ``"process"`` (:mod:`genmodels.evaluate.process`): ``target_ll_nats``, ``target_mse``
  (and ``oracle_target_ll_nats``, ``oracle_target_mse``: the true GP, on GP-drawn tasks)
  beside the context-mean baseline's ``baseline_target_ll_nats``, ``baseline_target_mse``,
  and ``n_tasks``, over the test split's ``batches(256)``;
- ``"series"`` (:mod:`genmodels.evaluate.series`): ``rmse_interp`` and ``rmse_extrap``, the
  RMSE of the predictive mean to the noise-free curve on the observed half of each test
  window and on the unobserved half after it, ``context_nll_nats`` and ``n_series``.

Every result also holds ``data`` and ``eval_seed``; non-finite numbers are written as null.
"""

from __future__ import annotations

import math

import torch

from .. import data as data_mod
from ..train.run_dir import RunDir, load_run
from .classification import classifier_metrics
from .density import density_metrics, sample_metrics, test_subset
from .process import gp_oracle, process_metrics
from .series import series_metrics

__all__ = ["TASKS", "evaluate_model", "evaluate_run", "sample_metrics"]

PROCESS_BATCH_SIZE = 256


def _density(
    model,
    data_name: str,
    *,
    generator,
    seed,
    n,
    sampler,
    steps,
    bound_n,
    opts,
    nll_n,
    test_n,
    variable=None,
    snr=None,
):
    return density_metrics(
        model,
        data_name,
        generator=generator,
        seed=seed,
        n=n,
        sampler=sampler,
        steps=steps,
        bound_n=bound_n,
        data_options=opts,
        nll_n=nll_n,
        test_n=test_n,
        variable=variable,
        snr=snr,
    )


def _test(data_name: str, opts: dict, test_n: int | None, seed: int):
    return test_subset(data_mod.load(data_name, "test", **opts), test_n, seed)


def _classifier(model, data_name: str, *, generator, opts, test_n, seed, **_) -> dict:
    train = data_mod.load(data_name, "train", **opts)
    test = _test(data_name, opts, test_n, seed)
    return classifier_metrics(model, train, test, generator=generator)


def _process(model, data_name: str, *, opts, test_n, seed, **_) -> dict:
    test = _test(data_name, opts, test_n, seed)
    out = process_metrics(model, test.batches(PROCESS_BATCH_SIZE))
    if data_name.startswith("gp-"):  # GP-drawn tasks: the GP with the true hyperparameters
        oracle = process_metrics(
            gp_oracle(data_name, test.info.options), test.batches(PROCESS_BATCH_SIZE)
        )
        out["oracle_target_ll_nats"] = oracle["target_ll_nats"]
        out["oracle_target_mse"] = oracle["target_mse"]
    return out


def _series(model, data_name: str, *, opts, test_n, seed, **_) -> dict:
    return series_metrics(model, _test(data_name, opts, test_n, seed))


#: task -> the function computing its metrics (the one place that decides what is computed)
_METRICS = {
    "density": _density,
    "classifier": _classifier,
    "process": _process,
    "series": _series,
}
TASKS = tuple(_METRICS)


def _device_of(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate_model(
    model,
    data_name: str,
    *,
    task: str,
    n: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    bound_n: int | str | None = None,
    data_options: dict | None = None,
    nll_n: int | None = None,
    test_n: int | None = None,
    variable: str | None = None,
    snr: float | None = None,
) -> dict:
    """Metrics of ``model`` for its ``task`` on data set ``data_name``'s test split.

    Args:
        model: a trained model following the contract of ``task`` (DESIGN.md).
        data_name: a registered data set.
        task: ``"density"``, ``"classifier"``, ``"process"`` or ``"series"`` (what the model
            is registered as: ``registry.get(name).task``); picks the metrics (see the module
            docstring).
        n: number of samples (density; default: the size of the test split for points).
        seed: seeds sampling, the floor's draw and any Monte-Carlo estimate.
        sampler, steps: passed to ``model.sample`` where given (density).
        bound_n: test points for a variational bound (``nll_bound``; density) and, on
            images, for a dequantised diffusion model's PF-ODE NLL (the same subset); an
            integer, ``"all"`` (the whole test split) or None: the model's
            ``default_bound_n`` where it has one (a DDPM on images: each image costs T network
            passes), else the whole test split (the PF-ODE: 100). A seeded subset; reported
            as ``bound_n`` / ``pf_ode_n``.
        data_options: the data set's options (``--set data.KEY=VALUE`` at training; a run
            records them in ``config.json``).
        nll_n: test points for an exact ``log_prob`` (density; default: the whole test
            split; a seeded subset, reported as ``nll_n``; 0: none). A probability-flow ODE
            likelihood costs an adaptive solve: a quick look takes a few hundred points.
        test_n: evaluate on a seeded subset of this many test examples (default: the whole
            test split; an image model's Fréchet distance always uses its own ``n``); the
            result then holds ``test_n``.
        variable: the probability flow ODE's integration variable (``"t"``, ``"sigma"``,
            ``"log_sigma"``) for the PF-ODE likelihood and, with ``sampler="ode"``, the
            sampler (density; a diffusion model only; reported as ``eval_variable``).
        snr: the ``pc`` sampler's Langevin signal-to-noise ratio (density, ``sampler="pc"``
            only; default: the model's, points 0.04, images 0.16; reported as ``eval_snr``).

    Example::

        >>> m = evaluate_model(model, "moons", task="density", n=500)
        >>> m["swd"] > m["swd_floor"]  # an untrained model is far from real data
        True
    """
    if task not in _METRICS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if variable is not None and task != "density":
        raise ValueError(f"variable applies to diffusion models (task density), not {task}")
    if snr is not None and task != "density":
        raise ValueError(f"snr applies to diffusion models' pc sampler (task density), not {task}")
    extra = {"variable": variable} if variable is not None else {}
    if snr is not None:
        extra["snr"] = snr
    gen = torch.Generator(device=_device_of(model)).manual_seed(seed)
    out: dict = {"data": data_name, "eval_seed": seed}
    model.eval()
    out.update(
        _METRICS[task](
            model,
            data_name,
            generator=gen,
            seed=seed,
            n=n,
            sampler=sampler,
            steps=steps,
            bound_n=bound_n,
            opts=dict(data_options or {}),
            nll_n=nll_n,
            test_n=test_n,
            **extra,
        )
    )
    if test_n is not None:
        out["test_n"] = out.get("test_n", test_n)
    for key, value in list(out.items()):
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
    return out


def evaluate_run(
    run_dir,
    *,
    n: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    device: str = "cpu",
    bound_n: int | str | None = None,
    nll_n: int | None = None,
    test_n: int | None = None,
    variable: str | None = None,
    snr: float | None = None,
) -> dict:
    """Load ``run_dir``, evaluate it for its model's registered task on its data set's test
    split (:func:`evaluate_model`), and write ``metrics.json``."""
    model = load_run(run_dir, device=device)
    data_name = model.run_config["data"]
    metrics = evaluate_model(
        model,
        data_name,
        task=model.task,  # the registered model's declared task (load_run sets it)
        data_options=model.run_config.get("data_options") or {},
        n=n,
        seed=seed,
        sampler=sampler,
        steps=steps,
        bound_n=bound_n,
        nll_n=nll_n,
        test_n=test_n,
        variable=variable,
        snr=snr,
    )
    metrics["model"] = model.run_config.get("model")
    RunDir(run_dir).write_evaluation(metrics)
    return metrics
