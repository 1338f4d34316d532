"""Implicit Runge–Kutta methods for stiff problems, solved by simplified Newton iterations.

A method is a Butcher tableau ``(c, A, b)`` with a full matrix ``A``.  A step of size ``h`` from
``(t, y)`` solves for the stage increments ``Z_i = Y_i - y``

    Z_i = h * sum_j a_ij f(t + c_j h, y + Z_j),        i = 1..s            (s N equations)

by simplified Newton: ``(I - h A (x) J) dZ = -(Z - h (A (x) I) F(Z))`` with ``J = df/dy`` at
``(t, y)`` (by autograd, or ``options=dict(jacobian=callable)``), the matrix factorised once per
step (``torch.linalg.lu_factor``) and reused by every iteration (``lu_solve``), stopped by
Hairer's rule ``theta / (1 - theta) * ||dZ|| <= newton_tol`` with ``theta`` the observed
contraction; Hairer & Wanner (1996), Solving Ordinary Differential Equations II, sec. IV.8.
The new state is ``y1 = y + Z_s`` for stiffly accurate methods (``b`` = last row of ``A``:
Radau IIA, implicit Euler, trapezoid, SDIRK2, TR-BDF2), else ``y1 = y + b^T A^-1 Z``
(Gauss–Legendre, implicit midpoint), which needs no further evaluation of ``f``.

Step size: with ``step_size``/``grid_constructor`` the steps are the grid (torchdiffeq's
fixed-grid semantics; outputs between grid points by linear or cubic Hermite interpolation).
Otherwise the step is adaptive by step doubling (Richardson): one step of ``h`` and two of
``h/2`` give the error estimate ``(y_(h/2,h/2) - y_h) / (2^p - 1)`` of the two half steps, which
are kept; the controller is odeint's (``safety``, ``ifactor``, ``dfactor``, exponent
``1/(p+1)``), a Newton iteration that does not converge rejects the step and quarters it, and
steps land on the output times.  (torchdiffeq runs these methods on the output grid when no
``step_size`` is given; here that would crawl or fail on stiff problems, hence the adaptivity.)

Gradients: by backpropagation through the implicit function theorem (Newton runs without a
graph; one correction ``Z = Z* - M^-1 G(Z*)`` with ``G`` built with the graph and ``M`` the exact
stage Jacobian at the solution), or by ``odeint_adjoint``, whose backward solve runs the same
method on the adjoint system with the block Jacobian ``diag(J, -J^T)`` (the second-order term
is dropped: simplified Newton still converges to the exact stages) and the parameter adjoint as
a quadrature outside the Newton system.

Methods (coefficients from Hairer & Wanner 1996, sec. IV.5; SDIRK2: Alexander 1977, "Diagonally
implicit Runge–Kutta methods for stiff ODEs", SIAM J. Numer. Anal. 14; TR-BDF2: Bank et al.
1985, "Transient simulation of silicon devices and circuits", IEEE Trans. CAD 4, in the
one-step Runge–Kutta form of Hosea & Shampine 1996, "Analysis and implementation of TR-BDF2",
Appl. Numer. Math. 20):

==================  =====  ==========  ==========================================
method              order  stability   stages (Newton system size)
==================  =====  ==========  ==========================================
implicit_euler      1      L-stable    1 (N)
implicit_midpoint   2      A-stable    1 (N), symplectic
trapezoid           2      A-stable    2 (first explicit)
sdirk2              2      L-stable    2
trbdf2              2      L-stable    3 (first explicit)
radauIIA3           3      L-stable    2
gl4                 4      A-stable    2, symplectic
radauIIA5           5      L-stable    3
gl6                 6      A-stable    3, symplectic
==================  =====  ==========  ==========================================

A-stable but not L-stable methods do not damp infinitely stiff components (``R(inf) = -1``):
for stiff problems prefer the L-stable ones.  (torchdiffeq's ``gl4`` lists the first node
twice, ``1/2 - sqrt(3)/6``; here the nodes are the Gauss points ``1/2 -+ sqrt(3)/6``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import MaxStepsExceededError, ODESolverError, StepSizeUnderflowError
from .odeint import EXTRA_SOLVERS, SolverStats, _hermite, _initial_step

__all__ = ["ImplicitTableau", "IMPLICIT_TABLEAUS", "NewtonConvergenceError"]


class NewtonConvergenceError(ODESolverError):
    """A fixed-grid implicit step whose Newton iteration did not converge."""


@dataclass(frozen=True)
class ImplicitTableau:
    """An implicit Runge–Kutta method: nodes ``c`` (s,), full matrix ``A`` (s, s), weights ``b``.

    Example:
        >>> IMPLICIT_TABLEAUS["radauIIA5"].stiffly_accurate
        True
    """

    name: str
    c: tuple[float, ...]
    A: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    l_stable: bool

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def stiffly_accurate(self) -> bool:
        return all(abs(x - y) < 1e-15 for x, y in zip(self.A[-1], self.b))


_S2, _S3, _S6, _S15 = math.sqrt(2), math.sqrt(3), math.sqrt(6), math.sqrt(15)
_G = 1 - _S2 / 2  # SDIRK2's gamma, and TR-BDF2's diagonal (half its gamma = 2 - sqrt 2)
_W = _S2 / 4

IMPLICIT_TABLEAUS: dict[str, ImplicitTableau] = {
    t.name: t
    for t in [
        ImplicitTableau("implicit_euler", (1.0,), ((1.0,),), (1.0,), 1, True),
        ImplicitTableau("implicit_midpoint", (0.5,), ((0.5,),), (1.0,), 2, False),
        ImplicitTableau("trapezoid", (0.0, 1.0), ((0.0, 0.0), (0.5, 0.5)), (0.5, 0.5), 2, False),
        ImplicitTableau("sdirk2", (_G, 1.0), ((_G, 0.0), (1 - _G, _G)), (1 - _G, _G), 2, True),
        ImplicitTableau(
            "trbdf2",
            (0.0, 2 * _G, 1.0),
            ((0.0, 0.0, 0.0), (_G, _G, 0.0), (_W, _W, _G)),
            (_W, _W, _G),
            2,
            True,
        ),
        ImplicitTableau(
            "radauIIA3", (1 / 3, 1.0), ((5 / 12, -1 / 12), (3 / 4, 1 / 4)), (3 / 4, 1 / 4), 3, True
        ),
        ImplicitTableau(
            "gl4",
            (0.5 - _S3 / 6, 0.5 + _S3 / 6),
            ((0.25, 0.25 - _S3 / 6), (0.25 + _S3 / 6, 0.25)),
            (0.5, 0.5),
            4,
            False,
        ),
        ImplicitTableau(
            "radauIIA5",
            ((4 - _S6) / 10, (4 + _S6) / 10, 1.0),
            (
                ((88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225),
                ((296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225),
                ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
            ),
            ((16 - _S6) / 36, (16 + _S6) / 36, 1 / 9),
            5,
            True,
        ),
        ImplicitTableau(
            "gl6",
            (0.5 - _S15 / 10, 0.5, 0.5 + _S15 / 10),
            (
                (5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30),
                (5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24),
                (5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36),
            ),
            (5 / 18, 4 / 9, 5 / 18),
            6,
            False,
        ),
    ]
}


@dataclass
class _Settings:
    jacobian: object
    newton_tol: float
    max_iters: int


def _settings(o, name: str, adaptive: bool) -> _Settings:
    ex = dict(o.extra)
    jac = ex.pop("jacobian", None)
    tol = ex.pop("newton_tol", 0.03)
    iters = ex.pop("max_iters", 10 if adaptive else 100)
    if ex:
        raise ValueError(f"option(s) {sorted(ex)} do not apply to method {name!r}")
    if jac is not None and not callable(jac):
        raise TypeError(f"options['jacobian'] must be callable(t, y) -> (N, N), got {jac!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ValueError(f"options['newton_tol'] must be a float in (0, 1), got {tol!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"options['max_iters'] must be an int >= 1, got {iters!r}")
    return _Settings(jac, float(tol), iters)


class _Problem:
    """The flat vector field, its Jacobian and the size ``m`` of the Newton system.

    For ``odeint_adjoint``'s backward dynamics ``[z, a, g]`` the Newton system is ``[z, a]``
    (``m = 2n``) with the block Jacobian ``diag(J(z), -J(z)^T)``; ``g`` does not enter the
    dynamics and is integrated as a quadrature.
    """

    def __init__(self, f, y0: Tensor, settings: _Settings, stats: SolverStats):
        self.f, self.stats, self.user_jac = f, stats, settings.jacobian
        self.N = y0.numel()
        self.shape = y0.shape
        self.aug = hasattr(f, "lean") and hasattr(f, "params") and hasattr(f, "flat")
        if self.aug:
            self.m = 2 * f.n
            flat = f.flat
            self.user_shape = None if flat.is_tuple else flat.shapes[0]
        else:
            self.m = self.N
            shaped = getattr(f, "shaped", None)
            if y0.dim() != 1:
                self.user_shape = y0.shape
            elif shaped is not None:
                self.user_shape = shaped.shape
            else:
                self.user_shape = None  # tuple state: the flat concatenation

    def __call__(self, t: float, y: Tensor) -> Tensor:
        return self.f(t, y.view(self.shape)).reshape(-1)

    def _field(self, t: float):
        """The user's field on the flat state (for the Jacobian)."""
        if self.aug:
            f, flat = self.f, self.f.flat
            tt = torch.scalar_tensor(t, dtype=flat.dtype, device=flat.device)
            return lambda x: flat.flatten(f.func(tt, flat.unflatten(x)))
        return lambda x: self(t, x)

    def jacobian(self, t: float, y: Tensor) -> Tensor:
        """``(m, m)`` Jacobian of the Newton system at ``(t, y)``."""
        self.stats.extra["n_jac"] = self.stats.extra.get("n_jac", 0) + 1
        n = self.f.n if self.aug else self.N
        x = y[:n].detach()
        if self.user_jac is not None:
            tt = torch.scalar_tensor(t, dtype=y.dtype, device=y.device)
            arg = x if self.user_shape is None else x.view(self.user_shape)
            J = torch.as_tensor(self.user_jac(tt, arg), dtype=y.dtype, device=y.device)
            if J.numel() != n * n:
                raise ValueError(
                    f"options['jacobian'] returned {J.numel()} values; expected an (N, N) matrix "
                    f"with N = {n} (the number of elements of the state)"
                )
            J = J.reshape(n, n)
        else:
            J = _autograd_jacobian(self._field(t), x)
            self.stats.nfe += 1
        if not self.aug:
            return J
        Z = torch.zeros_like(J)
        return torch.cat([torch.cat([J, Z], 1), torch.cat([Z, -J.t()], 1)], 0)


