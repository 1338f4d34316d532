"""The model registry: a short name -> config dataclass, builder, default data.

Adding a model to the library is one module plus one ``@register`` entry::

    @dataclass
    class DDPMConfig:
        timesteps: int = 1000

    @register("ddpm", config=DDPMConfig, default_data="moons", task="density", section=7,
              description="Denoising diffusion (Ho et al. 2020)")
    def build_ddpm(config: DDPMConfig, info: DataInfo) -> nn.Module: ...

plus the module's path in :data:`MODULES` (the registry imports nothing of
``genmodels.models`` itself: a model module is imported by its path string when a name
is first asked for) and its training budget in :data:`genmodels.models.budgets.BUDGETS`.

``build(config, info)`` receives the model's config and a :class:`DataInfo`
(name, kind, event shape, number of classes) and returns an ``nn.Module`` that
follows the model contract of its **task** (docs/design.md):

- ``"density"``: ``loss``, ``sample``, and ``log_prob`` and/or ``nll_bound``;
- ``"classifier"``: ``loss((x, y))``, ``predict(x) -> Categorical``;
- ``"process"``: ``loss(Tasks)``, ``predict(x_context, y_context, x_target) -> Normal``;
- ``"series"``: ``loss(Series or (times, values))``, ``predict(...) -> Normal``.

``genmodels.evaluate`` and the pictures dispatch on the task, never by probing methods.
Data-dependent initialisation (standardisation statistics, ActNorm) goes in an optional
``model.init_from_data(batch)`` that :func:`genmodels.train.fit` calls once before the
first step with the whole training split as one batch; whatever it sets must live in
buffers or parameters so that a checkpoint carries it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .data.info import DataInfo

__all__ = [
    "ModelSpec",
    "register",
    "get",
    "names",
    "specs",
    "DataInfo",
    "TASKS",
    "MODULES",
    "SECTIONS",
]

#: What a model is for; ``evaluate`` picks its metrics and pictures by this.
TASKS = ("density", "classifier", "process", "series")

#: The lecture's sections, in its order; every model states the one it belongs to
#: (``register(..., section=N)``), and ``genmodels tour`` shows the models section by section.
SECTIONS = {
    1: "Variational inference",
    2: "Generative vs discriminative",
    3: "Normalizing flows",
    4: "Neural ODEs",
    5: "Processes",
    6: "Score matching",
    7: "Diffusion",
}

#: Where each registered model lives (imported on first use, by path: the registry
#: imports nothing of ``genmodels.models`` at import time).
MODULES = {
    "ddpm": "genmodels.models.ddpm",
    "ncsn": "genmodels.models.score",
    "subvp": "genmodels.models.score_sde",
    "vesde": "genmodels.models.score_sde",
    "nice": "genmodels.models.flows",
    "realnvp": "genmodels.models.flows",
    "nsf": "genmodels.models.flows",
    "vae": "genmodels.models.vae",
    "flow-classifier": "genmodels.models.classifier",
    "logreg": "genmodels.models.classifier",
    "mlp-classifier": "genmodels.models.classifier",
    "neural-cde": "genmodels.models.neural_cde",
    "gru-classifier": "genmodels.models.neural_cde",
    "latent-ode": "genmodels.models.latent_ode",
    "gru-seq2seq": "genmodels.models.latent_ode",
    "ffjord": "genmodels.models.cnf",
    "planar-cnf": "genmodels.models.cnf",
    "odenet": "genmodels.models.odenet",
    "resnet": "genmodels.models.odenet",
    "gp": "genmodels.models.gp",
    "cnp": "genmodels.models.neural_process",
    "np": "genmodels.models.neural_process",
    "ndp": "genmodels.models.ndp",
    "nd2p": "genmodels.models.ndp",
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: everything the CLI needs to build, train and evaluate it.

    Attributes:
        name: the short name (``genmodels train NAME``).
        config: the config dataclass (``--set model.KEY=VALUE``).
        build: ``build(config, info) -> nn.Module``; the module it returns carries its
            training budget for ``info`` as ``model.train_defaults`` and its ``task``.
        default_data: the data set ``genmodels train NAME`` uses without ``--data``.
        description: one line for ``genmodels list``.
        task: one of :data:`TASKS`: what the model is for.
        data_kinds: the data kinds (``DataInfo.kind``) the builder takes.
        section: the lecture section the model belongs to (a key of :data:`SECTIONS`).
    """

    name: str
    config: type
    build: Callable[[Any, DataInfo], Any]
    default_data: str
    description: str
    task: str
    data_kinds: tuple[str, ...] = ("points",)
    section: int | None = None

    def train_defaults(self, kind: str, data: str | None = None) -> dict:
        """The training budget for ``kind`` data (and data set ``data``), from the one table
        :data:`genmodels.models.budgets.BUDGETS`."""
        budgets = importlib.import_module("genmodels.models.budgets")
        return budgets.budget(self.name, kind, data)

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
    task: str,
    data_kinds: tuple[str, ...] = ("points",),
    section: int | None = None,
):
    """Decorator registering ``build(config, info) -> nn.Module`` under ``name``.

    The registered ``spec.build`` is ``build`` followed by setting the model's
    ``train_defaults`` (its budget for the data, so that ``fit`` with ``lr=None`` trains
    what the command line trains); the decorated function itself is returned unchanged.
    ``section`` places the model in the lecture (a key of :data:`SECTIONS`; ``genmodels
    tour`` shows it there).
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"register({name!r}): config must be a dataclass type, got {config!r}")
    if task not in TASKS:
        raise ValueError(f"register({name!r}): task must be one of {TASKS}, got {task!r}")
    if section is not None and (isinstance(section, bool) or section not in SECTIONS):
        raise ValueError(
            f"register({name!r}): section must be one of the lecture's sections "
            f"{sorted(SECTIONS)}, got {section!r}"
        )

    def deco(build):
        if name in _MODELS and _MODELS[name].build.__wrapped__ is not build:
            raise ValueError(f"model name {name!r} is registered twice")

        def build_with_budget(cfg, info: DataInfo):
            model = build(cfg, info)
            model.train_defaults = spec.train_defaults(info.kind, info.name)
            model.task = spec.task
            return model

        build_with_budget.__wrapped__ = build
        build_with_budget.__doc__ = build.__doc__
        spec = ModelSpec(
            name,
            config,
            build_with_budget,
            default_data,
            description,
            task,
            tuple(data_kinds),
            section,
        )
        _MODELS[name] = spec
        return build

    return deco


def _load(name: str) -> None:
    module = MODULES.get(name) if isinstance(name, str) else None
    if module is not None and name not in _MODELS:
        importlib.import_module(module)


def _load_all() -> None:
    for name in MODULES:
        _load(name)


def get(name: str) -> ModelSpec:
    """The spec registered under ``name``; a ValueError lists the known names."""
    _load(name)
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
    return _MODELS[name]


def names() -> list[str]:
    """Every registered model's name, sorted."""
    _load_all()
    return sorted(_MODELS)


def specs() -> list[ModelSpec]:
    """Every registered model's spec, sorted by name."""
    _load_all()
    return [_MODELS[k] for k in sorted(_MODELS)]
