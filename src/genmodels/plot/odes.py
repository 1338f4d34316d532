"""Pictures of section 4's ODE models, from tensors (plot/ imports nothing above it).

- :func:`resnet_vs_ode`: the Neural ODE paper's Figure 1 (Chen et al. 2018): hidden-state
  trajectories of a residual network (a state per layer, straight lines between) beside those of
  the ODE (continuous), with the points where the adaptive solver evaluated the field marked.
- :func:`density_evolution`: a continuous normalizing flow's density ``p_t`` on a 2D grid at
  several times, from the base to the data.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .core import _np  # noqa: E402

__all__ = ["resnet_vs_ode", "density_evolution"]


def resnet_vs_ode(
    depths,
    res_states,
    times,
    ode_states,
    eval_times,
    eval_states,
    path=None,
    *,
    title: str | None = None,
):
    """Two panels: ResNet states ``res_states`` ``(L+1, N)`` at ``depths`` ``(L+1,)`` and ODE
    states ``ode_states`` ``(K, N)`` at ``times`` ``(K,)``, with the solver's evaluation points
    ``eval_states`` ``(E, N)`` at ``eval_times`` ``(E,)``; 1-D hidden states (x axis), depth up.
    Returns the figure (saved to ``path`` when given).
    """
    depths, res_states, times, ode_states = map(_np, (depths, res_states, times, ode_states))
    eval_times, eval_states = _np(eval_times), _np(eval_states)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for j in range(res_states.shape[1]):
        a.plot(res_states[:, j], depths, color="C0", lw=1)
        a.plot(res_states[:, j], depths, "o", color="k", ms=3)
        b.plot(ode_states[:, j], times, color="C1", lw=1)
        b.plot(eval_states[:, j], eval_times, "o", color="k", ms=2)
    a.set_title("Residual network", fontsize=10)
    b.set_title(f"ODE network ({len(eval_times)} field evaluations)", fontsize=10)
    a.set_ylabel("depth")
    lo, hi = min(depths.min(), times.min()), max(depths.max(), times.max())
    a.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    for ax in (a, b):
        ax.set_xlabel("input / hidden state")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def density_evolution(times, densities, extent, path=None, *, data=None, title=None):
    """One panel per time: ``densities`` ``(K, n, n)`` (rows: y from ``extent[2]`` up to
    ``extent[3]``) at ``times`` ``(K,)`` on the box ``extent = (x0, x1, y0, y1)``; ``data``
    ``(m, 2)`` drawn on the last panel.  Returns the figure (saved to ``path`` when given).
    """
    times, densities = _np(times), _np(densities)
    k = len(times)
    fig, axes = plt.subplots(1, k, figsize=(2.2 * k, 2.4))
    for i, ax in enumerate(axes):
        ax.imshow(densities[i], origin="lower", extent=tuple(extent), cmap="magma", aspect="equal")
        ax.set_title(f"t = {times[i]:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if data is not None:
        d = _np(data)
        axes[-1].plot(d[:, 0], d[:, 1], ".", color="w", ms=0.6, alpha=0.4)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