def _autograd_jacobian(fn, x: Tensor) -> Tensor:
    """``d fn / dx`` (n, n): one batched vector-Jacobian product, else one per row."""
    n = x.numel()
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = fn(xr)
        if not out.requires_grad:
            return torch.zeros(n, n, dtype=x.dtype, device=x.device)
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        try:
            (J,) = torch.autograd.grad(out, xr, eye, is_grads_batched=True, allow_unused=True)
        except RuntimeError:
            rows = [torch.autograd.grad(out, xr, e, retain_graph=True, allow_unused=True)[0]
                    for e in eye]  # fmt: skip
            rows = [torch.zeros_like(xr) if r is None else r for r in rows]
            J = torch.stack(rows)
    return torch.zeros(n, n, dtype=x.dtype, device=x.device) if J is None else J.detach()


class _Coeffs:
    def __init__(self, tab: ImplicitTableau, dtype, device):
        self.A = torch.tensor(tab.A, dtype=dtype, device=device)
        self.b = torch.tensor(tab.b, dtype=dtype, device=device)
        self.c = tab.c
        self.s = tab.stages
        self.order = tab.order
        self.stiffly_accurate = tab.stiffly_accurate
        # y1 = y + d^T Z with d = b^T A^-1 when A is invertible (no extra evaluation of f)
        A64 = torch.tensor(tab.A, dtype=torch.float64)
        if self.stiffly_accurate or abs(float(torch.linalg.det(A64))) < 1e-12:
            self.d = None
        else:
            d = torch.linalg.solve(A64.t(), torch.tensor(tab.b, dtype=torch.float64))
            self.d = d.to(dtype=dtype, device=device)


