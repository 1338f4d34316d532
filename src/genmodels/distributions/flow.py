"""A normalizing flow as a ``torch.distributions.Distribution`` over a standard Normal base.

    log p(x) = log N(T(x); 0, I) + log|det J_T(x)|          (change of variables)
    x = T^{-1}(z),  z ~ N(0, I)                             (sampling; reparameterised)

``T`` is a :class:`~.transforms.Transform` in the normalizing direction. The base log-density
is computed by hand (``-|z|^2/2 - D/2 log 2 pi``) and arguments are not validated, to keep
the per-call overhead small.
"""

from __future__ import annotations

import math

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, constraints

from .transforms import Transform

__all__ = ["Flow", "standard_normal_log_prob"]

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over all but the first dimension: ``(batch, ...) -> (batch,)``.

    Example::

        >>> standard_normal_log_prob(torch.zeros(1, 2))
        tensor([-1.8379])
    """
    d = z[0].numel() if z.shape[0] > 0 else math.prod(z.shape[1:])
    return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * d * _LOG_2PI


class Flow(Distribution):
    """The push-forward of ``N(0, I)`` through ``T^{-1}``.

    Args:
        transform: normalizing transform ``T`` (data -> base).
        event_shape: shape of one sample, e.g. ``(2,)`` or ``(1, 8, 8)``.
        context: optional ``(n, c)`` conditioning input; then ``batch_shape == (n,)`` and the
            ``i``-th batch element is conditioned on ``context[i]``.

    ``sample``/``rsample`` accept ``generator=`` (an extension of the torch API) for explicit
    randomness.

    Example::

        >>> from genmodels.distributions import AffineCoupling, Compose, alternating_mask
        >>> flow = Flow(Compose(AffineCoupling(2, alternating_mask(2, 0))), (2,))
        >>> x = flow.sample((5,))
        >>> flow.log_prob(x).shape
        torch.Size([5])
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        transform: Transform,
        event_shape: tuple[int, ...] | Size,
        context: Tensor | None = None,
    ) -> None:
        self.transform = transform
        self.context = context
        batch_shape = Size(context.shape[:1]) if context is not None else Size()
        super().__init__(batch_shape, Size(event_shape), validate_args=False)

    def _flat(self, x: Tensor) -> tuple[Tensor, Tensor | None, Size]:
        """Flatten ``(*sample, *batch, *event)`` to rows and broadcast the context."""
        ev = len(self.event_shape)
        lead = x.shape[: x.ndim - ev]
        rows = x.reshape(-1, *self.event_shape)
        ctx = None
        if self.context is not None:
            ctx = self.context.expand(*lead[: len(lead) - 1], *self.context.shape)
            ctx = ctx.reshape(-1, self.context.shape[-1])
        return rows, ctx, lead

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(x)`` in nats, shape ``value.shape[:-len(event_shape)]``."""
        rows, ctx, lead = self._flat(value)
        z, ladj = self.transform(rows, ctx)
        return (standard_normal_log_prob(z) + ladj).reshape(lead)

    def rsample_and_log_prob(
        self, sample_shape: Size | tuple = (), *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density from one inverse pass (for VI).

        ``log q(x) = log N(z) - log|det dx/dz|``; works for transforms that only have the
        generative direction (e.g. ``Inverse(Planar(...))``).
        """
        shape = self._extended_shape(Size(sample_shape))
        z = self._base_noise(shape, generator)
        rows, ctx, lead = self._flat(z)
        x, ladj = self.transform.inverse(rows, ctx)
        logp = standard_normal_log_prob(rows) - ladj
        return x.reshape(shape), logp.reshape(lead)

    def _base_noise(self, shape: Size, generator: torch.Generator | None) -> Tensor:
        ref = next(iter(self.transform.parameters()), None)
        if ref is None:
            ref = next(iter(self.transform.buffers()), torch.empty(0))
        return torch.randn(shape, generator=generator, dtype=ref.dtype, device=ref.device)

    def rsample(
        self, sample_shape: Size | tuple = (), *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Differentiable samples ``x = T^{-1}(z)``, shape ``sample_shape + batch + event``."""
        shape = self._extended_shape(Size(sample_shape))
        rows, ctx, _ = self._flat(self._base_noise(shape, generator))
        return self.transform.inverse(rows, ctx)[0].reshape(shape)

    def sample(
        self, sample_shape: Size | tuple = (), *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Samples without gradient, shape ``sample_shape + batch_shape + event_shape``."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)
