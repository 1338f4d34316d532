"""Predictions of a stochastic-process model (GP, CNP, NP, NDP) on a few tasks.

One panel per task: the predictive mean and the ±2σ band (the Normal that ``predict``
returns, observation noise included) on a dense grid of the input, with the task's context
points (black), target points (orange, the true function on the evaluation split), and a few
sampled functions: a GP's posterior paths (``sample_paths``), an NP's or NDP's means at
several latent draws (``predict(..., n_samples=K)``). For 1-D inputs; the first output
dimension is drawn. The grid spans the task's own inputs (an NDP cannot look before its t0).
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["process_predictions"]


@torch.no_grad()
def _sampled_functions(model, xc, yc, g, k: int):
    """``(k, grid)``: the process contract's ``sample_functions`` on the grid, first output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a GP's jitter on a dense grid
        f = model.sample_functions(xc, yc, g, k, generator=torch.Generator().manual_seed(0))
    return f[:, 0, :, 0]


def process_predictions(
    model, tasks, path=None, *, n_tasks: int = 4, grid: int = 200, n_functions: int = 3
):
    """Mean ± 2σ of ``model.predict`` on the first ``n_tasks`` tasks of a batch.

    Args:
        model: the process contract: ``predict(x_context, y_context, x_target) -> Normal``
            with batch shape ``(B, n_target, dy)`` and, for ``n_functions > 0``,
            ``sample_functions(x_context, y_context, x_target, n, generator=)`` ->
            ``(n, B, n_target, dy)``.
        tasks: a :class:`~genmodels.data.batches.Tasks` batch with ``dx = 1``: ``x_context``
            ``(B, nc, 1)``, ``y_context`` ``(B, nc, dy)``, ``x_target`` ``(B, nt, 1)``,
            ``y_target`` ``(B, nt, dy)``.
        path: where to save (PNG); n_tasks: panels (at most ``B``); grid: input points per panel;
        n_functions: sampled functions per panel (0: none).

    Returns the Figure (closed once saved to ``path``).
    """
    xc, yc, xt, yt = tasks
    if xc.ndim != 3 or xc.shape[-1] != 1:
        raise ValueError(
            f"process_predictions draws 1-D inputs: x_context (B, nc, 1), got {tuple(xc.shape)}"
        )
    dev = next((p.device for p in model.parameters()), xc.device)
    k = min(n_tasks, xc.shape[0])
    fig, axes = plt.subplots(1, k, figsize=(4 * k, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        xs = torch.cat([xc[i, :, 0], xt[i, :, 0]])
        lo, hi = float(xs.min()), float(xs.max())
        g = torch.linspace(lo, hi if hi > lo else lo + 1.0, grid, dtype=xc.dtype)
        ci, yi, gi = xc[i : i + 1].to(dev), yc[i : i + 1].to(dev), g[None, :, None].to(dev)
        pred = model.predict(ci, yi, gi)
        mu = pred.mean[0, :, 0].detach().float().cpu().numpy()
        sd = pred.stddev[0, :, 0].detach().float().cpu().numpy()
        gx = g.float().numpy()
        ax.fill_between(gx, mu - 2 * sd, mu + 2 * sd, color="tab:blue", alpha=0.2, label="±2σ")
        ax.plot(gx, mu, color="tab:blue", lw=1.2, label="mean")
        fs = _sampled_functions(model, ci, yi, gi, n_functions) if n_functions else None
        coherent = getattr(model, "coherent_functions", True)
        for j in range(0 if fs is None else fs.shape[0]):
            f = fs[j].detach().float().cpu().numpy()
            if coherent:
                lab = "sampled functions" if j == 0 else None
                ax.plot(gx, f, color="tab:green", lw=0.7, label=lab)
            else:  # independent marginal draws: points, not curves
                lab = "marginal draws" if j == 0 else None
                ax.scatter(gx, f, s=2, color="tab:green", alpha=0.5, label=lab)
        ax.scatter(xt[i, :, 0].cpu(), yt[i, :, 0].cpu(), s=8, c="tab:orange", label="target")
        ax.scatter(xc[i, :, 0].cpu(), yc[i, :, 0].cpu(), s=14, c="k", label="context")
        ax.set_title(f"task {i}: {xc.shape[1]} context points", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