class _Stepper:
    """One implicit step (Newton on the stages), with or without the autograd correction."""

    def __init__(self, prob: _Problem, co: _Coeffs, st: _Settings, rtol: float, atol: float):
        self.prob, self.co, self.st = prob, co, st
        self.rtol, self.atol = rtol, atol
        self.stats = prob.stats
        self.eta = 1.0  # Newton's contraction estimate theta / (1 - theta), across solves

    def factor(self, h: float, J: Tensor):
        co, m = self.co, self.prob.m
        M = torch.eye(co.s * m, dtype=J.dtype, device=J.device) - h * torch.kron(co.A, J)
        self.stats.extra["n_lu"] = self.stats.extra.get("n_lu", 0) + 1
        return torch.linalg.lu_factor(M)

    def times(self, t: float, h: float, perturb: bool = False) -> list[float]:
        """Stage times ``t + c_i h``; with ``perturb`` the nodes 0 and 1 move one ulp inside the
        step (torchdiffeq's ``perturb``: a discontinuity on the grid is never evaluated)."""
        out = []
        for ci in self.co.c:
            ti = t + ci * h
            if perturb and ci == 0.0:
                ti = math.nextafter(t, t + h)
            elif perturb and ci == 1.0:
                ti = math.nextafter(t + h, t)
            out.append(ti)
        return out

    def newton(
        self, t: float, y: Tensor, h: float, lu, perturb: bool = False
    ) -> tuple[Tensor, Tensor] | None:
        """Converged stage increments ``Z`` (s, N) and the slopes ``F`` of the last iterate, or
        ``None`` when the iteration did not converge in ``max_iters``.

        Converged: the RMS of the update scaled by ``atol + rtol |y|`` is below ``newton_tol``,
        or below ten round-offs of the dtype when that is larger (float32 at a tight rtol)."""
        co, prob, m = self.co, self.prob, self.prob.m
        s, N = co.s, prob.N
        scale = y.abs().mul(self.rtol).add_(self.atol)[:m]
        tol = max(self.st.newton_tol, 10 * torch.finfo(y.dtype).eps / max(self.rtol, 1e-300))
        ts = self.times(t, h, perturb)
        Z = y.new_zeros(s, N)
        prev = None
        # Hairer's stopping rule: with the contraction theta of the iteration, the error left
        # after an update of size nrm is about eta * nrm, eta = theta / (1 - theta); eta is
        # carried from the previous solve.  Only without quadrature components, whose slopes
        # must come from (nearly) the final iterate.
        eta = max(self.eta, torch.finfo(y.dtype).eps) ** 0.8 if N == m else 1.0
        for it in range(self.st.max_iters):
            F = torch.stack([prob(ts[i], y + Z[i]) for i in range(s)])
            self.stats.nfe += s
            self.stats.extra["newton_iters"] = self.stats.extra.get("newton_iters", 0) + 1
            G = Z[:, :m] - h * (co.A @ F[:, :m])
            dZ = torch.linalg.lu_solve(*lu, -G.reshape(-1, 1)).view(s, m)
            Z[:, :m] += dZ
            nrm = torch.linalg.vector_norm(dZ / scale).item() / math.sqrt(s * m)
            if not math.isfinite(nrm):
                return None
            if prev is not None:
                theta = nrm / prev if prev > 0 else 0.0
                if theta >= 0.99 and it >= 2:  # not contracting
                    return None
                if N == m and theta < 0.99:
                    eta = theta / (1 - theta)
            if nrm <= tol or (N == m and eta * nrm <= tol):
                if N > m:  # quadrature components: explicit given the stages
                    Z[:, m:] = h * (co.A @ F[:, m:])
                if N == m:
                    self.eta = eta
                return Z, F
            prev = nrm
        return None

    def combine(self, y: Tensor, Z: Tensor, F: Tensor, h: float) -> Tensor:
        co = self.co
        if co.stiffly_accurate:
            return y + Z[-1]
        if co.d is not None:
            return y + co.d @ Z
        return y + h * (co.b @ F)

    def with_graph(self, t: float, y: Tensor, h: float, Zs: Tensor, perturb=False) -> Tensor:
        """``y1`` with autograd's graph: the implicit function theorem at the converged stages
        ``Zs`` (one correction ``Z = Zs - M^-1 G(Zs)``, ``M`` the exact stage Jacobian)."""
        co, prob = self.co, self.prob
        s, N = co.s, prob.N
        times = self.times(t, h, perturb)
        Js = [prob.jacobian(ti, (y.detach() + Zs[i])) for i, ti in enumerate(times)]
        blocks = [[co.A[i, j] * Js[j] for j in range(s)] for i in range(s)]
        M = torch.eye(s * N, dtype=y.dtype, device=y.device) - h * torch.cat(
            [torch.cat(r, 1) for r in blocks], 0
        )
        F = torch.stack([prob(ti, y + Zs[i]) for i, ti in enumerate(times)])
        self.stats.nfe += s
        G = Zs - h * (co.A @ F)
        Z = Zs - torch.linalg.solve(M, G.reshape(-1, 1)).view(s, N)
        return self.combine(y, Z, F, h)


