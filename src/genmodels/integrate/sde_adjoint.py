"""``sdeint_adjoint``: gradients of an SDE solve in O(1) memory by the stochastic adjoint.

The forward solve (:func:`~genmodels.integrate.sdeint.sdeint`) keeps no graph; the backward
pass solves the *augmented adjoint SDE* backwards in time on the same Brownian path (Li, Wong,
Chen & Duvenaud 2020, "Scalable gradients for stochastic differential equations", §3–4).

**The adjoint SDE.** For a Stratonovich SDE dY = f(t, Y) dt + Σₖ gₖ(t, Y) ∘ dWᵏ the solution
map is a diffeomorphism and runs backwards on the same path. With a(t) = ∂L/∂Y(t) and
a_θ(t) the gradient collected over [t, T], the triple Z = (Y, a, a_θ) solves, backwards from
(Y(T), ∂L/∂Y(T), 0) (Li et al. 2020, Theorem 3.3),

    dY   =  f dt + Σₖ gₖ ∘ dWᵏ
    da   = -a ∂f/∂y dt - Σₖ a ∂gₖ/∂y ∘ dWᵏ
    da_θ = -a ∂f/∂θ dt - Σₖ a ∂gₖ/∂θ ∘ dWᵏ

In backward time s = -t, a step from t_s down to t_e < t_s has ds = t_s - t_e > 0 and
Brownian increment ΔW̄ = W(t_e) - W(t_s). With φ(y) = f(t, y) ds - G(t, y) ΔW̄ (minus the
forward increment), the whole Stratonovich step's increment is one vector–Jacobian product
(for a forward solve with decreasing ts, f ds becomes f h with the forward step h < 0, and
the Itô corrections below keep ds = |h|):

    ΔY = -φ,    Δa = a ∂φ/∂y,    Δa_θ = a ∂φ/∂θ                         (1)

so midpoint and Heun on (1) cost one vjp per stage (:func:`_strat_increment`).

**Itô SDEs** (Li et al. 2020, §3.2 and Appendix): convert the forward SDE to Stratonovich
(drift f - ½ Σₖ cₖ, cₖ = (∂gₖ/∂y) gₖ), take (1), and convert the *backward* Stratonovich
system to Itô form in s. The two corrections give, with Jₖ = ∂gₖ/∂y,

    ΔY   = (-f + Σₖ cₖ) ds + G ΔW̄
    Δa   = a ∂/∂y [(f - Σₖ cₖ) ds - G ΔW̄] + Σₖ (a Jₖ) Jₖ ds
    Δa_θ = a ∂/∂θ[(f - Σₖ cₖ) ds - G ΔW̄] + Σₖ (a Jₖ) ∂gₖ/∂θ ds          (2)

(the "double Stratonovich correction" on f, and the last terms from the Itô form of the adjoint's
own noise). Euler–Maruyama on (2) is :func:`_ito_increment`. For diagonal noise Jₖ acts on
coordinate k only, Σₖ cₖ = g ⊙ g′ and the noise of (2) is commutative, so Milstein applies:
it adds ½(ΔW̄² - ds) (Itô; ½ ΔW̄² Stratonovich) times

    Y: g g′,    a: a (g′² - g g″),    a_θ: Σₖ aₖ (g′ₖ ∂gₖ/∂θ - gₖ ∂g′ₖ/∂θ).

For additive noise Jₖ = 0, all corrections vanish and (1) serves either SDE type.

The continuous adjoint's gradients equal backpropagation through the solver only up to the
discretisation error of the two solves (both converge to the pathwise derivative).

**Reversible Heun** (Kidger, Foster, Li & Lyons 2021, "Efficient and accurate gradients for
neural SDEs", §3): its step (``reversible_heun_step`` in sdeint.py) can be inverted exactly in
floating point up to round-off, so ``adjoint_reversible_heun`` reconstructs each step's input
from its output and back-propagates through that one step (:func:`_backward_reversible_heun`):
the gradients of the discrete solve itself, to round-off, still in O(1) memory.

Defaults (torchsde's): reversible_heun → adjoint_reversible_heun; Itô diagonal → milstein;
Itô scalar / additive / general → euler; Stratonovich → midpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .brownian import BrownianMotion, _mix64
from .checks import NonFiniteSolutionError, check_times
from .sdeint import _default_method, _grid, _logqp, _resolve, reversible_heun_step, sdeint

__all__ = ["sdeint_adjoint", "ADJOINT_METHODS"]

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")

# adjoint method -> (SDE types it solves, forward noise types it takes). Additive noise takes
# every method (its adjoint has no Itô–Stratonovich correction).
ADJOINT_METHODS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "euler": (("ito",), NOISE_TYPES),
    "milstein": (("ito", "stratonovich"), ("diagonal", "additive")),
    "midpoint": (("stratonovich",), NOISE_TYPES),
    "heun": (("stratonovich",), NOISE_TYPES),
    "adjoint_reversible_heun": (("stratonovich",), NOISE_TYPES),
}


def _default_adjoint_method(method: str, sde_type: str, noise_type: str) -> str:
    if method == "reversible_heun":
        return "adjoint_reversible_heun"
    if sde_type == "stratonovich":
        return "midpoint"
    return "milstein" if noise_type == "diagonal" else "euler"


# ---------------------------------------------------------------------------------------------
# the noise product G v and its adjoint (the cotangent of G given the cotangent c of G v)


def _prod(noise_type: str) -> Callable[[Tensor, Tensor], Tensor]:
    if noise_type == "diagonal":
        return lambda g, v: g * v
    if noise_type == "scalar":
        return lambda g, v: g[..., 0] * v
    return lambda g, v: torch.matmul(g, v.unsqueeze(-1)).squeeze(-1)


def _prod_adjoint(noise_type: str) -> Callable[[Tensor, Tensor], Tensor]:
    if noise_type == "diagonal":
        return lambda c, v: c * v
    return lambda c, v: c.unsqueeze(-1) * v.unsqueeze(-2)


# ---------------------------------------------------------------------------------------------
# Brownian increments, forwards and backwards


class _SeededGridBrownian:
    """A Brownian path on a fixed grid, O(1) memory, replayable in any order.

    The increment over grid step n is σ√|h| Z_n (and the space-time Lévy area H_n =
    √(|h|/12) Z′_n), with (Z_n, Z′_n) drawn from a generator seeded by a hash of (seed, n // 64):
    blocks of 64 steps, the last block cached. Exact law, no tree, and the backward sweep
    regenerates the same numbers. Queried by ``sdeint`` through torchsde's protocol
    ``bm(ta, tb)`` with (ta, tb) the ends of one grid step.
    """

    block = 64

    def __init__(self, grid: list[float], size, levy: bool, dtype, device, seed: int):
        self.grid, self.size, self.levy = grid, torch.Size(size), levy
        self.dtype, self.device = dtype, torch.device(device)
        self.seed = int(seed)
        self.index = {(min(a, b), max(a, b)): n for n, (a, b) in enumerate(zip(grid, grid[1:]))}
        self.sqrt_h = [math.sqrt(abs(b - a)) for a, b in zip(grid, grid[1:])]
        self.up = len(grid) < 2 or grid[1] > grid[0]
        self._gen = torch.Generator(device=self.device)
        self._key = -1
        self._buf: Tensor | None = None

    shape = property(lambda self: self.size)
    levy_area_approximation = property(lambda self: "space-time" if self.levy else "none")

    def _normals(self, n: int) -> Tensor:
        key = n // self.block
        if key != self._key:
            start = key * self.block
            stop = min(start + self.block, len(self.sqrt_h))
            self._gen.manual_seed(_mix64((self.seed + key * 0x9E3779B97F4A7C15) & (2**64 - 1)) >> 1)
            z = torch.randn(
                (stop - start, 2 if self.levy else 1, *self.size),
                generator=self._gen,
                dtype=self.dtype,
                device=self.device,
            )
            scale = torch.tensor(self.sqrt_h[start:stop], dtype=self.dtype, device=self.device)
            self._buf, self._key = z * scale.view(-1, *([1] * (z.dim() - 1))), key
        return self._buf[n - self._key * self.block]

    def __call__(self, ta, tb, return_U: bool = False, return_A: bool = False):
        """W(tb) - W(ta) (and U = ∫_ta^tb (W(s) - W(ta)) ds) for ta < tb one grid step."""
        ta, tb = float(ta), float(tb)
        n = self.index.get((ta, tb))
        if n is None or return_A:
            raise ValueError(
                f"sdeint_adjoint: the default Brownian path answers one grid step at a time; "
                f"asked for ({ta}, {tb})"
            )
        z = self._normals(n)
        if not return_U:
            return z[0]
        h = tb - ta  # U = h (ΔW/2 + H), H = √(h/12) Z′
        return z[0], h * (0.5 * z[0] + z[1] * (1.0 / math.sqrt(12.0)))

    def forward_increment(self, n: int) -> Tensor:
        w = self._normals(n)[0]
        return w if self.up else -w


class _QueriedIncrements:
    """Forward increment W(grid[n+1]) - W(grid[n]) of step n, asked of ``bm(ta, tb)``.

    The steps are asked of ``bm`` in blocks of ``block`` consecutive steps, each block in the
    forward order of the grid, and kept until a step outside the block is needed: the
    backward sweep walks the steps in reverse, and a path that recomputes values from a cache
    of recent splits (torchsde's ``BrownianInterval``) answers a forward sweep several times
    faster than a reverse one (200 steps of a 256 × 8 path, thread CPU: 0.111 s in reverse,
    0.038 s in reverse blocks of 32). Memory: ``block`` increments, whatever the number of
    steps. The values are those of the path, in any order."""

    block = 32

    def __init__(self, bm, grid: list[float], dtype: torch.dtype):
        self.bm, self.grid, self.dtype = bm, grid, dtype
        self.start, self.buf = 0, []

    def _query(self, n: int) -> Tensor:
        a, b = self.grid[n], self.grid[n + 1]
        w = self.bm(a, b) if a < b else -self.bm(b, a)
        return w if w.dtype == self.dtype else w.to(self.dtype)

    def forward_increment(self, n: int) -> Tensor:
        k = n - self.start
        if not 0 <= k < len(self.buf):
            self.start = n - n % self.block
            stop = min(self.start + self.block, len(self.grid) - 1)
            self.buf = [self._query(m) for m in range(self.start, stop)]
            k = n - self.start
        return self.buf[k]


# ---------------------------------------------------------------------------------------------
# increments of the augmented adjoint SDE undoing forward step n: h its signed step (the drift
# terms), ds = |h| (the Itô corrections, in the direction of the backward solve), dw = ΔW̄


def _grads(outputs, cotangents, inputs) -> list[Tensor | None]:
    """autograd.grad over the outputs that carry a graph (None for inputs not reached)."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return [None] * len(inputs)
    out, cot = zip(*pairs)
    return list(torch.autograd.grad(out, inputs, cot, allow_unused=True))


class _Adjoint:
    """The augmented adjoint SDE of one forward problem, and one backward step of each method."""

    def __init__(self, f, g, noise_type, ito, params, times, mid_times):
        self.f, self.g, self.noise_type, self.params = f, g, noise_type, params
        self.prod, self.prod_adj = _prod(noise_type), _prod_adjoint(noise_type)
        # additive noise: no correction; Stratonovich: none either
        self.corrected = ito and noise_type != "additive"
        self.times, self.mid_times = times, mid_times

    def _accumulate(self, acc: list[Tensor], grads: Sequence[Tensor | None], w: float = 1.0):
        for s, gr in zip(acc, grads):
            if gr is not None:
                s.add_(gr, alpha=w)

    # --- (1): the Stratonovich / additive increment, one vjp -----------------------------------
    def _strat_increment(self, t, y, a, h, dw, with_params=True):
        with torch.enable_grad():
            yy = y.detach().requires_grad_()
            phi = self.f(t, yy) * h - self.prod(self.g(t, yy), dw)
            inputs = (yy, *self.params) if with_params else (yy,)
            grads = _grads([phi], [a], inputs)
        da = grads[0] if grads[0] is not None else torch.zeros_like(a)
        return -phi.detach(), da, grads[1:]

    # --- (2): Itô with diagonal noise (Euler, or Milstein with v2 = ½(ΔW̄² - ds)) ----------------
    def _ito_diagonal(self, t, y, a, h, ds, dw, v2):
        with torch.enable_grad():
            yy = y.detach().requires_grad_()
            fy, gy = self.f(t, yy), self.g(t, yy)
            gp = None
            if gy.requires_grad:
                (gp,) = torch.autograd.grad(
                    gy, yy, torch.ones_like(gy), create_graph=True, allow_unused=True
                )
            if gp is None:  # g does not depend on y: the corrections vanish
                gp = torch.zeros_like(gy)
            ggp = gy * gp
            out1 = fy * h - gy * dw
            if self.corrected:
                out1 = out1 - ggp * ds
            w_g = (ds if self.corrected else 0.0) + (0.0 if v2 is None else v2)
            outputs, cots = [out1, gy], [a, (a * gp * w_g).detach()]
            if v2 is not None:
                outputs.append(gp)
                cots.append(-(a * v2 * gy).detach())
            grads = _grads(outputs, cots, (yy, *self.params))
        dy = -out1.detach()
        if v2 is not None:
            dy = dy + v2 * ggp.detach()
        da = grads[0] if grads[0] is not None else torch.zeros_like(a)
        return dy, da, grads[1:]

    # --- (2): Itô with scalar or general noise, Euler ------------------------------------------
    def _ito_general(self, t, y, a, h, ds, dw):
        with torch.enable_grad():
            yy = y.detach().requires_grad_()
            fy, gy = self.f(t, yy), self.g(t, yy)
            c = torch.zeros_like(fy)
            aj = torch.zeros_like(gy)
            if gy.requires_grad:
                cols = []
                for k in range(gy.shape[-1]):
                    gk = gy[..., k]
                    # (∂gₖ/∂y) gₖ by the double-vjp trick, with its graph (it is differentiated)
                    u = torch.zeros_like(gk, requires_grad=True)
                    (vj,) = torch.autograd.grad(gk, yy, u, create_graph=True, allow_unused=True)
                    if vj is None:
                        cols.append(torch.zeros_like(a))
                        continue
                    (jg,) = torch.autograd.grad(vj, u, gk, create_graph=True)
                    c = c + jg
                    (ajk,) = torch.autograd.grad(gk, yy, a, retain_graph=True)
                    cols.append(ajk)
                aj = torch.stack(cols, dim=-1)
            out1 = fy * h - c * ds - self.prod(gy, dw)
            grads = _grads([out1, gy], [a, aj * ds], (yy, *self.params))
        da = grads[0] if grads[0] is not None else torch.zeros_like(a)
        return -out1.detach(), da, grads[1:]

    def increment(self, t, y, a, h, ds, dw, with_params=True, v2=None):
        if not self.corrected and v2 is None:
            return self._strat_increment(t, y, a, h, dw, with_params)
        if self.noise_type == "diagonal" or v2 is not None:
            return self._ito_diagonal(t, y, a, h, ds, dw, v2)
        return self._ito_general(t, y, a, h, ds, dw)

    # --- the backward steps from grid[n+1] to grid[n] -----------------------------------------
    def euler(self, n, y, a, acc, h, ds, dw, ito):
        dy, da, dth = self.increment(self.times[n + 1], y, a, h, ds, dw)
        self._accumulate(acc, dth)
        return y + dy, a + da

    def milstein(self, n, y, a, acc, h, ds, dw, ito):
        sq = dw * dw
        v2 = 0.5 * (sq - ds) if ito else 0.5 * sq
        if self.noise_type == "additive":  # the Milstein terms vanish
            return self.euler(n, y, a, acc, h, ds, dw, ito)
        dy, da, dth = self._ito_diagonal(self.times[n + 1], y, a, h, ds, dw, v2)
        self._accumulate(acc, dth)
        return y + dy, a + da

    def midpoint(self, n, y, a, acc, h, ds, dw, ito):
        # Z' = Z + ½ inc(Z, t_s);  Z₁ = Z + inc(Z', t_mid). a_θ does not feed back, so the
        # first stage needs no parameter vjp.
        dy, da, _ = self.increment(self.times[n + 1], y, a, h, ds, dw, with_params=False)
        y2, a2 = y + 0.5 * dy, a + 0.5 * da
        dy, da, dth = self.increment(self.mid_times[n], y2, a2, h, ds, dw)
        self._accumulate(acc, dth)
        return y + dy, a + da

    def heun(self, n, y, a, acc, h, ds, dw, ito):
        dy1, da1, dth1 = self.increment(self.times[n + 1], y, a, h, ds, dw)
        dy2, da2, dth2 = self.increment(self.times[n], y + dy1, a + da1, h, ds, dw)
        self._accumulate(acc, dth1, 0.5)
        self._accumulate(acc, dth2, 0.5)
        return y + 0.5 * (dy1 + dy2), a + 0.5 * (da1 + da2)


# ---------------------------------------------------------------------------------------------


def _backward_continuous(run: dict, ys: Tensor, grad_ys: Tensor, params):
    """Solve the adjoint SDE from ts[-1] to ts[0], resetting Y to the stored ys[i] at each
    output time and adding dL/dys[i] to a (Li et al. 2020, Algorithm 2)."""
    adj: _Adjoint = run["adjoint"]
    step = getattr(adj, run["adjoint_method"])
    noise, hs, marks, ito = run["noise"], run["hs"], run["marks"], run["ito"]
    acc = [torch.zeros_like(p) for p in params]
    a = grad_ys[-1].clone()
    ts = run["ts"]
    for i in range(len(ts) - 1, 0, -1):
        y = ys[i]
        for n in range(marks[i] - 1, marks[i - 1] - 1, -1):
            # backwards over forward step n (h signed): ΔW̄ = -(forward increment), ds = |h|
            h = hs[n]
            y, a = step(n, y, a, acc, h, abs(h), -noise.forward_increment(n), ito)
        if not bool(torch.isfinite(a).all()):
            raise NonFiniteSolutionError(
                f"sdeint_adjoint: the adjoint became NaN or infinite on [{ts[i - 1]!r}, {ts[i]!r}]",
                ts[i],
            )
        a = a + grad_ys[i - 1]
    return a, acc


def _forward_reversible_heun(run: dict, y0: Tensor) -> tuple[Tensor, Tensor]:
    """The reversible Heun solve of ``sdeint`` (same steps, same increments), keeping z at the
    end: (ys at the output times, z(T))."""
    f, g, prod, times = run["f"], run["g"], run["prod"], run["times"]
    noise, hs, marks = run["noise"], run["hs"], run["marks"]
    y, z = y0, y0
    fz, gz = f(times[0], y0), g(times[0], y0)
    out, mark = [y0], 1
    for n in range(len(hs)):
        dw = noise.forward_increment(n)
        y, z, fz, gz = reversible_heun_step(f, g, prod, times[n + 1], hs[n], y, z, fz, gz, dw)
        if n + 1 == marks[mark]:
            if not bool(torch.isfinite(y).all()):
                raise NonFiniteSolutionError(
                    f"sdeint_adjoint: the state became non-finite (NaN/inf) by "
                    f"t={run['ts'][mark]:g}",
                    run["ts"][mark - 1],
                )
            out.append(y)
            mark += 1
    return torch.stack(out), z


def _backward_reversible_heun(run: dict, ys: Tensor, z_end: Tensor, grad_ys: Tensor, params):
    """Back-propagation through reversible Heun, reconstructing each step's input from its
    output (Kidger et al. 2021, §3). Per step, with (y₁, z₁, f₁ = f(z₁), g₁ = g(z₁)) known:

        z = 2 y₁ - z₁ - f₁ h - G₁ ΔW,   f₀, g₀ = f(t, z), g(t, z),
        y = y₁ - ½ (f₀ + f₁) h - ½ (G₀ + G₁) ΔW,

    and the cotangents of the step z₁ = 2y - z + f₀ h + G₀ ΔW, y₁ = y + ½(f₀ + f₁) h +
    ½(G₀ + G₁) ΔW pass from (y₁, z₁, f₁, g₁) to (y, z, f₀, g₀). f and g are evaluated once
    per step (with a graph kept for one step); one vjp per step, as backprop."""
    f, g, prod, times = run["f"], run["g"], run["prod"], run["times"]
    prod_adj = _prod_adjoint(run["noise_type"])
    noise, hs, marks = run["noise"], run["hs"], run["marks"]
    acc = [torch.zeros_like(p) for p in params]

    def evaluate(t, z):
        with torch.enable_grad():
            zz = z.detach().requires_grad_()
            return zz, f(t, zz), g(t, zz)

    def pull(zz, fz, gz, c_f, c_g):
        with torch.enable_grad():
            grads = _grads([fz, gz], [c_f, c_g], (zz, *params))
        for s, gr in zip(acc, grads[1:]):
            if gr is not None:
                s.add_(gr)
        return grads[0]

    steps = len(hs)
    y = ys[-1]
    zz, fz, gz = evaluate(times[steps], z_end)
    a_y = grad_ys[-1].clone()
    a_z = torch.zeros_like(a_y)
    a_f = torch.zeros_like(a_y)
    a_g = torch.zeros_like(gz)
    i = len(marks) - 1
    for n in range(steps - 1, -1, -1):
        h = hs[n]
        dw = noise.forward_increment(n)
        half_dw = 0.5 * dw
        # the cotangent of z_{n+1} is complete once step n's use of f_{n+1}, g_{n+1} is added
        vz = pull(zz, fz, gz, a_f + a_y * (0.5 * h), a_g + prod_adj(a_y, half_dw))
        a_z1 = a_z if vz is None else a_z + vz
        a_f = a_y * (0.5 * h) + a_z1 * h
        a_g = prod_adj(a_y, half_dw) + prod_adj(a_z1, dw)
        a_y = a_y + 2.0 * a_z1
        a_z = -a_z1
        # reconstruct step n's input
        f1, g1 = fz.detach(), gz.detach()
        z0 = 2.0 * y - zz.detach() - f1 * h - prod(g1, dw)
        zz, fz, gz = evaluate(times[n], z0)
        y = y - (0.5 * h) * (fz.detach() + f1) - 0.5 * prod(gz.detach() + g1, dw)
        if n == marks[i - 1]:
            i -= 1
            y = ys[i]  # the stored forward value (equal up to the inversion's round-off)
            a_y = a_y + grad_ys[i]
            if not bool(torch.isfinite(a_y).all()):
                raise NonFiniteSolutionError(
                    f"sdeint_adjoint: the adjoint became NaN or infinite by t={run['ts'][i]!r}",
                    run["ts"][i],
                )
    # z₀ = y₀, f₀ = f(t₀, y₀), g₀ = g(t₀, y₀) at the start
    vz = pull(zz, fz, gz, a_f, a_g)
    grad_y0 = a_y + a_z if vz is None else a_y + a_z + vz
    return grad_y0, acc


class _SdeintAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: dict, y0: Tensor, *params: Tensor) -> Tensor:
        y0 = y0.detach()
        with torch.no_grad():
            if run["reversible"]:
                ys, z_end = _forward_reversible_heun(run, y0)
                ctx.save_for_backward(ys, z_end, *params)
            else:
                ys = run["solve"](y0)
                ctx.save_for_backward(ys, *params)
        ctx.run = run
        return ys

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ys: Tensor):
        run = ctx.run
        if run["reversible"]:
            ys, z_end, *params = ctx.saved_tensors
            grad_y0, acc = _backward_reversible_heun(run, ys, z_end, grad_ys, params)
        else:
            ys, *params = ctx.saved_tensors
            grad_y0, acc = _backward_continuous(run, ys, grad_ys, params)
        return (None, grad_y0, *acc)


