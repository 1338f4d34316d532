"""A small U-Net noise predictor ε_θ(x_t, t) for images.

The shape of Ho et al. (2020)'s network, shrunk for small images: the U-Net of
Ronneberger et al. (2015) (an encoder that halves the resolution, a decoder that
doubles it back, skip connections between the two), built from residual blocks
with group normalisation, and a sinusoidal embedding of the timestep added
inside every residual block. Self-attention is left out: at 8x8 and 28x28 it buys
little and costs much on a CPU.

Shapes: ``x`` is ``(n, c, h, w)``, ``t`` is ``(n,)`` integer (or real) timesteps,
the output has ``x``'s shape. Odd sizes are handled (28 -> 14 -> 7 -> 4 and back,
the decoder crops to the skip's size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import check_time_scale, scale_time, sinusoidal_embedding

__all__ = ["UNet", "ResBlock"]


def _groups(channels: int, max_groups: int = 8) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))) + emb(t))))`` with a 1x1 skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """ε_θ(x, t) for images ``(n, c, h, w)``.

    Args:
        in_channels: image channels ``c``.
        channels: width of the first level.
        mults: width multiplier per level; the resolution halves between levels.
        blocks: residual blocks per level (encoder and decoder alike).
        emb_dim: width of the sinusoidal timestep embedding (even).
        dropout: dropout inside residual blocks.
        time_scale: the embedding sees ``time_scale · t`` (as :class:`~.mlp.TimeMLP`'s).

    Example::

        net = UNet(1, channels=32, mults=(1, 2))
        eps = net(torch.randn(16, 1, 8, 8), torch.randint(0, 1000, (16,)))  # (16, 1, 8, 8)
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        mults: tuple[int, ...] = (1, 2),
        blocks: int = 1,
        emb_dim: int = 128,
        dropout: float = 0.0,
        time_scale: float = 1.0,
    ):
        super().__init__()
        self.time_scale = check_time_scale(time_scale)
        if emb_dim % 2 or emb_dim < 2:
            raise ValueError(f"emb_dim must be a positive even number, got {emb_dim}")
        if channels < 1 or blocks < 1 or not mults or min(mults) < 1:
            raise ValueError("channels, blocks and every multiplier must be >= 1")
        self.emb_dim = emb_dim
        t_dim = 4 * channels
        self.time = nn.Sequential(nn.Linear(emb_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [channels], channels
        for level, w in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResBlock(c, w, t_dim, dropout))
                c = w
                skips.append(c)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, t_dim, dropout), ResBlock(c, c, t_dim, dropout)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, t_dim, dropout))
                c = w
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(c), c)
        self.out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self._levels, self._blocks = len(widths), blocks

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"x must have shape (n, c, h, w), got {tuple(x.shape)}")
        emb = sinusoidal_embedding(scale_time(t, self.time_scale), self.emb_dim)
        emb = self.time(emb.to(x.dtype))
        h = self.stem(x)
        hs = [h]
        k = 0
        for level in range(self._levels):
            for _ in range(self._blocks):
                h = self.down[k](h, emb)
                k += 1
                hs.append(h)
            if level < self._levels - 1:
                h = self.downsample[level](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        k = 0
        for j, level in enumerate(reversed(range(self._levels))):
            for _ in range(self._blocks + 1):
                skip = hs.pop()
                h = self.up[k](
                    torch.cat([h[..., : skip.shape[-2], : skip.shape[-1]], skip], 1), emb
                )
                k += 1
            if level > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[j](h)
        h = h[..., : x.shape[-2], : x.shape[-1]]
        return self.out(F.silu(self.out_norm(h)))
