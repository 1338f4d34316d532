"""Neural controlled differential equations for irregular, partly missing series (lecture §4).

Kidger, Morrill, Foster & Lyons (2020), "Neural Controlled Differential Equations for Irregular
Time Series", eqs. (2)-(4): the observations ``(t_i, x_i)`` become a continuous path ``X``, the
natural cubic spline of the time-augmented data ``(t_i, x_i)`` (NaN = missing, per channel),
and the hidden state follows

    z_{t_0} = ζ_θ(X(t_0)),      z_t = z_{t_0} + ∫_{t_0}^t f_θ(z_s) dX_s,      ŷ = ℓ_θ(z_{t_n}),

solved as the ODE ``dz/ds = f_θ(z) dX/ds`` by :func:`genmodels.integrate.cdeint` (rk4, one step
per knot by default). Time is both the spline's parameter and channel 0 of ``X``: without it the
CDE could not tell how fast the values change. Where the rows of a batch have different times,
the spline's parameter is the knot index instead, time staying a channel (the CDE's solution
depends on the path, not on its parametrisation; for a row at equally spaced times the index is
an affine reparametrisation, under which the natural spline is the same path, so such a row
predicts the same in any batch; a row at unequally spaced times in a mixed batch is
interpolated slightly differently between knots than alone).

Registered models (task ``classifier``; inputs ``x (B, L, 1 + C)``: channel 0 the time,
increasing within each row and never NaN, the rest values with NaN = missing; batches
``(x, labels)``):

- ``neural-cde``: :class:`NeuralCDE`;
- ``gru-classifier``: :class:`GRUClassifier`, the paper's GRU-Δt baseline: a GRU over the
  points with the forward-filled values, the observed mask and the time since the previous
  point as its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from ..integrate import NaturalCubicSpline, cdeint, natural_cubic_coeffs
from ..registry import DataInfo, register

__all__ = [
    "NeuralCDE",
    "GRUClassifier",
    "NeuralCDEConfig",
    "GRUClassifierConfig",
    "check_series_inputs",
    "build_neural_cde",
    "build_gru_classifier",
]


def check_series_inputs(x, in_channels: int, name: str = "x") -> Tensor:
    """Return ``x`` if it is NaN-coded series inputs ``(B, L, 1 + in_channels)`` with L >= 2,
    channel 0 finite and strictly increasing within each row and some value observed in every
    row; else one ``ValueError`` naming ``name``."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"{x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a float tensor (B, L, 1 + {in_channels}), got {got}")
    if x.dim() != 3 or x.shape[-1] != 1 + in_channels or x.shape[1] < 2:
        raise ValueError(
            f"{name} must have shape (B, L >= 2, 1 + {in_channels}) (channel 0 = time), "
            f"got {tuple(x.shape)}"
        )
    t = x[..., 0]
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: channel 0 (time) must be finite (never NaN)")
    if not bool((t[:, 1:] > t[:, :-1]).all()):
        row = int((t[:, 1:] <= t[:, :-1]).any(1).nonzero()[0])
        raise ValueError(f"{name}: times (channel 0) must increase within each row; row {row}")
    empty = torch.isnan(x[..., 1:]).all(-1).all(-1)
    if bool(empty.any()):
        raise ValueError(
            f"{name}: series {int(empty.nonzero()[0])} has no observed value (all NaN)"
        )
    return x


def _control_path(x: Tensor) -> NaturalCubicSpline:
    """The natural cubic spline of ``x (B, L, 1 + C)`` (time included as channel 0)."""
    t = x[..., 0]
    if bool((t == t[:1]).all()):
        knots = t[0].contiguous()
    else:  # rows sampled at different times: parametrise by the knot index
        knots = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)
    return NaturalCubicSpline.from_coeffs(knots, natural_cubic_coeffs(knots, x))


class _Field(nn.Module):
    """f_θ(z): ``(..., hidden) -> (..., hidden, channels)``, an MLP with a tanh output (as in
    Kidger et al.'s experiments: it keeps the field bounded)."""

    def __init__(self, hidden: int, channels: int, width: int):
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = nn.Sequential(
            nn.Linear(hidden, width), nn.ReLU(), nn.Linear(width, hidden * channels), nn.Tanh()
        )

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels)

    def times(self) -> Callable[[Tensor, Tensor], Tensor]:
        """``(z, dx) -> f_θ(z) @ dx``: ``z (B, hidden)``, ``dx (B, channels, 1)`` ->
        ``(B, hidden)``; the weights looked up once, the layers called directly (no module
        dispatch per call) and the product one ``bmm``."""
        w1, b1 = self.net[0].weight, self.net[0].bias
        w2, b2 = self.net[2].weight, self.net[2].bias
        shape = (self.hidden, self.channels)

        def f_dx(z: Tensor, dx: Tensor) -> Tensor:
            f = torch.tanh(F.linear(torch.relu(F.linear(z, w1, b1)), w2, b2))
            return torch.bmm(f.view(z.shape[0], *shape), dx).view(z.shape)

        return f_dx


