"""Generative vs discriminative classifiers (lecture section 2).

A discriminative classifier models only ``p(y|x)``. A generative classifier models the joint

    p(x, y) = p(x|y) p(y),      p(y|x) = p(x|y) p(y) / sum_k p(x|k) p(k),

here with one normalizing flow per class for ``p(x|y)`` and learned class logits for ``p(y)``.
Owning ``p(x)`` it can tell when a confident ``p(y|x)`` rests on an input it has never seen
(``p(x)`` low: "uncertain decision" on the lecture's slide) and it can integrate a missing
coordinate out, ``p(y | x_obs) ∝ ∫ p(x_obs, x_mis, y) dx_mis``.

Registered models (all with ``uses_labels = True``: ``loss`` receives ``(x, y)``):

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

from ..distributions import Standardize
from ..nn.conditioner import Conditioner
from ..registry import DataInfo, get, register
from .flows import FlowModel

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


def _split_batch(batch) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError("a classifier's batch must be the tuple (x, y) with y int64 (B,)")
    x, y = batch
    if y.dtype != torch.long or y.shape != x.shape[:1]:
        raise ValueError(
            f"y must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}"
        )
    return x, y


class FlowClassifier(nn.Module):
    """``p(x, y) = p(x|y) p(y)`` with one flow per class and learned class logits.

    Args:
        flows: ``K`` :class:`~genmodels.models.flows.FlowModel`, the class conditionals.

    ``loss`` is the joint NLL ``-mean[log p(x|y) + log p(y)]`` (nats); its two terms are
    separate maximum-likelihood problems, so each flow sees only its own class.
    """

    uses_labels = True

    def __init__(self, flows: list[FlowModel]) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)
        self.class_logits = nn.Parameter(torch.zeros(len(flows)))

    @property
    def num_classes(self) -> int:
        return len(self.flows)

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Standardise every class flow with the statistics of all training inputs ``x``
        (a tensor, or the labelled batch ``(x, y)``)."""
        x = x[0] if isinstance(x, tuple) else x
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
        x, y = _split_batch(batch)
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
        """Ancestral samples ``y ~ p(y)``, ``x ~ p(x|y)``: ``(n, d)`` (and ``(n,)`` labels)."""
        probs = self.log_prior().exp()
        y = torch.multinomial(probs, n, replacement=True, generator=generator)
        x = torch.empty(n, *self.flows[0].event_shape, device=probs.device)
        for k, f in enumerate(self.flows):
            sel = y == k
            if sel.any():
                x[sel] = f.sample(int(sel.sum()), generator=generator)
        return (x, y) if return_labels else x


class DiscriminativeClassifier(nn.Module):
    """``p(y|x) = softmax(net(standardise(x)))``; ``loss`` is the cross-entropy (nats)."""

    uses_labels = True

    def __init__(self, net: nn.Module, features: int) -> None:
        super().__init__()
        self.standardize = Standardize(torch.zeros(features), torch.ones(features))
        self.net = net

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Set the input standardisation from the training inputs ``x`` (n, d) (a tensor, or
        the labelled batch ``(x, y)``)."""
        self.standardize.set_(x[0] if isinstance(x, tuple) else x)

    def logits(self, x: Tensor) -> Tensor:
        """Unnormalised ``log p(y|x)``: ``(n, d) -> (n, K)``."""
        return self.net(self.standardize(x)[0])

    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean cross-entropy ``-mean_i log p(y_i|x_i)`` (nats)."""
        x, y = _split_batch(batch)
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
    fields are that flow's config (per class)."""

    flow: str = "nsf"
    transforms: int = 4
    hidden_features: tuple[int, ...] = (64, 64)


@register(
    "flow-classifier",
    config=FlowClassifierConfig,
    default_data="moons",
    description="Generative classifier p(x|y)p(y), one normalizing flow per class",
    task="classifier",
)
def build_flow_classifier(config: FlowClassifierConfig, info: DataInfo) -> FlowClassifier:
    d, k = _classes(info, "flow-classifier")
    if config.flow not in ("nsf", "realnvp", "nice"):
        raise ValueError(f"flow must be 'nsf', 'realnvp' or 'nice', got {config.flow!r}")
    spec = get(config.flow)
    overrides = dict(transforms=config.transforms, hidden_features=list(config.hidden_features))
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
)
def build_mlp_classifier(config: MLPClassifierConfig, info: DataInfo) -> DiscriminativeClassifier:
    d, k = _classes(info, "mlp-classifier")
    net = Conditioner(d, k, tuple(config.hidden_features), config.activation, zero_init=False)
    return DiscriminativeClassifier(net, d)
