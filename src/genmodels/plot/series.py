"""Pictures of time-series models (lecture §4): the latent ODE's reconstruction and
extrapolation of spirals (the analogue of Chen et al. 2018, Fig. 8), and a classifier's
accuracy against the fraction of dropped points (Kidger et al. 2020, Table 1's protocol).

Everything is drawn from tensors/numbers the caller passes; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["spiral_extrapolations", "accuracy_vs_dropped"]


def _np(x):
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x)


def spiral_extrapolations(
    times, values, grid, clean, mean, *, titles: Sequence[str] | None = None, path=None
):
    """One panel per series: the noise-free curve (grey), the observations (dots), the model's
    mean on ``grid``: solid over the observed part (the first half of ``grid``), dashed beyond
    it (extrapolation). ``mean`` a mapping of model names to means: one row of panels per
    model (e.g. the latent ODE above its GRU baseline, Chen et al. 2018, Fig. 8).

    Args:
        times: ``(k, n, 1)`` observation times (unused but for ordering; kept for checks).
        values: ``(k, n, 2)`` observed values (NaN = missing, not drawn).
        grid: ``(m,)`` the times of ``clean`` and ``mean``.
        clean: ``(k, m, 2)``; mean: ``(k, m, 2)``, or ``{name: (k, m, 2)}``.
        titles: k panel titles.
        path: where to save the figure (closed then); None: the figure is returned.
    """
    means = dict(mean) if isinstance(mean, Mapping) else {None: mean}
    if not means:
        raise ValueError("mean: expected a (k, m, 2) tensor or a non-empty mapping of them")
    t, v, g = _np(times), _np(values), _np(grid)
    c = _np(clean)
    k, half = v.shape[0], g.shape[0] // 2
    for name, mu in means.items():
        mu = _np(mu)
        if t.shape[:2] != v.shape[:2] or c.shape != mu.shape or c.shape[:2] != (k, g.shape[0]):
            raise ValueError(
                f"shapes: times (k, n, 1), values (k, n, 2), clean/mean (k, m, 2) with m = "
                f"len(grid); got {t.shape}, {v.shape}, {c.shape}, {mu.shape} "
                f"(mean {name!r}), grid {g.shape}"
            )
    rows = len(means)
    fig, axes = plt.subplots(rows, k, figsize=(4.2 * k, 4.2 * rows), squeeze=False)
    for r, (name, mu) in enumerate(means.items()):
        mu = _np(mu)
        for i, ax in enumerate(axes[r]):
            ax.plot(c[i, :, 0], c[i, :, 1], c="0.7", lw=3, label="true (noise-free)")
            ax.plot(mu[i, :half, 0], mu[i, :half, 1], c="tab:blue", lw=1.5, label="reconstruction")
            ax.plot(
                mu[i, half - 1 :, 0], mu[i, half - 1 :, 1], "--", c="tab:red", lw=1.5,
                label="extrapolation",
            )  # fmt: skip
            ax.scatter(v[i, :, 0], v[i, :, 1], s=10, c="k", zorder=3, label="observed")
            ax.set_aspect("equal")
            title = [] if titles is None else [titles[i]]
            if name is not None:
                title.insert(0, str(name))
            if title:
                ax.set_title(": ".join(title), fontsize=10)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def accuracy_vs_dropped(
    drops: Sequence[float], accuracies: Mapping[str, Sequence[Sequence[float]]], *, path=None
):
    """Test accuracy against the fraction of dropped points: per model (the mapping's keys)
    one line through the mean over its seeds (``accuracies[name][j]``: the seeds' accuracies
    at ``drops[j]``), with their range as error bars."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    d = np.asarray(drops, dtype=float)
    for name, accs in accuracies.items():
        if len(accs) != len(d):
            raise ValueError(f"{name}: {len(accs)} accuracy lists for {len(d)} drop rates")
        a = [np.asarray(x, dtype=float) for x in accs]
        m = np.array([x.mean() for x in a])
        lo, hi = m - np.array([x.min() for x in a]), np.array([x.max() for x in a]) - m
        ax.errorbar(d, m, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.set_xlabel("fraction of points dropped")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.4, 1.02)
    ax.axhline(0.5, c="0.6", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