def _rk4_on_knots(field: _Field, z: Tensor, X: NaturalCubicSpline) -> Tensor:
    """z at the last knot of ``dz = f(z) dX``, rk4 (torchdiffeq's 3/8 rule, the ``"rk4"`` of
    :func:`~genmodels.integrate.odeint` and torchcde) with one step per knot interval.

    The same steps as ``cdeint(..., method="rk4", grid = the knots)``, with the spline's
    derivative at every stage time of every interval (τ = 0, h/3, 2h/3, h) computed for the
    whole batch at once before the loop, scaled by the step h (so that each stage is
    ``h k_j = f(z_j) @ (h dX/dt)``), and the field applied to them by one ``bmm``."""
    a, b, c, d = X.coeffs
    h = (X.knots[1:] - X.knots[:-1]).to(b.dtype).unsqueeze(-1)  # (n-1, 1)
    c2, d3 = 2.0 * c, 3.0 * d
    stages = [h * (b + tau * (c2 + tau * d3)) for tau in (0.0 * h, h / 3, 2 * h / 3, h)]
    # (n-1, 4, B, C, 1): all the stage increments of step i as one block
    dxs = torch.stack(stages, 0).movedim(-2, 0).unsqueeze(-1).contiguous()
    third, f = 1.0 / 3.0, field.times()
    for dx in dxs.unbind(0):
        s0, s1, s2, s3 = dx.unbind(0)
        k1 = f(z, s0)
        k2 = f(torch.add(z, k1, alpha=third), s1)
        k3 = f(torch.add(z + k2, k1, alpha=-third), s2)
        k4 = f(z + k1 - k2 + k3, s3)
        z = z + 0.125 * (k1 + k4) + 0.375 * (k2 + k3)
    return z


class NeuralCDE(nn.Module):
    """A Neural CDE classifier (Kidger et al. 2020).

    Args:
        in_channels: value channels C (the inputs have 1 + C: time first).
        hidden_channels: size of z.
        n_classes: number of labels.
        interpolation: ``"natural_cubic"`` (the only one built).
        method: the ODE solver (``"rk4"``: one step per knot); adaptive methods take the
            tolerances ``rtol``/``atol``.
        adjoint: solve by the adjoint method (O(1) memory in the length).
        width: hidden width of f_θ.

    Example:
        >>> model = NeuralCDE(2, 8, 2)
        >>> x = torch.randn(4, 10, 3); x[..., 0] = torch.linspace(0, 1, 10)
        >>> x[0, 3, 1:] = float("nan")
        >>> model.predict(x).probs.shape
        torch.Size([4, 2])
    """

    train_defaults = {"lr": 3e-3}

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        n_classes: int,
        *,
        interpolation: str = "natural_cubic",
        method: str = "rk4",
        adjoint: bool = False,
        width: int = 64,
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ):
        super().__init__()
        if interpolation != "natural_cubic":
            raise ValueError(f"interpolation must be 'natural_cubic', got {interpolation!r}")
        self.in_channels, self.method, self.adjoint = in_channels, method, adjoint
        self.rtol, self.atol = rtol, atol
        self.initial = nn.Linear(1 + in_channels, hidden_channels)
        self.field = _Field(hidden_channels, 1 + in_channels, width)
        self.readout = nn.Linear(hidden_channels, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """z at the last knot: ``(B, L, 1 + C) -> (B, hidden)``."""
        x = check_series_inputs(x, self.in_channels)
        X = _control_path(x)
        knots = X.knots
        z0 = self.initial(X.evaluate(knots[0]))  # ζ_θ of the first (filled) values
        if self.method == "rk4" and not self.adjoint:
            return _rk4_on_knots(self.field, z0, X)
        kw = dict(method=self.method, adjoint=self.adjoint)
        if self.method == "rk4":
            grid = knots.tolist()
            kw["options"] = {"grid_constructor": lambda f, y0, t: grid}
        else:
            kw.update(rtol=self.rtol, atol=self.atol, options={"jump_t": knots.tolist()})
        z = cdeint(X, self.field, z0, knots[[0, -1]], **kw)
        return z[-1]

    def logits(self, x: Tensor) -> Tensor:
        """``(B, n_classes)`` class logits."""
        return self.readout(self.features(x))

    def predict(self, x: Tensor) -> Categorical:
        """``p(y | x)`` for NaN-coded series ``x (B, L, 1 + C)``."""
        return Categorical(logits=self.logits(x))

    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """Cross-entropy of the labels (nats per series); ``batch = (x, labels)``."""
        x, y = _split(batch)
        return F.cross_entropy(self.logits(x), y)


def _split(batch) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            "a series classifier's batch must be (x, labels): x (B, L, 1 + C) NaN-coded, "
            f"labels int64 (B,); got {type(batch).__name__}"
        )
    x, y = batch
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != x.shape[:1]:
        got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"labels must be int64 of shape ({x.shape[0]},), got {got}")
    return x, y


