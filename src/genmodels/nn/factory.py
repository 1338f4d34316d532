"""Which network for this data shape: the one place where models choose by shape.

A model asks this factory for its network and never branches on image sizes itself.

**Time-conditioned networks** ``f(x, t) -> same shape as x`` (DDPM's ε-network; later the
score networks of NCSN and the score SDEs): :func:`time_network`. ``width`` and ``depth``
mean what they mean for the chosen network; ``None`` takes the measured default:

==========================================  =====================================  =====  =====
event shape                                 network (``net="auto"``)               width  depth
==========================================  =====================================  =====  =====
points ``(d,)``                             ``"mlp"``: :class:`TimeMLP`            128    3
images ``(c, h, w)``, ``h w <= 256``        ``"mlp"``: TimeMLP on flattened pixels  512    4
images ``(c, h, w)``, ``h w > 256``         ``"unet"``: :class:`UNet`              16     1
==========================================  =====================================  =====  =====

For the MLP, width is the hidden width and depth the number of hidden layers; for the U-Net,
width is the base number of channels and depth the residual blocks per level. 8x8 digits:
the MLP was measured fastest to the quality target (docs/images.md); an MLP narrower than
the pixel count cannot even pass x_t through its first layer (at large t, ε ≈ x_t): on 28x28
its loss stalls near 0.6 where the U-Net's falls to 0.03.

**Coupling conditioners** (the flows' ``x_a -> parameters of x_b`` networks):
:func:`conditioner_options`, the keyword arguments of the coupling layers, which build the
network themselves:

==================  ==========================================  =====  =====
event shape         conditioner                                 width  depth
==================  ==========================================  =====  =====
points ``(d,)``     MLP (:class:`Conditioner`), ``depth`` hidden  64     2
                    layers of ``width`` units
images ``(c,h,w)``  conv ResNet (:class:`ConvConditioner`),     32     1
                    ``width`` channels, ``depth`` residual blocks
==================  ==========================================  =====  =====

Example::

    >>> time_network((2,)).__class__.__name__
    'TimeMLP'
    >>> time_network_choice((1, 28, 28))
    NetworkChoice(net='unet', width=16, depth=1)
    >>> conditioner_options((2,), depth=3)
    {'hidden_features': (64, 64, 64)}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .mlp import TimeMLP
from .unet import UNet

__all__ = [
    "NetworkChoice",
    "FlatTimeNetwork",
    "time_network",
    "time_network_for",
    "time_network_choice",
    "conditioner_choice",
    "conditioner_options",
    "IMAGE_MLP_MAX_PIXELS",
]

# "auto": an MLP on flattened pixels while the image has at most this many pixels, a U-Net above.
IMAGE_MLP_MAX_PIXELS = 256

# The measured defaults of the tables above: (width, depth) per network.
_TIME_DEFAULTS = {"points-mlp": (128, 3), "image-mlp": (512, 4), "unet": (16, 1)}
_CONDITIONER_DEFAULTS = {"mlp": (64, 2), "conv-resnet": (32, 1)}


class NetworkChoice(NamedTuple):
    """A resolved choice: the network's name and its width and depth (see the module)."""

    net: str
    width: int
    depth: int


def _is_image(event_shape: tuple[int, ...]) -> bool:
    if len(event_shape) == 1:
        return False
    if len(event_shape) == 3:
        return True
    raise ValueError(
        f"event_shape must be (d,) for points or (c, h, w) for images, got {event_shape}"
    )


def time_network_choice(
    event_shape: Sequence[int],
    net: str = "auto",
    width: int | None = None,
    depth: int | None = None,
) -> NetworkChoice:
    """The network :func:`time_network` builds for ``event_shape``, defaults filled in.

    Args:
        event_shape: shape of one example, ``(d,)`` or ``(c, h, w)``.
        net: ``"auto"`` (the table in the module docstring), ``"mlp"`` or ``"unet"`` (images).
        width, depth: ``None`` for the default of the chosen network.
    """
    shape = tuple(int(s) for s in event_shape)
    if net not in ("auto", "mlp", "unet"):
        raise ValueError(f"net must be 'auto', 'mlp' or 'unet', got {net!r}")
    image = _is_image(shape)
    if not image and net == "unet":
        raise ValueError(f"net 'unet' needs images (c, h, w), got event_shape {shape}")
    if net == "auto":
        net = "mlp" if not image or math.prod(shape[1:]) <= IMAGE_MLP_MAX_PIXELS else "unet"
    key = net if net == "unet" else ("image-mlp" if image else "points-mlp")
    w0, d0 = _TIME_DEFAULTS[key]
    return NetworkChoice(net, w0 if width is None else width, d0 if depth is None else depth)


class FlatTimeNetwork(nn.Module):
    """A network of flat vectors applied to images: ``(n, c, h, w) -> (n, c, h, w)`` through
    ``net((n, c·h·w), t)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1), t).view_as(x)


def time_network(
    event_shape: Sequence[int],
    *,
    net: str = "auto",
    width: int | None = None,
    depth: int | None = None,
    emb_dim: int = 128,
    activation: str = "silu",
    mults: Sequence[int] = (1, 2, 2),
    time_scale: float = 1.0,
) -> nn.Module:
    """A network ``f(x, t)`` with ``x: (n, *event_shape)``, ``t: (n,)`` -> ``(n, *event_shape)``.

    Args:
        event_shape: shape of one example, ``(d,)`` or ``(c, h, w)``.
        net, width, depth: see :func:`time_network_choice` and the module's table.
        emb_dim: width of the sinusoidal time embedding (even).
        activation: the MLP's nonlinearity (the U-Net uses SiLU).
        mults: the U-Net's width multiplier per resolution level (unused by the MLP).
        time_scale: the time embedding sees ``time_scale · t`` (every network; default 1).
    """
    shape = tuple(int(s) for s in event_shape)
    choice = time_network_choice(shape, net, width, depth)
    if choice.net == "unet":
        return UNet(
            shape[0], choice.width, tuple(mults), choice.depth, emb_dim, time_scale=time_scale
        )
    mlp = TimeMLP(
        math.prod(shape), choice.width, choice.depth, emb_dim, activation, time_scale=time_scale
    )
    return FlatTimeNetwork(mlp) if len(shape) == 3 else mlp


def time_network_for(
    event_shape: Sequence[int], config, *, time_scale: float | None = None
) -> nn.Module:
    """:func:`time_network` from a model config's network fields (``net``, ``width``,
    ``depth``, ``emb_dim``, ``activation``, ``mults``: the fields every diffusion and score
    model's config shares), and its ``time_scale`` where it has one (1 where not);
    ``time_scale`` given here overrides the config's (a model that resolves a ``None``
    default passes the value)."""
    if time_scale is None:
        time_scale = getattr(config, "time_scale", None)
    return time_network(
        event_shape,
        net=config.net,
        width=config.width,
        depth=config.depth,
        emb_dim=config.emb_dim,
        activation=config.activation,
        mults=config.mults,
        time_scale=1.0 if time_scale is None else time_scale,
    )


def conditioner_choice(
    event_shape: Sequence[int], width: int | None = None, depth: int | None = None
) -> NetworkChoice:
    """The coupling conditioner for ``event_shape``: ``"mlp"`` for points, ``"conv-resnet"``
    for images, with the measured defaults of the module's table for ``None``."""
    net = "conv-resnet" if _is_image(tuple(event_shape)) else "mlp"
    w0, d0 = _CONDITIONER_DEFAULTS[net]
    return NetworkChoice(net, w0 if width is None else width, d0 if depth is None else depth)


def conditioner_options(
    event_shape: Sequence[int], width: int | None = None, depth: int | None = None
) -> dict:
    """Keyword arguments that give a coupling layer the conditioner for ``event_shape``:
    ``hidden_features`` for point couplings, ``hidden_channels`` and ``blocks`` for image
    couplings (``genmodels.distributions``)."""
    choice = conditioner_choice(event_shape, width, depth)
    if choice.net == "mlp":
        return {"hidden_features": (choice.width,) * choice.depth}
    return {"hidden_channels": choice.width, "blocks": choice.depth}
