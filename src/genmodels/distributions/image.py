"""Flow layers for images ``(batch, C, H, W)`` (Dinh et al. 2017, "Density estimation using
Real NVP", sec. 3.4-3.6; Durkan et al. 2019 for the spline coupling).

- masks: :func:`checkerboard_mask` (pixels whose ``i + j`` has a given parity) and
  :func:`channel_mask` (one half of the channels);
- :class:`Squeeze`: space to depth, ``(C, H, W) -> (4C, H/2, W/2)``; a permutation, det = 1;
- :class:`Logit`: the pre-transform from the bounded data domain to R,
  ``y = logit(alpha + (1 - 2 alpha) u)`` with ``u`` the data rescaled to ``[0, 1]``;
- image couplings :class:`ImageAffineCoupling`, :class:`ImageAdditiveCoupling`,
  :class:`ImageSplineCoupling`, whose conditioner is a conv ResNet
  (:class:`~genmodels.nn.conv_conditioner.ConvConditioner`);
- :class:`FactorOut`: the multi-scale split: half of the channels go straight to the base
  ``N(0, I)``, the other half through ``inner``;
- :class:`ElementwiseScale`: NICE's diagonal scaling, one log-scale per pixel;
- :func:`multi_scale`: RealNVP's architecture as one :class:`~.transforms.Compose`.

Every layer keeps the shape of its input except :class:`Squeeze` (and its inverse), and a
multi-scale stack ends with the inverse squeeze, so the whole flow maps ``(C, H, W)`` to
``(C, H, W)``; its base is ``N(0, I)`` over all ``C H W`` values.

Example::

    >>> flow = multi_scale((1, 4, 4), ImageAffineCoupling, scales=1, couplings=2,
    ...                    hidden_channels=8, blocks=0)
    >>> x = torch.randn(3, 1, 4, 4)
    >>> z, ladj = flow(x)
    >>> z.shape, torch.allclose(flow.inverse(z)[0], x, atol=1e-5)
    (torch.Size([3, 1, 4, 4]), True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.conv_conditioner import ConvConditioner
from .layers import ActNorm
from .splines import rational_quadratic_spline
from .transforms import Compose, Inverse, Transform

__all__ = [
    "checkerboard_mask",
    "channel_mask",
    "Squeeze",
    "Logit",
    "ImageCoupling",
    "ImageAffineCoupling",
    "ImageAdditiveCoupling",
    "ImageSplineCoupling",
    "FactorOut",
    "ElementwiseScale",
    "multi_scale",
]

_MASKS = ("checkerboard", "channel")


def _check_image(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an image batch (batch, C, H, W), got {shape}")


def checkerboard_mask(h: int, w: int, parity: int) -> Tensor:
    """Bool ``(h, w)``: ``True`` (kept, conditions the rest) where ``(i + j) % 2 == parity``.

    Example::

        >>> checkerboard_mask(2, 3, 0)
        tensor([[ True, False,  True],
                [False,  True, False]])
    """
    if h < 1 or w < 1 or h * w < 2:
        raise ValueError(f"a checkerboard mask needs at least 2 pixels, got {h}x{w}")
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (i + j) % 2 == parity % 2


def channel_mask(c: int, parity: int) -> Tensor:
    """Bool ``(c,)``: ``True`` (kept) on the first ``c // 2`` channels for ``parity = 0``, on
    the last ``c // 2`` for ``parity = 1``.

    Example::

        >>> channel_mask(4, 0), channel_mask(4, 1)
        (tensor([ True,  True, False, False]), tensor([False, False,  True,  True]))
    """
    if c < 2:
        raise ValueError(f"a channel mask needs at least 2 channels, got {c}")
    m = torch.zeros(c, dtype=torch.bool)
    if parity % 2 == 0:
        m[: c // 2] = True
    else:
        m[c - c // 2 :] = True
    return m


class Squeeze(Transform):
    """Space to depth (RealNVP's squeezing): every 2x2 block of a channel becomes 4 channels,
    ``(batch, C, H, W) -> (batch, 4C, H/2, W/2)``. A permutation of the values: log|det J| = 0.

    Output channel ``4c + 2a + b`` holds pixel ``(2i + a, 2j + b)`` of input channel ``c``.

    Example::

        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> Squeeze()(x)[0].flatten().tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_image(x)
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got x of shape {x.shape}")
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, 4 * c, h // 2, w // 2), x.new_zeros(n)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_image(z, "z")
        n, c4, h, w = z.shape
        if c4 % 4:
            raise ValueError(f"Squeeze.inverse needs 4k channels, got z of shape {z.shape}")
        x = z.reshape(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c4 // 4, 2 * h, 2 * w), z.new_zeros(n)


class Logit(Transform):
    """The logit pre-transform of RealNVP (sec. 4.1), from the data domain ``[low, high]``
    to R:

        u = (x - low) / (high - low),   p = alpha + (1 - 2 alpha) u,   y = log p - log(1 - p),
        log|det J| = sum_j [log(1 - 2 alpha) - log(high - low) - log p_j - log(1 - p_j)].

    ``alpha`` keeps the map away from the logit's poles at 0 and 1 (RealNVP: 0.05). For data
    stored in ``[-1, 1]`` and dequantised by ``U(0, w)`` noise the domain is ``[-1, 1 + w)``.
    Inputs outside the domain give NaN.

    Example::

        >>> t = Logit(low=-1.0, high=1.0, alpha=0.05)
        >>> t(torch.zeros(1, 1))[0]  # the middle of the domain maps to 0
        tensor([[0.]])
    """

    def __init__(self, low: float = -1.0, high: float = 1.0, alpha: float = 0.05) -> None:
        super().__init__()
        if not high > low:
            raise ValueError(f"Logit needs high > low, got low={low}, high={high}")
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.low, self.high, self.alpha = float(low), float(high), float(alpha)
        self._log_c = math.log(1 - 2 * alpha) - math.log(high - low)  # log dp/dx

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * ((x - self.low) / (self.high - self.low))
        logp, log1mp = torch.log(p), torch.log1p(-p)
        ladj = (self._log_c - logp - log1mp).flatten(1).sum(1)
        return logp - log1mp, ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(z)
        x = self.low + (self.high - self.low) * (p - self.alpha) / (1 - 2 * self.alpha)
        ladj = (F.logsigmoid(z) + F.logsigmoid(-z) - self._log_c).flatten(1).sum(1)
        return x, ladj

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}, alpha={self.alpha}"


class ImageCoupling(Transform):
    """A coupling layer on images: the kept part ``x_a`` (by a checkerboard or channel mask)
    passes unchanged and a conv ResNet reads it to parametrise an elementwise bijection of
    the rest, ``z_b = g(x_b; theta(x_a))``; ``log|det J| = sum_j log|g'(x_b,j)|`` (the
    Jacobian is triangular as in the 2D :class:`~.coupling.Coupling`).

    - ``mask="checkerboard"``: the conditioner reads ``x * m`` and the mask ``m`` as one extra
      channel (RealNVP), and emits parameters for every pixel; the kept pixels are then
      restored exactly (``where(m, x, g(x))``) and their log-derivatives dropped.
    - ``mask="channel"``: ``x_a`` is the half of the channels given by :func:`channel_mask`;
      the conditioner reads ``x_a`` and emits parameters for the other channels only.

    Args:
        shape: ``(C, H, W)`` of the input.
        mask: ``"checkerboard"`` or ``"channel"``.
        parity: which half is kept (0 or 1), see the mask functions.
        params_per_element: conditioner outputs per transformed value.
        hidden_channels, blocks: the conv ResNet's width and number of residual blocks.
        zero_init: start the conditioner's last convolution at zero (identity layer).

    Subclasses implement ``_elementwise(x, params, inverse) -> (y, log|dy/dx|)`` (both shaped
    like ``x``), where ``params`` is ``(batch, C_b, H, W, params_per_element)``.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        mask: str,
        parity: int,
        params_per_element: int,
        hidden_channels: int = 32,
        blocks: int = 1,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
        if mask not in _MASKS:
            raise ValueError(f"mask must be one of {_MASKS}, got {mask!r}")
        c, h, w = (int(s) for s in shape)
        self.shape, self.mask_type, self.ppe = (c, h, w), mask, params_per_element
        if mask == "checkerboard":
            m = checkerboard_mask(h, w, parity)
            self.register_buffer("mask", m.view(1, 1, h, w), persistent=False)
            c_in, self.cb = c + 1, c
        else:
            m = channel_mask(c, parity)
            self.register_buffer("idx_a", torch.nonzero(m).squeeze(1), persistent=False)
            self.register_buffer("idx_b", torch.nonzero(~m).squeeze(1), persistent=False)
            self.ca_first = bool(m[0])
            c_in, self.cb = int(m.sum()), int((~m).sum())
        self.net = ConvConditioner(
            c_in, self.cb * params_per_element, hidden_channels, blocks, zero_init
        )

    def _params(self, xa: Tensor) -> Tensor:
        out = self.net(xa)  # (n, C_b * P, H, W) -> (n, C_b, H, W, P)
        n, _, h, w = out.shape
        return out.view(n, self.cb, self.ppe, h, w).permute(0, 1, 3, 4, 2)

    def _elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _couple(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        _check_image(x, "z" if inverse else "x")
        if tuple(x.shape[1:]) != self.shape:
            what = "z" if inverse else "x"
            raise ValueError(
                f"{what} must have shape (batch, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}"
            )
        n = x.shape[0]
        if self.mask_type == "checkerboard":
            m = self.mask.to(x.dtype)
            xa = torch.cat([x * m, m.expand(n, 1, *self.shape[1:])], 1)
            y, ladj = self._elementwise(x, self._params(xa), inverse)
            y = torch.where(self.mask, x, y)
            return y, (ladj * (1 - m)).flatten(1).sum(1)
        xa, xb = x[:, self.idx_a], x[:, self.idx_b]
        yb, ladj = self._elementwise(xb, self._params(xa), inverse)
        y = torch.cat([xa, yb], 1) if self.ca_first else torch.cat([yb, xa], 1)
        return y, ladj.flatten(1).sum(1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, True)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, mask={self.mask_type!r}"


class ImageAffineCoupling(ImageCoupling):
    """RealNVP's affine image coupling, ``z_b = exp(s) * x_b + t``, ``log|det J| = sum s``,
    with the soft clamp ``s = c tanh(s_raw / c)`` of the 2D
    :class:`~.coupling.AffineCoupling` (``scale_clamp=None``: off).

    Example::

        >>> layer = ImageAffineCoupling((1, 4, 4), "checkerboard", 0, hidden_channels=8)
        >>> layer(torch.randn(2, 1, 4, 4))[1]  # zero-initialised: the identity
        tensor([0., 0.], grad_fn=<SumBackward1>)
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        mask: str,
        parity: int,
        hidden_channels: int = 32,
        blocks: int = 1,
        zero_init: bool = True,
        scale_clamp: float | None = 2.0,
    ) -> None:
        super().__init__(shape, mask, parity, 2, hidden_channels, blocks, zero_init)
        self.scale_clamp = scale_clamp

    def _elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        s, t = params.unbind(-1)
        if self.scale_clamp is not None:
            c = self.scale_clamp
            s = torch.tanh(s * (1 / c)) * c
        if not inverse:
            return x * torch.exp(s) + t, s
        return (x - t) * torch.exp(-s), -s


