"""Pictures of 2D normalizing flows: the density after each layer, density maps, samples.

``layer_densities`` is the lecture's flow figure made real: the base Gaussian, then the
density after every generative layer ``f_i = T_i^{-1}``, bent step by step into the data. The
density of an intermediate variable ``h_i`` is exact: push ``h`` forward through the remaining
normalizing layers and add their log-determinants.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .core import scatter_samples  # noqa: E402

__all__ = ["layer_densities", "density_map", "flow_overview"]


def _grid(lo, hi, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs = torch.linspace(float(lo[0]), float(hi[0]), n)
    ys = torch.linspace(float(lo[1]), float(hi[1]), n)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    return xx, yy, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


@torch.no_grad()
def density_map(log_prob, lo, hi, *, n: int = 200, ax=None, title: str | None = None):
    """Heat map of ``exp(log_prob(points))`` on the box ``[lo, hi]`` (2,) -> matplotlib Axes.

    Example::

        >>> ax = density_map(model.log_prob, (-4, -4), (4, 4))
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    xx, yy, pts = _grid(lo, hi, n)
    dens = torch.cat([log_prob(c) for c in pts.split(20000)]).exp().reshape(n, n)
    ax.pcolormesh(xx.numpy(), yy.numpy(), dens.float().numpy(), shading="auto", cmap="magma")
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


@torch.no_grad()
def layer_densities(model, *, n: int = 160, steps: int | None = None, path=None, seed: int = 0):
    """Density after each generative layer, from ``N(0, I)`` (left) to ``p(x)`` (right).

    Args:
        model: a flow model with ``transform`` (a Compose in the normalizing direction) and a
            2D ``event_shape``.
        n: grid points per axis.
        steps: show at most this many panels (evenly spread); default all layers + base.
        path: save the figure here if given.

    Returns the matplotlib Figure. Each panel's box covers the 0.5-99.5% range of samples of
    that intermediate variable (coordinates change from layer to layer).
    """
    layers = list(model.transform.transforms)
    depth = len(layers)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(20000, 2, generator=g)
    stages = [z]  # stages[k] = h after k generative layers: the inverse of layers[-k:]
    h = z
    for layer in reversed(layers):
        h = layer.inverse(h)[0]
        stages.append(h)
    ks = list(range(depth + 1))
    if steps is not None and steps < len(ks):
        ks = sorted({round(i * depth / (steps - 1)) for i in range(steps)})
    cols = min(len(ks), 5)
    rows = math.ceil(len(ks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(ks) :]:
        ax.axis("off")
    for ax, k in zip(axes.flat, ks):
        rest = layers[depth - k :]  # normalizing layers from h_k down to z

        def log_prob(x, rest=rest):
            ladj = torch.zeros(x.shape[0])
            for layer in rest:
                x, l = layer(x)
                ladj = ladj + l
            # log N(x; 0, I) of the 2-D points (plot/ imports nothing from distributions/)
            return -0.5 * (x**2).sum(1) - math.log(2 * math.pi) + ladj

        s = stages[k]
        lo = torch.quantile(s, 0.005, dim=0)
        hi = torch.quantile(s, 0.995, dim=0)
        pad = 0.15 * (hi - lo)
        name = "base N(0, I)" if k == 0 else f"after {k}: {type(layers[depth - k]).__name__}"
        density_map(log_prob, lo - pad, hi + pad, n=n, ax=ax, title=name)
    fig.suptitle("a Gaussian bent layer by layer into the data (generative direction)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


@torch.no_grad()
def flow_overview(model, data_x, *, path=None, seed: int = 0, title: str = ""):
    """Two panels: the model's density heat map and its samples over the data (grey)."""
    x = data_x[:5000]
    lo, hi = x.min(0).values, x.max(0).values
    pad = 0.15 * (hi - lo)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 4))
    density_map(model.log_prob, lo - pad, hi + pad, ax=a, title=f"{title} density p(x)")
    s = model.sample(5000, generator=torch.Generator().manual_seed(seed))
    scatter_samples(s, x, ax=b, title=f"{title} samples over data")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
