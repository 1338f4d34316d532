"""Metrics of a density model (task ``"density"``: DDPM, VAE, flows): samples and likelihoods.

:func:`density_metrics` reports, on a data set's test split:

- samples (every density model samples): for points, ``mmd2``, ``energy_distance`` and
  ``swd`` of ``eval_n`` samples against the test split, each beside its floor (``*_floor``:
  the same metric for a fresh draw of real training data of the same size); for images, the
  Fréchet distance in a small classifier's features (``fd``, ``fd_floor``, ``fd_gaussian``,
  ``classifier_accuracy``; :mod:`genmodels.evaluate.images`);
- an exact likelihood where the model has ``log_prob``: ``nll_nats`` and ``bits_per_dim``
  (on ``nll_n`` test points, a seeded subset, when given: a probability-flow ODE's or a
  CNF's likelihood costs an adaptive solve per batch; ``nll_n=0`` skips it);
- on quantised images, a diffusion model trained with uniform dequantisation: the PF-ODE
  NLL of ``x + w u`` (``nll_pf_ode_nats``, ``bits_per_dim_pf_ode``, the flows' convention);
- a variational bound where the model has ``nll_bound``: ``nll_bound_nats`` and
  ``bits_per_dim_bound`` on ``bound_n`` test points — always labelled as a bound, and reported
  *beside* the exact numbers when a model has both;
- VAEs (``iwae_bound``): ELBO and IWAE-64/512 bounds beside an independent-pixel histogram
  baseline (:mod:`genmodels.evaluate.vae`).

The likelihood and the bound are optional capabilities of a density model, so they are the
one thing looked up per model here; which *module* runs is decided by the declared task.
"""

from __future__ import annotations

import time

import torch

from .. import data as data_mod
from .sample_metrics import energy_distance, median_bandwidth, mmd2, sliced_wasserstein

__all__ = ["density_metrics", "sample_metrics", "test_subset"]


def sample_metrics(samples, test_x, floor_x, *, bandwidth: float | None = None) -> dict:
    """The three distances of ``samples`` and of ``floor_x`` (real data) against ``test_x``.

    Args:
        samples, test_x, floor_x: ``(n, d)`` points.
        bandwidth: the RBF bandwidth of ``mmd2`` (default: the median distance of ``test_x``).

    Returns ``mmd_bandwidth``, ``mmd2``, ``energy_distance``, ``swd`` and the same three with
    the suffix ``_floor``.
    """
    h = bandwidth if bandwidth is not None else median_bandwidth(test_x)
    out = {"mmd_bandwidth": h}
    for tag, s in (("", samples), ("_floor", floor_x)):
        out[f"mmd2{tag}"] = mmd2(s, test_x, bandwidth=h)
        out[f"energy_distance{tag}"] = energy_distance(s, test_x)
        out[f"swd{tag}"] = sliced_wasserstein(s, test_x)
    return out


def _point_sample_metrics(
    model, train, test, *, n, seed, sampler, steps, generator, sampler_options=None
) -> dict:
    n = len(test) if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    opts = dict(sampler_options or {})
    if sampler is not None:
        opts["sampler"] = sampler
    if steps is not None:
        opts["steps"] = steps
    t0 = time.perf_counter()
    s = model.sample(n, generator=generator, **opts).detach().float().cpu()
    out: dict = {"sampling_seconds": round(time.perf_counter() - t0, 3)}
    if not torch.isfinite(s).all():
        raise ValueError("the model produced non-finite samples")
    g_cpu = torch.Generator().manual_seed(seed + 1)
    pick = torch.randperm(len(train), generator=g_cpu)[: min(n, len(train))]
    out.update(sample_metrics(s, test.x, train.x[pick]))
    out["eval_n"] = n
    out["eval_sampler"] = sampler or getattr(model, "default_sampler", "default")
    if steps is not None:
        out["eval_steps"] = steps
    return out


def test_subset(split, n: int | None, seed: int):
    """A seeded subset of ``n`` examples of a data split (the whole split when ``n`` is None
    or at least its size), in the split's order: a quick evaluation's held-out data."""
    if n is None:
        return split
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"test_n must be an integer >= 2 or None, got {n!r}")
    if n >= len(split):
        return split
    g = torch.Generator().manual_seed(seed + 4)
    return split.subset(torch.randperm(len(split), generator=g)[:n].sort().values)


def _subset(x, n: int | None, seed: int, what: str):
    """A seeded subset of ``n`` rows of ``x`` (all of them when ``n`` is None or larger)."""
    if n is None:
        return x
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer or None, got {n!r}")
    if n >= len(x):
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n].to(x.device)]


