"""The reverse chain of a diffusion model as a picture: x_T ... x_0, one row per sample."""

from __future__ import annotations

import torch

from .core import image_grid

__all__ = ["chain_grid"]


def chain_grid(model, path=None, *, n: int = 8, frames: int = 10, generator=None, **sample_opts):
    """Sample ``n`` images with their reverse chain and tile ``frames`` snapshots per row.

    Each row is one sample, from pure noise x_T (left) to the sample x_0 (right),
    at evenly spaced points of the sampler's steps. Images are clipped to [-1, 1]
    for display only.

    Args:
        model: a model whose ``sample(n, return_chain=True, ...)`` returns
            ``(x_0, [(i, x_i), ...])`` (e.g. :class:`~genmodels.models.DDPM`).
        path: PNG file to write (None: only return the grid).
        n: rows (samples); frames: columns (≥ 2: x_T and x_0 at least).
        generator: seeds the draw; sample_opts: passed to ``model.sample``.
    Returns:
        The tiled images ``(n * frames, c, h, w)``.
    """
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    if generator is None:
        generator = torch.Generator(device=dev).manual_seed(0)
    # the sampler's first draw is x_T ~ N(0, I): replay it from the generator's state
    state = generator.get_state()
    dtype = p.dtype if p is not None else torch.float32
    x_T = torch.randn((n, *model.event_shape), generator=generator, device=dev, dtype=dtype)
    generator.set_state(state)
    _, chain = model.sample(n, generator=generator, return_chain=True, **sample_opts)
    seq = [x_T.cpu()] + [x.detach().cpu() for _, x in chain]  # chain[k]: after step k
    frames = min(frames, len(seq))
    pick = torch.linspace(0, len(seq) - 1, frames).round().long().tolist()
    tiles = torch.stack([seq[k] for k in pick], 1)  # (n, frames, c, h, w)
    tiles = tiles.flatten(0, 1).clamp(-1, 1)
    image_grid(tiles, path, nrow=frames, title="reverse chain: x_T (left) to x_0 (right)")
    return tiles
