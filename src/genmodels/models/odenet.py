"""ODE-Net and a same-size ResNet on 8x8 images (lecture section 4, "ResNet block" -> "From Res
to ODE"; Chen et al. 2018, "Neural Ordinary Differential Equations", section 3).

A stack of residual blocks ``h_{t+1} = h_t + f(h_t, θ_t)`` is Euler's method with step 1 for
``dh/dt = f(h(t), t, θ)``; :class:`ODEBlock` replaces the stack by that ODE on ``[0, T]``, solved
by ``odeint`` (backpropagation through the solver) or ``odeint_adjoint`` (Algorithm 1: memory
constant in the number of steps).  Both classifiers share the rest: a 3x3 convolution to
``channels`` feature maps, the block(s), group norm, global average pooling and a linear layer.

- ``odenet``: one :class:`ODEBlock` whose field is two 3x3 convolutions that also see ``t``
  (as an extra input channel), ``rk4`` on a fixed grid by default.
- ``resnet``: ``blocks`` residual blocks of the same shape; with ``blocks=1`` it has the same
  parameter count as the ODE-Net (the field's time channels aside: ``params`` says).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from ..integrate import SolverStats, check_times, odeint, odeint_adjoint
from ..registry import DataInfo, register

__all__ = [
    "ODEBlock",
    "ConvField",
    "ImageClassifier",
    "ODENetConfig",
    "ResNetConfig",
    "build_odenet",
    "build_resnet",
]


class ConvField(nn.Module):
    """``f(h, t)``: GroupNorm-ReLU-conv3x3-GroupNorm-ReLU-conv3x3, ``t`` as an extra channel."""

    def __init__(self, channels: int, time: bool = True) -> None:
        super().__init__()
        extra = 1 if time else 0
        self.time = time
        self.norm1 = nn.GroupNorm(min(8, channels), channels)
        self.conv1 = nn.Conv2d(channels + extra, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(8, channels), channels)
        self.conv2 = nn.Conv2d(channels + extra, channels, 3, padding=1)

    def _cat(self, t: Tensor | None, h: Tensor) -> Tensor:
        if not self.time:
            return h
        tt = torch.as_tensor(t, dtype=h.dtype, device=h.device).expand(h.shape[0], 1, *h.shape[2:])
        return torch.cat([tt, h], 1)

    def forward(self, t: Tensor | None, h: Tensor) -> Tensor:
        """``dh/dt`` ``(B, C, H, W)``."""
        out = self.conv1(self._cat(t, F.relu(self.norm1(h))))
        return self.conv2(self._cat(t, F.relu(self.norm2(out))))


class ODEBlock(nn.Module):
    """``h(T)`` from ``dh/dt = f(t, h)``, ``h(0) = h``: a continuous-depth residual block.

    Args:
        field: ``f(t, h)``; T: the end time; method, step_size, rtol, atol: the solver;
        adjoint: gradients by :func:`~genmodels.integrate.odeint_adjoint` (O(1) memory).

    ``self.stats`` counts the function evaluations of every solve (``nfe``, ``nfe_backward``).
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        T: float = 1.0,
        method: str = "rk4",
        step_size: float | None = 0.25,
        rtol: float = 1e-3,
        atol: float = 1e-3,
        adjoint: bool = False,
    ) -> None:
        super().__init__()
        if not float(T) > 0 or not math.isfinite(T):
            raise ValueError(f"ODEBlock: T must be > 0 and finite, got {T!r}")
        if step_size is not None and not (float(step_size) > 0 and math.isfinite(step_size)):
            raise ValueError(f"ODEBlock: step_size must be > 0 and finite (or None), got "
                             f"{step_size!r}")  # fmt: skip
        self.field, self.T, self.method, self.step_size = field, float(T), method, step_size
        self.rtol, self.atol, self.adjoint = rtol, atol, adjoint
        self.stats = SolverStats()

    def forward(self, h: Tensor, times: Tensor | None = None) -> Tensor:
        """``h(T)`` (``times=None``) or ``h`` at every time of ``times`` ``(K, *h.shape)``.

        ``times``: a strictly increasing 1-D grid, ``h`` being the state at ``times[0]``.
        """
        if times is None:
            t = torch.tensor([0.0, self.T], dtype=h.dtype)
        else:
            _increasing(times, "ODEBlock")
            t = times
        opts = None if self.step_size is None else dict(step_size=self.step_size)
        kw = dict(rtol=self.rtol, atol=self.atol, method=self.method, options=opts)
        if self.adjoint and torch.is_grad_enabled():
            hs = odeint_adjoint(self.field, h, t, stats=self.stats, **kw)
        else:
            hs = odeint(self.field, h, t, stats=self.stats, **kw)
        return hs[-1] if times is None else hs


