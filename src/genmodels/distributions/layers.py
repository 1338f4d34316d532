"""Non-coupling flow layers: NICE's diagonal scaling, ActNorm, an LU linear map, planar flow.

All follow the :class:`~.transforms.Transform` protocol (value and log|det J| in one pass,
normalizing direction data -> base). For image-shaped inputs ``(batch, C, H, W)`` the
per-feature layers act per channel and multiply their log-determinant by ``H * W``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transforms import Transform

__all__ = ["DiagonalScale", "ActNorm", "LULinear", "Planar"]


def _per_channel(p: Tensor, x: Tensor) -> Tensor:
    """View a ``(C,)`` parameter so it broadcasts over ``(batch, C, *spatial)``."""
    return p.view(1, -1, *([1] * (x.ndim - 2)))


def _spatial(x: Tensor) -> int:
    return math.prod(x.shape[2:])


class DiagonalScale(Transform):
    """NICE's final scaling layer (Dinh et al. 2015, sec. 3.3): ``z = exp(s) * x``,
    ``log|det J| = sum_j s_j``. It gives a stack of volume-preserving additive couplings
    the freedom to change volume.

    Example::

        >>> DiagonalScale(2)(torch.ones(1, 2))
        (tensor([[1., 1.]], grad_fn=<MulBackward0>), tensor([0.], grad_fn=<ExpandBackward0>))
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = (self.log_scale.sum() * _spatial(x)).expand(x.shape[0])
        return x * torch.exp(_per_channel(self.log_scale, x)), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = (-self.log_scale.sum() * _spatial(z)).expand(z.shape[0])
        return z * torch.exp(-_per_channel(self.log_scale, z)), ladj


class ActNorm(Transform):
    """Activation normalisation (Kingma & Dhariwal 2018, Glow): ``z = (x + b) * exp(s)``,
    ``log|det J| = sum_j s_j`` (times ``H*W`` for images).

    Data-dependent initialisation: the first ``forward`` in training mode (or an explicit
    :meth:`init_from_data`) sets ``b = -mean(x)`` and ``s = -log std(x)`` so the output of the
    layer is standardised on that batch. ``initialized`` is a buffer, so a checkpoint carries
    the state and a loaded model never re-initialises.

    Example::

        >>> layer = ActNorm(2)
        >>> z, _ = layer(3 + 2 * torch.randn(1000, 2))
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Set ``b, s`` so that ``forward(x)`` has zero mean and unit variance per feature."""
        dims = [0] + list(range(2, x.ndim))
        mean = x.mean(dims)
        std = x.std(dims).clamp_min(1e-6)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-std.log())
        self.initialized.fill_(1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            self.init_from_data(x.detach())
        ladj = (self.log_scale.sum() * _spatial(x)).expand(x.shape[0])
        return (x + _per_channel(self.bias, x)) * torch.exp(_per_channel(self.log_scale, x)), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = (-self.log_scale.sum() * _spatial(z)).expand(z.shape[0])
        x = z * torch.exp(-_per_channel(self.log_scale, z)) - _per_channel(self.bias, z)
        return x, ladj


class LULinear(Transform):
    """Invertible linear map in LU form (Kingma & Dhariwal 2018, sec. 3.2):

        z = W x + b,   W = P L (U + diag(sign * exp(log|u|))),   log|det J| = sum log|u|

    with ``P`` a fixed permutation, ``L`` unit lower-triangular and ``U`` strictly upper
    triangular, so the determinant costs O(D) and the inverse is two triangular solves.
    Initialised from a random rotation (drawn from ``generator``).

    Example::

        >>> layer = LULinear(3, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-5)
        True
    """

    def __init__(self, features: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(features, features, generator=generator))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign", torch.sign(diag))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_abs_diag = nn.Parameter(diag.abs().log())
        self.bias = nn.Parameter(torch.zeros(features))
        eye = torch.eye(features)
        self.register_buffer("eye", eye, persistent=False)

    def _factors(self) -> tuple[Tensor, Tensor]:
        lower = torch.tril(self.lower, -1) + self.eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * self.log_abs_diag.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W = P L U`` (D, D)."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = self.log_abs_diag.sum().expand(x.shape[0])
        return F.linear(x, self.weight(), self.bias), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        rhs = (self.perm.T @ (z - self.bias).T).contiguous()
        v = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, v, upper=True).T
        return x, (-self.log_abs_diag.sum()).expand(z.shape[0])


class Planar(Transform):
    """Planar flow (Rezende & Mohamed 2015, eq. 10-12), the lecture's example:

        f(x) = x + u_hat * tanh(w^T x + b),
        log|det J_f| = log|1 + u_hat^T psi(x)|,   psi(x) = (1 - tanh^2(w^T x + b)) w

    The map is invertible iff ``w^T u_hat >= -1``; we reparameterise (paper, appendix A)
    ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``, so
    ``w^T u_hat = m(w^T u) > -1`` always. ``forward`` is closed form; there is no closed-form
    inverse, so ``inverse`` solves the scalar equation ``w^T x = a + w^T u_hat tanh(a + b)``
    for ``a = w^T z`` by bisection (monotone in ``a``; the root lies within ``|w^T u_hat|`` of
    ``w^T x``) - accurate but slower, meant for checks, not training.

    Example::

        >>> layer = Planar(2, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(5, 2, dtype=torch.float64)
        >>> layer = layer.double()
        >>> torch.allclose(layer.inverse(layer(x)[0])[0], x)
        True
    """

    def __init__(self, features: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        scale = 1 / math.sqrt(features)
        self.u = nn.Parameter(torch.randn(features, generator=generator) * scale)
        self.w = nn.Parameter(torch.randn(features, generator=generator) * scale)
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self) -> Tensor:
        """The reparameterised ``u`` with ``w^T u_hat > -1`` (D,)."""
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        h = torch.tanh(x @ self.w + self.b)
        z = x + h.unsqueeze(1) * u
        ladj = torch.log((1 + (1 - h * h) * (self.w @ u)).abs())
        return z, ladj

    @torch.no_grad()
    def inverse(
        self, z: Tensor, context: Tensor | None = None, iterations: int = 80
    ) -> tuple[Tensor, Tensor]:
        u = self.u_hat()
        wu = self.w @ u
        target = z @ self.w
        lo, hi = target - wu.abs() - 1e-6, target + wu.abs() + 1e-6
        for _ in range(iterations):
            mid = (lo + hi) / 2
            too_big = mid + wu * torch.tanh(mid + self.b) > target
            hi = torch.where(too_big, mid, hi)
            lo = torch.where(too_big, lo, mid)
        a = (lo + hi) / 2
        h = torch.tanh(a + self.b)
        x = z - h.unsqueeze(1) * u
        return x, -torch.log((1 + (1 - h * h) * wu).abs())
