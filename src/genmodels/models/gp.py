"""Gaussian processes: the lecture's "distribution over functions" (section 5).

A GP ``f ~ GP(m, k)`` says that for any inputs ``x_1..x_n`` the values ``f(x_1..x_n)`` are
jointly Gaussian with mean ``m(x_i)`` and covariance ``k(x_i, x_j)``; every sampled path is
one function of the family. With observations ``y = f(x) + eps``, ``eps ~ N(0, noise I)``,
the posterior predictive at targets ``x_*`` is (Rasmussen & Williams 2006, Algorithm 2.1)::

    L      = cholesky(K + noise I)                       K = k(X, X)
    alpha  = L^T \\ (L \\ (y - m(X)))
    mean   = m(x_*) + k(X, x_*)^T alpha
    V      = L \\ k(X, x_*)
    var    = k(x_*, x_*) - V^T V  (+ noise for y_*)
    log p(y | X) = -1/2 (y - m)^T alpha - sum_i log L_ii - n/2 log 2 pi

Kernels hold their positive hyperparameters in log space (``log_lengthscale``,
``log_variance``); ``k1 + k2`` and ``k1 * k2`` are kernels. The Cholesky factorisation runs
first without jitter and, only after a failure, with GPyTorch's adaptive jitter (1e-6 in
float32, 1e-8 in float64, x10 per try, at most 3 tries; one warning naming the jitter that
worked). Example::

    >>> gp = GP(RBF(lengthscale=0.4), noise=0.01)
    >>> x = torch.linspace(-2, 2, 10, dtype=torch.float64)[:, None]
    >>> pred = gp.double().predict(x, torch.sin(x), x)     # Normal, (10, 1)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal

from ..data.info import DataInfo
from ..registry import register

__all__ = [
    "Kernel",
    "RBF",
    "Matern",
    "Periodic",
    "Linear",
    "White",
    "SumKernel",
    "ProductKernel",
    "ConstantMean",
    "GP",
    "GPConfig",
    "cholesky",
    "CholeskyError",
    "make_kernel",
]


class CholeskyError(RuntimeError):
    """A kernel matrix stayed singular after every jitter that was tried."""


def cholesky(k: Tensor, *, tries: int = 3) -> Tensor:
    """The lower Cholesky factor of ``k`` ``(..., n, n)``: first without jitter, then with
    adaptive jitter (1e-6 in float32, 1e-8 in float64, x10 per try; GPyTorch's
    ``psd_safe_cholesky`` policy). A jitter that was needed is named in one warning; after
    ``tries`` failures a :class:`CholeskyError` names the size, the dtype and the jitters."""
    lower, info = torch.linalg.cholesky_ex(k)
    if not bool((info > 0).any()):
        return lower
    jitter = 1e-6 if k.dtype == torch.float32 else 1e-8
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    tried = []
    for _ in range(tries):
        lower, info = torch.linalg.cholesky_ex(k + jitter * eye)
        tried.append(jitter)
        if not bool((info > 0).any()):
            warnings.warn(
                f"kernel matrix {k.shape[-1]}x{k.shape[-1]} was not positive definite; "
                f"added jitter {jitter:.0e} to its diagonal",
                RuntimeWarning,
                stacklevel=3,
            )
            return lower
        jitter *= 10
    raise CholeskyError(
        f"kernel matrix of size {k.shape[-1]}x{k.shape[-1]} ({k.dtype}) is not positive "
        f"definite even with jitter {', '.join(f'{j:.0e}' for j in tried)} on its diagonal "
        "(duplicate inputs without observation noise, or a rank-deficient kernel); "
        "use float64 or a larger noise"
    )


class _GaussianLogLik(torch.autograd.Function):
    """``log N(r | 0, K)`` summed over the columns of ``r`` ``(..., n, dy)``, with the
    gradient in closed form.

    With ``K = L Lᵀ`` and ``α = K⁻¹ r``: ``log p = -½ Σ rᵀα - dy Σ log L_ii - ½ n dy log 2π``,
    and (Rasmussen & Williams 2006, eq. 5.9) ``∂ log p / ∂K = ½ (α αᵀ - dy K⁻¹)``,
    ``∂ log p / ∂r = -α``. ``K⁻¹`` comes from the factor (``cholesky_inverse``, about n³ flops),
    where autograd through ``cholesky`` and a triangular solve takes two n×n triangular
    solves and a product (about 3n³): the gradient is the cost of a GP fit's step, so the
    closed form is what ``fit`` uses. First-order only (``once_differentiable``).
    """

    @staticmethod
    def forward(ctx, cov: Tensor, r: Tensor) -> Tensor:
        lower = cholesky(cov)
        alpha = torch.cholesky_solve(r, lower)
        n, dy = r.shape[-2], r.shape[-1]
        logdet = lower.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        ctx.save_for_backward(lower, alpha)
        quad = (r * alpha).sum((-2, -1))
        return -0.5 * quad - dy * logdet - 0.5 * n * dy * math.log(2 * math.pi)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        lower, alpha = ctx.saved_tensors
        g = grad[..., None, None]
        grad_cov = grad_r = None
        if ctx.needs_input_grad[0]:
            dy = alpha.shape[-1]
            inner = alpha @ alpha.transpose(-1, -2) - dy * torch.cholesky_inverse(lower)
            grad_cov = 0.5 * g * inner
        if ctx.needs_input_grad[1]:
            grad_r = -g * alpha
        return grad_cov, grad_r


def _positive(name: str, value) -> Tensor:
    v = torch.as_tensor(value, dtype=torch.float64)  # GPs are float64 by default
    if not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return v.log()


# ---------------------------------------------------------------------------------------
# Kernels: k(x1, x2) -> (..., n, m); x2=None means k(x1, x1) (White adds its diagonal).
# ---------------------------------------------------------------------------------------


class Kernel(nn.Module):
    """A covariance function. ``kernel(x1, x2=None)``: ``x1`` ``(..., n, d)``, ``x2``
    ``(..., m, d)`` -> ``(..., n, m)``; ``kernel.diag(x)`` -> ``(..., n)``."""

    def forward(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def diag(self, x: Tensor) -> Tensor:
        return self(x).diagonal(dim1=-2, dim2=-1)

    def __add__(self, other: Kernel) -> SumKernel:
        return SumKernel(self, other)

    def __mul__(self, other: Kernel) -> ProductKernel:
        return ProductKernel(self, other)


class _Stationary(Kernel):
    """``variance * g(r)``, ``r = |x1 - x2| / lengthscale`` (a scalar or one per input
    dimension)."""

    def __init__(self, lengthscale=1.0, variance=1.0):
        super().__init__()
        self.log_lengthscale = nn.Parameter(_positive("lengthscale", lengthscale))
        self.log_variance = nn.Parameter(_positive("variance", variance))

    @property
    def lengthscale(self) -> Tensor:
        return self.log_lengthscale.exp()

    @property
    def variance(self) -> Tensor:
        return self.log_variance.exp()

    def _sqdist(self, x1: Tensor, x2: Tensor) -> Tensor:
        ls = self.lengthscale
        d = (x1 / ls).unsqueeze(-2) - (x2 / ls).unsqueeze(-3)  # (..., n, m, d), exact
        return d.pow(2).sum(-1)

    def diag(self, x: Tensor) -> Tensor:
        return self.variance.expand(x.shape[:-1])


class RBF(_Stationary):
    """The squared exponential ``variance * exp(-r^2 / 2)``."""

    def forward(self, x1, x2=None):
        x2 = x1 if x2 is None else x2
        return self.variance * torch.exp(-0.5 * self._sqdist(x1, x2))


class Matern(_Stationary):
    """Matérn with ``nu`` in {1/2, 3/2, 5/2} (R&W eq. 4.16-4.17)::

    nu=1/2: exp(-r);  nu=3/2: (1 + √3 r) exp(-√3 r);  nu=5/2: (1 + √5 r + 5r²/3) exp(-√5 r)
    """

    def __init__(self, nu: float = 2.5, lengthscale=1.0, variance=1.0):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"nu must be 0.5, 1.5 or 2.5, got {nu!r}")
        super().__init__(lengthscale, variance)
        self.nu = nu

    def forward(self, x1, x2=None):
        x2 = x1 if x2 is None else x2
        # the clamp keeps the gradient of sqrt finite at r = 0 (where it does not matter)
        r = self._sqdist(x1, x2).clamp_min(1e-300).sqrt()
        if self.nu == 0.5:
            g = torch.exp(-r)
        elif self.nu == 1.5:
            s = math.sqrt(3.0) * r
            g = (1 + s) * torch.exp(-s)
        else:
            s = math.sqrt(5.0) * r
            g = (1 + s + s * s / 3) * torch.exp(-s)
        return self.variance * g


class Periodic(_Stationary):
    """``variance * exp(-2 sin²(π |x1 - x2| / period) / lengthscale²)`` (MacKay 1998;
    scikit-learn's ExpSineSquared)."""

    def __init__(self, period=1.0, lengthscale=1.0, variance=1.0):
        super().__init__(lengthscale, variance)
        self.log_period = nn.Parameter(_positive("period", period))

    @property
    def period(self) -> Tensor:
        return self.log_period.exp()

    def forward(self, x1, x2=None):
        x2 = x1 if x2 is None else x2
        d = (x1.unsqueeze(-2) - x2.unsqueeze(-3)).pow(2).sum(-1).clamp_min(1e-300).sqrt()
        s = torch.sin(math.pi * d / self.period)
        return self.variance * torch.exp(-2 * s * s / self.lengthscale**2)


class Linear(Kernel):
    """``variance * x1 . x2`` (Bayesian linear regression through the origin; rank <= d)."""

    def __init__(self, variance=1.0):
        super().__init__()
        self.log_variance = nn.Parameter(_positive("variance", variance))

    def forward(self, x1, x2=None):
        x2 = x1 if x2 is None else x2
        return self.log_variance.exp() * x1 @ x2.transpose(-1, -2)

    def diag(self, x):
        return self.log_variance.exp() * x.pow(2).sum(-1)


class White(Kernel):
    """White noise: ``variance`` on the diagonal of ``k(x, x)`` and zero between different
    input sets (scikit-learn's WhiteKernel)."""

    def __init__(self, variance=1.0):
        super().__init__()
        self.log_variance = nn.Parameter(_positive("variance", variance))

    def forward(self, x1, x2=None):
        n = x1.shape[-2]
        if x2 is None or x2 is x1:
            eye = torch.eye(n, dtype=x1.dtype, device=x1.device)
            return (self.log_variance.exp() * eye).expand(*x1.shape[:-2], n, n)
        return x1.new_zeros(*torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]), n, x2.shape[-2])

    def diag(self, x):
        return self.log_variance.exp().expand(x.shape[:-1])


