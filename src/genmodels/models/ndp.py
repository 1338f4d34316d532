"""Neural ODE Processes, NDP and ND2P (Norcliffe, Bodnar, Day, Moss & Liò, ICLR 2021).

The lecture's section 5: NDP keeps the NP's three parts and puts a Neural ODE in the latent::

    encoders    s = mean_i h(x_i, y_i),  r = mean_i h_r(x_i, y_i)     over the context C
                L0 ~ q_L(l(t0) | C) = N(mu_L(s), sigma_L(s)^2)        the ODE's initial state
                D  ~ q_D(d | C)     = N(mu_D(s), sigma_D(s)^2)        the control latent
    ODE         l(t) = l(t0) + int_{t0}^{t} f_theta(l(u), d, u) du     (odeint, one solve)
    decoder     p(y | l(t), t) = N(mu, sigma^2),  (mu, sigma) = g(t, l(t), d, r),
                sigma = 0.1 + 0.9 softplus(.)

The decoder reads the time, the state, the control and the deterministic representation
``r``, and its output layer sees the state again (a skip connection, as the authors' public
code's ``MlpNormalODEDecoder``). **This NDP is our NP plus a latent ODE, a superset:** the
same deterministic path ``r`` (size 64, width 64, as ``np``) and a latent ``(L0, D)`` of
10 + 22 = 32 dimensions, the size of the NP's ``z``; with the ODE's field at zero,
``l(t) = L0`` and the decoder (its skip weights at zero) is the NP's on ``z = (L0, D)``.
The authors' code has no deterministic path (its NP has none either) and uses width 50,
``l_dim`` 10 and ``d_dim`` 40: ``r_dim=0, d_dim=40, hidden=50, n_steps=16`` builds our
earlier version of that model, which reached ll 0.71 on sine against our NP's 0.90
(docs/processes.md, "Why NDP was behind NP"). The ODE's field reads ``(l, d, t)`` only:
feeding it ``r`` as well was worse (ll 0.56 against 0.88, one seed).

ND2P is the paper's second-order variant: ``l = (position, velocity)``,
``d position/dt = velocity``, ``d velocity/dt = f_theta(position, velocity, d, t)``; the
decoder reads the whole state. Training maximises the NP's ELBO over the latents ``(L0, D)``
with ``q(· | C ∪ T)`` and the conditional prior ``q(· | C)``.

The ODE is solved once per batch from the family's initial time ``t0`` (stored in the data
options and the run's ``config.json``; ``t0`` must precede every time asked for) to the
batch's last target time; target times may come in any order and repeat. The default solver
is RK4 with 8 equal steps (32 field evaluations, plus one batched evaluation of the slopes at
the 9 grid points), and each task's times are read off by cubic Hermite interpolation on
the grid, vectorised over all of them: its cost is fixed, unlike the official code's adaptive
dopri5, whose number of steps grows as the learned field stiffens. An adaptive solver
(``n_steps=None``) outputs at the sorted, de-duplicated union of the batch's times instead and
gathers each task's values back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.info import DataInfo
from ..integrate import SolverStats, odeint
from ..registry import register
from .neural_process import LatentProcess, mlp

__all__ = ["NDP", "NDPConfig", "ND2PConfig"]


class NDP(LatentProcess, nn.Module):
    """Neural ODE Process (``second_order=True``: ND2P).

    Args:
        dx, dy: input (time: 1) and output dimensions; t0: the initial time.
        l_dim: the ODE state's size (ND2P: position + velocity, even); d_dim: the control's;
        hidden: MLP width; r_dim: the deterministic path's size (0: none, the authors' NDP);
        method, n_steps, rtol, atol: the ODE solver (``odeint``): a fixed-step method
        takes ``n_steps`` equal steps from ``t0`` to the last target time and interpolates
        cubically between them; ``n_steps=None`` with an adaptive method (``dopri5``) steps
        by ``rtol``/``atol``.
    """

    train_defaults = {"lr": 1e-3}

    def __init__(
        self,
        dx: int = 1,
        dy: int = 1,
        *,
        t0: float = 0.0,
        l_dim: int = 10,
        d_dim: int = 22,
        hidden: int = 64,
        r_dim: int = 64,
        second_order: bool = False,
        sigma_floor: float = 0.1,
        method: str = "rk4",
        n_steps: int | None = 8,
        rtol: float = 1e-3,
        atol: float = 1e-4,
    ):
        super().__init__()
        if dx != 1:
            raise ValueError(f"a Neural ODE Process takes times as inputs (dx = 1), got dx={dx}")
        if second_order and l_dim % 2:
            raise ValueError(f"ND2P needs an even l_dim (position + velocity), got {l_dim}")
        self.dx, self.dy, self.t0 = dx, dy, float(t0)
        self.l_dim, self.d_dim, self.second_order = l_dim, d_dim, second_order
        self.r_dim = r_dim
        self.sigma_floor = sigma_floor
        self.method, self.n_steps, self.rtol, self.atol = method, n_steps, rtol, atol
        self.latent_encoder = mlp([dx + dy, hidden, hidden, hidden])
        self.latent_head = nn.Linear(hidden, 2 * (l_dim + d_dim))
        n_out = l_dim // 2 if second_order else l_dim
        if r_dim:  # the deterministic path r = mean_i h_r(x_i, y_i), as the NP's
            self.encoder = mlp([dx + dy, hidden, hidden, r_dim])
        self.field = mlp([l_dim + d_dim + 1, hidden, hidden, n_out], act=nn.Tanh)
        self.decoder = nn.Sequential(
            mlp([1 + l_dim + d_dim + r_dim, hidden, hidden, hidden]), nn.ReLU()
        )
        self.head = nn.Linear(hidden + l_dim, 2 * dy)  # the state skips to the output
        self.stats = SolverStats()  # function evaluations, accumulated over solves

    # -- ODE and decoder -------------------------------------------------------------
    def _rhs(self, d: Tensor):
        """``f(t, l)`` of one solve with the control ``d`` ``(N, d_dim)``: the field MLP on
        ``[l, d, t]``, with the control's share of its first layer, ``W_d d + b``, computed
        once per solve instead of concatenated into every evaluation (the same affine map).
        ``t`` is the solver's 0-dim time, or ``(S, 1, 1)`` with ``l`` ``(S, N, l_dim)``: a
        batch of states at ``S`` times in one evaluation."""
        first, second, third = self.field[0], self.field[2], self.field[4]
        w_l, w_d, w_t = first.weight.split([self.l_dim, self.d_dim, 1], 1)
        const, w_lt, w_t = F.linear(d, w_d, first.bias), w_l.t(), w_t[:, 0]
        # transposed once per solve, not in every evaluation (and every backward)
        w2, b2, w3, b3 = second.weight.t(), second.bias, third.weight.t(), third.bias
        half = self.l_dim // 2

        def f(t: Tensor, l: Tensor) -> Tensor:  # the field's layers called directly
            if l.dim() == 2:
                h = torch.tanh(torch.addmm(const, l, w_lt) + t.to(l.dtype) * w_t)
                dv = torch.addmm(b3, torch.tanh(torch.addmm(b2, h, w2)), w3)
            else:  # a batch of times (S, N, l_dim)
                h = torch.tanh(torch.matmul(l, w_lt) + const + t.to(l.dtype) * w_t)
                dv = torch.matmul(torch.tanh(torch.matmul(h, w2) + b2), w3) + b3
            if not self.second_order:
                return dv
            return torch.cat([l[..., half:], dv], -1)  # (d pos, d vel)

        return f

    def _check_times(self, xt: Tensor) -> None:
        first = float(xt.min())
        if first <= self.t0:
            raise ValueError(
                f"target times must come after the model's t0 = {self.t0}; got "
                f"{first} (t0 is the data set's option)"
            )

    def _solve_adaptive(self, f, l0: Tensor, xt: Tensor, lead) -> Tensor:
        """``l`` at each task's times ``(..., B, m, l_dim)``: one adaptive solve with outputs
        at the sorted union of the batch's times, gathered back per task."""
        times, inverse = torch.unique(xt[..., 0], sorted=True, return_inverse=True)
        grid = torch.cat([times.new_tensor([self.t0]), times])
        ls = odeint(
            f, l0, grid, method=self.method, rtol=self.rtol, atol=self.atol, stats=self.stats
        )[1:]  # (T, K*B, l_dim)
        ls = ls.reshape(ls.shape[0], *lead, self.l_dim).movedim(0, -2)  # (..., B, T, l_dim)
        # each task's own times: l[..., b, inverse[b, j], :]; lead ends with B
        idx = inverse.unsqueeze(-1).expand(*lead, inverse.shape[1], self.l_dim)
        return ls.gather(-2, idx)

    def _solve_fixed(self, f, l0: Tensor, xt: Tensor, lead) -> Tensor:
        """``l`` at each task's times ``(..., B, m, l_dim)``: ``n_steps`` equal steps from
        ``t0`` to the batch's last time, then cubic Hermite interpolation on each step,
        ``l(t) = h00 l_i + h10 h f_i + h01 l_{i+1} + h11 h f_{i+1}``, vectorised over every
        task's times at once (the slopes ``f_i`` at the grid in one batched evaluation). The
        same numbers as ``odeint``'s ``interp="cubic"`` at each target time, without its
        per-output-time Python loop, and without sorting or de-duplicating the times."""
        t0, t1, n = self.t0, float(xt.max()), self.n_steps
        h = (t1 - t0) / n
        grid = torch.tensor([t0 + i * h for i in range(n)] + [t1], dtype=torch.float64)
        ls = odeint(f, l0, grid, method=self.method, stats=self.stats)  # (n+1, N, l_dim)
        fs = f(grid.to(device=ls.device)[:, None, None], ls)  # the slopes at the grid
        self.stats.nfe += 1
        # each target's step i and position in it, in float64
        t = xt[..., 0].to(torch.float64)  # (B, m)
        i = ((t - t0) / h).floor().clamp(0, n - 1).long()
        g = grid.to(t.device)
        gi, hi = g[i], g[i + 1] - g[i]
        th = (t - gi) / hi
        w = torch.stack(
            [(1 + 2 * th) * (1 - th) ** 2, th * (1 - th) ** 2 * hi, th * th * (3 - 2 * th),
             th * th * (th - 1) * hi]
        ).to(ls.dtype)  # fmt: skip
        both = torch.cat([ls, fs], -1)  # (n+1, N, 2 l_dim): state and slope together
        both = both.reshape(n + 1, *lead, 2 * self.l_dim).movedim(0, -2)  # (..., B, n+1, ·)
        idx = i.unsqueeze(-1).expand(*lead, i.shape[1], 2 * self.l_dim)
        a, b = both.gather(-2, idx), both.gather(-2, idx + 1)  # (..., B, m, 2 l_dim)
        k = self.l_dim
        w = w.unsqueeze(-1)  # (4, B, m, 1)
        return w[0] * a[..., :k] + w[1] * a[..., k:] + w[2] * b[..., :k] + w[3] * b[..., k:]

    def represent(self, xc: Tensor, yc: Tensor) -> Tensor:
        """The deterministic path ``r = mean_i h_r(x_i, y_i)``: ``(B, n, ·)`` -> ``(B, r_dim)``."""
        return self.encoder(torch.cat([xc, yc], -1)).mean(1)

    def decode(self, latent: Tensor, xt: Tensor, r: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` at times ``xt`` ``(B, m, 1)`` from ``latent = (L0, D)``
        ``(..., B, l_dim + d_dim)`` (any leading sample dimensions) and, with a deterministic
        path (``r_dim > 0``), the context's ``r`` ``(B, r_dim)``."""
        self._check_times(xt)
        if (r is None) != (self.r_dim == 0):
            raise ValueError(f"r must be given exactly when r_dim > 0 (r_dim={self.r_dim})")
        lead = latent.shape[:-1]
        flat = latent.reshape(-1, latent.shape[-1])
        l0, d = flat[:, : self.l_dim], flat[:, self.l_dim :]
        solve = self._solve_adaptive if self.n_steps is None else self._solve_fixed
        lt = solve(self._rhs(d), l0, xt, lead)  # (..., B, m, l_dim)
        if r is not None:  # the decoder reads (d, r) beside t and l(t)
            d = torch.cat([d, r.expand(*lead, self.r_dim).reshape(-1, self.r_dim)], -1)
        t = xt.expand(*lead[:-1], *xt.shape)
        dd = d.reshape(*lead, 1, d.shape[-1]).expand(*lt.shape[:-1], d.shape[-1])
        h = self.decoder(torch.cat([t, lt, dd], -1))
        mu, raw = self.head(torch.cat([h, lt], -1)).chunk(2, -1)
        return mu, self.sigma_floor + (1 - self.sigma_floor) * F.softplus(raw)

    def _decode_latent(self, xc, yc, xt, latent):
        """Decode ``(L0, D)``; with a deterministic path, also the context's ``r``."""
        return self.decode(latent, xt, self.represent(xc, yc) if self.r_dim else None)


@dataclass
class NDPConfig:
    """``ndp``/``nd2p``: latent sizes, width, the solver (``n_steps`` null: adaptive)."""

    l_dim: int = 10
    d_dim: int = 22
    hidden: int = 64
    r_dim: int = 64
    sigma_floor: float = 0.1
    method: str = "rk4"
    n_steps: int | None = 8
    rtol: float = 1e-3
    atol: float = 1e-4


@dataclass
class ND2PConfig(NDPConfig):
    """``nd2p``: as ``ndp`` with a 14-dimensional state (7 position + 7 velocity)."""

    l_dim: int = 14
    d_dim: int = 18


def _build(config: NDPConfig, info: DataInfo, second_order: bool) -> NDP:
    if "t0" not in info.options:
        raise ValueError(
            f"a Neural ODE Process needs the data's initial time t0 (data option); data set "
            f"{info.name!r} has options {sorted(info.options)}"
        )
    return NDP(
        info.input_shape[0],
        info.event_shape[0],
        t0=info.options["t0"],
        l_dim=config.l_dim,
        d_dim=config.d_dim,
        hidden=config.hidden,
        r_dim=config.r_dim,
        second_order=second_order,
        sigma_floor=config.sigma_floor,
        method=config.method,
        n_steps=config.n_steps,
        rtol=config.rtol,
        atol=config.atol,
    )


@register(
    "ndp",
    config=NDPConfig,
    default_data="sine",
    task="process",
    section=5,
    data_kinds=("tasks",),
    description="Neural ODE Process (Norcliffe et al. 2021): a latent ODE from the context",
)
def build_ndp(config: NDPConfig, info: DataInfo) -> NDP:
    return _build(config, info, second_order=False)


@register(
    "nd2p",
    config=ND2PConfig,
    default_data="oscil",
    task="process",
    section=5,
    data_kinds=("tasks",),
    description="Second-order Neural ODE Process (ND2P, Norcliffe et al. 2021)",
)
def build_nd2p(config: NDPConfig, info: DataInfo) -> NDP:
    return _build(config, info, second_order=True)
