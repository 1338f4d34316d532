"""Fixed-step solvers for Itô and Stratonovich stochastic differential equations.

The lecture's SDE (section 7; Song et al. 2021, "Score-based generative modeling
through stochastic differential equations")

    dy = f(t, y) dt + g(t, y) dW(t)

is solved on a grid by one stepping loop; a method is one short step function (the
lines of the scheme as written in the cited paper) plus a row of :data:`METHODS` saying
which SDE types and noise types it accepts. The interface is torchsde's (Li et al.
2020): ``sde.f(t, y)``, ``sde.g(t, y)``, ``sde.noise_type``, ``sde.sde_type``.

Noise types, for y of shape (..., d) and m Brownian channels:

=========  ====================  ===================  =============================
noise      g(t, y) shape         Brownian shape       g dW
=========  ====================  ===================  =============================
diagonal   (..., d)              (..., d)             g ⊙ dW (g_i depends on y_i only)
scalar     (..., d, 1)           (..., 1)             g[..., 0] dW
additive   (..., d, m)           (..., m)             g dW, g independent of y
general    (..., d, m)           (..., m)             g dW
=========  ====================  ===================  =============================

Methods (h the step, ΔW the Brownian increment over it, G ΔW the noise term above):

=========  ===============  ==================================  =========================
method     SDE type         noise                               strong order
=========  ===============  ==================================  =========================
euler      Itô              any                                 0.5 (1.0 additive)
milstein   Itô or Strat.    diagonal, scalar, additive          1.0
heun       Stratonovich     any                                 1.0 commutative, else 0.5
midpoint   Stratonovich     any                                 1.0 commutative, else 0.5
srk        Itô or Strat.    additive (Rößler's SRA1)            1.5
rev. Heun  Stratonovich     any (``reversible_heun``)           0.5 (1.0 additive)
=========  ===============  ==================================  =========================

(For additive noise the Itô and Stratonovich SDEs coincide, so every method accepts it.)
Default method, following torchsde where sensible: additive noise → ``srk``; Itô with
diagonal or scalar noise → ``milstein`` (torchsde uses its order-1.0 SRK there; Milstein
has the same strong order at half the cost); Itô general → ``euler``; Stratonovich →
``heun`` (torchsde: midpoint; same order).

Time runs either way: with decreasing ``ts`` the solver steps backwards (h < 0), as the
reverse-time SDE of a diffusion model needs (Anderson 1982):

    dy = [f(t, y) - g(t)² ∇_y log p_t(y)] dt + g(t) dW̄(t),   t from T down to 0.

Stepping backwards, the stochastic integral is taken in the backward direction: g is
evaluated at the step's start (the later time) and ΔW̄ is the increment of the path over
the step, W(t_{n+1}) - W(t_n), whose variance is σ² |h|.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ._flat import returned
from .checks import NonFiniteSolutionError, check_times

__all__ = ["sdeint", "METHODS", "SDEProtocol"]

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")


class SDEProtocol(Protocol):
    """What :func:`sdeint` needs of ``sde`` (torchsde's convention)."""

    noise_type: str  # "diagonal" | "scalar" | "additive" | "general"
    sde_type: str  # "ito" | "stratonovich"

    def f(self, t: Tensor, y: Tensor) -> Tensor: ...  # drift, shape of y

    def g(self, t: Tensor, y: Tensor) -> Tensor: ...  # diffusion, see the noise table


# ---------------------------------------------------------------------------------------------
# the noise term G ΔW per noise type


def _noise_diagonal(g: Tensor, dw: Tensor) -> Tensor:
    return g * dw


def _noise_scalar(g: Tensor, dw: Tensor) -> Tensor:
    return g[..., 0] * dw


def _noise_matrix(g: Tensor, dw: Tensor) -> Tensor:
    return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)


_NOISE = {
    "diagonal": _noise_diagonal,
    "scalar": _noise_scalar,
    "additive": _noise_matrix,
    "general": _noise_matrix,
}


@dataclass
class _Problem:
    """Everything a step needs besides the state: the two functions and the noise product."""

    f: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor, Tensor], Tensor]
    noise: Callable[[Tensor, Tensor], Tensor]
    noise_type: str
    ito: bool
    grad_free: bool
    carry: dict = field(default_factory=dict)  # state a method keeps between steps


# ---------------------------------------------------------------------------------------------
# the methods: one step each. Arguments: problem, t (start, 0-d tensor), t1 (end), extra
# stage times, h (signed float), sqrt|h|, y, dW, J (= I_(1,0) / |h| for srk, else None).


def _euler_step(p: _Problem, t, t1, tm, h, rh, y, dw, j):
    """Euler–Maruyama (Maruyama 1955):  y₁ = y + f(t, y) h + G(t, y) ΔW."""
    return y + p.f(t, y) * h + p.noise(p.g(t, y), dw)


def _milstein_step(p: _Problem, t, t1, tm, h, rh, y, dw, j):
    """Milstein (1974), diagonal / scalar noise, componentwise (Kloeden & Platen 1992, 10.3):

        y₁ = y + f h + G ΔW + ½ (∂g/∂y · g) (ΔW² - |h|)      (Itô; Stratonovich: ΔW²)

    ∂g/∂y · g comes from reverse-mode autograd (:func:`_g_and_derivative`). With
    ``options={"grad_free": True}`` the derivative-free form (Kloeden & Platen 11.1.5):
    ∂g/∂y · g ≈ (g(t, ỹ) - g(t, y)) / √|h|, ỹ = y + f h + g √|h|.
    """
    fy = p.f(t, y)
    if p.noise_type == "additive":
        return y + fy * h + p.noise(p.g(t, y), dw)
    if p.grad_free:
        gv = _as_vector(p, p.g(t, y))
        dgg = (_as_vector(p, p.g(t, y + fy * h + gv * rh)) - gv) / rh
    else:
        gv, dgg = _g_and_derivative(p, t, y)
    sq = dw * dw
    if p.ito:
        sq = sq - rh * rh
    return y + fy * h + gv * dw + 0.5 * dgg * sq


def _as_vector(p: _Problem, g: Tensor) -> Tensor:
    return g if p.noise_type == "diagonal" else g[..., 0]


def _g_and_derivative(p: _Problem, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(g, (∂g/∂y) g) in vector form (..., d), by reverse-mode autograd.

    Diagonal noise: g_i depends on y_i only, so the Jacobian is diagonal and
    diag(∂g/∂y) = (∂g/∂y)ᵀ 1: one backward pass. Scalar noise: (∂g/∂y) g by the double-vjp
    trick, v ↦ ∂/∂u [uᵀ (∂g/∂y) ... ] (two backward passes). (``torch.func.jvp`` is ~8x
    slower per call here.) A graph is kept for the parameters' gradients only when grad mode
    is on and something in g requires grad.
    """
    training = False
    if torch.is_grad_enabled():
        gy = _as_vector(p, p.g(t, y))
        training = gy.requires_grad
    if training and y.requires_grad:
        yy = y
    else:
        yy = y.detach().requires_grad_()
        with torch.enable_grad():
            gy = _as_vector(p, p.g(t, yy))
        if not gy.requires_grad:  # g does not depend on y at all
            return gy, torch.zeros_like(gy)
    with torch.enable_grad():
        # allow_unused: g may depend on parameters but not on y (then ∂g/∂y · g = 0)
        if p.noise_type == "diagonal":
            (diag,) = torch.autograd.grad(
                gy, yy, torch.ones_like(gy), create_graph=training, allow_unused=True
            )
            dgg = torch.zeros_like(gy) if diag is None else diag * gy
        else:
            u = torch.zeros_like(gy, requires_grad=True)
            (vjp,) = torch.autograd.grad(gy, yy, u, create_graph=True, allow_unused=True)
            v = gy if training else gy.detach()
            dgg = (
                torch.zeros_like(gy)
                if vjp is None
                else torch.autograd.grad(vjp, u, v, create_graph=training)[0]
            )
    if not training:
        gy, dgg = gy.detach(), dgg.detach()
    return gy, dgg


def _heun_step(p: _Problem, t, t1, tm, h, rh, y, dw, j):
    """Stochastic Heun, Stratonovich (Kloeden & Platen 1992, 15.1; Rümelin 1982):

    ỹ = y + f(t, y) h + G(t, y) ΔW
    y₁ = y + ½ [f(t, y) + f(t₁, ỹ)] h + ½ [G(t, y) + G(t₁, ỹ)] ΔW
    """
    f0, g0 = p.f(t, y), p.g(t, y)
    y_pred = y + f0 * h + p.noise(g0, dw)
    return y + (0.5 * h) * (f0 + p.f(t1, y_pred)) + 0.5 * p.noise(g0 + p.g(t1, y_pred), dw)


def _midpoint_step(p: _Problem, t, t1, tm, h, rh, y, dw, j):
    """Stochastic midpoint, Stratonovich (Burrage, Burrage & Tian 2004):

    ỹ = y + ½ f(t, y) h + ½ G(t, y) ΔW,   y₁ = y + f(t + h/2, ỹ) h + G(t + h/2, ỹ) ΔW
    """
    y_mid = y + (0.5 * h) * p.f(t, y) + 0.5 * p.noise(p.g(t, y), dw)
    return y + p.f(tm, y_mid) * h + p.noise(p.g(tm, y_mid), dw)


def _sra1_step(p: _Problem, t, t1, tm, h, rh, y, dw, j):
    """Rößler's SRA1 for additive noise, strong order 1.5 (Rößler 2010, "Runge–Kutta methods
    for the strong approximation of solutions of stochastic differential equations", SIAM J.
    Numer. Anal. 48(3), Table 6.1). With J = I_(1,0) / h, I_(1,0) = ∫ (W(s) - W(t)) ds:

        H₂ = y + ¾ f(t, y) h + (3/2) g(t + h) J
        y₁ = y + [⅓ f(t, y) + ⅔ f(t + ¾h, H₂)] h + g(t + h) (ΔW - J) + g(t) J

    (Tableau: c⁰ = (0, ¾), c¹ = (1, 0), A⁰₂₁ = ¾, B⁰₂₁ = 3/2, α = (⅓, ⅔), β¹ = (1, 0),
    β² = (-1, 1).) On dy = λ y dt + σ dW it reproduces the Itô–Taylor expansion
    y + λ y h + λ² y h²/2 + σ ΔW + λ σ I_(1,0) exactly.
    """
    f0 = p.f(t, y)
    g1 = p.g(t1, y)
    h2 = y + (0.75 * h) * f0 + 1.5 * p.noise(g1, j)
    f2 = p.f(tm, h2)
    return y + h * (f0 / 3.0 + (2.0 / 3.0) * f2) + p.noise(g1, dw - j) + p.noise(p.g(t, y), j)


def reversible_heun_step(f, g, noise, t1, h, y, z, f0, g0, dw):
    """One step of the reversible Heun method (Kidger, Foster, Li & Lyons 2021, "Efficient
    and accurate gradients for neural SDEs", Algorithm 1), Stratonovich, any noise. The state
    is (y, z) with f0 = f(t, z), g0 = g(t, z) carried from the previous step (z₀ = y₀):

        z₁ = 2 y - z + f(t, z) h + G(t, z) ΔW
        y₁ = y + ½ [f(t, z) + f(t₁, z₁)] h + ½ [G(t, z) + G(t₁, z₁)] ΔW

    One evaluation of f and g per step, and algebraically reversible: given (y₁, z₁) and
    f(t₁, z₁), g(t₁, z₁), z = 2 y₁ - z₁ - f(t₁, z₁) h - G(t₁, z₁) ΔW and then y, exactly
    (what ``sdeint_adjoint``'s ``adjoint_reversible_heun`` inverts). Returns (y₁, z₁, f₁, g₁).
    """
    z1 = 2.0 * y - z + f0 * h + noise(g0, dw)
    f1, g1 = f(t1, z1), g(t1, z1)
    y1 = y + (0.5 * h) * (f0 + f1) + 0.5 * noise(g0 + g1, dw)
    return y1, z1, f1, g1


def _reversible_heun_step(p: _Problem, t, t1, tm, h, rh, y, dw, j):
    """:func:`reversible_heun_step`, with (z, f(t, z), g(t, z)) carried in ``p.carry``."""
    c = p.carry
    if not c:
        c["z"], c["f"], c["g"] = y, p.f(t, y), p.g(t, y)
    y1, c["z"], c["f"], c["g"] = reversible_heun_step(
        p.f, p.g, p.noise, t1, h, y, c["z"], c["f"], c["g"], dw
    )
    return y1


@dataclass(frozen=True)
class _Method:
    step: Callable[..., Tensor]
    sde_types: tuple[str, ...]
    noise_types: tuple[str, ...]
    stage: float | None = None  # fraction of h where the extra stage time sits
    levy_area: bool = False  # needs J = I_(1,0) / |h|


METHODS: dict[str, _Method] = {
    "euler": _Method(_euler_step, ("ito",), NOISE_TYPES),
    "milstein": _Method(_milstein_step, SDE_TYPES, ("diagonal", "scalar", "additive")),
    "heun": _Method(_heun_step, ("stratonovich",), NOISE_TYPES),
    "midpoint": _Method(_midpoint_step, ("stratonovich",), NOISE_TYPES, stage=0.5),
    "srk": _Method(_sra1_step, SDE_TYPES, ("additive",), stage=0.75, levy_area=True),
    "reversible_heun": _Method(_reversible_heun_step, ("stratonovich",), NOISE_TYPES),
}


def _default_method(sde_type: str, noise_type: str) -> str:
    if noise_type == "additive":
        return "srk"
    if sde_type == "stratonovich":
        return "heun"
    return "milstein" if noise_type in ("diagonal", "scalar") else "euler"


# ---------------------------------------------------------------------------------------------
# Brownian increments for each step


class _DrawnIncrements:
    """Increments drawn straight from ``generator`` on the fixed grid: ΔW = σ √|h| Z and, when
    needed, J = ΔW / 2 + √(|h| / 12) Z' (so that I_(1,0) = |h| J has its exact joint law).
    Blocks of steps are drawn at once; the blocking depends only on the grid, so the same
    generator state and grid give the same path."""

    block = 64

    def __init__(self, size, sqrt_h: list[float], levy: bool, dtype, device, generator):
        self.size, self.levy, self.dtype, self.device = size, levy, dtype, device
        self.generator = generator
        self.sqrt_h = sqrt_h
        self.buf: Tensor | None = None
        self.start = 0

    def __call__(self, n: int) -> tuple[Tensor, Tensor | None]:
        k = n - self.start
        if self.buf is None or k >= self.buf.shape[0]:
            self.start, k = n, 0
            stop = min(n + self.block, len(self.sqrt_h))
            scale = torch.tensor(self.sqrt_h[n:stop], dtype=self.dtype, device=self.device)
            scale = scale.view(-1, *([1] * (len(self.size) + 1)))
            z = torch.randn(
                (stop - n, 2 if self.levy else 1, *self.size),
                generator=self.generator,
                dtype=self.dtype,
                device=self.device,
            )
            self.buf = z * scale
        z = self.buf[k]
        if not self.levy:
            return z[0], None
        return z[0], 0.5 * z[0] + z[1] * (1.0 / math.sqrt(12.0))


class _QueriedIncrements:
    """Increments asked of a Brownian object with torchsde's protocol ``bm(ta, tb)``."""

    def __init__(self, bm, grid: list[float], levy: bool, dtype: torch.dtype):
        self.bm, self.grid, self.levy, self.dtype = bm, grid, levy, dtype
        self.reverse = grid[-1] < grid[0]

    def __call__(self, n: int) -> tuple[Tensor, Tensor | None]:
        dw, j = self._query(n)
        if dw.dtype != self.dtype:  # e.g. a float64 path driving a float32 state
            dw, j = dw.to(self.dtype), (None if j is None else j.to(self.dtype))
        return dw, j

    def _query(self, n: int) -> tuple[Tensor, Tensor | None]:
        t0, t1 = self.grid[n], self.grid[n + 1]
        if not self.reverse:
            if not self.levy:
                return self.bm(t0, t1), None
            w, u = self.bm(t0, t1, return_U=True)
            return w, u / (t1 - t0)
        # backwards: ΔW̄ = W(t1) - W(t0) with t1 < t0; I_(1,0) in the backward direction is
        # ∫_{t1}^{t0} (W(s) - W(t0)) ds = U(t1, t0) - |h| (W(t0) - W(t1))
        if not self.levy:
            return -self.bm(t1, t0), None
        w, u = self.bm(t1, t0, return_U=True)
        return -w, u / (t0 - t1) - w


# ---------------------------------------------------------------------------------------------


def _grid(ts: list[float], dt: float) -> tuple[list[float], list[int]]:
    """Steps of at most dt between consecutive ts, landing on every ts exactly.

    Returns the grid and, for each ts[i], its index in the grid."""
    grid, marks = [ts[0]], [0]
    for a, b in zip(ts[:-1], ts[1:]):
        n = max(1, math.ceil(abs(b - a) / dt * (1.0 - 1e-12)))
        grid.extend(a + (b - a) * (k / n) for k in range(1, n))
        grid.append(b)
        marks.append(len(grid) - 1)
    return grid, marks


def _resolve(sde: Any, names: dict[str, str] | None) -> tuple[Callable, Callable, str, str]:
    names = names or {}
    unknown = set(names) - {"drift", "diffusion"}
    if unknown:
        raise ValueError(f"sdeint: names may map 'drift' and 'diffusion' only, got {unknown}")
    f_name, g_name = names.get("drift", "f"), names.get("diffusion", "g")
    f, g = getattr(sde, f_name, None), getattr(sde, g_name, None)
    if not callable(f) or not callable(g):
        raise TypeError(
            f"sdeint: sde must have callable methods {f_name}(t, y) (drift) and "
            f"{g_name}(t, y) (diffusion)"
        )
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"sdeint: sde.noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"sdeint: sde.sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
    return f, g, noise_type, sde_type


def _brownian_size(y0: Tensor, g0: Tensor, noise_type: str) -> torch.Size:
    """Check g's output shape and return the Brownian shape it implies."""
    y_shape = tuple(y0.shape)
    if noise_type == "diagonal":
        want, ok = f"{y_shape} (diagonal: like y)", tuple(g0.shape) == y_shape
        size = y0.shape
    elif noise_type == "scalar":
        want, ok = f"{y_shape + (1,)} (scalar: (*y.shape, 1))", tuple(g0.shape) == y_shape + (1,)
        size = torch.Size((*y0.shape[:-1], 1))
    else:
        ok = g0.dim() == y0.dim() + 1 and tuple(g0.shape[:-1]) == y_shape
        want = f"{y_shape + ('m',)} ({noise_type}: (*y.shape, m))"
        size = torch.Size((*y0.shape[:-1], g0.shape[-1])) if ok else None
    if not ok:
        raise ValueError(f"sdeint: g(t, y) returned shape {tuple(g0.shape)}, expected {want}")
    return size


def sdeint(
    sde: SDEProtocol,
    y0: Tensor,
    ts: Tensor | Sequence[float],
    *,
    bm: Callable[..., Tensor] | None = None,
    method: str | None = None,
    dt: float = 1e-3,
    generator: torch.Generator | None = None,
    names: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
) -> Tensor:
    """Solve dy = f(t, y) dt + g(t, y) dW on a fixed grid; return y at each of ``ts``.

    Args:
        sde: an object with ``f(t, y)``, ``g(t, y)`` (t a 0-d tensor of y0's dtype),
            ``noise_type`` in {"diagonal", "scalar", "additive", "general"} and
            ``sde_type`` in {"ito", "stratonovich"} (torchsde's protocol; see the module
            docstring for g's shape per noise type).
        y0: (..., d) initial state (torchsde requires (batch, d); any leading shape works).
        ts: (T,) output times, strictly increasing, or strictly decreasing to integrate
            backwards in time (reverse-time SDEs).
        bm: the Brownian motion, any callable with torchsde's protocol ``bm(ta, tb)`` =
            W(tb) - W(ta) of the Brownian shape (and ``return_U=True`` for ``srk``), e.g.
            :class:`~genmodels.integrate.brownian.BrownianMotion` (``levy_area=True`` for
            ``srk``) or torchsde's ``BrownianInterval``; it must cover [min ts, max ts].
            Default: increments drawn directly from ``generator`` on the solver's grid
            (much faster than a tree, and reproducible: the same generator state, ts and dt
            give the same path; with ``generator=None`` torch's global generator is used,
            as ``torch.randn`` does).
        method: "euler", "milstein", "heun", "midpoint", "srk" or "reversible_heun"; default by
            the SDE's type
            (module docstring).
        dt: largest step. Between consecutive ``ts`` the solver takes the fewest equal steps
            of at most ``dt`` and lands on every output time exactly (torchsde instead steps
            on t0 + k dt and interpolates).
        generator: source of the default Brownian increments.
        names: {"drift": name, "diffusion": name} to use other methods of ``sde`` than f, g.
        options: {"grad_free": True} makes Milstein derivative-free.

    Returns:
        (T, ..., d) tensor, y at each of ``ts`` (``out[0]`` is ``y0``).

    Raises:
        ValueError: unknown method, method not defined for the SDE type or noise type, wrong
            shapes of f/g/bm outputs, non-monotone ts, dt ≤ 0.
        NonFiniteSolutionError: (an ``ODESolverError`` and a ``FloatingPointError``) the state
            became NaN/inf (names the output time reached).

    Example (geometric Brownian motion, dy = μ y dt + σ y dW, Itô, diagonal noise):
        >>> class GBM:
        ...     noise_type, sde_type = "diagonal", "ito"
        ...     def f(self, t, y): return 0.5 * y
        ...     def g(self, t, y): return 0.3 * y
        >>> ys = sdeint(GBM(), torch.ones(1000, 1), [0.0, 1.0], method="euler",
        ...             dt=0.01, generator=torch.Generator().manual_seed(0))
        >>> ys.shape
        torch.Size([2, 1000, 1])
    """
    f, g, noise_type, sde_type = _resolve(sde, names)
    if not isinstance(y0, Tensor) or not torch.is_floating_point(y0) or y0.dim() < 1:
        raise ValueError("sdeint: y0 must be a floating-point tensor of shape (..., d)")
    method = _default_method(sde_type, noise_type) if method is None else method
    if method not in METHODS:
        raise ValueError(f"sdeint: unknown method {method!r}; expected one of {list(METHODS)}")
    spec = METHODS[method]
    if noise_type not in spec.noise_types:
        raise ValueError(
            f"sdeint: method {method!r} does not support noise_type {noise_type!r} "
            f"(supports {list(spec.noise_types)})"
        )
    if sde_type not in spec.sde_types and noise_type != "additive":
        raise ValueError(
            f"sdeint: method {method!r} solves {'/'.join(spec.sde_types)} SDEs, "
            f"but sde_type is {sde_type!r}"
        )
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"sdeint: dt must be positive and finite, got {dt}")
    options = dict(options or {})
    grad_free = bool(options.pop("grad_free", False))
    if options:
        raise ValueError(f"sdeint: unknown options {sorted(options)}")
    ts = check_times(ts, name="ts", caller="sdeint", tensor=False)
    if len(ts) == 1:
        return y0.unsqueeze(0)

    grid, marks = _grid(ts, dt)
    time_dtype = y0.dtype
    times = torch.tensor(grid, dtype=time_dtype, device=y0.device).unbind(0)
    steps = len(grid) - 1
    hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
    sqrt_h = [math.sqrt(abs(h)) for h in hs]
    if spec.stage is not None:
        st = [a + spec.stage * h for a, h in zip(grid[:-1], hs)]
        stage_times = torch.tensor(st, dtype=time_dtype, device=y0.device).unbind(0)
    else:
        stage_times = [None] * steps

    with torch.no_grad():  # validate shapes once
        f0, g0 = f(times[0], y0), g(times[0], y0)
    if not isinstance(f0, Tensor):
        raise TypeError(f"sdeint: the drift f(t, y) returned {returned(f0)}; expected a tensor "
                        f"of shape {tuple(y0.shape)} like y0")  # fmt: skip
    if f0.shape != y0.shape:
        raise ValueError(f"sdeint: f(t, y) returned shape {tuple(f0.shape)}, "
                         f"expected {tuple(y0.shape)}")  # fmt: skip
    if not isinstance(g0, Tensor):
        raise TypeError(f"sdeint: the diffusion g(t, y) returned {returned(g0)}; expected a "
                        f"tensor (see the noise table for its shape)")  # fmt: skip
    size = _brownian_size(y0, g0, noise_type)

    if bm is None:
        noise = _DrawnIncrements(size, sqrt_h, spec.levy_area, y0.dtype, y0.device, generator)
    else:
        bm_shape = getattr(bm, "shape", None)
        if bm_shape is not None and tuple(bm_shape) != tuple(size):
            raise ValueError(
                f"sdeint: bm has shape {tuple(bm_shape)}, but the SDE needs Brownian motion of "
                f"shape {tuple(size)} for y0 {tuple(y0.shape)} and {noise_type} noise"
            )
        if spec.levy_area and getattr(bm, "levy_area_approximation", "space-time") not in (
            "space-time",
            "davie",
            "foster",
        ):
            raise ValueError(
                f"sdeint: method {method!r} needs the space-time Lévy area (bm(ta, tb, "
                "return_U=True)); create it with BrownianMotion(..., levy_area=True)"
            )
        noise = _QueriedIncrements(bm, grid, spec.levy_area, y0.dtype)

    problem = _Problem(f, g, _NOISE[noise_type], noise_type, sde_type == "ito", grad_free)
    step = spec.step
    out = [y0]
    y = y0
    mark = 1
    for n in range(steps):
        dw, j = noise(n)
        if n == 0 and dw.shape != size:
            raise ValueError(
                f"sdeint: bm returned increments of shape {tuple(dw.shape)}, expected {tuple(size)}"
            )
        y = step(problem, times[n], times[n + 1], stage_times[n], hs[n], sqrt_h[n], y, dw, j)
        if n + 1 == marks[mark]:
            if not bool(torch.isfinite(y).all()):
                raise NonFiniteSolutionError(
                    f"sdeint: the state became non-finite (NaN/inf) by t={grid[n + 1]:g} "
                    f"(output {mark} of {len(ts)}; last finite output at t={ts[mark - 1]:g})",
                    ts[mark - 1],
                )
            out.append(y)
            mark += 1
    return torch.stack(out)