def _check_bound_n(bound_n, size: int, default: int) -> int:
    """``bound_n``: None (``default``), ``"all"`` (``size``, the whole test split) or a positive
    integer (at most ``size`` is used)."""
    if bound_n is None:
        return default
    if bound_n == "all":
        return size
    if not isinstance(bound_n, int) or isinstance(bound_n, bool) or bound_n < 1:
        raise ValueError(f"bound_n must be a positive integer or 'all', got {bound_n!r}")
    return bound_n


def _bound(model, x, info, *, bound_n, seed, generator) -> dict:
    """``nll_bound`` on a seeded subset of ``bound_n`` rows of ``x``."""
    bound_n = _check_bound_n(bound_n, len(x), getattr(model, "default_bound_n", None) or len(x))
    if bound_n < len(x):
        g_pick = torch.Generator().manual_seed(seed + 2)
        x = x[torch.randperm(len(x), generator=g_pick)[:bound_n].to(x.device)]
    with torch.no_grad():
        nb = model.nll_bound(x, generator=generator).double()
    nll = float(nb.mean())
    # a DDPM with a discretised decoder bounds -log P(x) itself: no dequantisation term
    discrete = bool(getattr(model, "bound_is_discrete", False))
    return {
        "bound_n": len(x),
        "nll_bound_nats": nll,
        "bits_per_dim_bound": float(data_mod.bits_per_dim(nll, info, discrete=discrete)),
    }


def _pf_ode_dequantized(model, x, info, *, n, seed, generator, lp_options=None) -> dict:
    """``-log p(x + w u)`` by the probability flow ODE on a seeded subset of ``n`` test images
    (default: the bound's, ``default_bound_n`` or 100; ``"all"``: every one), one
    ``u ~ U(0, 1)^D`` per image and Hutchinson's trace (both from ``generator``). Under
    uniform dequantisation it bounds the discrete NLL in expectation (``-log P(x) <=
    E_u[-log p(x + w u)] - D log w``), and its bits/dim is ``bits_per_dim(nll, info)``: the
    flows' convention."""
    from ..models.sde import uniform_dequantize

    n = _check_bound_n(n, len(x), getattr(model, "default_bound_n", None) or 100)
    if n < len(x):
        g_pick = torch.Generator().manual_seed(seed + 2)  # the bound's subset
        x = x[torch.randperm(len(x), generator=g_pick)[:n].to(x.device)]
    stats: dict = {}
    xd = uniform_dequantize(x, model.dequant_width, generator)
    lp = model.log_prob(xd, generator=generator, stats=stats, **(lp_options or {})).double()
    nll = float(-lp.mean())
    out = {
        "pf_ode_n": len(x),
        "nll_pf_ode_nats": nll,
        "bits_per_dim_pf_ode": float(data_mod.bits_per_dim(nll, info)),
        "pf_ode_nfe": stats.get("nfe"),
    }
    if "se_nats" in stats:  # Hutchinson's standard error of the mean
        out["nll_pf_ode_se_nats"] = float(stats["se_nats"])
    return out