class ImageAdditiveCoupling(ImageCoupling):
    """NICE's additive coupling on images, ``z_b = x_b + m(x_a)``; log|det J| = 0."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        mask: str,
        parity: int,
        hidden_channels: int = 32,
        blocks: int = 1,
        zero_init: bool = True,
    ) -> None:
        super().__init__(shape, mask, parity, 1, hidden_channels, blocks, zero_init)

    def _elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        t = params.squeeze(-1)
        return (x - t if inverse else x + t), torch.zeros_like(x)


class ImageSplineCoupling(ImageCoupling):
    """Rational-quadratic spline coupling on images (Durkan et al. 2019): each transformed
    value goes through its own monotone RQ spline with ``bins`` bins on ``[-bound, bound]``
    (identity tails), parametrised by the conv ResNet (:mod:`.splines`)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        mask: str,
        parity: int,
        hidden_channels: int = 32,
        blocks: int = 1,
        zero_init: bool = True,
        bins: int = 8,
        bound: float = 5.0,
    ) -> None:
        super().__init__(shape, mask, parity, 3 * bins - 1, hidden_channels, blocks, zero_init)
        self.bins, self.bound = bins, bound

    def _elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(x, params, self.bound, inverse)


class FactorOut(Transform):
    """RealNVP's multi-scale split (sec. 3.6): of ``(batch, C, H, W)``, the first ``C // 2``
    channels are final (they go straight to the base ``N(0, I)``) and the rest go through
    ``inner``; ``z = [x_1, inner(x_2)]``, ``log|det J| = log|det J_inner(x_2)|``.

    Example::

        >>> FactorOut(Compose())(torch.ones(1, 2, 1, 1))[0].flatten().tolist()
        [1.0, 1.0]
    """

    def __init__(self, inner: Transform) -> None:
        super().__init__()
        self.inner = inner

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_image(x)
        if x.shape[1] < 2:
            raise ValueError(f"FactorOut needs at least 2 channels, got x of shape {x.shape}")
        k = x.shape[1] // 2
        return x[:, :k], x[:, k:]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = self._split(x)
        z2, ladj = self.inner(x2, context)
        return torch.cat([x1, z2], 1), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z1, z2 = self._split(z)
        x2, ladj = self.inner.inverse(z2, context)
        return torch.cat([z1, x2], 1), ladj


