"""Multi-layer perceptrons: a plain MLP and a time-conditioned one for diffusion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import check_time_scale, scale_time, sinusoidal_embedding

__all__ = ["MLP", "TimeMLP", "activation"]

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU}


def activation(name: str) -> nn.Module:
    """An activation module by name (silu, relu, tanh, gelu, elu)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``in_features -> hidden... -> out_features`` with an activation between layers (and a
    dropout after each activation when ``dropout > 0``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        act: str = "silu",
        dropout: float = 0.0,
    ):
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation(act)]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)


class TimeMLP(nn.Module):
    """ε-network for points: MLP on ``[x, emb(t)]`` (emb: sinusoidal, ``emb_dim``-d).

    ``forward(x, t)`` with ``x: (n, d)`` and integer timesteps ``t`` of shape
    ``(n,)`` or ``()`` (diffusers' convention: ``0..T-1``). The first layer is one
    ``nn.Linear(d + emb_dim, width)`` on the concatenation, evaluated as
    ``W_x x + (W_e emb(t) + b)``: when every row shares one timestep (a scalar
    ``t``, or an expanded ``(n,)`` view with stride 0, as the samplers pass), the
    time half is computed once instead of ``n`` times. The result equals the
    concatenated form exactly up to float rounding.

    ``time_scale`` (a positive number, default 1): the embedding sees ``time_scale · t``
    instead of ``t`` (:func:`~genmodels.nn.embeddings.scale_time`), i.e. every frequency of
    the sinusoidal embedding is multiplied by it. It is a constant of the architecture, not
    a parameter: checkpoints do not store it (the model's config does).
    """

    def __init__(
        self,
        features: int,
        width: int = 128,
        depth: int = 3,
        emb_dim: int = 128,
        act: str = "silu",
        time_scale: float = 1.0,
    ):
        super().__init__()
        self.time_scale = check_time_scale(time_scale)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.features, self.emb_dim = features, emb_dim
        self.inp = nn.Linear(features + emb_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, features)
        self.act = activation(act)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        shared = t.dim() == 0 or (t.dim() == 1 and t.shape[0] > 0 and t.stride(0) == 0)
        t_rows = t.reshape(1) if t.dim() == 0 else (t[:1] if shared else t)
        emb = sinusoidal_embedding(scale_time(t_rows, self.time_scale), self.emb_dim).to(x.dtype)
        w = self.inp.weight
        h = F.linear(x, w[:, : self.features]) + F.linear(emb, w[:, self.features :], self.inp.bias)
        h = self.act(h)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.out(h)
