"""Coupling layers (Dinh et al. 2015 NICE, 2017 RealNVP; Durkan et al. 2019 NSF).

Split ``x = [x_a, x_b]`` by a mask. ``x_a`` passes through unchanged and a conditioner network
reads it (and an optional context) to produce the parameters of an elementwise bijection of
``x_b``. The Jacobian is block lower-triangular,

    J = [[I, 0], [dy_b/dx_a, diag(dy_b/dx_b)]],   so   log|det J| = sum_j log|dy_b,j / dx_b,j|,

and the conditioner never needs to be inverted. The layers here are applied in the
normalizing direction (data -> base); the inverse of a coupling is again a coupling, so the
lecture's generator ``y_b = exp(s(x_a)) * x_b + t(x_a)`` is just our ``forward`` read the other
way round.

Example::

    >>> layer = AffineCoupling(2, mask=torch.tensor([True, False]))
    >>> x = torch.randn(4, 2)
    >>> z, ladj = layer(x)
    >>> torch.allclose(layer.inverse(z)[0], x, atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..nn.conditioner import Conditioner
from .splines import rational_quadratic_spline
from .transforms import Transform

__all__ = ["Coupling", "AffineCoupling", "AdditiveCoupling", "SplineCoupling", "alternating_mask"]


def alternating_mask(features: int, parity: int) -> Tensor:
    """The mask of layer ``i`` in an alternating stack: the first half (``parity=0``) or the
    second half (``parity=1``) of the features conditions the rest. ``True`` = passed through.

    Example::

        >>> alternating_mask(4, 0), alternating_mask(4, 1)
        (tensor([ True,  True, False, False]), tensor([False, False,  True,  True]))
    """
    if features < 2:
        raise ValueError(f"a coupling layer needs at least 2 features, got {features}")
    d = features // 2 if parity % 2 == 0 else features - features // 2
    m = torch.zeros(features, dtype=torch.bool)
    if parity % 2 == 0:
        m[:d] = True
    else:
        m[features - d :] = True
    return m


class Coupling(Transform):
    """Shared machinery: split by ``mask``, run the conditioner once, merge back.

    Args:
        features: ``D``.
        mask: bool ``(D,)``; ``True`` marks ``x_a`` (kept, conditions the rest).
        params_per_feature: number of conditioner outputs per element of ``x_b``.
        context_features: width of the optional context input (0 = unconditional).
        hidden_features: conditioner hidden widths.
        activation: conditioner activation.
        zero_init: start the conditioner's output layer at zero (the layer is the identity).

    Subclasses implement ``_elementwise(x_b, params, inverse) -> (y_b, ladj (batch,))``.
    """

    def __init__(
        self,
        features: int,
        mask: Tensor,
        params_per_feature: int,
        context_features: int = 0,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "relu",
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (features,):
            raise ValueError(f"mask must have shape ({features},), got {tuple(mask.shape)}")
        idx_a = torch.nonzero(mask).squeeze(1)
        idx_b = torch.nonzero(~mask).squeeze(1)
        if len(idx_a) == 0 or len(idx_b) == 0:
            raise ValueError("mask must keep at least one feature and transform at least one")
        self.features = features
        self.da, self.db = len(idx_a), len(idx_b)
        self.ppf = params_per_feature
        # Fast paths: a contiguous split needs only views and one cat.
        if torch.equal(idx_a, torch.arange(self.da)):
            self._layout = "ab"
        elif torch.equal(idx_b, torch.arange(self.db)):
            self._layout = "ba"
        else:
            self._layout = "gather"
        self.register_buffer("idx_a", idx_a, persistent=False)
        self.register_buffer("idx_b", idx_b, persistent=False)
        self.register_buffer(
            "merge_index", torch.argsort(torch.cat([idx_a, idx_b])), persistent=False
        )
        self.net = Conditioner(
            self.da + context_features,
            self.db * params_per_feature,
            hidden_features,
            activation,
            zero_init,
        )

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # ``split`` has one backward node (a cat), two slices would have two zero-fills; the
        # C method ``split_with_sizes`` skips ``Tensor.split``'s Python wrapper.
        if self._layout == "ab":
            return x.split_with_sizes((self.da, self.db), 1)
        if self._layout == "ba":
            xb, xa = x.split_with_sizes((self.db, self.da), 1)
            return xa, xb
        return x[:, self.idx_a], x[:, self.idx_b]

    def _merge(self, xa: Tensor, yb: Tensor) -> Tensor:
        if self._layout == "ab":
            return torch.cat([xa, yb], 1)
        if self._layout == "ba":
            return torch.cat([yb, xa], 1)
        return torch.cat([xa, yb], 1)[:, self.merge_index]

    def _params(self, xa: Tensor, context: Tensor | None) -> Tensor:
        return self.net(xa if context is None else torch.cat([xa, context], 1))

    def _elementwise(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        xa, xb = self._split(x)
        yb, ladj = self._elementwise(xb, self._params(xa, context), False)
        return self._merge(xa, yb), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        za, zb = self._split(z)
        xb, ladj = self._elementwise(zb, self._params(za, context), True)
        return self._merge(za, xb), ladj


class AffineCoupling(Coupling):
    """RealNVP's affine coupling (Dinh et al. 2017), the lecture's coupling layer:

        z_b = exp(s(x_a)) * x_b + t(x_a),        log|det J| = sum_j s_j(x_a)
        x_b = (z_b - t(z_a)) * exp(-s(z_a)),     log|det J^{-1}| = -sum_j s_j

    ``s`` and ``t`` come from one conditioner call. The log-scale is soft-clamped,
    ``s = c * tanh(s_raw / c)`` with ``c = scale_clamp`` (default 2, so a layer scales by at
    most e^2 ~ 7.4): smooth, identity near 0, and it keeps an early bad step from sending
    ``exp(s)`` to infinity. ``scale_clamp=None`` disables it.

    Example::

        >>> layer = AffineCoupling(2, alternating_mask(2, 0))
        >>> layer(torch.zeros(3, 2))[1]  # zero-initialised conditioner: identity
        tensor([0., 0., 0.])
    """

    def __init__(
        self,
        features: int,
        mask: Tensor,
        context_features: int = 0,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "relu",
        scale_clamp: float | None = 2.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__(
            features, mask, 2, context_features, hidden_features, activation, zero_init
        )
        self.scale_clamp = scale_clamp

    def _elementwise(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        s, t = params.split_with_sizes((self.db, self.db), 1)
        if self.scale_clamp is not None:
            c = self.scale_clamp
            s = torch.tanh(s * (1 / c)) * c
        # One transformed feature (every 2D flow): the sum is a view, no kernel and no node.
        ladj = s.squeeze(1) if self.db == 1 else s.sum(1)
        if not inverse:
            return torch.addcmul(t, xb, torch.exp(s)), ladj
        return (xb - t) * torch.exp(-s), -ladj


class AdditiveCoupling(Coupling):
    """NICE's additive coupling (Dinh et al. 2015): ``z_b = x_b + m(x_a)``; det J = 1.

    Volume preserving, so a NICE stack needs a final :class:`~.layers.DiagonalScale`.

    Example::

        >>> AdditiveCoupling(2, alternating_mask(2, 1))(torch.randn(3, 2))[1]
        tensor([0., 0., 0.])
    """

    def __init__(
        self,
        features: int,
        mask: Tensor,
        context_features: int = 0,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "relu",
        zero_init: bool = True,
    ) -> None:
        super().__init__(
            features, mask, 1, context_features, hidden_features, activation, zero_init
        )

    def _elementwise(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        zeros = xb.new_zeros(xb.shape[0])
        return (xb - params if inverse else xb + params), zeros


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (Durkan et al. 2019): each ``x_b,j`` goes through a
    monotonic RQ spline with ``bins`` bins on ``[-bound, bound]`` (identity tails outside)
    whose ``3 * bins - 1`` parameters the conditioner computes from ``x_a``.

        z_b,j = g_j(x_b,j; theta_j(x_a)),     log|det J| = sum_j log g_j'(x_b,j)

    Example::

        >>> layer = SplineCoupling(2, alternating_mask(2, 0), bins=8)
        >>> x = torch.randn(3, 2)
        >>> torch.allclose(layer(x)[0], x, atol=1e-5)  # identity at initialisation
        True
    """

    def __init__(
        self,
        features: int,
        mask: Tensor,
        context_features: int = 0,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "relu",
        bins: int = 8,
        bound: float = 5.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__(
            features, mask, 3 * bins - 1, context_features, hidden_features, activation, zero_init
        )
        self.bins, self.bound = bins, bound

    def _elementwise(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raw = params.view(xb.shape[0], self.db, self.ppf)
        y, ladj = rational_quadratic_spline(xb, raw, self.bound, inverse)
        return y, ladj.sum(1)