def _brownian_size(y0: Tensor, g0: Tensor, noise_type: str) -> torch.Size:
    if noise_type == "diagonal":
        ok, size = g0.shape == y0.shape, y0.shape
    elif noise_type == "scalar":
        ok, size = tuple(g0.shape) == (*y0.shape, 1), torch.Size((*y0.shape[:-1], 1))
    else:
        ok = g0.dim() == y0.dim() + 1 and g0.shape[:-1] == y0.shape
        size = torch.Size((*y0.shape[:-1], g0.shape[-1])) if ok else None
    if not ok:
        raise ValueError(
            f"sdeint_adjoint: g(t, y) returned shape {tuple(g0.shape)}, which does not fit "
            f"{noise_type} noise for y0 of shape {tuple(y0.shape)}"
        )
    return size


def sdeint_adjoint(
    sde: Any,
    y0: Tensor,
    ts: Tensor | Sequence[float],
    bm: Callable[..., Tensor] | None = None,
    method: str | None = None,
    adjoint_method: str | None = None,
    dt: float = 1e-3,
    adaptive: bool = False,
    adjoint_adaptive: bool = False,
    rtol: float = 1e-5,
    adjoint_rtol: float = 1e-5,
    atol: float = 1e-4,
    adjoint_atol: float = 1e-4,
    dt_min: float = 1e-5,
    options: dict[str, Any] | None = None,
    adjoint_options: dict[str, Any] | None = None,
    adjoint_params: Iterable[Tensor] | None = None,
    names: dict[str, str] | None = None,
    logqp: bool = False,
    extra: bool = False,
    extra_solver_state: Any = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`~genmodels.integrate.sdeint.sdeint` whose gradients come from the stochastic
    adjoint (module docstring), in memory O(1) in the number of steps.

    torchsde's signature. The forward pass is ``sdeint`` without a graph; the backward pass
    solves the augmented adjoint SDE from ``ts[-1]`` to ``ts[0]`` on the same grid and the
    same Brownian path, so ``bm`` must answer queries in any order (our
    :class:`~genmodels.integrate.brownian.BrownianMotion`, torchsde's ``BrownianInterval``).
    Gradients flow to ``y0`` and ``adjoint_params`` (default: ``sde.parameters()``; those
    that require grad).

    Args:
        sde, y0, ts, method, dt, options, names: as ``sdeint``. ``ts`` must not require grad.
        bm: Brownian motion with ``bm(ta, tb)`` (torchsde's protocol), queried forwards and
            then backwards. Default: a path on the solver's grid drawn block-wise from a seed
            (itself drawn from ``generator``), regenerated in the backward pass; O(1) memory
            (with ``adaptive=True``: a :class:`BrownianMotion` of that seed).
        adjoint_method: "euler" / "milstein" (Itô, Milstein for diagonal noise), "midpoint" /
            "heun" (Stratonovich), "adjoint_reversible_heun" (only with
            ``method="reversible_heun"``: exact gradients of the discrete solve). Default as
            torchsde: reversible_heun → adjoint_reversible_heun, Itô diagonal → milstein,
            other Itô → euler, Stratonovich → midpoint.
        adaptive, rtol, atol, dt_min: passed to ``sdeint`` (its adaptive stepping) when
            ``adaptive`` is True; the backward solve uses the fixed grid of ``dt``.
        adjoint_options: {"grad_free": False} only (the adjoint needs the derivatives).
        logqp: also return the KL penalty's increments, as ``sdeint(logqp=True)``: the
            state is augmented with L, dL = ½ |g⁻¹ (f - h)|² dt (no noise on L; diagonal noise
            gets one more Brownian channel of zero diffusion, so a given ``bm`` must have
            ``d + 1`` channels there, as for ``sdeint``), and the adjoint runs on the
            augmented SDE, so gradients of the KL flow to ``y0`` and the parameters too.
            ``names`` may then also map ``"prior_drift"``.
        adjoint_adaptive, adjoint_rtol, adjoint_atol, extra, extra_solver_state: accepted
            for torchsde's signature; ``adjoint_adaptive``, ``extra`` and
            ``extra_solver_state`` other than their defaults raise ``ValueError`` (not
            implemented here).
        generator: draws the seed of the default Brownian path.

    Returns:
        (T, *y0.shape) tensor, y at each of ``ts`` (identical to ``sdeint`` on the same path);
        with ``logqp`` the pair (ys, log_ratio), log_ratio of shape (T - 1, *y0.shape[:-1]).

    Raises:
        ValueError: ts requires grad, unknown or mismatched adjoint_method, unsupported options.
        TypeError: ``sde`` is not an ``nn.Module`` and no ``adjoint_params`` are given.

    Example:
        >>> class OU(nn.Module):
        ...     noise_type, sde_type = "diagonal", "ito"
        ...     def __init__(self):
        ...         super().__init__(); self.theta = nn.Parameter(torch.tensor(1.0))
        ...     def f(self, t, y): return -self.theta * y
        ...     def g(self, t, y): return 0.5 * torch.ones_like(y)
        >>> sde, y0 = OU(), torch.ones(8, 2, requires_grad=True)
        >>> ys = sdeint_adjoint(sde, y0, [0.0, 1.0], dt=0.01)
        >>> ys[-1].sum().backward()  # sde.theta.grad and y0.grad, O(1) memory in the steps
    """
    if adjoint_params is None and not isinstance(sde, nn.Module):
        raise TypeError(
            "sdeint_adjoint: sde must be an nn.Module (to find its parameters), or pass "
            "adjoint_params explicitly (adjoint_params=() for none)"
        )
    for name, value in (("adjoint_adaptive", adjoint_adaptive), ("extra", extra)):
        if value:
            raise ValueError(f"sdeint_adjoint: {name}=True is not implemented in genmodels")
    if extra_solver_state is not None:
        raise ValueError("sdeint_adjoint: extra_solver_state is not implemented in genmodels")
    if isinstance(ts, Tensor) and ts.requires_grad:
        raise ValueError("sdeint_adjoint: ts must not require grad (no gradients wrt the times)")
    if not isinstance(y0, Tensor) or not torch.is_floating_point(y0) or y0.dim() < 1:
        raise ValueError("sdeint_adjoint: y0 must be a floating-point tensor of shape (..., d)")
    if logqp:
        return _sdeint_adjoint_logqp(
            sde, y0, ts, bm, method, adjoint_method, dt, adaptive, rtol, atol, dt_min, options,
            adjoint_params, names, generator,
        )  # fmt: skip
    names = dict(names or {})
    if set(names) - {"drift", "diffusion"}:
        raise ValueError(
            f"sdeint_adjoint: names may map 'drift' and 'diffusion' only, got {sorted(names)}"
        )
    f = getattr(sde, names.get("drift", "f"), None)
    g = getattr(sde, names.get("diffusion", "g"), None)
    if not callable(f) or not callable(g):
        raise TypeError(
            "sdeint_adjoint: sde must have callable drift f(t, y) and diffusion g(t, y)"
        )
    noise_type, sde_type = getattr(sde, "noise_type", None), getattr(sde, "sde_type", None)
    if noise_type not in NOISE_TYPES or sde_type not in ("ito", "stratonovich"):
        raise ValueError(
            f"sdeint_adjoint: sde.noise_type must be one of {NOISE_TYPES} and sde.sde_type "
            f"'ito' or 'stratonovich', got {noise_type!r}, {sde_type!r}"
        )
    method = _default_method(sde_type, noise_type) if method is None else method
    if adjoint_method is None:
        adjoint_method = _default_adjoint_method(method, sde_type, noise_type)
    if adjoint_method not in ADJOINT_METHODS:
        raise ValueError(
            f"sdeint_adjoint: unknown adjoint_method {adjoint_method!r}; expected one of "
            f"{list(ADJOINT_METHODS)}"
        )
    adj_types, adj_noises = ADJOINT_METHODS[adjoint_method]
    if noise_type not in adj_noises:
        raise ValueError(
            f"sdeint_adjoint: adjoint_method {adjoint_method!r} does not support noise_type "
            f"{noise_type!r} (supports {list(adj_noises)})"
        )
    if sde_type not in adj_types and noise_type != "additive":
        raise ValueError(
            f"sdeint_adjoint: adjoint_method {adjoint_method!r} solves {'/'.join(adj_types)} "
            f"SDEs, but sde_type is {sde_type!r}"
        )
    reversible = adjoint_method == "adjoint_reversible_heun"
    if reversible and method != "reversible_heun":
        raise ValueError(
            "sdeint_adjoint: adjoint_method='adjoint_reversible_heun' inverts the "
            f"reversible_heun solver; it needs method='reversible_heun', got {method!r}"
        )
    if reversible and adaptive:
        raise ValueError("sdeint_adjoint: method='reversible_heun' with adaptive=True is not "
                         "supported by the exact reversible adjoint")  # fmt: skip
    adjoint_options = dict(adjoint_options or {})
    if adjoint_options.pop("grad_free", False):
        raise ValueError(
            "sdeint_adjoint: derivative-free Milstein cannot solve the adjoint SDE; use "
            "adjoint_options=dict(grad_free=False)"
        )
    if adjoint_options:
        raise ValueError(f"sdeint_adjoint: unknown adjoint_options {sorted(adjoint_options)}")
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"sdeint_adjoint: dt must be positive and finite, got {dt}")
    ts_list = check_times(ts, name="ts", caller="sdeint_adjoint", tensor=False)
    if adjoint_params is None:
        adjoint_params = sde.parameters()
    params = tuple(p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad)
    if len(ts_list) == 1:
        return sdeint(sde=sde, y0=y0, ts=ts, bm=bm, method=method, dt=dt, names=names or None,
                      options=options)  # fmt: skip

    grid, marks = _grid(ts_list, dt)
    hs = [b - a for a, b in zip(grid[:-1], grid[1:])]
    dtype, device = y0.dtype, y0.device
    times = torch.tensor(grid, dtype=dtype, device=device).unbind(0)
    mids = [0.5 * (a + b) for a, b in zip(grid[:-1], grid[1:])]
    mid_times = torch.tensor(mids, dtype=dtype, device=device).unbind(0)
    if bm is None:
        with torch.no_grad():
            g0 = g(times[0], y0)
        if not isinstance(g0, Tensor):
            raise TypeError(f"sdeint_adjoint: g(t, y) returned a {type(g0).__name__}, not a tensor")
        size = _brownian_size(y0, g0, noise_type)
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        if adaptive:  # adaptive steps query off the grid: a tree answers anywhere
            bm = BrownianMotion(min(ts_list), max(ts_list), size=size, seed=seed, dtype=dtype,
                                device=device, levy_area=method == "srk")  # fmt: skip
        else:
            bm = _SeededGridBrownian(grid, size, method == "srk", dtype, device, seed)
    noise = bm if isinstance(bm, _SeededGridBrownian) else _QueriedIncrements(bm, grid, dtype)

    kwargs = dict(sde=sde, ts=ts, bm=bm, method=method, dt=dt, names=names or None,
                  options=options)  # fmt: skip
    if adaptive:  # keyword only when used: sdeint gains adaptive stepping separately
        kwargs.update(adaptive=True, rtol=rtol, atol=atol, dt_min=dt_min)

    def solve(y: Tensor) -> Tensor:
        return sdeint(y0=y, **kwargs)

    ito = sde_type == "ito"
    run = dict(
        solve=solve, reversible=reversible, adjoint_method=adjoint_method, ts=ts_list,
        hs=hs, marks=marks, times=times, noise=noise, ito=ito, f=f, g=g,
        prod=_prod(noise_type), noise_type=noise_type,
        adjoint=_Adjoint(f, g, noise_type, ito, params, times, mid_times),
    )  # fmt: skip
    return _SdeintAdjoint.apply(run, y0, *params)


class _AugmentedSDE:
    """The SDE on (y, L) of ``sdeint(logqp=True)`` (:func:`~genmodels.integrate.sdeint._logqp`)
    as an object with ``f``, ``g``, ``noise_type`` and ``sde_type``."""

    def __init__(self, fns: Any):
        self.f, self.g = fns.f, fns.g
        self.noise_type, self.sde_type = fns.noise_type, fns.sde_type


def _sdeint_adjoint_logqp(
    sde, y0, ts, bm, method, adjoint_method, dt, adaptive, rtol, atol, dt_min, options,
    adjoint_params, names, generator,
):  # fmt: skip
    """``sdeint_adjoint(..., logqp=True)``: the adjoint of the augmented SDE, split back into
    (ys, log_ratio) as ``sdeint`` returns them."""
    names = dict(names or {})
    if set(names) - {"drift", "diffusion", "prior_drift"}:
        raise ValueError(
            "sdeint_adjoint: with logqp=True names may map 'drift', 'diffusion' and "
            f"'prior_drift' only, got {sorted(names)}"
        )
    fns = _logqp(_resolve(sde, names))
    if adjoint_params is None:
        adjoint_params = sde.parameters()
    params = tuple(p for p in adjoint_params if isinstance(p, Tensor) and p.requires_grad)
    y0a = torch.cat([y0, y0.new_zeros((*y0.shape[:-1], 1))], dim=-1)
    ys = sdeint_adjoint(
        _AugmentedSDE(fns), y0a, ts, bm, method=method, adjoint_method=adjoint_method, dt=dt,
        adaptive=adaptive, rtol=rtol, atol=atol, dt_min=dt_min, options=options,
        adjoint_params=params, generator=generator,
    )  # fmt: skip
    return ys[..., :-1], ys[1:, ..., -1] - ys[:-1, ..., -1]