def _solve_implicit(tab: ImplicitTableau):
    name = tab.name

    def solve(f, y0, ts, rtol, atol, norm, o, stats: SolverStats, grad, grid, f_first):
        adaptive = grid is None
        st = _settings(o, name, adaptive)
        shape = y0.shape
        prob = _Problem(f, y0, st, stats)
        co = _Coeffs(tab, y0.dtype, y0.device)
        stepper = _Stepper(prob, co, st, rtol, atol)
        y = y0.reshape(-1)
        # the checked first evaluation (structure and finiteness of func's output)
        t_first = ts[0]
        if not adaptive and o.perturb:
            t_first = math.nextafter(grid[0], grid[1])
        with torch.no_grad():
            f0 = f_first(t_first, y0.detach()).reshape(-1)
        stats.nfe += 1
        if not bool(torch.isfinite(f0).all()):
            raise ODESolverError(f"the vector field returned non-finite values at t={ts[0]!r}")
        if adaptive:
            ys = _adaptive(stepper, y, f0, ts, rtol, atol, norm, o, stats, grad)
        else:
            ys = _fixed(stepper, y, ts, grid, o, stats, grad)
        return [y0] + [yi.view(shape) for yi in ys[1:]]

    solve.__name__ = f"solve_{name}"
    return solve


