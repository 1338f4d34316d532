"""The lecture's Figure 4: intermediate samples of annealed Langevin dynamics, one panel per
noise level (:meth:`genmodels.models.score.NCSN.sample` with ``return_chain=True``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["annealed_chain"]


def annealed_chain(chain, path=None, *, data=None, max_images: int = 8, lim=None):
    """Draw ``chain = [(σ_i, x_i)]`` left to right (an entry whose σ repeats the one before
    it is the denoised samples, as :meth:`~genmodels.models.score.NCSN.sample` returns them).

    Points ``(n, 2)``: one scatter per level over ``data`` in grey. Images ``(n, c, h, w)``:
    a grid whose rows are ``max_images`` samples and whose columns are the levels (the
    layout of Song & Ermon 2019's Fig. 4). Saves to ``path`` when given; returns the figure.
    """
    if not chain:
        raise ValueError("chain is empty: sample with return_chain=True")
    x0 = chain[0][1]
    k = len(chain)
    if x0.dim() == 2:
        if x0.shape[1] != 2:
            raise ValueError(f"points must be 2-D to draw, got shape {tuple(x0.shape)}")
        fig, axes = plt.subplots(1, k, figsize=(2.2 * k, 2.4), squeeze=False)
        for j, (sigma, x) in enumerate(chain):
            ax = axes[0, j]
            if data is not None:
                d = data.detach().float().cpu()
                ax.scatter(d[:, 0], d[:, 1], s=0.5, c="0.8", rasterized=True)
            x = x.detach().float().cpu()
            ax.scatter(x[:, 0], x[:, 1], s=0.5, c="tab:blue", rasterized=True)
            denoised = j > 0 and sigma == chain[j - 1][0]  # NCSN.sample's last entry
            ax.set_title("denoised" if denoised else f"σ = {sigma:.3g}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
            if lim is not None:
                ax.set_xlim(*lim), ax.set_ylim(*lim)
    elif x0.dim() == 4:
        m = min(max_images, x0.shape[0])
        fig, axes = plt.subplots(m, k, figsize=(0.8 * k, 0.8 * m), squeeze=False)
        for j, (sigma, x) in enumerate(chain):
            imgs = x[:m].detach().float().cpu().clamp(-1, 1)
            for r in range(m):
                ax = axes[r, j]
                img = imgs[r].permute(1, 2, 0).squeeze(-1)
                ax.imshow(((img + 1) / 2).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.axis("off")
            axes[0, j].set_title(f"{sigma:.2g}", fontsize=6)
    else:
        raise ValueError(
            f"chain states must be (n, 2) points or (n, c, h, w), got {tuple(x0.shape)}"
        )
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig
