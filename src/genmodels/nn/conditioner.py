"""The conditioner network of a coupling layer: x_a (and a context) -> all parameters at once.

One MLP whose last ``Linear`` emits every parameter of the coupling (for the affine coupling
``s`` and ``t`` together, for a spline its widths, heights and derivatives), so a layer costs
one network call. The last layer starts at zero, so a fresh coupling is the identity map and a
deep flow starts as its base distribution (Dinh et al. 2017; Kingma & Dhariwal 2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Conditioner"]

# In place where autograd allows it (a linear layer's fresh output is used nowhere else).
_ACTIVATIONS = {
    "relu": torch.relu_,
    "silu": lambda h: F.silu(h, inplace=True),
    "tanh": torch.tanh_,
    "elu": lambda h: F.elu(h, inplace=True),
    "gelu": F.gelu,
}


class Conditioner(nn.Module):
    """MLP ``(batch, in_features) -> (batch, out_features)`` with a zero-initialised last layer.

    Args:
        in_features: input width (``|x_a|`` plus the context width).
        out_features: number of coupling parameters for the whole ``x_b``.
        hidden_features: widths of the hidden layers, e.g. ``(64, 64)``.
        activation: ``"relu"``, ``"silu"``, ``"tanh"``, ``"elu"`` or ``"gelu"``.
        zero_init: start the output layer at zero (identity coupling).

    Example::

        >>> net = Conditioner(1, 2, (64, 64))
        >>> net(torch.randn(5, 1)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "relu",
        zero_init: bool = True,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        super().__init__()
        widths = [in_features, *hidden_features, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        if zero_init:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)
        self.activation = activation
        self._act = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, in_features) -> (batch, out_features)``."""
        # Functional calls on the weights: no per-submodule __call__ overhead.
        *hidden, last = self.layers
        for layer in hidden:
            x = self._act(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, last.weight, last.bias)