def _fixed(stepper: _Stepper, y: Tensor, ts, grid, o, stats, grad) -> list[Tensor]:
    prob = stepper.prob
    out, j, n = [y], 1, len(ts)
    direction = 1.0 if ts[-1] > ts[0] else -1.0
    for g0, g1 in zip(grid[:-1], grid[1:]):
        h = g1 - g0
        t0p = math.nextafter(g0, g1) if o.perturb else g0
        with torch.no_grad():
            yd = y.detach()
            lu = stepper.factor(h, prob.jacobian(t0p, yd))
            res = stepper.newton(g0, yd, h, lu, o.perturb)
        if res is None:
            raise NewtonConvergenceError(
                f"odeint: the Newton iteration of the implicit step from t={g0!r} to t={g1!r} "
                f"did not converge in max_iters={stepper.st.max_iters}; use a smaller step_size "
                "or adaptive steps (no step_size)",
                g0,
            )
        Z, F = res
        y1 = stepper.with_graph(g0, y, h, Z, o.perturb) if grad else stepper.combine(yd, Z, F, h)
        stats.n_steps += 1
        stats.n_accepted += 1
        f_a = f_b = None
        while j < n and (ts[j] - g1) * direction <= 0:
            tj = ts[j]
            if tj == g1:
                out.append(y1)
            elif o.interp == "cubic":
                if f_a is None:
                    f_a, f_b = prob(t0p, y), prob(math.nextafter(g1, g0) if o.perturb else g1, y1)
                    stats.nfe += 2
                out.append(_hermite(y, f_a, y1, f_b, g0, h, tj))
            else:
                out.append(torch.lerp(y, y1, (tj - g0) / h))
            j += 1
        y = y1
    return out