class SumKernel(Kernel):
    """``k1 + k2``."""

    def __init__(self, k1: Kernel, k2: Kernel):
        super().__init__()
        self.k1, self.k2 = k1, k2

    def forward(self, x1, x2=None):
        return self.k1(x1, x2) + self.k2(x1, x2)

    def diag(self, x):
        return self.k1.diag(x) + self.k2.diag(x)


class ProductKernel(Kernel):
    """``k1 * k2`` (elementwise)."""

    def __init__(self, k1: Kernel, k2: Kernel):
        super().__init__()
        self.k1, self.k2 = k1, k2

    def forward(self, x1, x2=None):
        return self.k1(x1, x2) * self.k2(x1, x2)

    def diag(self, x):
        return self.k1.diag(x) * self.k2.diag(x)


class ConstantMean(nn.Module):
    """``m(x) = c`` (learnable with ``learn=True``)."""

    def __init__(self, value: float = 0.0, *, learn: bool = False):
        super().__init__()
        c = torch.tensor(float(value), dtype=torch.float64)
        if learn:
            self.constant = nn.Parameter(c)
        else:
            self.register_buffer("constant", c)

    def forward(self, x: Tensor) -> Tensor:
        return self.constant.expand(x.shape[:-1])


# ---------------------------------------------------------------------------------------
# The GP
# ---------------------------------------------------------------------------------------


class GP(nn.Module):
    """Exact GP regression with Gaussian observation noise.

    Args:
        kernel: a :class:`Kernel` (the prior covariance of ``f``).
        noise: the observation-noise variance (> 0; learnt in log space).
        mean: a constant (fixed) or a module ``m(x) -> (..., n)``.

    Inputs are ``x`` ``(n, dx)`` and ``y`` ``(n, dy)``, optionally with one leading batch
    dimension ``(B, n, ·)``; the ``dy`` outputs are independent with the same kernel. The
    hyperparameters are float64 when built (``gp.float()`` for float32); inputs are cast to
    the model's dtype.
    """

    train_defaults = {"lr": 0.05}
    coherent_functions = True  # sample_functions: posterior paths

    def __init__(self, kernel: Kernel, *, noise: float = 0.1, mean: float | nn.Module = 0.0):
        super().__init__()
        self.kernel = kernel
        self.log_noise = nn.Parameter(_positive("noise", noise))
        self.mean = mean if isinstance(mean, nn.Module) else ConstantMean(mean)

    @property
    def noise(self) -> Tensor:
        return self.log_noise.exp()

    # -- inputs ------------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return self.log_noise.dtype

    def _check(self, x: Tensor, y: Tensor | None, name: str) -> tuple[Tensor, Tensor | None]:
        dt, dev = self._dtype(), self.log_noise.device
        xn, yn = (f"x_{name}", f"y_{name}") if name else ("x", "y")
        if not isinstance(x, Tensor) or x.dim() not in (2, 3):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{xn} must be (n, dx) or (B, n, dx), got {shape}")
        x = x.to(device=dev, dtype=dt)
        if y is not None:
            if not isinstance(y, Tensor) or y.dim() != x.dim() or y.shape[:-1] != x.shape[:-1]:
                shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(
                    f"{yn} must be (..., n, dy) with the same leading dimensions as "
                    f"{xn} {tuple(x.shape)}, got {shape}"
                )
            y = y.to(device=dev, dtype=dt)
        return x, y

    # -- the algorithm -----------------------------------------------------------------
    def _cov(self, x: Tensor) -> Tensor:
        """``K(x, x) + noise I``: the covariance of the observations at ``x``."""
        k = self.kernel(x)
        eye = torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
        return k + self.noise * eye

    def _factor(self, x: Tensor) -> Tensor:
        return cholesky(self._cov(x))

    def log_marginal_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """``log p(y | x)`` in nats, summed over the ``dy`` outputs: ``()`` or ``(B,)``.

        Its gradient is the closed form ``½ (α αᵀ - dy K⁻¹)`` with respect to the covariance
        (:class:`_GaussianLogLik`), first-order only.
        """
        x, y = self._check(x, y, "")
        r = y - self.mean(x).unsqueeze(-1)
        return _GaussianLogLik.apply(self._cov(x), r)

    def _posterior(self, xc, yc, xt):
        """Posterior mean ``(..., m, dy)``, ``V = L^{-1} k(X, x_*)`` and ``L``."""
        lower = self._factor(xc)
        kct = self.kernel(xc, xt)
        r = yc - self.mean(xc).unsqueeze(-1)
        alpha = torch.cholesky_solve(r, lower)
        mean = self.mean(xt).unsqueeze(-1) + kct.transpose(-1, -2) @ alpha
        v = torch.linalg.solve_triangular(lower, kct, upper=False)
        return mean, v

    def predict(
        self,
        x_context: Tensor,
        y_context: Tensor,
        x_target: Tensor,
        *,
        full_cov: bool = False,
    ) -> Normal | MultivariateNormal:
        """The posterior predictive of ``y`` at ``x_target`` (observation noise included).

        Args:
            x_context: ``(n, dx)`` or ``(B, n, dx)``; ``n = 0`` gives the prior predictive.
            y_context: ``(n, dy)`` or ``(B, n, dy)``.
            x_target: ``(m, dx)`` or ``(B, m, dx)``.
            full_cov: return the joint ``MultivariateNormal`` with batch shape
                ``(..., dy)`` and event shape ``(m,)`` instead of the marginals.

        Returns ``Normal`` with mean and stddev ``(..., m, dy)``.
        """
        xc, yc = self._check(x_context, y_context, "context")
        xt, _ = self._check(x_target, None, "target")
        if xc.shape[-1] != xt.shape[-1] or xc.dim() != xt.dim():
            raise ValueError(
                f"x_context {tuple(xc.shape)} and x_target {tuple(xt.shape)} must have the "
                "same number of dimensions and the same dx"
            )
        if xc.dim() == 3 and xc.shape[0] != xt.shape[0]:
            raise ValueError(
                f"x_context has batch {xc.shape[0]} but x_target has batch {xt.shape[0]}"
            )
        dy = yc.shape[-1]
        noise = self.noise
        if xc.shape[-2] == 0:  # the prior predictive
            mean = self.mean(xt).unsqueeze(-1).expand(*xt.shape[:-1], dy)
            cov = self.kernel(xt) if full_cov else None
            var = self.kernel.diag(xt)
        else:
            mean, v = self._posterior(xc, yc, xt)
            if full_cov:
                cov = self.kernel(xt) - v.transpose(-1, -2) @ v
            var = (self.kernel.diag(xt) - v.pow(2).sum(-2)).clamp_min(0)
        if full_cov:
            eye = torch.eye(xt.shape[-2], dtype=xt.dtype, device=xt.device)
            cov = (cov + noise * eye).unsqueeze(-3).expand(*cov.shape[:-2], dy, *cov.shape[-2:])
            return MultivariateNormal(mean.transpose(-1, -2), scale_tril=cholesky(cov))
        sd = (var + noise).sqrt().unsqueeze(-1).expand_as(mean)
        return Normal(mean, sd)

    @torch.no_grad()
    def sample_paths(
        self,
        x: Tensor,
        n: int,
        *,
        x_context: Tensor | None = None,
        y_context: Tensor | None = None,
        dy: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` functions ``f(x)`` from the prior (no context) or the posterior given the
        context: ``(n, ..., m, dy)`` (without observation noise; no gradient).

        Args:
            x: ``(m, dx)`` or ``(B, m, dx)``; dy: outputs of a prior path.
        """
        x, _ = self._check(x, None, "")
        if x_context is None or x_context.shape[-2] == 0:
            mean = self.mean(x).unsqueeze(-1).expand(*x.shape[:-1], dy)
            cov = self.kernel(x)
        else:
            xc, yc = self._check(x_context, y_context, "context")
            mean, v = self._posterior(xc, yc, x)
            cov = self.kernel(x) - v.transpose(-1, -2) @ v
        lower = cholesky(cov)
        eps = torch.randn(
            (n, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device
        )
        return mean + lower @ eps

    def sample_functions(
        self,
        x_context: Tensor,
        y_context: Tensor,
        x_target: Tensor,
        n: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The process contract's sampled functions: ``n`` posterior paths ``f(x_target)``
        given the context (the prior for an empty context), without observation noise:
        ``(n, B, m, dy)`` (``(n, m, dy)`` without a batch dimension)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"n (the number of sampled functions) must be a positive int, got {n!r}"
            )
        xc, yc = self._check(x_context, y_context, "context")
        return self.sample_paths(
            x_target, n, x_context=xc, y_context=yc, dy=yc.shape[-1], generator=generator
        )

    def fit(self, x: Tensor, y: Tensor, *, steps: int = 100, lr: float = 1.0) -> list[float]:
        """Maximise the exact log marginal likelihood of all of ``(x, y)`` over the
        hyperparameters with L-BFGS (strong Wolfe line search); returns the negative LML
        after each iteration."""
        opt = torch.optim.LBFGS(
            self.parameters(), lr=lr, max_iter=steps, line_search_fn="strong_wolfe"
        )
        history: list[float] = []

        def closure():
            opt.zero_grad()
            loss = -self.log_marginal_likelihood(x, y).sum()
            loss.backward()
            history.append(float(loss))
            return loss

        opt.step(closure)
        return history

    # -- the process task ----------------------------------------------------------------
    def loss(self, batch, *, generator=None) -> Tensor:
        """The mean over a batch of tasks of ``-log p(y_target | x_target)`` (the targets
        hold the context): shared hyperparameters fitted over many functions."""
        return -self.log_marginal_likelihood(batch.x_target, batch.y_target).mean()


# ---------------------------------------------------------------------------------------
# Registered: genmodels train gp --data gp-rbf
# ---------------------------------------------------------------------------------------

KERNELS = ("rbf", "matern12", "matern32", "matern52", "periodic", "linear")


def make_kernel(name: str, *, lengthscale=1.0, variance=1.0, period=1.0) -> Kernel:
    """A kernel by name (``rbf``, ``matern12``, ``matern32``, ``matern52``, ``periodic``,
    ``linear``)."""
    if name == "rbf":
        return RBF(lengthscale, variance)
    if name.startswith("matern") and name[6:] in ("12", "32", "52"):
        return Matern(int(name[6]) / 2, lengthscale, variance)
    if name == "periodic":
        return Periodic(period, lengthscale, variance)
    if name == "linear":
        return Linear(variance)
    raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {name!r}")


@dataclass
class GPConfig:
    """``gp``: the kernel's name and the hyperparameters' initial values."""

    kernel: str = "rbf"
    lengthscale: float = 1.0
    variance: float = 1.0
    period: float = 1.0
    noise: float = 0.1

    def validate(self) -> None:
        make_kernel(
            self.kernel, lengthscale=self.lengthscale, variance=self.variance, period=self.period
        )
        _positive("noise", self.noise)


@register(
    "gp",
    config=GPConfig,
    default_data="gp-rbf",
    task="process",
    section=5,
    data_kinds=("tasks",),
    description="Gaussian process, hyperparameters shared over tasks by the marginal likelihood",
)
def build_gp(config: GPConfig, info: DataInfo) -> GP:
    kernel = make_kernel(
        config.kernel,
        lengthscale=config.lengthscale,
        variance=config.variance,
        period=config.period,
    )
    return GP(kernel, noise=config.noise)