class ElementwiseScale(Transform):
    """NICE's diagonal scaling with one log-scale per value (Dinh et al. 2015, sec. 3.3):
    ``z = exp(s) * x``, ``s`` of shape ``shape``, ``log|det J| = sum s``.

    Example::

        >>> ElementwiseScale((1, 2, 2))(torch.ones(3, 1, 2, 2))[1]
        tensor([0., 0., 0.], grad_fn=<ExpandBackward0>)
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(*shape))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(z.shape[0])


def multi_scale(
    shape: tuple[int, int, int],
    coupling: type,
    *,
    scales: int = 2,
    couplings: int = 3,
    actnorm: bool = False,
    **coupling_kwargs,
) -> Compose:
    """RealNVP's multi-scale architecture (Dinh et al. 2017, sec. 3.6) as one transform.

    One scale on ``(C, H, W)``: ``couplings`` checkerboard couplings (alternating parity) ->
    :class:`Squeeze` -> ``couplings`` channel couplings on ``(4C, H/2, W/2)`` ->
    :class:`FactorOut` (``2C`` channels to the base, the other ``2C`` into the next scale)
    -> inverse squeeze. After ``scales`` scales (or as soon as ``H`` or ``W`` is odd, or a
    squeeze would leave a single pixel) the last stage is ``couplings + 1`` checkerboard
    couplings. With ``actnorm`` a per-channel
    :class:`~.layers.ActNorm` precedes every coupling. Input and output are ``(C, H, W)``.

    Args:
        shape: ``(C, H, W)`` of one image.
        coupling: an :class:`ImageCoupling` subclass, called as
            ``coupling(shape, mask, parity, **coupling_kwargs)``.
        scales: number of squeeze-and-split scales (0: only the final stage).
        couplings: couplings per mask type and scale.
        actnorm: an ActNorm before every coupling.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
    if scales < 0 or couplings < 1:
        raise ValueError(f"need scales >= 0 and couplings >= 1, got {scales}, {couplings}")
    c, h, w = shape

    def block(shape_: tuple[int, int, int], mask: str, n: int) -> list[Transform]:
        out: list[Transform] = []
        for i in range(n):
            if actnorm:
                out.append(ActNorm(shape_[0]))
            out.append(coupling(shape_, mask, i % 2, **coupling_kwargs))
        return out

    if scales == 0 or h % 2 or w % 2 or (h // 2) * (w // 2) < 2:
        return Compose(*block((c, h, w), "checkerboard", couplings + 1))
    inner = multi_scale(
        (2 * c, h // 2, w // 2),
        coupling,
        scales=scales - 1,
        couplings=couplings,
        actnorm=actnorm,
        **coupling_kwargs,
    )
    return Compose(
        *block((c, h, w), "checkerboard", couplings),
        Squeeze(),
        *block((4 * c, h // 2, w // 2), "channel", couplings),
        FactorOut(inner),
        Inverse(Squeeze()),
    )