def _adaptive(stepper: _Stepper, y: Tensor, f0: Tensor, ts, rtol, atol, norm, o, stats, grad):
    """Step doubling; steps land on every output time."""
    prob, p = stepper.prob, stepper.co.order
    t = ts[0]
    direction = 1.0 if ts[-1] > t else -1.0
    yd = y.detach()
    if o.first_step is not None:
        h = direction * o.first_step
    else:
        fl = lambda tt, x: prob(tt, x)  # noqa: E731
        h = direction * _initial_step(fl, t, yd, f0, direction, p, rtol, atol, norm, stats)
    out, j, n = [y], 1, len(ts)
    expo = 1.0 / (p + 1)
    steps_here, J, J_at = 0, None, None
    while j < n:
        target = ts[j]
        landing = (t + h - target) * direction >= 0
        if landing:
            h = target - t
        t1 = target if landing else t + h
        if t1 == t or abs(h) < 1e-14 * max(abs(t), 1e-300):
            raise StepSizeUnderflowError(
                f"step size underflow at t={t!r} (h={h!r}) with the implicit method; the "
                "problem may have a singularity, or rtol/atol are too tight",
                t,
            )
        if steps_here >= o.max_num_steps:
            raise MaxStepsExceededError(
                f"max_num_steps={o.max_num_steps} exceeded at t={t!r} before reaching t={target!r}",
                t,
            )
        steps_here += 1
        stats.n_steps += 1
        with torch.no_grad():
            if J_at != t:
                J, J_at = prob.jacobian(t, yd), t
            half = h / 2
            big = stepper.newton(t, yd, h, stepper.factor(h, J))
            lu2 = stepper.factor(half, J) if big is not None else None
            r1 = stepper.newton(t, yd, half, lu2) if big is not None else None
            ya = stepper.combine(yd, *r1, half) if r1 is not None else None
            r2 = stepper.newton(t + half, ya, half, lu2) if ya is not None else None
            if r2 is None:
                ratio = math.inf
            else:
                y_big = stepper.combine(yd, *big, h)
                y2 = stepper.combine(ya, *r2, half)
                err = (y2 - y_big) / (2**p - 1)
                scale = torch.maximum(yd.abs(), y2.abs()).mul_(rtol).add_(atol)
                ratio = norm(err / scale)
        if ratio <= 1.0:
            stats.n_accepted += 1
            if grad:
                ya_g = stepper.with_graph(t, y, half, r1[0])
                y = stepper.with_graph(t + half, ya_g, half, r2[0])
            else:
                y = y2
            yd = y2
            t = t1
            if landing:
                out.append(y)
                j += 1
                steps_here = 0
            factor = stepper_factor(ratio, expo, o)
        else:
            stats.n_rejected += 1
            factor = 0.25 if r2 is None else stepper_factor(ratio, expo, o)
        h = h * factor
    return out


def stepper_factor(ratio: float, expo: float, o) -> float:
    """odeint's controller: ``min(ifactor, max(safety ratio^-expo, dfactor))``, never shrinking
    after an accepted step."""
    if ratio == 0.0:
        return o.ifactor
    if not math.isfinite(ratio):
        return o.dfactor
    return min(o.ifactor, max(o.safety * ratio**-expo, 1.0 if ratio < 1.0 else o.dfactor))


for _tab in IMPLICIT_TABLEAUS.values():
    EXTRA_SOLVERS[_tab.name] = _solve_implicit(_tab)