def _forward_fill(v: Tensor) -> tuple[Tensor, Tensor]:
    """Values ``(B, L, C)`` with NaN carried forward (backward before the first observation;
    0 for a channel never observed) and the observed mask as floats."""
    obs = ~torch.isnan(v)
    L = v.shape[1]
    pos = torch.arange(L, device=v.device).view(1, L, 1).expand_as(v)
    last = torch.where(obs, pos, -1).cummax(1).values  # index of the latest observation
    first = torch.where(obs, pos, L).min(1, keepdim=True).values.clamp(max=L - 1)
    idx = torch.where(last >= 0, last, first.expand_as(last))
    filled = torch.nan_to_num(v.gather(1, idx), nan=0.0)
    return filled, obs.to(v.dtype)


class GRUClassifier(nn.Module):
    """The GRU-Δt baseline: a GRU reads, at each point, the forward-filled values, the
    observed mask and the time since the previous point; a linear readout of its last state.

    Example:
        >>> model = GRUClassifier(2, 16, 2)
        >>> x = torch.randn(3, 5, 3); x[..., 0] = torch.linspace(0, 1, 5)
        >>> model.predict(x).probs.shape
        torch.Size([3, 2])
    """

    train_defaults = {"lr": 1e-2}

    def __init__(self, in_channels: int, hidden_channels: int, n_classes: int):
        super().__init__()
        self.in_channels = in_channels
        self.gru = nn.GRU(2 * in_channels + 1, hidden_channels, batch_first=True)
        self.readout = nn.Linear(hidden_channels, n_classes)

    def logits(self, x: Tensor) -> Tensor:
        x = check_series_inputs(x, self.in_channels)
        t = x[..., :1]
        dt = torch.cat([torch.zeros_like(t[:, :1]), t[:, 1:] - t[:, :-1]], 1)
        values, mask = _forward_fill(x[..., 1:])
        _, h = self.gru(torch.cat([values, mask, dt], -1))
        return self.readout(h[-1])

    def predict(self, x: Tensor) -> Categorical:
        """``p(y | x)`` for NaN-coded series ``x (B, L, 1 + C)``."""
        return Categorical(logits=self.logits(x))

    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """Cross-entropy of the labels (nats per series); ``batch = (x, labels)``."""
        x, y = _split(batch)
        return F.cross_entropy(self.logits(x), y)


def _series_channels(info: DataInfo, what: str) -> tuple[int, int]:
    if info.kind != "series" or info.num_classes is None or len(info.event_shape) != 1:
        raise ValueError(
            f"{what} needs labelled NaN-coded series (x (N, L, 1 + C), int64 labels); got "
            f"{info.kind} data {info.name!r}"
        )
    return info.event_shape[0] - 1, info.num_classes


@dataclass
class NeuralCDEConfig:
    """``neural-cde`` (``--set model.KEY=VALUE``)."""

    hidden_channels: int = 16
    width: int = 64
    method: str = "rk4"
    adjoint: bool = False


@register(
    "neural-cde",
    config=NeuralCDEConfig,
    default_data="spiral-chirality",
    task="classifier",
    section=4,
    data_kinds=("series",),
    description="Neural CDE on a NaN-aware natural cubic spline (Kidger et al. 2020)",
)
def build_neural_cde(config: NeuralCDEConfig, info: DataInfo) -> NeuralCDE:
    c, k = _series_channels(info, "neural-cde")
    return NeuralCDE(
        c,
        config.hidden_channels,
        k,
        method=config.method,
        adjoint=config.adjoint,
        width=config.width,
    )


@dataclass
class GRUClassifierConfig:
    """``gru-classifier`` (``--set model.KEY=VALUE``)."""

    hidden_channels: int = 32


@register(
    "gru-classifier",
    config=GRUClassifierConfig,
    default_data="spiral-chirality",
    task="classifier",
    section=4,
    data_kinds=("series",),
    description="GRU-Δt baseline for series classification (forward fill, mask, Δt)",
)
def build_gru_classifier(config: GRUClassifierConfig, info: DataInfo) -> GRUClassifier:
    c, k = _series_channels(info, "gru-classifier")
    return GRUClassifier(c, config.hidden_channels, k)
