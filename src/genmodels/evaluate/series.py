"""Metrics for time-series models (task ``"series"``: latent ODE; ``predict`` -> Normal).

``series_metrics`` reads the test split's observed points as the context and predicts at the
200 grid times of each window; against the noise-free curve (the ``spirals`` data set's
``clean``, Chen et al. 2018, Table 2) it reports

- ``rmse_interp``: RMSE over the first 100 grid times (where the context was observed),
- ``rmse_extrap``: RMSE over the next 100 (never observed),

(root of the mean over series, times and coordinates of the squared error of the predictive
mean, at the posterior mean of z_t0), and ``context_nll_nats``: ``-log p`` of the observed
values under the predictive Normal, per value (nats), and ``n_series``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["series_metrics"]


@torch.no_grad()
def series_metrics(model, test, *, batch_size: int = 250) -> dict[str, float]:
    """RMSE of interpolation and extrapolation to the noise-free curves of ``test``.

    Args:
        model: ``predict(x_context, y_context, x_target) -> Normal`` (batch ``(B, m, D)``).
        test: a series data set with ``clean`` ``(N, 2k, D)`` noise-free values at ``grid``
            ``(2k,)`` (the first k times: interpolation; the rest: extrapolation), e.g.
            ``genmodels.data.load("spirals", "test")``.

    Example::

        >>> m = series_metrics(model, data.load("spirals", "test"))
        >>> sorted(m)
        ['context_nll_nats', 'n_series', 'rmse_extrap', 'rmse_interp']
    """
    clean, grid = getattr(test, "clean", None), getattr(test, "grid", None)
    if clean is None or grid is None:
        raise ValueError(
            f"series metrics need a data set with noise-free curves (.clean, .grid), such as "
            f"'spirals'; got {getattr(getattr(test, 'info', None), 'name', type(test).__name__)}"
        )
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    half = grid.shape[0] // 2
    se_in = se_out = nll = 0.0
    n_in = n_out = n_obs = 0
    target = grid.to(p).view(-1, 1)
    for start in range(0, len(test), batch_size):
        b = test.take(torch.arange(start, min(start + batch_size, len(test))))
        values = torch.where(b.mask, b.values, torch.nan).to(p)
        pred = model.predict(b.times.to(p), values, target)
        err = (pred.mean.double() - clean[start : start + len(values)].to(pred.mean).double()) ** 2
        se_in += float(err[:, :half].sum())
        se_out += float(err[:, half:].sum())
        n_in += err[:, :half].numel()
        n_out += err[:, half:].numel()
        at_obs = model.predict(b.times.to(p), values, b.times.to(p))
        lp = at_obs.log_prob(torch.nan_to_num(values)) * b.mask.to(p)
        nll -= float(lp.sum())
        n_obs += int(b.mask.sum())
    model.train(was_training)
    return {
        "rmse_interp": math.sqrt(se_in / n_in),
        "rmse_extrap": math.sqrt(se_out / n_out),
        "context_nll_nats": nll / n_obs,
        "n_series": float(len(test)),
    }
