"""Generative vs discriminative classifiers (lecture section 2).

A discriminative classifier models only ``p(y|x)``. A generative classifier models the joint

    p(x, y) = p(x|y) p(y),      p(y|x) = p(x|y) p(y) / sum_k p(x|k) p(k),

here with one normalizing flow per class for ``p(x|y)`` and learned class logits for ``p(y)``.
Owning ``p(x)`` it can tell when a confident ``p(y|x)`` rests on an input it has never seen
(``p(x)`` low: "uncertain decision" on the lecture's slide) and it can integrate a missing
coordinate out, ``p(y | x_obs) ∝ ∫ p(x_obs, x_mis, y) dx_mis``.

Registered models (each trains on labelled data: ``loss`` receives the batch ``(x, y)``, and
``init_from_data`` takes ``x`` or ``(x, y)``):

- ``flow-classifier``: the generative one; ``predict``, ``log_prob`` (marginal ``p(x)``),
  ``log_joint``, ``sample``.
- ``logreg``: multinomial logistic regression, ``p(y|x) = softmax(W x + b)``.
- ``mlp-classifier``: ``p(y|x) = softmax(MLP(x))``.

Example::

    >>> from genmodels.registry import DataInfo
    >>> info = DataInfo("moons", "points", (2,), num_classes=2)
    >>> model = build_logreg(LogRegConfig(), info)
    >>> model.predict(torch.zeros(3, 2)).probs.shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from ..distributions import Standardize, check_batch, check_count, model_dtype
from ..nn.conditioner import Conditioner
from ..registry import DataInfo, get, register
from .flows import FlowModel, _upgrade_flow_fields

__all__ = [
    "FlowClassifier",
    "DiscriminativeClassifier",
    "FlowClassifierConfig",
    "LogRegConfig",
    "MLPClassifierConfig",
    "build_flow_classifier",
    "build_logreg",
    "build_mlp_classifier",
]


_BATCH = (
    "a classifier's batch must be (x, y) with y int64 (B,); train on labelled data, "
    "e.g. genmodels.data.load(name).labelled()"
)


def _split_batch(batch, event_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(x, y)`` checked: x ``(B, *event_shape)``, y int64 ``(B,)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"{_BATCH}; got {type(batch).__name__}")
    x, y = batch
    check_batch(x, event_shape, "x")
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != x.shape[:1]:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"{_BATCH}; y must be int64 of shape ({x.shape[0]},), got {got}")
    return x, y


def _inputs(data) -> Tensor:
    """The inputs of ``x`` or of a labelled batch ``(x, y)``."""
    return data[0] if isinstance(data, (tuple, list)) else data


class FlowClassifier(nn.Module):
    """``p(x, y) = p(x|y) p(y)`` with one flow per class and learned class logits.

    Args:
        flows: ``K`` :class:`~genmodels.models.flows.FlowModel`, the class conditionals.

    ``loss`` is the joint NLL ``-mean[log p(x|y) + log p(y)]`` (nats); its two terms are
    separate maximum-likelihood problems, so each flow sees only its own class.
    """

    def __init__(self, flows: list[FlowModel]) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)
        self.class_logits = nn.Parameter(torch.zeros(len(flows)))

    @property
    def num_classes(self) -> int:
        return len(self.flows)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.flows[0].event_shape

    @torch.no_grad()
    def init_from_data(self, data: Tensor | tuple[Tensor, Tensor]) -> None:
        """Standardise every class flow with the statistics of all training inputs: ``data``
        is ``x`` ``(n, d)`` or the labelled batch ``(x, y)`` (the labels are not used)."""
        x = _inputs(data)
        for f in self.flows:
            f.init_from_data(x)

    def log_prior(self) -> Tensor:
        """``log p(y)`` (K,)."""
        return torch.log_softmax(self.class_logits, 0)

    def log_joint(self, x: Tensor) -> Tensor:
        """``log p(x, y=k)`` for every class: ``(n, d) -> (n, K)`` nats."""
        return torch.stack([f.log_prob(x) for f in self.flows], 1) + self.log_prior()

    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """Joint NLL per example, ``-mean_i [log p(x_i|y_i) + log p(y_i)]`` (nats)."""
        x, y = _split_batch(batch, self.event_shape)
        total = -self.log_prior()[y].sum()
        for k, f in enumerate(self.flows):
            sel = y == k
            if sel.any():
                total = total - f.log_prob(x[sel]).sum()
        return total / x.shape[0]

    def predict(self, x: Tensor) -> Categorical:
        """Bayes' rule: ``p(y|x) = softmax_k log p(x, k)``; a Categorical with batch (n,)."""
        return Categorical(logits=self.log_joint(x), validate_args=False)

    def log_prob(self, x: Tensor) -> Tensor:
        """Marginal ``log p(x) = logsumexp_k log p(x, k)``: ``(n, d) -> (n,)`` nats."""
        return torch.logsumexp(self.log_joint(x), 1)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, return_labels: bool = False
    ):
        """Ancestral samples ``y ~ p(y)``, ``x ~ p(x|y)``: ``(n, d)`` (and ``(n,)`` labels);
        ``n`` a positive integer."""
        n = check_count(n)
        probs = self.log_prior().exp()
        y = torch.multinomial(probs, n, replacement=True, generator=generator)
        x = torch.empty(n, *self.event_shape, dtype=model_dtype(self), device=probs.device)
        for k, f in enumerate(self.flows):
            sel = y == k
            if sel.any():
                x[sel] = f.sample(int(sel.sum()), generator=generator)
        return (x, y) if return_labels else x


