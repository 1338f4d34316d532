"""The conditioner of an image coupling layer: a small convolutional ResNet.

RealNVP (Dinh et al. 2017, sec. 4.1) computes the scale and shift of an image coupling with
a ResNet over the masked image. Here: ``conv3x3 -> blocks x residual block -> relu ->
conv3x3``; a residual block is ``h + conv3x3(relu(conv3x3(relu(h))))``. There is no batch or
group normalisation, so the output of one image does not depend on the rest of the batch and
eval mode equals train mode. The last convolution starts at zero (``zero_init``, so a fresh
coupling is the identity map) or at PyTorch's default init.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvConditioner"]


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv2(torch.relu(self.conv1(torch.relu(h))))


class ConvConditioner(nn.Module):
    """``(batch, in_channels, H, W) -> (batch, out_channels, H, W)`` with a zero-initialised
    (or small) last convolution.

    Args:
        in_channels: input channels (the masked image, plus the mask for checkerboards).
        out_channels: coupling parameters per pixel, times the transformed channels.
        hidden_channels: width of the ResNet.
        blocks: number of residual blocks (0 allowed).
        zero_init: start the output convolution at zero (identity coupling).

    Example::

        >>> net = ConvConditioner(2, 4, hidden_channels=8, blocks=1)
        >>> net(torch.randn(3, 2, 4, 4)).shape
        torch.Size([3, 4, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 32,
        blocks: int = 1,
        zero_init: bool = True,
    ) -> None:
        if min(in_channels, out_channels, hidden_channels) < 1 or blocks < 0:
            raise ValueError(
                "in_channels, out_channels, hidden_channels must be >= 1 and blocks >= 0, got "
                f"{in_channels}, {out_channels}, {hidden_channels}, {blocks}"
            )
        super().__init__()
        self.first = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(_Residual(hidden_channels) for _ in range(blocks))
        self.last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, in_channels, H, W) -> (batch, out_channels, H, W)``."""
        h = self.first(x)
        for block in self.blocks:
            h = block(h)
        return self.last(torch.relu(h))
