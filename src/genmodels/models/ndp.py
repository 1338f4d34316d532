"""Neural ODE Processes, NDP and ND2P (Norcliffe, Bodnar, Day, Moss & Liò, ICLR 2021).

The lecture's section 5: NDP keeps the NP's three parts and puts a Neural ODE in the latent::

    encoder     s = mean_i h(x_i, y_i)                               over the context C
                L0 ~ q_L(l(t0) | C) = N(mu_L(s), sigma_L(s)^2)        the ODE's initial state
                D  ~ q_D(d | C)     = N(mu_D(s), sigma_D(s)^2)        the control latent
    ODE         l(t) = l(t0) + int_{t0}^{t} f_theta(l(u), d, u) du     (odeint, one solve)
    decoder     p(y | l(t), t) = N(mu, sigma^2),  (mu, sigma) = g(t, l(t), d),
                sigma = 0.1 + 0.9 softplus(.)

The decoder reads the time, the state and the control, and its output layer sees the state
again (a skip connection), as the authors' public code's ``MlpNormalODEDecoder`` does; the
sizes are that code's for 1-D regression: representation and hidden width 50, ``l_dim`` 10
(ND2P: 14) and the control the rest of a 50-dimensional latent (``d_dim`` 40).

ND2P is the paper's second-order variant: ``l = (position, velocity)``,
``d position/dt = velocity``, ``d velocity/dt = f_theta(position, velocity, d, t)``; the
decoder reads the whole state. Training maximises the NP's ELBO over the latents ``(L0, D)``
with ``q(· | C ∪ T)`` and the conditional prior ``q(· | C)``.

The ODE is solved once per batch, on the sorted union of every task's target times, from
the family's initial time ``t0`` (stored in the data options and the run's ``config.json``;
``t0`` must precede every time asked for). Target times may come in any order and repeat: the
model sorts and de-duplicates them itself and gathers each task's values back. The default
solver is RK4 with 16 equal steps over the solve's span (64 field evaluations per solve,
cubic interpolation to the target times): its cost is fixed, unlike the official code's
adaptive dopri5, whose number of steps grows as the learned field stiffens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from ..data.info import DataInfo
from ..integrate import SolverStats, odeint
from ..registry import register
from .neural_process import _out, batch_inputs, mlp

__all__ = ["NDP", "NDPConfig", "ND2PConfig"]


class NDP(nn.Module):
    """Neural ODE Process (``second_order=True``: ND2P).

    Args:
        dx, dy: input (time: 1) and output dimensions; t0: the initial time.
        l_dim: the ODE state's size (ND2P: position + velocity, even); d_dim: the control's;
        hidden: MLP width; method, n_steps, rtol, atol: the ODE solver (``odeint``): a
        fixed-step method takes ``n_steps`` equal steps from ``t0`` to the last target time
        and interpolates cubically between them; ``n_steps=None`` with an adaptive method
        (``dopri5``) steps by ``rtol``/``atol``.
    """

    train_defaults = {"lr": 1e-3}

    def __init__(
        self,
        dx: int = 1,
        dy: int = 1,
        *,
        t0: float = 0.0,
        l_dim: int = 10,
        d_dim: int = 40,
        hidden: int = 50,
        second_order: bool = False,
        sigma_floor: float = 0.1,
        method: str = "rk4",
        n_steps: int | None = 16,
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
        self.sigma_floor = sigma_floor
        self.method, self.n_steps, self.rtol, self.atol = method, n_steps, rtol, atol
        self.encoder = mlp([dx + dy, hidden, hidden, hidden])
        self.latent_head = nn.Linear(hidden, 2 * (l_dim + d_dim))
        n_out = l_dim // 2 if second_order else l_dim
        self.field = mlp([l_dim + d_dim + 1, hidden, hidden, n_out], act=nn.Tanh)
        self.decoder = nn.Sequential(mlp([1 + l_dim + d_dim, hidden, hidden, hidden]), nn.ReLU())
        self.head = nn.Linear(hidden + l_dim, 2 * dy)  # the state skips to the output
        self.stats = SolverStats()  # function evaluations, accumulated over solves

    # -- encoder ---------------------------------------------------------------------
    def q_latent(self, x: Tensor, y: Tensor) -> Normal:
        """``q(L0, D | {(x_i, y_i)})``: a Normal over ``l_dim + d_dim`` values per task."""
        s = self.encoder(torch.cat([x, y], -1)).mean(1)
        mu, raw = self.latent_head(s).chunk(2, -1)
        return Normal(mu, 0.1 + 0.9 * torch.sigmoid(raw))

    # -- ODE and decoder -------------------------------------------------------------
    def _rhs(self, d: Tensor):
        def f(t: Tensor, l: Tensor) -> Tensor:
            tt = t.to(l.dtype).expand(*l.shape[:-1], 1)
            dv = self.field(torch.cat([l, d, tt], -1))
            if not self.second_order:
                return dv
            return torch.cat([l[..., self.l_dim // 2 :], dv], -1)  # (d pos, d vel)

        return f

    def decode(self, latent: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` at times ``xt`` ``(B, m, 1)`` from ``latent = (L0, D)``
        ``(..., B, l_dim + d_dim)`` (any leading sample dimensions)."""
        lead = latent.shape[:-1]
        flat = latent.reshape(-1, latent.shape[-1])
        l0, d = flat[:, : self.l_dim], flat[:, self.l_dim :]
        times, inverse = torch.unique(xt[..., 0], sorted=True, return_inverse=True)
        if float(times[0]) <= self.t0:
            raise ValueError(
                f"target times must come after the model's t0 = {self.t0}; got "
                f"{float(times[0])} (t0 is the data set's option)"
            )
        grid = torch.cat([times.new_tensor([self.t0]), times])
        opts = None
        if self.n_steps is not None:
            opts = {"step_size": float(grid[-1] - grid[0]) / self.n_steps, "interp": "cubic"}
        ls = odeint(
            self._rhs(d),
            l0,
            grid,
            method=self.method,
            options=opts,
            rtol=self.rtol,
            atol=self.atol,
            stats=self.stats,
        )[1:]  # (T, K*B, l_dim)
        ls = ls.reshape(ls.shape[0], *lead, self.l_dim)  # (T, ..., B, l_dim)
        # each task's own times: l[inverse[b, j], ..., b, :]; lead ends with B
        ls = ls.movedim(0, -2)  # (..., B, T, l_dim)
        idx = inverse.unsqueeze(-1).expand(*lead, inverse.shape[1], self.l_dim)
        lt = ls.gather(-2, idx)  # (..., B, m, l_dim)
        t = xt.expand(*lead[:-1], *xt.shape)
        dd = d.reshape(*lead, 1, self.d_dim).expand(*lt.shape[:-1], self.d_dim)
        h = self.decoder(torch.cat([t, lt, dd], -1))
        mu, raw = self.head(torch.cat([h, lt], -1)).chunk(2, -1)
        return mu, self.sigma_floor + (1 - self.sigma_floor) * F.softplus(raw)

    # -- the process contract --------------------------------------------------------
    def predict(self, x_context, y_context, x_target, *, n_samples=None, generator=None):
        """``Normal`` over ``y_target`` ``(..., m, dy)``, decoded at the mean of
        ``q(L0, D | C)`` or at ``n_samples`` draws (a leading ``K`` dimension)."""
        xc, yc, xt, squeeze = batch_inputs(self, x_context, y_context, x_target, self.dx, self.dy)
        q = self.q_latent(xc, yc)
        if n_samples is None:
            latent = q.mean
        else:
            eps = torch.randn(
                (n_samples, *q.mean.shape), generator=generator, dtype=xt.dtype, device=xt.device
            )
            latent = q.mean + q.stddev * eps
        mu, sigma = self.decode(latent, xt)
        return _out(mu, sigma, squeeze)

    def elbo(self, batch, *, generator=None, n_samples: int = 1) -> Tensor:
        """Per task ``(B,)``: ``E_{q(L0,D | C∪T)} log p(y_T | L0, D) - KL(q(·|C∪T) || q(·|C))``."""
        xc, yc, xt, yt = batch
        q_ct, q_c = self.q_latent(xt, yt), self.q_latent(xc, yc)
        eps = torch.randn(
            (n_samples, *q_ct.mean.shape), generator=generator, dtype=yt.dtype, device=yt.device
        )
        mu, sigma = self.decode(q_ct.mean + q_ct.stddev * eps, xt)
        ll = Normal(mu, sigma).log_prob(yt).sum((-2, -1)).mean(0)
        return ll - kl_divergence(q_ct, q_c).sum(-1)

    def loss(self, batch, *, generator=None) -> Tensor:
        """Negative ELBO per target value."""
        return -self.elbo(batch, generator=generator).sum() / batch.y_target.numel()


@dataclass
class NDPConfig:
    """``ndp``/``nd2p``: latent sizes, width, the solver (``n_steps`` null: adaptive)."""

    l_dim: int = 10
    d_dim: int = 40
    hidden: int = 50
    sigma_floor: float = 0.1
    method: str = "rk4"
    n_steps: int | None = 16
    rtol: float = 1e-3
    atol: float = 1e-4


@dataclass
class ND2PConfig(NDPConfig):
    """``nd2p``: as ``ndp`` with a 14-dimensional state (7 position + 7 velocity)."""

    l_dim: int = 14
    d_dim: int = 36


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