class DiscriminativeClassifier(nn.Module):
    """``p(y|x) = softmax(net(standardise(x)))``; ``loss`` is the cross-entropy (nats)."""

    def __init__(self, net: nn.Module, features: int) -> None:
        super().__init__()
        self.event_shape = (features,)
        self.standardize = Standardize.identity(self.event_shape)
        self.net = net

    @torch.no_grad()
    def init_from_data(self, data: Tensor | tuple[Tensor, Tensor]) -> None:
        """Set the input standardisation from the training inputs: ``data`` is ``x`` ``(n, d)``
        or the labelled batch ``(x, y)`` (the labels are not used)."""
        self.standardize.set_(_inputs(data))

    def logits(self, x: Tensor) -> Tensor:
        """Unnormalised ``log p(y|x)``: ``(n, d) -> (n, K)``."""
        return self.net(self.standardize(x)[0])

    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean cross-entropy ``-mean_i log p(y_i|x_i)`` (nats)."""
        x, y = _split_batch(batch, self.event_shape)
        return F.cross_entropy(self.logits(x), y)

    def predict(self, x: Tensor) -> Categorical:
        """``p(y|x)`` as a Categorical with batch shape (n,)."""
        return Categorical(logits=self.logits(x), validate_args=False)


def _classes(info: DataInfo, name: str) -> tuple[int, int]:
    if info.kind != "points" or len(info.event_shape) != 1:
        raise ValueError(f"{name} expects point data (n, d); got {info.kind} {info.event_shape}")
    if not info.num_classes or info.num_classes < 2:
        raise ValueError(f"{name} needs labelled data (num_classes >= 2); got {info.num_classes}")
    return info.event_shape[0], info.num_classes


@dataclass
class FlowClassifierConfig:
    """``flow-classifier``: one flow per class. flow: "nsf", "realnvp" or "nice"; the other
    fields are that flow's config (per class): ``transforms`` coupling layers, conditioner
    MLPs of ``depth`` hidden layers of ``width`` units (None: the flow's defaults, 2 x 64).
    Old runs' ``hidden_features`` (equal widths) map to ``width``/``depth``."""

    flow: str = "nsf"
    transforms: int = 4
    width: int | None = None
    depth: int | None = None

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """Map an old config's ``hidden_features`` onto ``width`` and ``depth``."""
        return _upgrade_flow_fields(old, "flow-classifier config", transforms=None)


@register(
    "flow-classifier",
    config=FlowClassifierConfig,
    default_data="moons",
    description="Generative classifier p(x|y)p(y), one normalizing flow per class",
    task="classifier",
    section=2,
)
def build_flow_classifier(config: FlowClassifierConfig, info: DataInfo) -> FlowClassifier:
    d, k = _classes(info, "flow-classifier")
    if config.flow not in ("nsf", "realnvp", "nice"):
        raise ValueError(f"flow must be 'nsf', 'realnvp' or 'nice', got {config.flow!r}")
    spec = get(config.flow)
    overrides = dict(transforms=config.transforms, width=config.width, depth=config.depth)
    flow_info = DataInfo(info.name, info.kind, info.event_shape)
    flows = [spec.build(spec.make_config(overrides), flow_info) for _ in range(k)]
    return FlowClassifier(flows)


@dataclass
class LogRegConfig:
    """``logreg``: multinomial logistic regression (no options)."""


@register(
    "logreg",
    config=LogRegConfig,
    default_data="moons",
    description="Discriminative baseline: multinomial logistic regression",
    task="classifier",
    section=2,
)
def build_logreg(config: LogRegConfig, info: DataInfo) -> DiscriminativeClassifier:
    d, k = _classes(info, "logreg")
    return DiscriminativeClassifier(nn.Linear(d, k), d)


@dataclass
class MLPClassifierConfig:
    """``mlp-classifier``: softmax over an MLP with these hidden widths."""

    hidden_features: tuple[int, ...] = (64, 64)
    activation: str = "relu"


@register(
    "mlp-classifier",
    config=MLPClassifierConfig,
    default_data="moons",
    description="Discriminative baseline: MLP classifier p(y|x) = softmax(MLP(x))",
    task="classifier",
    section=2,
)
def build_mlp_classifier(config: MLPClassifierConfig, info: DataInfo) -> DiscriminativeClassifier:
    d, k = _classes(info, "mlp-classifier")
    net = Conditioner(d, k, tuple(config.hidden_features), config.activation, zero_init=False)
    return DiscriminativeClassifier(net, d)
