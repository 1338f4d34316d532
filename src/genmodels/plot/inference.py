"""Pictures for section 1: a 2-d posterior, its VI ellipses and MCMC samples; error curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

__all__ = ["posterior_panel", "gaussian_ellipse", "error_panel"]


def gaussian_ellipse(ax: Axes, mean, cov, *, n_std: float = 2.0, **style) -> None:
    """Draw the ``n_std``-standard-deviation ellipse of N(mean, cov) (2-d) on ``ax``."""
    mean, cov = np.asarray(mean, dtype=float), np.asarray(cov, dtype=float)
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, 200)
    pts = mean[:, None] + vecs @ (n_std * np.sqrt(vals)[:, None] * circle)
    ax.plot(pts[0], pts[1], **style)


def posterior_panel(
    ax: Axes,
    grid_x,
    grid_y,
    density,
    *,
    gaussians: dict | None = None,
    samples: dict | None = None,
    max_points: int = 400,
) -> None:
    """Contours of a 2-d posterior density on a grid, VI ellipses and MCMC samples.

    Args:
        grid_x, grid_y: 1-d grid coordinates (nx,), (ny,); density: (ny, nx) values.
        gaussians: name -> (mean (2,), cov (2, 2)), drawn as 2-sd ellipses.
        samples: name -> (n, 2) array of draws, scattered (at most ``max_points`` each).
    """
    ax.contour(grid_x, grid_y, density, levels=8, colors="0.3", linewidths=0.8)
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for name, pts in (samples or {}).items():
        pts = np.asarray(pts)[:max_points]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, color=next(colors), label=name)
    for name, (m, c) in (gaussians or {}).items():
        gaussian_ellipse(ax, m, c, color=next(colors), lw=2, label=f"{name} (2 sd)")
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.legend(fontsize=7, loc="best")


def error_panel(ax: Axes, curves: dict, *, xlabel: str, ylabel: str) -> None:
    """Log-log curves: name -> (x values, error values)."""
    for name, (x, y) in curves.items():
        ax.loglog(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
