"""Generative vs discriminative decision maps (the lecture's section 2 slide, measured).

Each panel colours the plane by the predicted class, faded by the confidence ``max_k p(k|x)``,
with the contours of the generative model's ``p(x)`` on top. Hatched: inputs where that
panel's classifier is confident (``max p(y|x) > 0.95``) although ``p(x)`` is below the level
that holds 99% of the training data: "p(blue|x) is high and p(x) is low = uncertain decision".
A last panel shows what only the generative model can do with that: decide where ``p(x)`` is
above the level and abstain (grey) elsewhere.

:func:`decision_map` is the single-classifier panel without ``p(x)`` (any classifier of 2-D
points); a training run of a classifier draws it as ``decisions.png``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

__all__ = ["decision_map", "decision_maps"]


def _plane(x, n: int):
    """An ``n x n`` grid over ``x``'s bounding box grown 1.5x: ``xs``, ``ys``, ``xx``, ``yy``,
    and the ``(n*n, 2)`` points."""
    lo, hi = x.min(0).values, x.max(0).values
    mid, half = (lo + hi) / 2, 0.75 * (hi - lo)
    xs = torch.linspace(float(mid[0] - half[0]), float(mid[0] + half[0]), n)
    ys = torch.linspace(float(mid[1] - half[1]), float(mid[1] + half[1]), n)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    return xs, ys, xx, yy, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def _palette(k: int):
    return np.array([to_rgb(plt.cm.tab10(i % 10)) for i in range(k)])


def _class_image(probs, palette):
    """RGB ``(n, n, 3)``: the predicted class's colour, faded to white as the confidence
    ``max_k p(k|x)`` falls to the uniform guess ``1/K``; also the confidence ``(n, n)``."""
    k = probs.shape[-1]
    conf, cls = probs.max(-1)
    conf = conf.numpy()
    w = ((conf - 1 / k) / (1 - 1 / k)).clip(0, 1)[..., None]
    return (1 - w) + w * palette[cls.numpy()], conf


@torch.no_grad()
def decision_map(model, data_x, data_y, path=None, *, n: int = 200, title="decision regions"):
    """The plane coloured by ``model``'s predicted class, faded by its confidence, with data.

    Args:
        model: a classifier of 2-D points, ``predict(x) -> Categorical`` (on the CPU).
        data_x, data_y: ``(m, 2)`` points and ``(m,)`` int labels; the first 2000 are drawn.
        path: where to save (PNG); n: grid points per axis.

    Returns the Figure (closed once saved to ``path``).
    """
    x = data_x[:20000].float()
    xs, ys, _, _, pts = _plane(x, n)
    k = int(data_y.max()) + 1
    probs = torch.cat([model.predict(c).probs for c in pts.split(20000)]).reshape(n, n, -1)
    palette = _palette(max(k, probs.shape[-1]))
    img, _ = _class_image(probs.cpu(), palette)
    fig, ax = plt.subplots(figsize=(5, 5))
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    ax.imshow(img, origin="lower", extent=extent, interpolation="nearest")
    d = x[:2000].numpy()
    ax.scatter(d[:, 0], d[:, 1], s=1, c=palette[data_y[:2000].numpy()], alpha=0.6)
    ax.set_title(f"{title}\n(white: p(y|x) near uniform)", fontsize=9)
    ax.set_aspect("equal")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


@torch.no_grad()
def decision_maps(
    models: dict, density_model, data_x, data_y, *, n: int = 200, path=None, confident=0.95
):
    """One decision map per classifier in ``models`` (``{title: model}``) with p(x) contours.

    Args:
        models: classifiers with ``predict(x) -> Categorical``.
        density_model: provides ``log_prob(x)`` (the generative classifier's marginal p(x)).
        data_x, data_y: ``(m, 2)`` points and ``(m,)`` labels drawn in small dots.
        n: grid points per axis; confident: the max-probability threshold for flagging.

    Returns the Figure (saved to ``path`` if given). The fraction of the plotted box that is
    flagged is written in each panel's title.
    """
    x = data_x[:20000]
    xs, ys, xx, yy, pts = _plane(x, n)
    logp = torch.cat([density_model.log_prob(c) for c in pts.split(20000)]).reshape(n, n)
    level = float(torch.quantile(density_model.log_prob(x[:5000]), 0.01))
    low = (logp < level).numpy()
    k = int(data_y.max()) + 1
    palette = _palette(k)

    panels = list(models.items())
    if any(m is density_model for m in models.values()):
        panels.append(("generative, abstaining where p(x) is low", density_model))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for i, (ax, (title, model)) in enumerate(zip(axes[0], panels)):
        probs = torch.cat([model.predict(c).probs for c in pts.split(20000)]).reshape(n, n, k)
        img, conf = _class_image(probs, palette)  # white (1/K) to the class colour (certain)
        abstain = i == len(models)  # the extra panel
        if abstain:
            img[low] = 0.85
        extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
        ax.imshow(img, origin="lower", extent=extent, interpolation="nearest")
        flag = low & (conf > confident) & (not abstain)
        ax.contourf(
            xx.numpy(),
            yy.numpy(),
            flag.astype(float),
            levels=[0.5, 1.5],
            colors="none",
            hatches=["////"],
        )
        levels = sorted({level, level + 2.0, level + 4.0})
        cs = ax.contour(
            xx.numpy(), yy.numpy(), logp.numpy(), levels=levels, colors="k", linewidths=0.8
        )
        ax.clabel(cs, fmt=lambda v: f"log p={v:.1f}", fontsize=6)
        d = x[:2000].numpy()
        ax.scatter(d[:, 0], d[:, 1], s=1, c=palette[data_y[:2000].numpy()], alpha=0.6)
        note = (
            "grey: p(x) below the 99% level"
            if abstain
            else (f"confident where p(x) is low: {flag.mean():.0%} of the box")
        )
        ax.set_title(f"{title}\n{note}", fontsize=9)
        ax.set_aspect("equal")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
