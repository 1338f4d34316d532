"""The model registry: a short name -> config dataclass, builder, default data.

Adding a model to the library is one module plus one ``@register`` entry::

    @dataclass
    class DDPMConfig:
        timesteps: int = 1000

    @register("ddpm", config=DDPMConfig, default_data="moons",
              description="Denoising diffusion (Ho et al. 2020)",
              train=dict(steps=5000, batch_size=1024, lr=1e-3, ema_decay=0.995))
    def build_ddpm(config: DDPMConfig, info: DataInfo) -> nn.Module: ...

``build(config, info)`` receives the model's config and a :class:`DataInfo`
(name, kind, event shape, number of classes) and returns an ``nn.Module`` that
follows the model contract of DESIGN.md (``loss(batch, generator=)`` and
``sample``/``log_prob``/``predict`` where it has them). Data-dependent
initialisation (standardisation statistics, ActNorm) goes in an optional
``model.init_from_data(x)`` that :func:`genmodels.train.fit` calls once before
the first step; whatever it sets must live in buffers or parameters so that a
checkpoint carries it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelSpec", "register", "get", "names", "specs", "DataInfo"]


@dataclass(frozen=True)
class DataInfo:
    """What a builder may know about the data without holding it.

    Attributes:
        name: registered data set name (``"moons"``, ``"digits"``...).
        kind: ``"points"`` (``x`` is ``(n, d)``) or ``"images"`` (``(n, c, h, w)``).
        event_shape: shape of one example, e.g. ``(2,)`` or ``(1, 8, 8)``.
        num_classes: number of labels in ``y``, or ``None`` when unlabelled.
        levels: number of discrete levels per value for quantised data (images), else None.
    """

    name: str
    kind: str
    event_shape: tuple[int, ...]
    num_classes: int | None = None
    levels: int | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["event_shape"] = list(self.event_shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> DataInfo:
        d = dict(d)
        d["event_shape"] = tuple(d["event_shape"])
        return cls(**d)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: everything the CLI needs to build and train it."""

    name: str
    config: type
    build: Callable[[Any, DataInfo], Any]
    default_data: str
    description: str
    train: dict = field(default_factory=dict)
    data_kinds: tuple[str, ...] = ("points",)
    train_by_kind: dict = field(default_factory=dict)

    def train_defaults(self, kind: str, data: str | None = None) -> dict:
        """Training defaults for ``kind`` data: ``train`` updated by ``train_by_kind[kind]``,
        then by ``train_by_kind[data]`` (a data set's own budget, e.g. ``"mnist5k"``)."""
        out = {**self.train, **self.train_by_kind.get(kind, {})}
        if data is not None:
            out.update(self.train_by_kind.get(data, {}))
        return out

    def make_config(self, overrides: dict | None = None):
        """The config dataclass with ``overrides`` applied (unknown keys raise)."""
        from .config import apply_overrides

        return apply_overrides(self.config(), overrides or {}, what=f"model '{self.name}' config")


_MODELS: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    config: type,
    default_data: str,
    description: str,
    train: dict | None = None,
    data_kinds: tuple[str, ...] = ("points",),
    train_by_kind: dict | None = None,
):
    """Decorator registering ``build(config, info) -> nn.Module`` under ``name``."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"register({name!r}): config must be a dataclass type, got {config!r}")

    def deco(build):
        if name in _MODELS and _MODELS[name].build is not build:
            raise ValueError(f"model name {name!r} is registered twice")
        _MODELS[name] = ModelSpec(
            name,
            config,
            build,
            default_data,
            description,
            dict(train or {}),
            tuple(data_kinds),
            dict(train_by_kind or {}),
        )
        return build

    return deco


def _load_all() -> None:
    from . import models  # noqa: F401  (importing registers every model)


def get(name: str) -> ModelSpec:
    """The spec registered under ``name``; a ValueError lists the known names."""
    _load_all()
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def names() -> list[str]:
    _load_all()
    return sorted(_MODELS)


def specs() -> list[ModelSpec]:
    _load_all()
    return [_MODELS[k] for k in sorted(_MODELS)]
