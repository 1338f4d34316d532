"""Pictures of a VAE: samples, reconstructions, and for a 2-d latent its space and manifold."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .core import image_grid, scatter_samples  # noqa: E402

__all__ = ["vae_pictures"]


@torch.no_grad()
def vae_pictures(
    model, data, out_dir, *, generator: torch.Generator | None = None, prefix: str = "vae"
) -> list[Path]:
    """Write the VAE's pictures to ``out_dir``; returns the paths.

    - ``{prefix}_samples.png``: x ~ p(x|z) (images: also the decoder means);
    - ``{prefix}_reconstructions.png`` (images): data above, E[x|z=μ(x)] below;
    - with a 2-d latent: ``{prefix}_latent.png`` (encoder means μ(x), by label) and
      ``{prefix}_manifold.png`` (decoder means over a grid of z in [-2.5, 2.5]²).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    x = data.x
    if model.kind == "images":
        s = model.sample(64, generator=generator)
        sm = model.sample(64, generator=generator, mean=True)
        paths.append(out / f"{prefix}_samples.png")
        image_grid(
            torch.cat([s, sm]),
            paths[-1],
            nrow=16,
            title="samples x ~ p(x|z) (top), decoder means E[x|z] (bottom)",
        )
        xs = x[:32]
        rec = model.reconstruct(xs)
        paths.append(out / f"{prefix}_reconstructions.png")
        image_grid(
            torch.cat([xs[:16], rec[:16], xs[16:], rec[16:]]),
            paths[-1],
            nrow=16,
            title="data / reconstruction (rows in pairs)",
        )
    else:
        s = model.sample(2000, generator=generator)
        paths.append(out / f"{prefix}_samples.png")
        scatter_samples(s, x[:5000], paths[-1], title="VAE samples over data")
    if model.latent_dim == 2:
        mu = torch.cat([model.encode(b).mean for b in x[:5000].split(1024)])
        fig, ax = plt.subplots(figsize=(5, 5))
        y = getattr(data, "y", None)
        c = y[:5000].numpy() if y is not None else "tab:blue"
        ax.scatter(mu[:, 0], mu[:, 1], c=c, s=3, cmap="tab10")
        ax.set_title("latent space: encoder means μ(x)")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
        paths.append(out / f"{prefix}_latent.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
        t = torch.linspace(-2.5, 2.5, 16)
        z = torch.stack(torch.meshgrid(t, -t, indexing="xy"), -1).reshape(-1, 2)
        dec = model.decode_mean(z.to(next(model.parameters())))
        paths.append(out / f"{prefix}_manifold.png")
        if model.kind == "images":
            image_grid(dec, paths[-1], nrow=16, title="decoded manifold E[x|z], z on a grid")
        else:
            scatter_samples(dec, x[:5000], paths[-1], title="decoded manifold E[x|z] (16×16 grid)")
    return paths
