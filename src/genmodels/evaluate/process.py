"""Metrics of a stochastic-process model (task ``"process"``: GP, CNP, NP, NDP).

The model predicts the targets of a task from its context,
``predict(x_context, y_context, x_target) -> Normal`` (observation noise included), and
:func:`process_metrics` scores it over batches of :class:`~genmodels.data.batches.Tasks`:

- ``target_ll_nats``: the predictive log-likelihood ``log N(y; mu, sigma^2)`` averaged over
  every target value (all target points of all tasks, and all output dimensions), in nats per
  value — the number neural-process papers report as "target log-likelihood";
- ``target_mse``: the mean of ``(y - mu)^2`` over the same values;
- ``baseline_target_ll_nats``, ``baseline_target_mse``: the same for the *context-mean
  baseline*, which predicts every target of a task by ``N(m, s^2)`` with ``m`` and ``s`` the
  mean and the standard deviation (``1/n``, per output dimension) of that task's
  ``y_context``; ``s`` is floored at ``baseline_std_floor`` (default 0.01, in units of ``y``)
  so that a task with one context point (``s = 0``) gets a finite, if harsh, score. A model
  that learned nothing about the functions cannot beat it by much;
- ``n_tasks``: the number of tasks scored.

Averages are weighted by values, so batches of different sizes combine exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Normal

__all__ = ["process_metrics", "context_mean_baseline", "gp_oracle"]


def gp_oracle(data_name: str, options: dict):
    """The GP with the true kernel, hyperparameters and noise of a GP-drawn task family
    (``gp-rbf``, ``gp-matern``, ``gp-periodic``; their options hold them), float64: the best
    any model can do on those tasks in expectation."""
    from ..models.gp import GP, make_kernel

    if not data_name.startswith("gp-") or "kernel" not in options:
        raise ValueError(f"the GP oracle needs a GP-drawn task family, got {data_name!r}")
    kernel = make_kernel(
        options["kernel"],
        lengthscale=options["lengthscale"],
        variance=options["variance"],
        period=options["period"],
    )
    return GP(kernel, noise=options["noise"]).eval()


def context_mean_baseline(y_context: Tensor, *, std_floor: float = 0.01) -> Normal:
    """``N(m, s^2)`` per task and output dimension from the context outputs alone.

    Args:
        y_context: ``(B, n_context, dy)``, ``n_context >= 1``.
        std_floor: the smallest ``s`` (units of ``y``); a single context point has ``s = 0``.

    Returns a Normal of batch shape ``(B, 1, dy)`` (broadcasts over the targets).

    Example::

        >>> d = context_mean_baseline(torch.tensor([[[1.0], [3.0]]]))
        >>> d.mean.tolist(), d.stddev.tolist()
        ([[[2.0]]], [[[1.0]]])
    """
    if y_context.ndim != 3 or y_context.shape[1] < 1:
        raise ValueError(
            "the context-mean baseline needs y_context (B, n_context >= 1, dy), "
            f"got {tuple(y_context.shape)}"
        )
    if not std_floor > 0:
        raise ValueError(f"std_floor must be > 0, got {std_floor!r}")
    m = y_context.mean(1, keepdim=True)
    s = y_context.std(1, correction=0, keepdim=True).clamp_min(std_floor)
    return Normal(m, s)


def _check_batch(batch) -> None:
    names = ("x_context", "y_context", "x_target", "y_target")
    try:
        xc, yc, xt, yt = (getattr(batch, k) for k in names)
    except AttributeError:
        raise TypeError(
            f"process metrics need Tasks batches (fields {', '.join(names)}), "
            f"got {type(batch).__name__}"
        ) from None
    shapes = {k: tuple(v.shape) for k, v in zip(names, (xc, yc, xt, yt))}
    ok = all(len(s) == 3 for s in shapes.values())
    ok = ok and len({s[0] for s in shapes.values()}) == 1  # one batch size
    ok = ok and xc.shape[1] == yc.shape[1] and xt.shape[1] == yt.shape[1]
    ok = ok and xc.shape[2] == xt.shape[2] and yc.shape[2] == yt.shape[2]
    if not ok:
        raise ValueError(
            "a Tasks batch must have x_context (B, nc, dx), y_context (B, nc, dy), "
            f"x_target (B, nt, dx), y_target (B, nt, dy); got {shapes}"
        )


@torch.no_grad()
def process_metrics(model, batches, *, baseline_std_floor: float = 0.01) -> dict[str, float]:
    """Target log-likelihood and MSE of ``model`` and of the context-mean baseline.

    Args:
        model: has ``predict(x_context, y_context, x_target) -> torch.distributions.Normal``
            whose mean and stddev have the shape of ``y_target``, ``(B, n_target, dy)``.
        batches: an iterable of :class:`~genmodels.data.batches.Tasks` (e.g. a test split's
            ``batches(size)``), moved here to the model's device.
        baseline_std_floor: the baseline's smallest standard deviation (see the module).

    Returns ``target_ll_nats``, ``target_mse``, ``baseline_target_ll_nats``,
    ``baseline_target_mse`` (nats and squared units of ``y`` per target value) and ``n_tasks``.

    Example::

        >>> m = process_metrics(model, test.batches(256))  # test: a tasks data set's split
        >>> sorted(m)[:2]
        ['baseline_target_ll_nats', 'baseline_target_mse']
    """
    was_training = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    sums = {"ll": 0.0, "se": 0.0, "base_ll": 0.0, "base_se": 0.0}
    values, tasks = 0, 0
    for batch in batches:
        _check_batch(batch)
        xc, yc, xt, yt = (t.to(dev) for t in batch)
        pred = model.predict(xc, yc, xt)
        if not isinstance(pred, Normal):
            raise TypeError(f"predict must return a torch.distributions.Normal, got {type(pred)}")
        if pred.mean.shape != yt.shape or pred.stddev.shape != yt.shape:
            raise ValueError(
                f"predict returned a Normal with mean {tuple(pred.mean.shape)} and stddev "
                f"{tuple(pred.stddev.shape)}; expected y_target's shape {tuple(yt.shape)}"
            )
        base = context_mean_baseline(yc, std_floor=baseline_std_floor)
        y = yt.double()
        for tag, d in (("", pred), ("base_", base)):
            mu, sd = d.mean.double(), d.stddev.double()
            sums[tag + "ll"] += float(Normal(mu, sd).log_prob(y).sum())
            sums[tag + "se"] += float(((y - mu) ** 2).sum())
        values += yt.numel()
        tasks += yt.shape[0]
    model.train(was_training)
    if values == 0:
        raise ValueError("process_metrics got no target values (batches was empty or n_target = 0)")
    out: dict[str, float] = {
        "target_ll_nats": sums["ll"] / values,
        "target_mse": sums["se"] / values,
        "baseline_target_ll_nats": sums["base_ll"] / values,
        "baseline_target_mse": sums["base_se"] / values,
        "n_tasks": tasks,
    }
    return out
