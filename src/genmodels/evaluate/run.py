"""Evaluate a trained model (or a run directory) with comparable, labelled numbers.

What is computed depends on what the model can do:

- ``sample``: ``mmd2``, ``energy_distance``, ``swd`` of ``eval_n`` samples against
  the test split, each beside its floor (the same metric for a fresh draw of real
  training data of the same size against the test split);
- ``log_prob`` (exact likelihood): ``nll_nats`` and ``bits_per_dim`` on the test split;
- ``nll_bound`` (a variational bound only): ``nll_bound_nats`` and
  ``bits_per_dim_bound`` — always labelled as a bound; on image data a model with both
  (an image flow: ``-log p(x + w u)`` under uniform dequantisation) is reported by the
  bound, the library's bits/dim of the discrete data;
- ``iwae_bound`` (VAEs): ELBO and IWAE-64/512 bounds beside an independent-pixel
  histogram baseline (:mod:`genmodels.evaluate.vae`);
- ``predict`` (classifiers): ``accuracy``, ``nll_nats`` of the labels, ``auroc_ood`` and
  accuracy with a coordinate missing (:mod:`genmodels.evaluate.classification`);
- image data: the Fréchet distance in a small classifier's features (``fd``,
  ``fd_floor``, ``fd_gaussian``, ``classifier_accuracy``; :mod:`genmodels.evaluate.images`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import data as data_mod
from ..train.checkpoint import load_run, write_json
from .sample_metrics import energy_distance, median_bandwidth, mmd2, sliced_wasserstein

__all__ = ["evaluate_model", "evaluate_run", "sample_metrics"]


def sample_metrics(samples, test_x, floor_x, *, bandwidth: float | None = None) -> dict:
    """The three distances of ``samples`` and of ``floor_x`` (real data) against ``test_x``."""
    h = bandwidth if bandwidth is not None else median_bandwidth(test_x)
    out = {"mmd_bandwidth": h}
    for tag, s in (("", samples), ("_floor", floor_x)):
        out[f"mmd2{tag}"] = mmd2(s, test_x, bandwidth=h)
        out[f"energy_distance{tag}"] = energy_distance(s, test_x)
        out[f"swd{tag}"] = sliced_wasserstein(s, test_x)
    return out


def _device_of(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate_model(
    model,
    data_name: str,
    *,
    n: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    bound_n: int | None = None,
) -> dict:
    """Metrics of ``model`` on data set ``data_name``'s test split (see module docstring).

    Args:
        n: number of samples (default: the size of the test split).
        seed: seeds sampling, the floor's draw and any Monte-Carlo estimate.
        sampler, steps: passed to ``model.sample`` where given.
        bound_n: test points for a variational bound (``nll_bound``); default: the model's
            ``default_bound_n`` where it has one (a DDPM on images: each image costs T
            network passes), else the whole test split. A seeded subset; reported as
            ``bound_n``.
    """
    test = data_mod.load(data_name, "test")
    train = data_mod.load(data_name, "train")
    dev = _device_of(model)
    gen = torch.Generator(device=dev).manual_seed(seed)
    out: dict = {"data": data_name, "eval_seed": seed}
    model.eval()
    if test.info.kind == "images" and hasattr(model, "sample"):
        from .images import image_metrics  # Fréchet distance in a small classifier's features

        out.update(image_metrics(model, data_name, n=n, seed=seed, sampler=sampler, steps=steps))
    elif hasattr(model, "sample") and not getattr(model, "uses_labels", False):
        n = len(test) if n is None else n
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n!r}")
        opts = {}
        if sampler is not None:
            opts["sampler"] = sampler
        if steps is not None:
            opts["steps"] = steps
        t0 = time.perf_counter()
        s = model.sample(n, generator=gen, **opts).detach().float().cpu()
        out["sampling_seconds"] = round(time.perf_counter() - t0, 3)
        if not torch.isfinite(s).all():
            raise ValueError("the model produced non-finite samples")
        g_cpu = torch.Generator().manual_seed(seed + 1)
        pick = torch.randperm(len(train), generator=g_cpu)[: min(n, len(train))]
        out.update(sample_metrics(s, test.x, train.x[pick]))
        out["eval_n"] = n
        out["eval_sampler"] = sampler or getattr(model, "default_sampler", "default")
        if steps is not None:
            out["eval_steps"] = steps
    x = test.x.to(dev)
    # Quantised images: a model with a bound on the discrete likelihood (a VAE, or a flow
    # through uniform dequantisation) is reported by it; a flow's log_prob at the stored
    # values is a density at points, not bits/dim of the discrete data.
    dequantised = test.info.kind == "images" and hasattr(model, "nll_bound")
    if dequantised and hasattr(model, "log_prob"):
        with torch.no_grad():
            nb = model.nll_bound(x, generator=gen).double()
        out["nll_bound_nats"] = float(nb.mean())
        out["bits_per_dim_bound"] = float(data_mod.bits_per_dim(out["nll_bound_nats"], test.info))
    elif hasattr(model, "log_prob") and not getattr(model, "uses_labels", False):
        with torch.no_grad():
            lp = torch.cat([model.log_prob(b) for b in x.split(4096)]).double()
        out["nll_nats"] = float(-lp.mean())
        out["bits_per_dim"] = float(data_mod.bits_per_dim(out["nll_nats"], test.info))
    elif hasattr(model, "nll_bound"):
        if bound_n is None:
            bound_n = getattr(model, "default_bound_n", None) or len(x)
        if not isinstance(bound_n, int) or bound_n < 1:
            raise ValueError(f"bound_n must be a positive integer, got {bound_n!r}")
        if bound_n < len(x):
            g_pick = torch.Generator().manual_seed(seed + 2)
            x = x[torch.randperm(len(x), generator=g_pick)[:bound_n].to(x.device)]
        out["bound_n"] = len(x)
        nb = model.nll_bound(x, generator=gen).double()
        out["nll_bound_nats"] = float(nb.mean())
        # a DDPM with a discretised decoder bounds -log P(x) itself: no dequantisation term
        discrete = getattr(model, "bound_is_discrete", False)
        bpd = data_mod.bits_per_dim(out["nll_bound_nats"], test.info, discrete=discrete)
        out["bits_per_dim_bound"] = float(bpd)
    # Capability-specific metrics, each in its own module.
    if hasattr(model, "iwae_bound"):
        from .vae import vae_metrics

        out.update(vae_metrics(model, train, test, generator=gen))
    if hasattr(model, "predict") and getattr(model, "uses_labels", False):
        if test.y is None:
            raise ValueError(f"data set {data_name!r} has no labels to evaluate a classifier on")
        from .classification import classifier_metrics

        out.update(classifier_metrics(model, train, test, generator=gen))
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
    bound_n: int | None = None,
) -> dict:
    """Load ``run_dir``, evaluate on its data set's test split, write ``metrics.json``."""
    model = load_run(run_dir, device=device)
    data_name = model.run_config["data"]
    metrics = evaluate_model(
        model, data_name, n=n, seed=seed, sampler=sampler, steps=steps, bound_n=bound_n
    )
    metrics["model"] = model.run_config.get("model")
    write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics
