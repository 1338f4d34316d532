"""Solvers for Itô and Stratonovich stochastic differential equations, fixed-step or adaptive.

The lecture's SDE (section 7; Song et al. 2021, "Score-based generative modeling
through stochastic differential equations")

    dy = f(t, y) dt + g(t, y) dW(t)

is solved by one stepping loop; a method is one short step function (the lines of the
scheme as written in the cited paper) plus a row of :data:`METHODS` saying which SDE types
and noise types it accepts. The interface is torchsde's (Li et al. 2020), argument for
argument: ``sdeint(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names,
logqp, extra, extra_solver_state)`` with ``sde.f(t, y)``, ``sde.g(t, y)`` (or the fused
``f_and_g``, ``g_prod(t, y, v)``, ``f_and_g_prod``), ``sde.noise_type``, ``sde.sde_type``.

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

==========  ============  ==========================  ================================
method      SDE type      noise                       strong order
==========  ============  ==========================  ================================
euler       Itô           any                         0.5 (1.0 additive)
milstein    Itô / Strat.  diagonal, scalar, additive  1.0
srk         Itô           additive (SRA1),            1.5
                          diagonal, scalar (SRI2)
euler_heun  Stratonovich  any                         1.0 (0.5 general)
heun        Stratonovich  any                         1.0 (0.5 general)
midpoint    Stratonovich  any                         1.0 (0.5 general)
log_ode     Stratonovich  any                         1.0 (0.5 general)
rev. Heun   Stratonovich  any (``reversible_heun``)   0.5 (1.0 additive)
==========  ============  ==========================  ================================

(The SDE type is checked as torchsde does: an additive-noise SDE declared Itô is solved by the
Itô methods, one declared Stratonovich by the Stratonovich ones, although the two coincide.)
Default method: additive noise → ``srk``; Itô with diagonal or scalar noise → ``milstein``
(torchsde uses its ``srk`` there; Milstein has strong order 1.0 at a fraction of the
cost); Itô general → ``euler``; Stratonovich → ``heun`` (torchsde: midpoint; same order).

**Adaptive steps** (``adaptive=True``): step doubling, as torchsde. From t, a step of size h
is taken once whole and once as two halves on the *same* Brownian path (so ``bm`` must be
queryable at any time: a :class:`~genmodels.integrate.brownian.BrownianMotion`, or torchsde's
``BrownianInterval``; with ``bm=None`` a
:class:`~genmodels.integrate.brownian.ForwardBrownian` drawn from ``generator`` as the steps
ask for it: each new time costs one draw, from the Brownian bridge between the drawn times
around it, see :func:`_solve_adaptive`). The difference of the two results, in the norm

    err = √(mean_i [(y_i^whole - y_i^halves) / (atol + rtol max(|y_i^whole|, |y_i^halves|))]²),

estimates the local error of the whole step; the two-halves result is kept when err ≤ 1
(or h has reached ``dt_min``), and the next step is h · min(1.4, max(0.2, 0.9 err^(-1/(p+½))))
with p the method's strong order (no growth after a rejection). The local error of a
strong-order-p scheme is O(h^(p+½)) in mean square (Burrage, Burrage & Tian 2004, §6; Lamba
2003, "An adaptive timestepping algorithm for stochastic differential equations"). Every
output time is landed on exactly.

**logqp** (latent SDEs; Li et al. 2020, §5): with a prior drift h(t, y) (``sde.h`` or
``names={"prior_drift": ...}``), the posterior path measure Q (drift f) and the prior P
(drift h, same diffusion g) have, by Girsanov's theorem,

    log dQ/dP = ∫ u · dW + ½ ∫ |u|² dt,   u = g⁻¹ (f - h)   (g⁺ the pseudo-inverse),

so KL(Q ‖ P) = E_Q ½ ∫ |u(t, y_t)|² dt. The solver integrates ½ |u|² alongside y (one extra
state coordinate with zero noise, as torchsde) and returns its increments over each output
interval, shape (T - 1, ...): ``(ys, log_ratio)``.

Time runs either way: with decreasing ``ts`` the solver steps backwards (h < 0), as the
reverse-time SDE of a diffusion model needs (Anderson 1982):

    dy = [f(t, y) - g(t)² ∇_y log p_t(y)] dt + g(t) dW̄(t),   t from T down to 0.

Stepping backwards, the stochastic integral is taken in the backward direction: g is
evaluated at the step's start (the later time) and ΔW̄ is the increment of the path over
the step, W(t_{n+1}) - W(t_n), whose variance is σ² |h|.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ._flat import returned
from .brownian import BrownianMotion, ForwardBrownian, _mix64
from .checks import NonFiniteSolutionError, check_times

__all__ = ["sdeint", "METHODS", "SDEProtocol"]

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")
_NAME_KEYS = {
    "drift": "f",
    "diffusion": "g",
    "prior_drift": "h",
    "diffusion_prod": "g_prod",
    "drift_and_diffusion": "f_and_g",
    "drift_and_diffusion_prod": "f_and_g_prod",
}


class SDEProtocol(Protocol):
    """What :func:`sdeint` needs of ``sde`` (torchsde's convention).

    Instead of ``f`` and ``g`` an SDE may provide the fused ``f_and_g(t, y) -> (f, g)``,
    ``g_prod(t, y, v) -> g v`` or ``f_and_g_prod(t, y, v) -> (f, g v)``; methods that need g
    itself (``milstein``, ``srk``, ``log_ode`` on general noise) then need ``g`` or ``f_and_g``.
    ``h(t, y)``, the prior drift, is needed for ``logqp=True`` only.
    """

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
    if g.shape[-1] == 1:  # one channel: the same products, ~5x faster than a batched matmul
        return g[..., 0] * dw
    return torch.matmul(g, dw.unsqueeze(-1)).squeeze(-1)


_NOISE = {
    "diagonal": _noise_diagonal,
    "scalar": _noise_scalar,
    "additive": _noise_matrix,
    "general": _noise_matrix,
}


@dataclass
class _Problem:
    """Everything a step needs besides the state: the SDE's functions and the noise product.

    ``fg(t, y, v) = (f, G v)`` and ``gp(t, y, v) = G v`` exist for every SDE; ``g`` is None
    when the SDE provides only products (then the methods that need G itself are refused)."""

    f: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor, Tensor], Tensor] | None
    fg: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
    gp: Callable[[Tensor, Tensor, Tensor], Tensor]
    noise: Callable[[Tensor, Tensor], Tensor]
    noise_type: str
    ito: bool
    grad_free: bool
    gdg: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None  # memoised derivative
    plain: bool = False  # fg and gp are ours, from f and g (they never modify v in place)
    # G ΔW is an elementwise product g ⊙ ΔW (diagonal) or g[..., 0] ΔW (scalar, one-channel
    # additive or general), with g from our own ``g``: x + G ΔW is then one fused addcmul
    fused: bool = False
    # f and g for points evaluated once (the interior points of a step-doubling attempt):
    # the SDE's own functions, bypassing the memo of (t, y) that f and g may be
    f_new: Callable[[Tensor, Tensor], Tensor] | None = None
    g_new: Callable[[Tensor, Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.f_new is None:
            self.f_new = self.f.fn if isinstance(self.f, _Memo) else self.f
        if self.g_new is None:
            self.g_new = self.g.fn if isinstance(self.g, _Memo) else self.g


# ---------------------------------------------------------------------------------------------
# the methods: one step each. Arguments: problem, t (start, 0-d tensor), t1 (end), ts (the
# method's extra stage times), h (signed float), sqrt|h|, y, dW, and the method's Lévy area
# (J = I_(1,0) / |h| for srk, the area matrix A for log_ode on general noise, else None).


def _euler_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Euler–Maruyama (Maruyama 1955):  y₁ = y + f(t, y) h + G(t, y) ΔW."""
    f0, gdw = p.fg(t, y, dw)
    return y + f0 * h + gdw


def _milstein_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Milstein (1974), diagonal / scalar noise, componentwise (Kloeden & Platen 1992, 10.3):

        y₁ = y + f h + G ΔW + ½ (∂g/∂y · g) (ΔW² - |h|)      (Itô; Stratonovich: ΔW²)

    ∂g/∂y · g comes from reverse-mode autograd (:func:`_g_and_derivative`). With
    ``options={"grad_free": True}`` the derivative-free form (Kloeden & Platen 11.1.5):
    ∂g/∂y · g ≈ (g(t, ỹ) - g(t, y)) / √|h|, ỹ = y + f h + g √|h|.
    """
    fy = p.f(t, y)
    if p.noise_type == "additive":
        return y + fy * h + p.gp(t, y, dw)
    if p.grad_free:
        gv = _as_vector(p, p.g(t, y))
        dgg = (_as_vector(p, p.g(t, y + fy * h + gv * rh)) - gv) / rh
    elif p.gdg is not None:  # adaptive: shared by the whole and the first half step
        gv, dgg = p.gdg(t, y)
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
        if p.noise_type == "diagonal":
            (diag,) = torch.autograd.grad(
                gy, yy, torch.ones_like(gy), create_graph=training, allow_unused=True
            )
            if diag is None:
                return gy, torch.zeros_like(gy)
            dgg = diag * gy
        else:
            u = torch.zeros_like(gy, requires_grad=True)
            (vjp,) = torch.autograd.grad(gy, yy, u, create_graph=True, allow_unused=True)
            if vjp is None:
                return gy, torch.zeros_like(gy)
            v = gy if training else gy.detach()
            (dgg,) = torch.autograd.grad(vjp, u, v, create_graph=training, allow_unused=True)
            if dgg is None:
                dgg = torch.zeros_like(gy)
    if not training:
        gy, dgg = gy.detach(), dgg.detach()
    return gy, dgg


def _heun_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Stochastic Heun, Stratonovich (Kloeden & Platen 1992, 15.1; Rümelin 1982):

    ỹ = y + f(t, y) h + G(t, y) ΔW
    y₁ = y + ½ [f(t, y) + f(t₁, ỹ)] h + ½ [G(t, y) + G(t₁, ỹ)] ΔW
    """
    if p.fused:
        return _heun_fused(p, y, p.f(t, y), _g_vector(p, t, y), t1, h, dw)
    f0, g0 = p.fg(t, y, dw)
    y_pred = torch.add(y, f0, alpha=h).add_(g0)
    f1, g1 = p.fg(t1, y_pred, dw)
    return torch.add(y, y_pred).add_(f1, alpha=h).add_(g1).mul_(0.5)  # = ½ (y + ỹ + f₁ h + G₁ ΔW)


def _g_vector(p: _Problem, t: Tensor, y: Tensor) -> Tensor:
    """g(t, y) as the factor of the elementwise product G ΔW (``p.fused`` problems)."""
    g = p.g(t, y)
    return g if p.noise_type == "diagonal" else g[..., 0]


def _heun_fused(p: _Problem, y, f0, g0, t1, h, dw):
    """Heun's step from y given f0, g0 at its start (``p.fused``: G ΔW = g ⊙ ΔW), written as
    ỹ = (y + f0 h) + g0 ⊙ ΔW and y₁ = ½(y + ỹ) + ½ f₁ h + ½ g₁ ⊙ ΔW: five passes over the state
    (``addcmul_`` fuses each noise product into its sum; the rounding differs from the
    unfused form by an ulp). ỹ is a new point: f and g there bypass any memo."""
    y_pred = torch.add(y, f0, alpha=h).addcmul_(g0, dw)
    f1, g1 = p.f_new(t1, y_pred), p.g_new(t1, y_pred)
    if p.noise_type != "diagonal":
        g1 = g1[..., 0]
    return torch.lerp(y, y_pred, 0.5).add_(f1, alpha=0.5 * h).addcmul_(g1, dw, value=0.5)


def _heun_double(p: _Problem, t, t_mid, t_next, hs, y, dws):
    """Step doubling with Heun (``p.fused``): the whole step t → t_next and the two halves
    t → t_mid → t_next, from one evaluation of f and g at (t, y). Returns (whole, halves).
    The halves are taken first and the whole step last, so that both results are fresh in
    the cache when the error norm reads them (measured 2-5% faster than the other order on
    sde_speed.py's problem); the values do not depend on the order."""
    f0, g0 = p.f(t, y), _g_vector(p, t, y)
    y_half = _heun_fused(p, y, f0, g0, t_mid, hs[1], dws[1])
    f1, g1 = p.f_new(t_mid, y_half), p.g_new(t_mid, y_half)
    if p.noise_type != "diagonal":
        g1 = g1[..., 0]
    y_two = _heun_fused(p, y_half, f1, g1, t_next, hs[2], dws[2])
    return _heun_fused(p, y, f0, g0, t_next, hs[0], dws[0]), y_two


def _euler_heun_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Euler–Heun, Stratonovich (Burrage, Burrage & Tian 2004, §4): Heun's average for the
    noise term only, Euler for the drift (one drift evaluation per step):

    ỹ = y + G(t, y) ΔW,   y₁ = y + f(t, y) h + ½ [G(t, y) + G(t₁, ỹ)] ΔW
    """
    f0, g0 = p.fg(t, y, dw)
    return y + f0 * h + 0.5 * (g0 + p.gp(t1, y + g0, dw))


def _midpoint_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Stochastic midpoint, Stratonovich (Burrage, Burrage & Tian 2004):

    ỹ = y + ½ f(t, y) h + ½ G(t, y) ΔW,   y₁ = y + f(t + h/2, ỹ) h + G(t + h/2, ỹ) ΔW
    """
    f0, g0 = p.fg(t, y, dw)
    f1, g1 = p.fg(ts[0], y + (0.5 * h) * f0 + 0.5 * g0, dw)
    return y + f1 * h + g1


def _log_ode_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Log-ODE midpoint, Stratonovich (Castell & Gaines 1996, "The ordinary differential
    equation approach to asymptotically efficient schemes for solution of stochastic
    differential equations"; Foster 2020, thesis, ch. 3): over the step, the driving path's
    log-signature (h, ΔW, A), A the Lévy area A_kl = ½ ∫ (W_k dW_l - W_l dW_k), defines the
    vector field  V(z) = f(z) h + G(z) ΔW + Σ_{k<l} [G_k, G_l](z) A_kl  (G_k the k-th column
    of G, [·,·] the Lie bracket), whose flow over unit time is taken by one explicit midpoint
    step (Lie–Trotter splitting of the bracket term):

        ỹ = y + ½ f(t, y) h + ½ G(t, y) ΔW
        y₁ = y + f(t + h/2, ỹ) h + G(t + h/2, ỹ) ΔW + Σ_{l} (∂G_l/∂y)(G A)_l |_(t + h/2, ỹ)

    (Σ_l (∂G_l/∂y)(G A)_l = Σ_{k<l} [G_k, G_l] A_kl as A is antisymmetric.) For diagonal,
    scalar and additive noise the columns commute
    (or A vanishes), the last term is dropped, and the scheme is the midpoint method; on
    general noise A comes from Davie's / Foster's approximation (see :class:`_AreaBrownian`).
    """
    f0, g0 = p.fg(t, y, dw)
    y_mid = y + (0.5 * h) * f0 + 0.5 * g0
    f1, g1 = p.fg(ts[0], y_mid, dw)
    y1 = y + f1 * h + g1
    if j is not None:  # general noise: the Lévy-area term
        y1 = y1 + _dg_ga(p, ts[0], y_mid, j)
    return y1


def _dg_ga(p: _Problem, t: Tensor, y: Tensor, a: Tensor) -> Tensor:
    """Σ_l (∂G_{:,l}/∂y) (G A)_{:,l}: one Jacobian-vector product per Brownian channel, each by
    the double-vjp trick (reverse mode twice); a graph is kept when grad mode is on."""
    create = torch.is_grad_enabled() and p.g(t, y).requires_grad  # a graph is needed
    with torch.enable_grad():
        yy = y if (create and y.requires_grad) else y.detach().requires_grad_()
        g = p.g(t, yy)
        ga = torch.matmul(g, a)
        out = torch.zeros_like(y)
        for col in range(g.shape[-1]):
            gc = g[..., col]
            if not gc.requires_grad:
                continue
            u = torch.zeros_like(gc, requires_grad=True)
            (vjp,) = torch.autograd.grad(gc, yy, u, create_graph=True, allow_unused=True)
            if vjp is None or not vjp.requires_grad:
                continue
            v = ga[..., col] if create else ga[..., col].detach()
            (jv,) = torch.autograd.grad(vjp, u, v, create_graph=create, allow_unused=True)
            if jv is not None:
                out = out + jv
    return out if create else out.detach()


def _sra1_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
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
    if p.g is None:
        h2 = torch.add(y, f0, alpha=0.75 * h).add_(p.gp(t1, y, j), alpha=1.5)
        noise = p.gp(t1, y, dw - j) + p.gp(t, y, j)  # the SDE's own products: not in place
    else:
        g1 = p.g(t1, y)
        h2 = torch.add(y, f0, alpha=0.75 * h).add_(p.noise(g1, j), alpha=1.5)
        noise = p.noise(g1, dw - j).add_(p.noise(p.g(t, y), j))
    f2 = p.f(ts[0], h2)
    return noise.add_(f0, alpha=h / 3.0).add_(f2, alpha=h * (2.0 / 3.0)).add_(y)


def _sri2_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """Rößler's SRI2 for Itô SDEs with diagonal or scalar noise, strong order 1.5 (Rößler 2010,
    Table 5.2; the scheme torchsde calls SRID2). Componentwise, with I₁ = ΔW, J = I_(1,0)/h,
    I₁₁ = (ΔW² - h)/2, I₁₁₁ = (ΔW³ - 3hΔW)/6 and stage values H⁰ (drift) and H¹ (diffusion):

        H⁰₁ = y,                      H¹₁ = y
        H⁰₂ = y + f₁ h,               H¹₂ = y + ¼ f₁ h - ½ g₁ √h
        H⁰₃ = y + ¼(f₁ + f₂) h + (g₁ + ½ g₂) J,      H¹₃ = y + f₁ h + g₁ √h
                                      H¹₄ = y + ¼ f₃ h + (2g₁ - g₂ + ½ g₃) √h
        f_i = f(t + c⁰_i h, H⁰_i),  c⁰ = (0, 1, ½);   g_i = g(t + c¹_i h, H¹_i),  c¹ = (0, ¼, 1, ¼)
        y₁ = y + (f₁/6 + f₂/6 + ⅔ f₃) h + Σ_i g_i (β¹_i I₁ + β²_i I₁₁/√h + β³_i J + β⁴_i I₁₁₁/h)

    with β¹ = (-1, 4/3, 2/3, 0), β² = (1, -4/3, 1/3, 0), β³ = (2, -4/3, -2/3, 0),
    β⁴ = (-2, 5/3, -2/3, 1). Three drift and four diffusion evaluations per step.
    """
    g = p.g
    vec = (lambda v: v) if p.noise_type == "diagonal" else (lambda v: v[..., 0])
    ah = abs(h)
    f1 = p.f(t, y)
    g1 = vec(g(t, y))
    f2 = p.f(t1, y + f1 * h)
    g2 = vec(g(ts[0], y + (0.25 * h) * f1 - (0.5 * rh) * g1))
    f3 = p.f(ts[1], y + (0.25 * h) * (f1 + f2) + (g1 + 0.5 * g2) * j)
    g3 = vec(g(t1, y + f1 * h + g1 * rh))
    g4 = vec(g(ts[0], y + (0.25 * h) * f3 + (2.0 * g1 - g2 + 0.5 * g3) * rh))
    i11 = (dw * dw - ah) * (0.5 / rh)  # I₁₁ / √h
    i111 = dw * (dw * dw - 3.0 * ah) * (1.0 / (6.0 * ah))  # I₁₁₁ / h
    w1 = -dw + i11 + 2.0 * j - 2.0 * i111
    w2 = (4.0 / 3.0) * (dw - i11 - j) + (5.0 / 3.0) * i111
    w3 = (2.0 / 3.0) * (dw - j - i111) + (1.0 / 3.0) * i11
    drift = (f1 + f2) * (1.0 / 6.0) + (2.0 / 3.0) * f3
    return y + drift * h + g1 * w1 + g2 * w2 + g3 * w3 + g4 * i111


def _srk_step(p: _Problem, t, t1, ts, h, rh, y, dw, j):
    """``srk``: SRA1 for additive noise, SRI2 for diagonal and scalar noise (Rößler 2010)."""
    if p.noise_type == "additive":
        return _sra1_step(p, t, t1, (ts[2],), h, rh, y, dw, j)
    return _sri2_step(p, t, t1, ts, h, rh, y, dw, j)


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


def _reversible_heun_init(p: _Problem, t0: Tensor, y0: Tensor) -> tuple:
    """torchsde's extra solver state of reversible Heun: (f(t0, z0), g(t0, z0), z0), z0 = y0."""
    return p.f(t0, y0), p.g(t0, y0), y0


def _reversible_heun_step(p: _Problem, t, t1, ts, h, rh, y, dw, j, extra):
    """:func:`reversible_heun_step` with (f, g, z) carried as the solver state."""
    f0, g0, z = extra
    y1, z1, f1, g1 = reversible_heun_step(p.f, p.g, p.noise, t1, h, y, z, f0, g0, dw)
    return y1, (f1, g1, z1)


@dataclass(frozen=True)
class _Method:
    """A method: its step, the SDE and noise types it accepts, where its stage times sit (as
    fractions of h), the Lévy area it needs ("U": the space-time area I_(1,0), passed to the
    step as J = I_(1,0)/|h|; "A": the area matrix, on general noise only), which Brownian
    ``levy_area_approximation`` values it accepts (None: any), its strong order per noise type
    and whether it needs g itself (not only the products G v).

    ``init_extra`` (methods that carry state between steps, e.g. reversible Heun): None for a
    stateless step ``step(...) -> y``; else ``init_extra(problem, t0, y0) -> state`` and the
    step is ``step(..., extra) -> (y, extra)``.
    """

    step: Callable[..., Any]
    sde_types: tuple[str, ...]
    noise_types: tuple[str, ...]
    strong_order: dict[str, float]
    stages: tuple[float, ...] = ()
    levy: str | None = None
    levy_approximations: tuple[str, ...] | None = None
    needs_g: bool = False
    init_extra: Callable[..., Any] | None = None
    # adaptive: the whole step and the two halves of one attempt in one call, for fused
    # problems (shares the start's evaluation without the memo's lookups)
    double: Callable[..., Any] | None = None


def _orders(general: float, others: float, additive: float | None = None) -> dict[str, float]:
    return {
        "diagonal": others,
        "scalar": others,
        "additive": others if additive is None else additive,
        "general": general,
    }


METHODS: dict[str, _Method] = {
    "euler": _Method(_euler_step, ("ito",), NOISE_TYPES, _orders(0.5, 0.5, 1.0)),
    "milstein": _Method(
        _milstein_step,
        SDE_TYPES,
        ("diagonal", "scalar", "additive"),
        _orders(1.0, 1.0),
        needs_g=True,
    ),
    "srk": _Method(
        _srk_step,
        ("ito",),
        ("diagonal", "scalar", "additive"),
        _orders(1.5, 1.5),
        stages=(0.25, 0.5, 0.75),
        levy="U",
        levy_approximations=("space-time", "davie", "foster"),
        needs_g=True,
    ),
    "euler_heun": _Method(_euler_heun_step, ("stratonovich",), NOISE_TYPES, _orders(0.5, 1.0)),
    "heun": _Method(
        _heun_step, ("stratonovich",), NOISE_TYPES, _orders(0.5, 1.0), double=_heun_double
    ),
    "midpoint": _Method(
        _midpoint_step, ("stratonovich",), NOISE_TYPES, _orders(0.5, 1.0), stages=(0.5,)
    ),
    "log_ode": _Method(
        _log_ode_step,
        ("stratonovich",),
        NOISE_TYPES,
        _orders(0.5, 1.0),
        stages=(0.5,),
        levy="A",
        levy_approximations=("davie", "foster"),
    ),
    "reversible_heun": _Method(
        _reversible_heun_step,
        ("stratonovich",),
        NOISE_TYPES,
        _orders(0.5, 0.5, 1.0),
        needs_g=True,
        init_extra=_reversible_heun_init,
    ),
}


def _default_method(sde_type: str, noise_type: str) -> str:
    if noise_type == "additive":
        return "srk" if sde_type == "ito" else "heun"
    if sde_type == "stratonovich":
        return "heun"
    return "milstein" if noise_type in ("diagonal", "scalar") else "euler"


# ---------------------------------------------------------------------------------------------
# Brownian increments for each step


def _foster_area(w: Tensor, hh: Tensor, h: float, z: Tensor) -> Tensor:
    """Lévy area matrix A (..., m, m) of an interval of length h from its increment W and
    space-time Lévy area H = U/h - W/2 (both (..., m)) and standard normals z (..., m, m):

        A ≈ H Wᵀ - W Hᵀ + σ_kl (Z - Zᵀ),   σ_kl² = (h/10) (h/10 + H_k² + H_l²)

    Davie's approximation (Davie 2014, "KMT theory applied to approximations of SDE") with
    Foster's variance correction (Foster 2020, thesis, §4.1): it matches the conditional
    variance of the true area given (W, H), so log-ODE schemes keep their strong order."""
    area = hh.unsqueeze(-1) * w.unsqueeze(-2) - w.unsqueeze(-1) * hh.unsqueeze(-2)
    h10 = 0.1 * abs(h)
    h2 = hh * hh
    std = (h10 * (h10 + h2.unsqueeze(-1) + h2.unsqueeze(-2))).sqrt()
    return area + std * (z - z.transpose(-1, -2))


class _DrawnIncrements:
    """Increments drawn straight from ``generator`` on the fixed grid: ΔW = σ √|h| Z and, when
    needed, J = ΔW / 2 + √(|h| / 12) Z' (so that I_(1,0) = |h| J has its exact joint law), or
    the Lévy area matrix by :func:`_foster_area`. Blocks of steps are drawn at once; the
    blocking depends only on the grid, so the same generator state and grid give the same
    path."""

    block = 64

    def __init__(self, size, sqrt_h: list[float], levy: str | None, dtype, device, generator):
        self.size, self.levy, self.dtype, self.device = size, levy, dtype, device
        self.generator = generator
        self.sqrt_h = sqrt_h
        self.buf: Tensor | None = None
        self.area: Tensor | None = None
        self.start = 0

    def __call__(self, n: int) -> tuple[Tensor, Tensor | None]:
        k = n - self.start
        if self.buf is None or k >= self.buf.shape[0]:
            self.start, k = n, 0
            stop = min(n + self.block, len(self.sqrt_h))
            scale = torch.tensor(self.sqrt_h[n:stop], dtype=self.dtype, device=self.device)
            scale = scale.view(-1, *([1] * (len(self.size) + 1)))
            z = torch.randn(
                (stop - n, 1 if self.levy is None else 2, *self.size),
                generator=self.generator,
                dtype=self.dtype,
                device=self.device,
            )
            self.buf = z * scale
            if self.levy == "A":
                m = self.size[-1]
                self.area = torch.randn(
                    (stop - n, *self.size, m),
                    generator=self.generator,
                    dtype=self.dtype,
                    device=self.device,
                )
        z = self.buf[k]
        if self.levy is None:
            return z[0], None
        j = 0.5 * z[0] + z[1] * (1.0 / math.sqrt(12.0))
        if self.levy == "U":
            return z[0], j
        h = self.sqrt_h[n] ** 2
        return z[0], _foster_area(z[0], j - 0.5 * z[0], h, self.area[k])


def _query(bm, levy: str | None, ta: float, tb: float, dtype) -> tuple[Tensor, Tensor | None]:
    """(ΔW, levy) over [ta, tb] (tb < ta: the backward increment) from a Brownian object with
    torchsde's protocol; levy is J = I_(1,0)/|h| ("U"), the area matrix ("A") or None."""
    if tb > ta:
        if levy is None:
            out = bm(ta, tb), None
        elif levy == "U":
            w, u = bm(ta, tb, return_U=True)
            out = w, u / (tb - ta)
        else:
            out = bm(ta, tb, return_A=True)
    else:
        # backwards: ΔW̄ = W(tb) - W(ta) with tb < ta; I_(1,0) in the backward direction is
        # ∫_tb^ta (W(s) - W(ta)) ds = U(tb, ta) - |h| (W(ta) - W(tb)); the area of the
        # reversed path is -A
        if levy is None:
            out = -bm(tb, ta), None
        elif levy == "U":
            w, u = bm(tb, ta, return_U=True)
            out = -w, u / (ta - tb) - w
        else:
            w, a = bm(tb, ta, return_A=True)
            out = -w, -a
    dw, lv = out
    if dw.dtype != dtype:  # e.g. a float64 path driving a float32 state
        dw, lv = dw.to(dtype), (None if lv is None else lv.to(dtype))
    return dw, lv


class _QueriedIncrements:
    """Increments asked of a Brownian object with torchsde's protocol ``bm(ta, tb)``."""

    def __init__(self, bm, grid: list[float], levy: str | None, dtype: torch.dtype):
        self.bm, self.grid, self.levy, self.dtype = bm, grid, levy, dtype

    def __call__(self, n: int) -> tuple[Tensor, Tensor | None]:
        return _query(self.bm, self.levy, self.grid[n], self.grid[n + 1], self.dtype)


class _AreaBrownian:
    """A :class:`BrownianMotion` with space-time Lévy area that also answers ``return_A`` by
    Foster's approximation (:func:`_foster_area`); the normals of an interval's area are drawn
    from a seed hashed from the path's seed and the interval's end points, so a query is
    reproducible. It lets a ``BrownianMotion`` drive ``log_ode`` on general noise
    (``sdeint(..., bm=_AreaBrownian(BrownianMotion(..., levy_area=True)))``)."""

    levy_area_approximation = "foster"

    def __init__(self, bm: BrownianMotion):
        self.bm = bm
        self.shape = bm.shape
        self.gen = torch.Generator(device=bm.device)

    def __call__(self, ta, tb, return_U=False, return_A=False):
        w, u = self.bm(ta, tb, return_U=True)
        if not return_A:
            return (w, u) if return_U else w
        h = float(tb) - float(ta)
        key = _mix64(self.bm.seed ^ _mix64(hash((float(ta), float(tb))) & ((1 << 64) - 1)))
        self.gen.manual_seed(key & ((1 << 63) - 1))
        z = torch.randn((*w.shape, w.shape[-1]), generator=self.gen, dtype=w.dtype)
        a = _foster_area(w, u / h - 0.5 * w, h, z.to(w.device))
        return (w, u, a) if return_U else (w, a)


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


@dataclass
class _Functions:
    """The SDE's functions, looked up once (torchsde's names, or those of ``names``)."""

    f: Callable | None
    g: Callable | None
    fg: Callable
    gp: Callable
    h: Callable | None
    noise_type: str
    sde_type: str
    plain: bool = False  # fg and gp are built from f and g (so caching f and g caches them)


class _Memo:
    """``fn(t, y)`` remembering its last few calls by the identity of (t, y): the whole step
    and the first half step of an adaptive attempt start from the same (t, y) objects, and so
    do the retries after a rejection, so their first drift and diffusion evaluations are
    shared (the steps never modify their inputs in place). Least recently used first out: the
    start of a step survives any number of retries."""

    size = 6

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls: list[tuple[Tensor, Tensor, Any]] = []

    def __call__(self, t: Tensor, y: Tensor):
        calls = self.calls
        for k, call in enumerate(calls):
            if call[0] is t and call[1] is y:
                if k != len(calls) - 1:
                    calls.append(calls.pop(k))
                return call[2]
        out = self.fn(t, y)
        self.calls.append((t, y, out))
        if len(self.calls) > self.size:
            del self.calls[0]
        return out


def _memoised(fns: _Functions) -> _Functions:
    f, g = _Memo(fns.f), _Memo(fns.g)
    noise = _NOISE[fns.noise_type]
    fg = lambda t, y, v: (f(t, y), noise(g(t, y), v))
    gp = lambda t, y, v: noise(g(t, y), v)
    return _Functions(f, g, fg, gp, fns.h, fns.noise_type, fns.sde_type, True)


def _lookup(sde: Any, names: dict[str, str] | None) -> dict[str, Callable | None]:
    names = dict(names or {})
    unknown = set(names) - set(_NAME_KEYS)
    if unknown:
        raise ValueError(
            f"sdeint: names may map {sorted(_NAME_KEYS)} to method names, got {sorted(unknown)}"
        )
    out = {}
    for key, default in _NAME_KEYS.items():
        fn = getattr(sde, names.get(key, default), None)
        out[default] = fn if callable(fn) else None
    return out


def _resolve(sde: Any, names: dict[str, str] | None) -> _Functions:
    """f, g (when available), (f, G v), G v and the prior drift h, following torchsde's rules:
    ``f_and_g_prod`` if given, else ``f`` with ``g_prod``, else ``f_and_g`` (or ``f`` and ``g``)
    followed by the noise product."""
    fns = _lookup(sde, names)
    noise_type = getattr(sde, "noise_type", None)
    sde_type = getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"sdeint: sde.noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"sdeint: sde.sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
    f, g, fandg = fns["f"], fns["g"], fns["f_and_g"]
    g_prod, fandgp = fns["g_prod"], fns["f_and_g_prod"]
    if f is None and fandg is None and fandgp is None:
        raise TypeError(
            "sdeint: sde must have a callable drift: f(t, y) (or f_and_g(t, y), or "
            "f_and_g_prod(t, y, v); names={'drift': ...} picks another method name)"
        )
    if g is None and fandg is None and g_prod is None and fandgp is None:
        raise TypeError(
            "sdeint: sde must have a callable diffusion: g(t, y) (or f_and_g(t, y), g_prod(t, "
            "y, v) or f_and_g_prod(t, y, v); names={'diffusion': ...} picks another name)"
        )
    noise = _NOISE[noise_type]
    if f is None and fandg is not None:
        f = lambda t, y: fandg(t, y)[0]
    if g is None and fandg is not None:
        g = lambda t, y: fandg(t, y)[1]
    if fandgp is not None:
        fg = fandgp
    elif f is not None and g_prod is not None:
        fg = lambda t, y, v: (f(t, y), g_prod(t, y, v))
    elif fandg is not None:

        def fg(t, y, v):
            f0, g0 = fandg(t, y)
            return f0, noise(g0, v)

    else:
        fg = lambda t, y, v: (f(t, y), noise(g(t, y), v))
    if g_prod is not None:
        gp = g_prod
    elif g is not None:
        gp = lambda t, y, v: noise(g(t, y), v)
    else:
        gp = lambda t, y, v: fandgp(t, y, v)[1]
    plain = fns["f_and_g_prod"] is None and fns["g_prod"] is None and fns["f_and_g"] is None
    return _Functions(f, g, fg, gp, fns["h"], noise_type, sde_type, plain)


def _logqp(fns: _Functions) -> _Functions:
    """The SDE on the state (y, L) with dL = ½ |u|² dt, u = g⁻¹ (f - h), and no noise on L
    (module docstring; torchsde's construction): diagonal noise gets one more Brownian
    channel (with zero diffusion), the others one more row of zeros in g."""
    f0, g0, h0 = fns.f, fns.g, fns.h
    if f0 is None or g0 is None or h0 is None:
        raise ValueError(
            "sdeint: logqp=True needs the drift f, the diffusion g and the prior drift h "
            "(sde.h, or names={'prior_drift': ...})"
        )
    diagonal = fns.noise_type == "diagonal"
    noise = _NOISE[fns.noise_type]

    def half_u2(f, g, h):
        if diagonal:
            eps = torch.where(g >= 0, 1e-7, -1e-7).to(g.dtype)
            u = (f - h) / torch.where(g.abs() > 1e-7, g, eps)
        else:
            u = torch.matmul(torch.linalg.pinv(g), (f - h).unsqueeze(-1)).squeeze(-1)
        return 0.5 * (u * u).sum(-1, keepdim=True)

    def aug_g(g):
        if diagonal:
            return torch.cat([g, g.new_zeros((*g.shape[:-1], 1))], dim=-1)
        return torch.cat([g, g.new_zeros((*g.shape[:-2], 1, g.shape[-1]))], dim=-2)

    def fa(t, y):
        x = y[..., :-1]
        f, g = f0(t, x), g0(t, x)
        return torch.cat([f, half_u2(f, g, h0(t, x))], dim=-1)

    def ga(t, y):
        return aug_g(g0(t, y[..., :-1]))

    def fga(t, y, v):
        x = y[..., :-1]
        f, g = f0(t, x), g0(t, x)
        return torch.cat([f, half_u2(f, g, h0(t, x))], dim=-1), noise(aug_g(g), v)

    gpa = lambda t, y, v: noise(ga(t, y), v)
    return _Functions(fa, ga, fga, gpa, None, fns.noise_type, fns.sde_type)


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


def _check_method(method: str, fns: _Functions) -> _Method:
    if method not in METHODS:
        raise ValueError(f"sdeint: unknown method {method!r}; expected one of {list(METHODS)}")
    spec = METHODS[method]
    if fns.noise_type not in spec.noise_types:
        raise ValueError(
            f"sdeint: method {method!r} does not support noise_type {fns.noise_type!r} "
            f"(supports {list(spec.noise_types)})"
        )
    if fns.sde_type not in spec.sde_types:
        raise ValueError(
            f"sdeint: method {method!r} solves {'/'.join(spec.sde_types)} SDEs, "
            f"but sde_type is {fns.sde_type!r}"
        )
    needs_g = spec.needs_g or (method == "log_ode" and fns.noise_type == "general")
    if needs_g and (fns.g is None or fns.f is None):
        raise ValueError(
            f"sdeint: method {method!r} needs the drift f and the diffusion g themselves "
            "(sde.f and sde.g, or sde.f_and_g), not only the products g_prod / f_and_g_prod"
        )
    return spec


def _check_shapes(fns: _Functions, t0: Tensor, y0: Tensor, bm) -> torch.Size:
    """Evaluate the SDE once at (t0, y0): shapes of f and g, and the Brownian shape."""
    with torch.no_grad():
        f0 = fns.f(t0, y0) if fns.f is not None else None
        g0 = fns.g(t0, y0) if fns.g is not None else None
    if fns.f is not None:
        if not isinstance(f0, Tensor):
            raise TypeError(f"sdeint: the drift f(t, y) returned {returned(f0)}; expected a "
                            f"tensor of shape {tuple(y0.shape)} like y0")  # fmt: skip
        if f0.shape != y0.shape:
            raise ValueError(f"sdeint: f(t, y) returned shape {tuple(f0.shape)}, "
                             f"expected {tuple(y0.shape)}")  # fmt: skip
    if fns.g is not None:
        if not isinstance(g0, Tensor):
            raise TypeError(f"sdeint: the diffusion g(t, y) returned {returned(g0)}; expected a "
                            f"tensor (see the noise table for its shape)")  # fmt: skip
        return _brownian_size(y0, g0, fns.noise_type)
    # only products G v: the Brownian shape follows from y (diagonal, scalar) or from bm
    if fns.noise_type == "diagonal":
        size = y0.shape
    elif fns.noise_type == "scalar":
        size = torch.Size((*y0.shape[:-1], 1))
    elif bm is not None and getattr(bm, "shape", None) is not None:
        size = torch.Size(bm.shape)
    else:
        raise ValueError(
            "sdeint: cannot infer the number of Brownian channels of an SDE that gives only "
            "g_prod / f_and_g_prod: pass bm, or give g (or f_and_g)"
        )
    with torch.no_grad():
        v = torch.zeros(size, dtype=y0.dtype, device=y0.device)
        f1, gv = fns.fg(t0, y0, v)
    for name, val in (("drift", f1), ("diffusion-vector product", gv)):
        if not isinstance(val, Tensor) or val.shape != y0.shape:
            got = tuple(val.shape) if isinstance(val, Tensor) else returned(val)
            raise ValueError(f"sdeint: the {name} returned {got}, expected {tuple(y0.shape)}")
    return size


def sdeint(
    sde: SDEProtocol,
    y0: Tensor,
    ts: Tensor | Sequence[float],
    bm: Callable[..., Any] | None = None,
    method: str | None = None,
    dt: float = 1e-3,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    dt_min: float = 1e-5,
    options: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: Any = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor | tuple:
    """Solve dy = f(t, y) dt + g(t, y) dW; return y at each of ``ts`` (torchsde's signature).

    Args:
        sde: an object with ``f(t, y)``, ``g(t, y)`` (t a 0-d tensor of y0's dtype),
            ``noise_type`` in {"diagonal", "scalar", "additive", "general"} and
            ``sde_type`` in {"ito", "stratonovich"} (torchsde's protocol; see the module
            docstring for g's shape per noise type). Instead of f and g it may give
            ``f_and_g(t, y)``, ``g_prod(t, y, v)``, ``f_and_g_prod(t, y, v)``
            (:class:`SDEProtocol`).
        y0: (..., d) initial state (torchsde requires (batch, d); any leading shape works).
        ts: (T,) output times, strictly increasing, or strictly decreasing to integrate
            backwards in time (reverse-time SDEs).
        bm: the Brownian motion, any callable with torchsde's protocol ``bm(ta, tb)`` =
            W(tb) - W(ta) of the Brownian shape (and ``return_U=True`` for ``srk``,
            ``return_A=True`` for ``log_ode``), e.g.
            :class:`~genmodels.integrate.brownian.BrownianMotion` (``levy_area=True`` for
            ``srk``) or torchsde's ``BrownianInterval``; it must cover [min ts, max ts].
            Default: increments drawn directly from ``generator`` on the solver's grid
            (much faster than a tree, and reproducible: the same generator state, ts and dt
            give the same path; with ``generator=None`` torch's global generator is used,
            as ``torch.randn`` does); with ``adaptive=True`` a path drawn from ``generator``
            at the times the steps ask for (:class:`~genmodels.integrate.brownian.
            ForwardBrownian`; the same generator state and problem give the same path).
        method: one of :data:`METHODS` ("euler", "milstein", "srk", "euler_heun", "heun",
            "midpoint", "log_ode", "reversible_heun"); default by the SDE's type (module
            docstring).
        dt: the step (fixed steps), or the first step (adaptive). Fixed steps: between
            consecutive ``ts`` the solver takes the fewest equal steps of at most ``dt`` and
            lands on every output time exactly (torchsde instead steps on t0 + k dt and
            interpolates).
        adaptive: step doubling with error control (module docstring).
        rtol, atol: the relative and absolute tolerances of ``adaptive``.
        dt_min: the smallest adaptive step; a step that would need less is taken at
            ``dt_min`` with a warning.
        options: {"grad_free": True} makes Milstein derivative-free.
        names: other method names of ``sde``: {"drift", "diffusion", "prior_drift",
            "diffusion_prod", "drift_and_diffusion", "drift_and_diffusion_prod"} → name.
        logqp: also return the KL penalty's increments (module docstring).
        extra: also return the solver's internal state after the last step (``()`` for the
            methods that keep none; (f, g, z) for ``reversible_heun``, as torchsde), to resume
            a solve with ``extra_solver_state``.
        extra_solver_state: that state, to start from (default: the method's initial state).
        generator: source of the default Brownian increments (keyword only, ours).

    Returns:
        ``ys``, a (T, ..., d) tensor, y at each of ``ts`` (``ys[0]`` is ``y0``); with
        ``logqp`` also ``log_ratio`` (T - 1, ...); with ``extra`` also the solver state:
        ``ys``, ``(ys, log_ratio)``, ``(ys, state)`` or ``(ys, log_ratio, state)``.

    Raises:
        ValueError: unknown method, method not defined for the SDE type or noise type, wrong
            shapes of f/g/bm outputs, a Brownian motion without the Lévy area a method needs,
            non-monotone ts, dt ≤ 0, bad tolerances, logqp without a prior drift.
        TypeError: sde without a drift or a diffusion, or f/g returning a non-tensor.
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
    fns = _resolve(sde, names)
    if not isinstance(y0, Tensor) or not torch.is_floating_point(y0) or y0.dim() < 1:
        raise ValueError("sdeint: y0 must be a floating-point tensor of shape (..., d)")
    if logqp:
        fns = _logqp(fns)
        y0 = torch.cat([y0, y0.new_zeros((*y0.shape[:-1], 1))], dim=-1)
    method = _default_method(fns.sde_type, fns.noise_type) if method is None else method
    if adaptive and method == "euler" and fns.noise_type != "additive":  # before the checks,
        warnings.warn(  # as torchsde
            "sdeint: adaptive steps with Euler–Maruyama on non-additive noise need not "
            "converge to the solution (path-dependent steps bias the Itô integral; Gaines "
            "& Lyons 1997); use milstein or srk",
            UserWarning,
            stacklevel=2,
        )
    spec = _check_method(method, fns)
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"sdeint: dt must be positive and finite, got {dt}")
    if adaptive:
        rtol, atol, dt_min = float(rtol), float(atol), float(dt_min)
        if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
            raise ValueError(f"sdeint: need rtol, atol >= 0, not both 0; got {rtol}, {atol}")
        if not (dt_min > 0 and math.isfinite(dt_min)):
            raise ValueError(f"sdeint: dt_min must be positive and finite, got {dt_min}")
    options = dict(options or {})
    grad_free = bool(options.pop("grad_free", False))
    if options:
        raise ValueError(f"sdeint: unknown options {sorted(options)}; expected 'grad_free'")
    ts = check_times(ts, name="ts", caller="sdeint", tensor=False)

    time_dtype = y0.dtype
    t0 = torch.tensor(ts[0], dtype=time_dtype, device=y0.device)
    # adaptive: f and g remembered by the identity of (t, y) (_Memo); with grad mode off, the
    # shape check's evaluation at (t0, y0) is the first attempt's too (same mode, same objects)
    memo = adaptive and fns.plain
    if memo and not torch.is_grad_enabled():
        fns, memo = _memoised(fns), False
    size = _check_shapes(fns, t0, y0, bm)
    levy = spec.levy if (spec.levy != "A" or fns.noise_type == "general") else None
    if bm is not None:
        bm_shape = getattr(bm, "shape", None)
        if bm_shape is not None and tuple(bm_shape) != tuple(size):
            raise ValueError(
                f"sdeint: bm has shape {tuple(bm_shape)}, but the SDE needs Brownian motion of "
                f"shape {tuple(size)} for y0 {tuple(y0.shape)} and {fns.noise_type} noise"
                + (" (logqp adds one state coordinate)" if logqp else "")
            )
        approx = getattr(bm, "levy_area_approximation", None)
        if spec.levy_approximations is not None and approx is not None:
            if approx not in spec.levy_approximations:
                fix = (
                    "create it with BrownianMotion(..., levy_area=True)"
                    if spec.levy == "U"
                    else "e.g. torchsde.BrownianInterval(..., levy_area_approximation='foster'), "
                    "or bm=None"
                )
                raise ValueError(
                    f"sdeint: method {method!r} needs a Brownian motion with Lévy area "
                    f"approximation in {list(spec.levy_approximations)}, got {approx!r} "
                    f"(levy_area=True gives 'space-time'); {fix}"
                )

    if memo:
        fns = _memoised(fns)
    problem = _Problem(
        fns.f, fns.g, fns.fg, fns.gp, _NOISE[fns.noise_type], fns.noise_type,
        fns.sde_type == "ito", grad_free, plain=fns.plain,
        fused=fns.plain and fns.g is not None and (fns.noise_type == "diagonal" or size[-1] == 1),
    )  # fmt: skip
    if adaptive and fns.plain and method == "milstein":
        problem.gdg = _Memo(lambda t, y: _g_and_derivative(problem, t, y))
    state = extra_solver_state
    if state is None:
        state = () if spec.init_extra is None else spec.init_extra(problem, t0, y0)
    if len(ts) == 1:
        ys = y0.unsqueeze(0)
    elif adaptive:
        ys, state = _solve_adaptive(
            spec, problem, bm, generator, levy, ts, t0, y0, dt, rtol, atol, dt_min, state, size
        )
    else:
        ys, state = _solve_fixed(spec, problem, bm, levy, ts, y0, dt, generator, state, size)

    if logqp:
        log_ratio = ys[1:, ..., -1] - ys[:-1, ..., -1]
        ys = ys[..., :-1]
        return (ys, log_ratio, state) if extra else (ys, log_ratio)
    return (ys, state) if extra else ys


def _nonfinite(t: float, mark: int, ts: list[float]) -> NonFiniteSolutionError:
    return NonFiniteSolutionError(
        f"sdeint: the state became non-finite (NaN/inf) by t={t:g} "
        f"(output {mark} of {len(ts)}; last finite output at t={ts[mark - 1]:g})",
        ts[mark - 1],
    )


def _solve_fixed(spec, problem, bm, levy, ts, y0, dt, generator, state, size):
    """The fixed-step loop: the grid of :func:`_grid`, one step per grid interval."""
    grid, marks = _grid(ts, dt)
    dtype, device = y0.dtype, y0.device
    times = torch.tensor(grid, dtype=dtype, device=device).unbind(0)
    steps = len(grid) - 1
    hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
    sqrt_h = [math.sqrt(abs(h)) for h in hs]
    if spec.stages:
        cols = [
            torch.tensor([a + c * h for a, h in zip(grid[:-1], hs)], dtype=dtype, device=device)
            for c in spec.stages
        ]
        stage_times = list(zip(*(c.unbind(0) for c in cols)))
    else:
        stage_times = [()] * steps
    if bm is None:
        noise = _DrawnIncrements(size, sqrt_h, levy, dtype, device, generator)
    else:
        noise = _QueriedIncrements(bm, grid, levy, dtype)

    step = spec.step
    stateful = spec.init_extra is not None
    out = [y0]
    y = y0
    mark = 1
    for n in range(steps):
        dw, j = noise(n)
        if n == 0 and dw.shape != size:
            raise ValueError(
                f"sdeint: bm returned increments of shape {tuple(dw.shape)}, expected {tuple(size)}"
            )
        args = (problem, times[n], times[n + 1], stage_times[n], hs[n], sqrt_h[n], y, dw, j)
        if stateful:
            y, state = step(*args, state)
        else:
            y = step(*args)
        if n + 1 == marks[mark]:
            if not bool(torch.isfinite(y).all()):
                raise _nonfinite(grid[n + 1], mark, ts)
            out.append(y)
            mark += 1
    return torch.stack(out), state


def _error_ratio(y1: Tensor, y2: Tensor, rtol: float, atol: float) -> float:
    """RMS of (y1 - y2) / max(atol + rtol max(|y1|, |y2|), 1e-7) (torchsde's and Hairer's norm,
    with a floor on the scale where atol < 1e-7).

    Computed as RMS[(y1 - y2) / (max(|y1|, |y2|) + atol/rtol)] / rtol: seven passes over the
    state and two new tensors (the difference and the scale), the same value up to rounding."""
    if torch.is_grad_enabled():
        with torch.no_grad():
            return _error_ratio(y1, y2, rtol, atol)
    n = math.sqrt(max(y1.numel(), 1))
    d = torch.sub(y1, y2)
    if rtol == 0.0:
        return float(torch.linalg.vector_norm(d)) / (max(atol, 1e-7) * n)
    scale = y1.abs()
    torch.maximum(scale, y2.abs(), out=scale).add_(atol / rtol)
    if atol < 1e-7:
        scale.clamp_min_(1e-7 / rtol)
    return float(torch.linalg.vector_norm(d.div_(scale))) / (rtol * n)


def _solve_adaptive(
    spec, problem, bm, generator, levy, ts, t0, y0, dt, rtol, atol, dt_min, state, size
):
    """Step doubling (module docstring): each attempted step is taken whole and in two halves
    on the same Brownian path; the halves' result is kept when the two agree to tolerance.

    Steps go anywhere (the controller's h, cut to land on every output time). Without ``bm``
    the path is a :class:`~genmodels.integrate.brownian.ForwardBrownian` drawn from
    ``generator`` as the steps ask for it, in the direction of the solve (τ = ±t, so a
    backward solve is driven by the increments of V(τ) = W(-τ), the convention of
    :func:`_query`): an attempt draws its end point (an increment past the last drawn point)
    and its midpoint (a bridge), a retry after a rejection two more bridge points, and an
    accepted step forgets the points before it. On general noise ``log_ode``'s Lévy area is
    Foster's approximation of each queried interval (:func:`_foster_area`), its normals drawn
    from ``generator`` too."""
    dtype, device = y0.dtype, y0.device
    direction = 1.0 if ts[-1] > ts[0] else -1.0
    exponent = -1.0 / (spec.strong_order[problem.noise_type] + 0.5)
    step, stateful = spec.step, spec.init_extra is not None
    warned = False

    if bm is None:
        path = ForwardBrownian(direction * ts[0], size, levy_area=levy is not None, dtype=dtype,
                               device=device, generator=generator)  # fmt: skip
        forget = path.advance

        def query(ta, tb):
            if levy is None:
                if problem.plain:  # dW is read only (the steps and our products of g)
                    return path._increment(direction * ta, direction * tb), None
                return path(direction * ta, direction * tb), None
            h = abs(tb - ta)
            w, u = path(direction * ta, direction * tb, return_U=True)
            if levy == "U":
                return w, u * (1.0 / h)
            z = torch.randn((*size, size[-1]), generator=generator, dtype=dtype, device=device)
            return w, _foster_area(w, u * (1.0 / h) - 0.5 * w, h, z)
    else:
        forget = None
        query = lambda ta, tb: _query(bm, levy, ta, tb, dtype)

    stage_fracs = spec.stages
    n_st = len(stage_fracs)
    double = spec.double if problem.fused and not stateful and not n_st else None
    if bm is None and levy is None and problem.plain:  # the increments are read only

        def doubling(ta, tm, tb):
            return path._doubling(direction * ta, direction * tm, direction * tb)
    else:

        def doubling(ta, tm, tb):
            return query(ta, tb)[0], query(ta, tm)[0], query(tm, tb)[0]

    def one(ta, tb, y, st, t_a, t_b, stages):
        h = tb - ta
        dw, j = query(ta, tb)
        args = (problem, t_a, t_b, stages, h, math.sqrt(abs(h)), y, dw, j)
        return step(*args, st) if stateful else (step(*args), st)

    def attempt(t, t_mid, t_next, y, h, st, t_start, mark):
        """One step-doubling attempt from (t, y), ``t_start`` the tensor of t, towards output
        ``mark``: (accepted, y, state, next proposed step, the tensor of t_next)."""
        nonlocal warned
        # the attempt's other time tensors from one list. The whole step and the first half
        # share the object of t, and so does a retry after a rejection, and the first attempt
        # shares sdeint's t0 with the shape check (see _Memo)
        if double is not None:  # a method without stages or state, on a fused problem
            t_m, t_n = torch.tensor([t_mid, t_next], dtype=dtype, device=device).unbind(0)
            dws = doubling(t, t_mid, t_next)
            hs = (t_next - t, t_mid - t, t_next - t_mid)
            y_whole, y_two = double(problem, t_start, t_m, t_n, hs, y, dws)
            st_two = st
        else:
            times = [t_mid, t_next]
            for a, b in ((t, t_next), (t, t_mid), (t_mid, t_next)):
                times.extend(a + c * (b - a) for c in stage_fracs)
            tt = torch.tensor(times, dtype=dtype, device=device).unbind(0)
            t_m, t_n = tt[:2]
            s_whole, s_half, s_two = (
                tuple(tt[2 + k * n_st : 2 + (k + 1) * n_st]) for k in (0, 1, 2)
            )
            y_whole, _ = one(t, t_next, y, st, t_start, t_n, s_whole)
            y_half, st_half = one(t, t_mid, y, st, t_start, t_m, s_half)
            y_two, st_two = one(t_mid, t_next, y_half, st_half, t_m, t_n, s_two)
        err = _error_ratio(y_whole, y_two, rtol, atol)
        if not math.isfinite(err):
            raise _nonfinite(t_next, mark, ts)
        taken = abs(t_next - t)
        accept = err <= 1.0 or taken <= dt_min * (1 + 1e-12)
        factor = 0.9 * max(err, 1e-10) ** exponent
        factor = min(1.4 if accept else 1.0, max(0.2, factor))
        h = (h if accept else taken) * factor
        if h < dt_min:
            if not warned:
                warnings.warn(
                    f"sdeint: adaptive step hit dt_min={dt_min:g} at t={t:g}; "
                    "steps of dt_min are taken regardless of the error",
                    UserWarning,
                    stacklevel=4,
                )
                warned = True
            h = dt_min
        return accept, y_two, st_two, h, t_n

    out = [y0]
    t, y, h, t_obj = ts[0], y0, dt, t0
    for mark, target in enumerate(ts[1:], start=1):
        while (target - t) * direction > 0:
            room = abs(target - t)
            t_next = target if h >= room * (1 - 1e-12) else t + direction * h
            ok, y_new, st_new, h, t_n = attempt(
                t, 0.5 * (t + t_next), t_next, y, h, state, t_obj, mark
            )
            if ok:
                t, y, state, t_obj = t_next, y_new, st_new, t_n
                if forget is not None:
                    forget(direction * t)
        # no check of y here: an accepted y had a finite error norm, and a NaN or inf in y
        # makes the norm NaN or inf (the attempt raised)
        out.append(y)
    return torch.stack(out), state
