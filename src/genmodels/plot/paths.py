"""Sample paths of a stochastic process (Brownian motion, SDE solutions), drawn with
matplotlib's object API (no pyplot, so no global state and no display: an Agg canvas)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_paths"]


def plot_paths(
    ts: torch.Tensor | Sequence[float],
    paths: torch.Tensor,
    *,
    ax=None,
    title: str | None = None,
    band: float | None = None,
    max_paths: int = 50,
    xlabel: str = "t",
    ylabel: str = "W(t)",
    path: str | Path | None = None,
) -> Figure:
    """Draw sample paths X(t) of a process against time.

    Args:
        ts: (T,) times.
        paths: (T, n) values of n paths at ``ts`` (a (T,) tensor is one path; extra trailing
            dimensions are flattened into paths).
        ax: a matplotlib Axes to draw into; default a new 7×4 in figure.
        title: the Axes title.
        band: if given, shade ± band·√t around 0, e.g. ``band=2 * sigma`` for the 2σ√t
            envelope of Brownian motion with W(t) ~ N(0, σ² t) (times measured from ts[0]).
        max_paths: draw at most this many paths (the first ones).
        xlabel, ylabel: axis labels.
        path: if given, save the figure there (PNG at 150 dpi).

    Returns:
        The matplotlib Figure.

    Example:
        >>> from genmodels.integrate.brownian import BrownianMotion
        >>> ts = torch.linspace(0, 1, 257)
        >>> fig = plot_paths(ts, BrownianMotion(size=(10,), seed=0).path(ts), band=2.0)
    """
    t = np.asarray(ts.detach().cpu() if isinstance(ts, torch.Tensor) else ts, dtype=float)
    x = paths.detach().cpu().double().numpy() if isinstance(paths, torch.Tensor) else paths
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if t.ndim != 1 or x.shape[0] != t.shape[0]:
        raise ValueError(
            f"plot_paths: ts must be (T,) and paths (T, ...), got {t.shape} and {x.shape}"
        )
    x = x.reshape(t.shape[0], -1)[:, :max_paths]
    if ax is None:
        fig = Figure(figsize=(7, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if band is not None:
        s = band * np.sqrt(np.clip(t - t[0], 0.0, None))
        ax.fill_between(t, -s, s, color="0.85", label=f"±{band:g}√t", zorder=0)
    alpha = max(0.25, min(1.0, 3.0 / math.sqrt(x.shape[1])))
    ax.plot(t, x, lw=0.8, alpha=alpha)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(t.min(), t.max())
    if title:
        ax.set_title(title)
    if band is not None:
        ax.legend(loc="upper left", frameon=False)
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig
