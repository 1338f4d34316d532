"""Normalizing flows: NICE, RealNVP and neural spline flows (lecture section 3).

The lecture's change of variables, with ``T = f^{-1}`` the normalizing direction:

    log p(x) = log p_z(T(x)) + sum_i log|det J_{T_i}|

and maximum likelihood, ``loss = -mean_n log p(x_n)`` (nats). Each model is a stack of
coupling layers with alternating masks:

- ``nice``: additive couplings ``z_b = x_b + m(x_a)`` (det = 1) and a final diagonal scaling
  (Dinh et al. 2015, "NICE").
- ``realnvp``: affine couplings ``z_b = exp(s(x_a)) x_b + t(x_a)`` with a soft-clamped ``s``
  (Dinh et al. 2017, "Density estimation using Real NVP").
- ``nsf``: rational-quadratic spline couplings with linear tails (Durkan et al. 2019,
  "Neural Spline Flows").

Every model first standardises the data with buffers set by :meth:`FlowModel.init_from_data`;
that map's log-determinant is part of ``log_prob``, so densities are in the coordinates of
``genmodels.data.load(...).x``.

Images (``info.kind == "images"``) get :class:`ImageFlowModel`: a :class:`Logit`
pre-transform, then RealNVP's multi-scale architecture (checkerboard couplings, squeeze,
channel couplings, factor out half the channels; :func:`multi_scale`) with conv-ResNet
conditioners, trained on uniformly dequantised data ``x + w u``, ``u ~ U(0, 1)^D``.

Example::

    >>> from genmodels.registry import DataInfo
    >>> model = build_realnvp(RealNVPConfig(transforms=4), DataInfo("moons", "points", (2,)))
    >>> model.init_from_data(torch.randn(100, 2))
    >>> model.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ConfigError, fold_fields
from ..distributions import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    DiagonalScale,
    ElementwiseScale,
    Flow,
    ImageAdditiveCoupling,
    ImageAffineCoupling,
    ImageSplineCoupling,
    Logit,
    LULinear,
    Permutation,
    SplineCoupling,
    Standardize,
    Transform,
    alternating_mask,
    check_batch,
    check_count,
    model_dtype,
    multi_scale,
    standard_normal_log_prob,
)
from ..nn import conditioner_options
from ..registry import DataInfo, register

__all__ = [
    "FlowModel",
    "ImageFlowModel",
    "CouplingFlowConfig",
    "NICEConfig",
    "RealNVPConfig",
    "NSFConfig",
    "build_nice",
    "build_realnvp",
    "build_nsf",
    "coupling_stack",
]

_MIXING = ("alternate", "random", "lu")


class _TransformDensity(nn.Module):
    """What every flow model shares: ``self.transform`` (data -> base) over ``N(0, I)``."""

    event_shape: tuple[int, ...]
    transform: Compose

    def _check(self, x: Tensor, dtype: bool = True) -> None:
        """``x`` must be ``(n, *event_shape)`` and (``dtype``) of the model's dtype: one clear
        ``ValueError`` (nothing cast silently) for every flow's ``log_prob``/``nll_bound``."""
        check_batch(x, self.event_shape, "x", model_dtype(self) if dtype else None)

    def _base_noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``z ~ N(0, I)`` ``(n, *event_shape)`` in the model's dtype and device; ``n`` must be a
        positive integer (as for every model's ``sample``)."""
        n = check_count(n)
        device = next(itertools.chain(self.parameters(), self.buffers())).device
        shape = (n, *self.event_shape)
        return torch.randn(shape, generator=generator, dtype=model_dtype(self), device=device)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats, ``(n, *event_shape) -> (n,)``: ``log N(T(x)) + log|det J_T(x)|``
        (for images, the continuous density at the given points).  An empty batch gives an
        empty ``(0,)`` tensor, as ``torch.distributions`` do."""
        self._check(x)
        if x.shape[0] == 0:  # nothing to transform (and no ActNorm may initialise from it)
            return x.new_zeros(0)
        z, ladj = self.transform(x)
        return standard_normal_log_prob(z) + ladj

    def distribution(self) -> Flow:
        """The model as a ``torch.distributions.Distribution`` (log_prob, sample, rsample)."""
        return Flow(self.transform, self.event_shape)


class FlowModel(_TransformDensity):
    """A density model ``p(x)`` given by a normalizing transform over ``N(0, I)``.

    ``self.transform = Compose(Standardize, *layers)``. Contract of DESIGN.md: ``loss``,
    ``log_prob``, ``sample``, ``distribution``, ``init_from_data``.
    """

    def __init__(self, layers: list[Transform], event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.transform = Compose(Standardize.identity(self.event_shape), *layers)

    @property
    def standardize(self) -> Standardize:
        """The first layer, ``z = (x - loc) / scale`` (its buffers are set by init_from_data)."""
        return self.transform.transforms[0]

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Set the standardisation buffers from the training data ``x`` (n, d); initialise any
        ActNorm layer on (up to 4096 of) the standardised points."""
        self._check(x, dtype=False)  # statistics only: the buffers take them in their dtype
        self.standardize.set_(x)
        h = self.standardize(x[:4096])[0]
        for layer in self.transform.transforms[1:]:
            if isinstance(layer, ActNorm):
                layer.init_from_data(h)
            h = layer(h)[0]

    def loss(self, batch: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean negative log-likelihood of the batch ``(B, d)`` in nats (no randomness used)."""
        return -self.log_prob(batch).mean()

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``x = T^{-1}(z)``, ``z ~ N(0, I)`` drawn from ``generator``: (n, d)."""
        return self.transform.inverse(self._base_noise(n, generator))[0]


class ImageFlowModel(_TransformDensity):
    """A flow for quantised images ``(n, C, H, W)`` stored as ``k w - 1`` (``w`` the bin width).

    ``self.transform = Compose(Logit(-1, 1 + w, alpha), *layers)`` over ``N(0, I)``.
    Uniform dequantisation (Theis et al. 2016; Dinh et al. 2017): the model is a continuous
    density on ``[-1, 1 + w)^D`` fitted to ``x + w u``, ``u ~ U(0, 1)^D``, so the bin of the
    value ``x`` is ``[x, x + w)``. By Jensen's inequality

        -log P(x) = -log int_{[0,1)^D} p(x + w u) w^D du <= E_u[-log p(x + w u)] - D log w,

    and :meth:`nll_bound` is the Monte-Carlo estimate of ``E_u[-log p(x + w u)]``: an upper
    bound on ``-log P(x) + D log w``, which ``genmodels.data.bits_per_dim`` turns into an
    upper bound on the bits/dim of the discrete data. :meth:`log_prob` stays the continuous
    density (nats) at the given points.

    Contract of DESIGN.md: ``loss``, ``log_prob``, ``nll_bound``, ``sample``,
    ``distribution``, ``init_from_data``.
    """

    def __init__(self, layers: list[Transform], info: DataInfo, alpha: float = 1e-3) -> None:
        super().__init__()
        if info.kind != "images" or len(info.event_shape) != 3 or not info.levels:
            raise ValueError(f"ImageFlowModel needs quantised (C, H, W) images, got {info}")
        self.event_shape = tuple(info.event_shape)
        self.levels = int(info.levels)
        self.bin_width = 2.0 / (self.levels - 1)
        self.data_dim = math.prod(self.event_shape)
        self.transform = Compose(Logit(-1.0, 1.0 + self.bin_width, alpha), *layers)

    def dequantize(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``x + w u`` with ``u ~ U(0, 1)`` drawn from ``generator`` (same shape as ``x``)."""
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + self.bin_width * u

    @torch.no_grad()
    def nll_bound(
        self, x: Tensor, *, generator: torch.Generator | None = None, draws: int = 1
    ) -> Tensor:
        """``-log p(x + w u)`` ``(n,)`` in nats, averaged over ``draws`` dequantisations.

        An unbiased estimate of an upper bound on ``-log P(x) + D log w`` (see the class);
        ``genmodels.data.bits_per_dim`` maps it to (a bound on) bits/dim.
        """
        self._check(x)
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        out = []
        for b in x.split(1024):
            nll = sum(-self.log_prob(self.dequantize(b, generator=generator)) for _ in range(draws))
            out.append(nll / draws)
        return torch.cat(out)

    def loss(self, batch: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean NLL of the dequantised batch per dimension, nats/dim (noise from ``generator``)."""
        return -self.log_prob(self.dequantize(batch, generator=generator)).mean() / self.data_dim

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Initialise every ActNorm from (up to 1024 of) the dequantised training images ``x``
        (one training-mode forward pass; the noise comes from a fixed seed)."""
        self._check(x, dtype=False)
        if not any(isinstance(m, ActNorm) for m in self.modules()):
            return
        was = self.training
        self.train()
        g = torch.Generator(device=x.device).manual_seed(0)
        self.transform(self.dequantize(x[:1024], generator=g))
        self.train(was)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, quantize: bool = True
    ) -> Tensor:
        """``n`` images ``(n, C, H, W)``: ``x = T^{-1}(z)``, ``z ~ N(0, I)`` from ``generator``,
        then (``quantize``) the stored level of the bin ``x`` falls in, ``w floor((x+1)/w) - 1``
        (a sample of the discrete model ``P``)."""
        x = self.transform.inverse(self._base_noise(n, generator))[0]
        if not quantize:
            return x
        k = torch.floor((x + 1) / self.bin_width).clamp(0, self.levels - 1)
        return k * self.bin_width - 1


def _mixing_layer(kind: str, features: int, i: int) -> Transform | None:
    if kind == "alternate":
        return None
    g = torch.Generator().manual_seed(1000 + i)  # fixed per layer: reproducible architecture
    if kind == "random":
        return Permutation.random(features, generator=g)
    return LULinear(features, generator=g)


def coupling_stack(
    make: type, features: int, transforms: int, mixing: str = "alternate", **kwargs
) -> list[Transform]:
    """``transforms`` coupling layers ``make(features, mask, **kwargs)`` with alternating masks,
    optionally with a fixed random permutation or an LU linear layer in between (``mixing``).

    Example::

        >>> len(coupling_stack(AffineCoupling, 2, 4))
        4
    """
    if mixing not in _MIXING:
        raise ValueError(f"mixing must be one of {_MIXING}, got {mixing!r}")
    if features < 2:
        raise ValueError(f"coupling flows need at least 2 features, got {features}")
    layers: list[Transform] = []
    for i in range(transforms):
        if i > 0 and (mix := _mixing_layer(mixing, features, i)) is not None:
            layers.append(mix)
        layers.append(make(features, alternating_mask(features, i), **kwargs))
    return layers


def _image_flow(
    config, info: DataInfo, coupling: type, actnorm: bool, final: list | None = None, **kwargs
) -> ImageFlowModel:
    """Logit pre-transform + RealNVP's multi-scale stack of ``coupling`` (+ ``final`` layers)."""
    if len(info.event_shape) != 3 or not info.levels:
        raise ValueError(f"image flows need quantised (C, H, W) images, got {info}")
    stack = multi_scale(
        tuple(info.event_shape),
        coupling,
        scales=config.scales,
        couplings=_transforms(config, info),
        actnorm=actnorm,
        **conditioner_options(info.event_shape, config.width, config.depth),
        **kwargs,
    )
    return ImageFlowModel([stack, *(final or [])], info, config.logit_alpha)


def _points(info: DataInfo, name: str) -> int:
    if info.kind != "points" or len(info.event_shape) != 1:
        raise ValueError(
            f"{name} expects point data (n, d) or images (n, c, h, w); "
            f"got {info.kind} {info.event_shape}"
        )
    return info.event_shape[0]


@dataclass
class CouplingFlowConfig:
    """Fields every coupling flow shares (``nice``, ``realnvp``, ``nsf``).

    ``transforms``, ``width`` and ``depth`` mean what they mean for the data's architecture;
    ``None`` is the measured default (the conditioners come from
    :func:`genmodels.nn.conditioner_options`):

    ======================  ==========================  ===========================  =====  =====
    data                    transforms                  conditioner                  width  depth
    ======================  ==========================  ===========================  =====  =====
    points ``(d,)``         8 coupling layers           MLP, ``depth`` hidden         64     2
                                                        layers of ``width`` units
    images ``(c, h, w)``    3 couplings per mask type   conv ResNet, ``width``        32     1
                            and scale (the last stage   channels, ``depth`` residual
                            has one more)               blocks
    ======================  ==========================  ===========================  =====  =====

    activation: the point conditioners' nonlinearity (the conv ResNet uses ReLU); mixing:
    "alternate" masks only, or a "random" permutation / "lu" linear layer between point
    couplings; zero_init: start every point conditioner's output layer at zero (the flow
    starts as its base Gaussian) or at nn.Linear's random init (image conditioners always
    start at zero). Images only: scales: squeeze-and-split scales of the multi-scale
    architecture; logit_alpha: ``alpha`` of the logit pre-transform (RealNVP used 0.05;
    1e-3 gave 0.09 bits/dim less on digits, docs/flows.md).

    Runs saved before these fields were merged load: ``hidden_features`` (equal widths) and
    ``image_channels``/``blocks`` map to ``width``/``depth``, ``couplings`` to ``transforms``
    (:meth:`upgrade_fields`).
    """

    transforms: int | None = None
    width: int | None = None
    depth: int | None = None
    activation: str = "relu"
    mixing: str = "alternate"
    zero_init: bool = True
    scales: int = 2
    logit_alpha: float = 1e-3

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """Map an old config's ``hidden_features``, ``image_channels``, ``blocks`` and
        ``couplings`` onto ``width``, ``depth`` and ``transforms``."""
        return _upgrade_flow_fields(old, "flow config", transforms=8)

    def validate(self) -> None:
        for name in ("transforms", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.depth is not None and self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")


def _upgrade_flow_fields(old: dict, what: str, transforms: int | None) -> dict:
    """Old flow fields -> ``width``/``depth`` (and ``transforms`` when ``transforms`` is the
    old points default; None: the config has no image fields and keeps ``transforms``)."""
    if not {"hidden_features", "image_channels", "blocks", "couplings"} & set(old):
        return old
    old = dict(old)
    hidden = old.pop("hidden_features", None)
    if hidden is not None and list(hidden) != [64, 64]:
        if len(set(hidden)) > 1:
            raise ConfigError(
                f"{what}: hidden_features={list(hidden)} has unequal widths; the conditioner "
                "is now set by width and depth (equal widths)"
            )
        old["_hidden_width"] = hidden[0] if hidden else 64
        old["_hidden_depth"] = len(hidden)
    new = fold_fields(old, "width", {"_hidden_width": 64, "image_channels": 32}, what=what)
    new = fold_fields(new, "depth", {"_hidden_depth": 2, "blocks": 1}, what=what)
    if transforms is not None:
        new = fold_fields(new, "transforms", {"transforms": transforms, "couplings": 3}, what=what)
    return new


_TRANSFORMS = {"points": 8, "images": 3}


def _transforms(config: CouplingFlowConfig, info: DataInfo) -> int:
    """``config.transforms`` or its default for the data's kind (see CouplingFlowConfig)."""
    return _TRANSFORMS[info.kind] if config.transforms is None else config.transforms


def _point_couplings(
    config: CouplingFlowConfig, info: DataInfo, name: str, coupling: type, **kwargs
) -> tuple[int, list[Transform]]:
    """``(d, layers)``: the point flow's coupling stack from the shared config fields."""
    d = _points(info, name)
    layers = coupling_stack(
        coupling,
        d,
        _transforms(config, info),
        config.mixing,
        activation=config.activation,
        zero_init=config.zero_init,
        **conditioner_options(info.event_shape, config.width, config.depth),
        **kwargs,
    )
    return d, layers


@dataclass
class RealNVPConfig(CouplingFlowConfig):
    """``realnvp``: affine coupling layers (Dinh et al. 2017). The shared fields are
    documented on :class:`CouplingFlowConfig`.

    scale_clamp: soft clamp ``c`` of ``s = c tanh(s/c)`` (0 = off); actnorm: an ActNorm before
    every coupling (points; ActNorm comes before every image coupling whatever it says).
    zero_init defaults to nn.Linear's random init here: with c = 2 it trained faster on
    2spirals, circles, moons and checkerboard in a 1000-step check, and equally well on
    8gaussians (docs/flows.md).
    """

    zero_init: bool = False
    scale_clamp: float = 2.0
    actnorm: bool = False


@register(
    "realnvp",
    config=RealNVPConfig,
    default_data="8gaussians",
    description="RealNVP: affine coupling flow (Dinh et al. 2017)",
    task="density",
    section=3,
    data_kinds=("points", "images"),
)
def build_realnvp(config: RealNVPConfig, info: DataInfo) -> FlowModel | ImageFlowModel:
    clamp = config.scale_clamp or None
    if info.kind == "images":
        return _image_flow(config, info, ImageAffineCoupling, True, scale_clamp=clamp)
    d, layers = _point_couplings(config, info, "realnvp", AffineCoupling, scale_clamp=clamp)
    if config.actnorm:
        layers = [
            m
            for layer in layers
            for m in ((ActNorm(d), layer) if _is_coupling(layer) else (layer,))
        ]
    return FlowModel(layers, (d,))


def _is_coupling(layer: Transform) -> bool:
    return isinstance(layer, (AffineCoupling, AdditiveCoupling, SplineCoupling))


@dataclass
class NICEConfig(CouplingFlowConfig):
    """``nice``: additive couplings and a final diagonal scaling (Dinh et al. 2015). The
    fields are documented on :class:`CouplingFlowConfig`. The image variant ends with one
    log-scale per pixel (NICE's diagonal scaling).
    """


@register(
    "nice",
    config=NICEConfig,
    default_data="8gaussians",
    description="NICE: additive coupling flow with diagonal scaling (Dinh et al. 2015)",
    task="density",
    section=3,
    data_kinds=("points", "images"),
)
def build_nice(config: NICEConfig, info: DataInfo) -> FlowModel | ImageFlowModel:
    if info.kind == "images":
        return _image_flow(
            config, info, ImageAdditiveCoupling, False, [ElementwiseScale(info.event_shape)]
        )
    d, layers = _point_couplings(config, info, "nice", AdditiveCoupling)
    return FlowModel([*layers, DiagonalScale(d)], (d,))


@dataclass
class NSFConfig(CouplingFlowConfig):
    """``nsf``: rational-quadratic spline couplings (Durkan et al. 2019). The shared fields
    are documented on :class:`CouplingFlowConfig`.

    bins: spline bins K; bound: the spline acts on [-bound, bound] of the standardised data
    (identity tails outside; for images, of the ActNorm-ed values). ActNorm comes before
    every image coupling.
    """

    bins: int = 8
    bound: float = 5.0


@register(
    "nsf",
    config=NSFConfig,
    default_data="8gaussians",
    description="Neural spline flow: rational-quadratic spline couplings (Durkan et al. 2019)",
    task="density",
    section=3,
    data_kinds=("points", "images"),
)
def build_nsf(config: NSFConfig, info: DataInfo) -> FlowModel | ImageFlowModel:
    spline = dict(bins=config.bins, bound=config.bound)
    if info.kind == "images":
        return _image_flow(config, info, ImageSplineCoupling, True, **spline)
    d, layers = _point_couplings(config, info, "nsf", SplineCoupling, **spline)
    return FlowModel(layers, (d,))
