"""Variational families q(θ) and reparameterised sampling with an explicit generator.

A variational family is an ``nn.Module`` whose ``distribution()`` returns a
``torch.distributions.Distribution`` with ``rsample``: :class:`MeanFieldGaussian`
(diagonal covariance), :class:`FullRankGaussian` (Cholesky-parameterised
covariance), :class:`FlowFamily` (a coupling flow: q is a
:class:`~genmodels.distributions.Flow`), or any other module with that method. The
ELBO functions of :mod:`.vi` also accept a bare ``Distribution``.

:func:`rsample` draws reparameterised samples θ = μ + Lε, ε ~ N(0, I) from a
given ``generator`` (torch.distributions' own ``rsample`` reads the global RNG);
for distributions it does not know it seeds a forked global RNG from the
generator, so results stay reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from ..distributions import (
    AffineCoupling,
    Compose,
    Flow,
    SplineCoupling,
    Transform,
    alternating_mask,
)

__all__ = ["MeanFieldGaussian", "FullRankGaussian", "FlowFamily", "as_distribution", "rsample"]


def _inverse_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class MeanFieldGaussian(nn.Module):
    """q(θ) = Π_i N(θ_i; μ_i, s_i²), the mean-field Gaussian family.

    Parameters: ``loc`` (d,) and ``raw_scale`` (d,) with s = softplus(raw_scale).

    Args:
        dim: d, the number of parameters.
        loc: initial mean (default zeros); scale: initial standard deviation.
        dtype: parameter dtype (default: torch's default).

    Example::

        >>> q = MeanFieldGaussian(3, scale=0.1)
        >>> q.distribution().event_shape
        torch.Size([3])
    """

    def __init__(self, dim: int, *, loc: Tensor | None = None, scale: float = 1.0, dtype=None):
        super().__init__()
        if dim < 1 or scale <= 0:
            raise ValueError(f"dim must be ≥ 1 and scale > 0, got {dim} and {scale}")
        loc0 = torch.zeros(dim, dtype=dtype) if loc is None else loc.detach().clone().to(dtype)
        self.loc = nn.Parameter(loc0)
        raw = _inverse_softplus(torch.full((dim,), float(scale), dtype=loc0.dtype))
        self.raw_scale = nn.Parameter(raw)

    @property
    def scale(self) -> Tensor:
        return F.softplus(self.raw_scale)

    def distribution(self) -> Distribution:
        """``Independent(Normal(loc, scale), 1)`` with event shape (d,)."""
        return Independent(Normal(self.loc, self.scale), 1)


class FullRankGaussian(nn.Module):
    """q(θ) = N(θ; μ, LLᵀ) with L lower triangular, positive diagonal (softplus).

    Args:
        dim: d; loc: initial mean (default zeros); scale: initial diagonal of L.

    Example::

        >>> q = FullRankGaussian(2)
        >>> q.distribution().covariance_matrix.shape
        torch.Size([2, 2])
    """

    def __init__(self, dim: int, *, loc: Tensor | None = None, scale: float = 1.0, dtype=None):
        super().__init__()
        if dim < 1 or scale <= 0:
            raise ValueError(f"dim must be ≥ 1 and scale > 0, got {dim} and {scale}")
        loc0 = torch.zeros(dim, dtype=dtype) if loc is None else loc.detach().clone().to(dtype)
        self.loc = nn.Parameter(loc0)
        self.raw_diag = nn.Parameter(
            _inverse_softplus(torch.full((dim,), float(scale), dtype=loc0.dtype))
        )
        self.off_diag = nn.Parameter(torch.zeros(dim, dim, dtype=loc0.dtype))

    @property
    def scale_tril(self) -> Tensor:
        return torch.tril(self.off_diag, -1) + torch.diag_embed(F.softplus(self.raw_diag))

    def distribution(self) -> Distribution:
        """``MultivariateNormal(loc, scale_tril=L)``."""
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril)


class _ElementwiseAffine(Transform):
    """``z = (x - loc) / scale`` with learnable ``loc`` and ``scale = softplus(raw_scale)``."""

    def __init__(self, loc: Tensor, scale: float) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc)
        self.raw_scale = nn.Parameter(_inverse_softplus(torch.full_like(loc, float(scale))))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scale = F.softplus(self.raw_scale)
        return (x - self.loc) / scale, (-torch.log(scale).sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scale = F.softplus(self.raw_scale)
        return self.loc + z * scale, torch.log(scale).sum().expand(z.shape[0])


class FlowFamily(nn.Module):
    """q(θ) = a coupling flow over R^d: θ = A(T⁻¹(z)), z ~ N(0, I), a family richer than Gaussians.

    ``T`` is a stack of ``transforms`` coupling layers with alternating masks, affine
    (RealNVP, ``kind="affine"``) or rational-quadratic spline (NSF, ``kind="spline"``), and
    ``A(u) = loc + scale ⊙ u`` a learnable elementwise affine map on the θ side. The
    conditioners start at zero, so q starts as N(loc, scale² I), like the Gaussian families.
    The first coupling (on the θ side) lets θ_{d/2+1:} depend on θ_{1:d/2}.

    Args:
        dim: d ≥ 2 (a coupling layer needs two features).
        transforms: number of coupling layers; hidden: conditioner MLP widths.
        kind: ``"affine"`` or ``"spline"``; bins, bound: the spline's bins and interval
            [-bound, bound] (identity tails outside), for ``kind="spline"``.
        loc: initial mean (default zeros); scale: initial standard deviation.
        dtype: parameter dtype (default: torch's default).

    Example::

        >>> q = FlowFamily(2, transforms=2, hidden=(8,))
        >>> q.distribution().rsample((5,)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        dim: int,
        *,
        transforms: int = 4,
        hidden: tuple[int, ...] = (32, 32),
        kind: str = "affine",
        bins: int = 8,
        bound: float = 5.0,
        loc: Tensor | None = None,
        scale: float = 1.0,
        dtype=None,
    ):
        super().__init__()
        if dim < 2 or transforms < 1 or scale <= 0:
            raise ValueError(
                f"need dim ≥ 2, transforms ≥ 1, scale > 0; got {dim}, {transforms}, {scale}"
            )
        if kind not in ("affine", "spline"):
            raise ValueError(f"kind must be 'affine' or 'spline', got {kind!r}")
        loc0 = torch.zeros(dim, dtype=dtype) if loc is None else loc.detach().clone().to(dtype)
        extra = dict(bins=bins, bound=bound) if kind == "spline" else {}
        make = SplineCoupling if kind == "spline" else AffineCoupling
        layers = [
            make(dim, alternating_mask(dim, i), hidden_features=tuple(hidden), **extra)
            for i in range(transforms)
        ]
        self.transform = Compose(_ElementwiseAffine(loc0, scale), *layers).to(loc0.dtype)
        self.dim = dim

    def distribution(self) -> Flow:
        """The :class:`~genmodels.distributions.Flow` with event shape (d,)."""
        return Flow(self.transform, (self.dim,))


def as_distribution(q) -> Distribution:
    """``q`` itself if it is a Distribution, else ``q.distribution()``."""
    if isinstance(q, Distribution):
        return q
    make = getattr(q, "distribution", None)
    if callable(make):
        d = make()
        if isinstance(d, Distribution):
            return d
    raise TypeError(
        "q must be a torch.distributions.Distribution or have a distribution() method "
        f"returning one, got {type(q).__name__}"
    )


def rsample(
    dist: Distribution, sample_shape: tuple[int, ...], generator: torch.Generator | None = None
) -> Tensor:
    """Reparameterised draws ``(*sample_shape, *batch_shape, *event_shape)`` from ``dist``.

    Gaussians (Normal, Independent(Normal), MultivariateNormal) are drawn as
    μ + Lε with ε from ``generator``; other distributions with ``has_rsample`` use
    their own ``rsample`` under a global RNG forked and seeded from ``generator``.

    Example::

        >>> d = Normal(torch.zeros(2), 1.0)
        >>> rsample(d, (5,), torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """
    shape = torch.Size(sample_shape)
    if not dist.has_rsample:
        raise TypeError(f"{type(dist).__name__} has no rsample: it cannot be a variational q")
    base, reinterpreted = dist, 0
    while isinstance(base, Independent):
        reinterpreted += base.reinterpreted_batch_ndims
        base = base.base_dist
    if isinstance(base, Normal):
        loc, scale = base.loc, base.scale
        full = shape + dist.batch_shape + dist.event_shape
        eps = torch.randn(full, dtype=loc.dtype, device=loc.device, generator=generator)
        return loc + scale * eps
    if isinstance(dist, MultivariateNormal):
        loc, tril = dist.loc, dist.scale_tril
        full = shape + dist.batch_shape + dist.event_shape
        eps = torch.randn(full, dtype=loc.dtype, device=loc.device, generator=generator)
        return loc + (tril @ eps.unsqueeze(-1)).squeeze(-1)
    if generator is None:
        return dist.rsample(shape)
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return dist.rsample(shape)