def density_metrics(
    model,
    data_name: str,
    *,
    generator: torch.Generator,
    seed: int = 0,
    n: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    bound_n: int | str | None = None,
    data_options: dict | None = None,
    nll_n: int | None = None,
    test_n: int | None = None,
    variable: str | None = None,
    snr: float | None = None,
) -> dict:
    """Sample distances, exact NLL and/or bound of a density model on ``data_name``'s test split.

    Args:
        model: a density model (``sample``; ``log_prob``, ``nll_bound``, ``iwae_bound`` where
            it has them), in eval mode.
        data_name: a registered data set of kind ``points`` or ``images``.
        generator: the stream, on the model's device, for sampling, the bound's Monte-Carlo
            draws and the VAE bounds (used in that order).
        seed: seeds the floor's draw (``seed + 1``) and the bound's subset (``seed + 2``);
            images seed their own sampling with it.
        n: samples (default: the test split's size for points, the training split's for
            images); sampler, steps: passed to ``model.sample`` where given.
        bound_n: test points for ``nll_bound`` and, on images, a dequantised diffusion
            model's PF-ODE NLL (the same seeded subset; reported as ``bound_n`` and
            ``pf_ode_n``): a positive integer, ``"all"`` (the whole test split) or None (the
            model's ``default_bound_n`` where it has one, else the whole test split; the
            PF-ODE: 100).
        data_options: the data set's options, as the run recorded them.
        nll_n: test points for the exact ``log_prob`` (default: the whole test split; a
            seeded subset otherwise, reported as ``nll_n``; 0: no exact NLL).
        test_n: evaluate on a seeded subset of this many test examples (every number but
            an image model's Fréchet distance; reported as ``test_n``); default: all. The
            sample distances cost O(test size²): a quick look takes a few hundred.
        variable: the probability flow ODE's integration variable, ``"t"`` | ``"sigma"`` |
            ``"log_sigma"`` (a diffusion model's ``log_prob`` and, with ``sampler="ode"``, its
            sampler; reported as ``eval_variable``); None: their defaults (t).
        snr: with ``sampler="pc"``, its Langevin signal-to-noise ratio (default: the model's,
            :data:`~genmodels.models.samplers.DEFAULT_PC_SNR`); reported as ``eval_snr``.

    Returns a dict of the keys listed in the module docstring (nats per example; bits/dim of
    the discrete data for images).

    Example::

        >>> m = density_metrics(model, "moons", generator=torch.Generator().manual_seed(0))
        >>> "swd" in m and "swd_floor" in m
        True
    """
    sample_opts, lp_opts = {}, {}
    if variable is not None:  # checked before any work
        from ..models.samplers import check_variable

        check_variable(variable)
        if not (hasattr(model, "sde") and hasattr(model, "log_prob")):
            raise ValueError(
                f"variable: {type(model).__name__} has no probability flow ODE (it applies to "
                "the diffusion models ddpm, subvp, vesde)"
            )
        lp_opts["variable"] = variable
        if sampler == "ode":
            sample_opts["variable"] = variable
    if snr is not None:
        from ..models.samplers import check_snr

        if sampler != "pc":
            raise ValueError(f"snr is the pc sampler's setting; got sampler={sampler!r}")
        sample_opts["snr"] = check_snr(snr)
    test = data_mod.load(data_name, "test", **(data_options or {}))
    train = data_mod.load(data_name, "train", **(data_options or {}))
    if test_n is not None and test_n < len(test):
        test = test_subset(test, test_n, seed)
    dev = generator.device
    if test.info.kind == "images":
        from .images import image_metrics  # Fréchet distance in a small classifier's features

        out = image_metrics(
            model,
            data_name,
            n=n,
            seed=seed,
            sampler=sampler,
            steps=steps,
            sampler_options=sample_opts,
        )
    else:
        out = _point_sample_metrics(
            model,
            train,
            test,
            n=n,
            seed=seed,
            sampler=sampler,
            steps=steps,
            generator=generator,
            sampler_options=sample_opts,
        )
    if variable is not None:
        out["eval_variable"] = variable
    if (sampler or getattr(model, "default_sampler", None)) == "pc":
        from ..models.samplers import default_pc_snr

        out["eval_snr"] = sample_opts.get("snr", default_pc_snr(test.info.event_shape))

    x = test.x.to(dev)
    has_log_prob, has_bound = hasattr(model, "log_prob"), hasattr(model, "nll_bound")
    # One exception to "both are reported": on quantised images a model's log_prob at the
    # stored grid values (an image flow's, a diffusion model's PF-ODE density) is a density
    # at points, not a likelihood of the discrete data, and is not reported; its nll_bound (a
    # flow: -log p(x + w u) under uniform dequantisation; a DDPM: the discretised decoder's)
    # bounds the discrete data's NLL (on bound_n test images: the whole test split unless
    # the model says otherwise, as a DDPM does with its default_bound_n). A diffusion model
    # trained with uniform dequantisation (``dequant_width`` set) reports its PF-ODE NLL of
    # x + w u on the same subset: ``nll_pf_ode_nats``, ``bits_per_dim_pf_ode``.
    if test.info.kind == "images":
        if has_bound:
            out.update(_bound(model, x, test.info, bound_n=bound_n, seed=seed, generator=generator))
        if has_log_prob and getattr(model, "dequant_width", None) is not None:
            out.update(
                _pf_ode_dequantized(
                    model,
                    x,
                    test.info,
                    n=bound_n,
                    seed=seed,
                    generator=generator,
                    lp_options=lp_opts,
                )
            )
    else:
        if has_log_prob and nll_n != 0:
            xs = _subset(x, nll_n, seed + 3, "nll_n")
            with torch.no_grad():
                lp = torch.cat([model.log_prob(b, **lp_opts) for b in xs.split(4096)]).double()
            out["nll_nats"] = float(-lp.mean())
            out["bits_per_dim"] = float(data_mod.bits_per_dim(out["nll_nats"], test.info))
            if len(xs) < len(x):
                out["nll_n"] = len(xs)
        if has_bound:
            out.update(_bound(model, x, test.info, bound_n=bound_n, seed=seed, generator=generator))
    if hasattr(model, "iwae_bound"):
        from .vae import vae_metrics

        out.update(vae_metrics(model, train, test, generator=generator))
    if test_n is not None and test_n <= len(test):
        out["test_n"] = len(test)
    return out