def _increasing(times, caller: str) -> list[float]:
    """``times`` checked: a finite, strictly increasing 1-D tensor (a ValueError names it)."""
    ts = check_times(times, name="times", caller=caller)
    if len(ts) > 1 and ts[1] < ts[0]:
        raise ValueError(f"{caller}: times must be strictly increasing; times[0]={ts[0]!r}, "
                         f"times[1]={ts[1]!r}")  # fmt: skip
    return ts


class _Residual(nn.Module):
    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field

    def forward(self, h: Tensor) -> Tensor:
        return h + self.field(None, h)


class ImageClassifier(nn.Module):
    """``p(y|x) = softmax(linear(pool(norm(blocks(conv(x))))))`` on images ``(B, C, H, W)``."""

    def __init__(self, in_channels: int, channels: int, classes: int, body: nn.Module):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = body
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.head = nn.Linear(channels, classes)

    def logits(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, K)``."""
        h = self.body(self.stem(x))
        return self.head(F.relu(self.norm(h)).mean((2, 3)))

    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean cross-entropy (nats) of the labelled batch ``(x, y)``."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError("a classifier's batch must be (x, y); train on labelled data")
        x, y = batch
        return F.cross_entropy(self.logits(x), y)

    def predict(self, x: Tensor) -> Categorical:
        """``p(y|x)`` with batch shape ``(B,)``."""
        return Categorical(logits=self.logits(x), validate_args=False)


@dataclass
class ODENetConfig:
    """ODE-Net: ``channels`` feature maps, one ODE block on [0, T]."""

    channels: int = 32
    T: float = 1.0
    method: str = "rk4"
    step_size: float | None = 0.25
    adjoint: bool = False


@dataclass
class ResNetConfig:
    """ResNet: ``channels`` feature maps, ``blocks`` residual blocks."""

    channels: int = 32
    blocks: int = 1


def _image(info: DataInfo, name: str) -> tuple[int, int]:
    if len(info.event_shape) != 3 or not info.num_classes:
        raise ValueError(f"{name} takes labelled images (C, H, W), got {info}")
    return int(info.event_shape[0]), int(info.num_classes)


@register(
    "odenet",
    config=ODENetConfig,
    default_data="digits",
    task="classifier",
    section=4,
    description="ODE-Net classifier (Chen et al. 2018, sec. 3)",
    data_kinds=("images",),
)
def build_odenet(config: ODENetConfig, info: DataInfo) -> ImageClassifier:
    """ODE-Net on labelled images."""
    c_in, k = _image(info, "odenet")
    block = ODEBlock(
        ConvField(config.channels), T=config.T, method=config.method,
        step_size=config.step_size, adjoint=config.adjoint,
    )  # fmt: skip
    return ImageClassifier(c_in, config.channels, k, block)


@register(
    "resnet",
    config=ResNetConfig,
    default_data="digits",
    task="classifier",
    section=4,
    description="ResNet classifier of the ODE-Net's size",
    data_kinds=("images",),
)
def build_resnet(config: ResNetConfig, info: DataInfo) -> ImageClassifier:
    """A ResNet on labelled images (``blocks`` residual blocks)."""
    c_in, k = _image(info, "resnet")
    body = nn.Sequential(*(_Residual(ConvField(config.channels, time=False))
                           for _ in range(config.blocks)))  # fmt: skip
    return ImageClassifier(c_in, config.channels, k, body)
