"""The transform protocol: a bijection that returns its value and log|det J| in one pass.

Convention (the *normalizing* direction, as in zuko and nflows): ``forward`` maps data
``x`` to the base space ``z = T(x)``; ``inverse`` maps ``z`` back to data. With the
lecture's generator ``x = f(z)`` we have ``T = f^{-1}`` and the change of variables

    log p_x(x) = log p_z(T(x)) + log|det J_T(x)|
               = log p_z(z) - sum_i log|det J_{f_i}(z_{i-1})|,

so a stack of layers is a *sum* of log-determinants. Every transform computes the value
and its log-determinant together ("call and ladj"), so the two can never drift apart and
the Jacobian is never built.

Shapes: ``x`` is ``(batch, features)`` (or ``(batch, *event)`` for image layers); the
log-determinant ``ladj`` is ``(batch,)`` in nats. ``context`` is ``(batch, c)`` or None.

Example::

    >>> t = Compose(Reverse(), Reverse())
    >>> x = torch.randn(5, 2)
    >>> z, ladj = t(x)
    >>> torch.equal(z, x), ladj.shape
    (True, torch.Size([5]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Transform", "Compose", "Inverse", "Reverse", "Permutation"]


class Transform(nn.Module):
    """Base class: ``forward(x, context) -> (z, ladj)``, ``inverse(z, context) -> (x, ladj)``.

    ``ladj`` is log|det dz/dx| for ``forward`` and log|det dx/dz| for ``inverse`` (so the two
    are negatives of each other at corresponding points), shape ``(batch,)``, nats.
    Subclasses set ``invertible = False`` when only ``forward`` is available in closed form.
    """

    invertible: bool = True

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")


def _total(ladjs: list[Tensor], x: Tensor) -> Tensor:
    """Sum of per-layer log-determinants (one stack + sum: two autograd nodes, not K adds)."""
    if not ladjs:
        return x.new_zeros(x.shape[0])
    return torch.stack(ladjs).sum(0)


class Compose(Transform):
    """Apply transforms in order; log-determinants add up (the lecture's sum over layers).

    ``forward`` runs ``t_1, ..., t_K`` (data -> base); ``inverse`` runs them backwards.

    Example::

        >>> flow = Compose(Reverse(), Reverse())
        >>> flow(torch.zeros(3, 2))[1]
        tensor([0., 0., 0.])
    """

    def __init__(self, *transforms: Transform) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.invertible = all(t.invertible for t in transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladjs = []
        for t in self.transforms:
            x, l = t(x, context)
            ladjs.append(l)
        return x, _total(ladjs, x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladjs = []
        for t in reversed(self.transforms):
            z, l = t.inverse(z, context)
            ladjs.append(l)
        return z, _total(ladjs, z)

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]


class Inverse(Transform):
    """Swap a transform's directions (e.g. to use a planar flow as a sampler for VI).

    Example::

        >>> t = Inverse(Standardize(torch.zeros(2), torch.full((2,), 2.0)))
        >>> t(torch.ones(1, 2))[0]
        tensor([[2., 2.]])
    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.transform = transform
        # The wrapped transform's ``inverse`` is what our ``forward`` needs.
        self.invertible = True

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(z, context)


class Permutation(Transform):
    """A fixed permutation of the features, ``z = x[:, perm]``; |det J| = 1.

    Args:
        perm: a permutation of ``range(features)`` (stored as a buffer).

    Example::

        >>> Permutation(torch.tensor([1, 0]))(torch.tensor([[1.0, 2.0]]))[0]
        tensor([[2., 1.]])
    """

    def __init__(self, perm: Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.ndim != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"perm must be a permutation of range(n), got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    @classmethod
    def random(cls, features: int, *, generator: torch.Generator | None = None) -> Permutation:
        """A uniformly random permutation of ``features`` features."""
        return cls(torch.randperm(features, generator=generator))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z[:, self.inv_perm], z.new_zeros(z.shape[0])


class Reverse(Transform):
    """Reverse the feature order, ``z = x[:, ::-1]`` (RealNVP's alternation); |det J| = 1."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.flip(1), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z.flip(1), z.new_zeros(z.shape[0])
