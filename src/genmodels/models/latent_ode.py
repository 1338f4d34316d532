"""The latent ODE: a VAE for irregularly sampled time series (lecture §4, eqs. 11-13).

Chen, Rubanova, Bettencourt & Duvenaud (2018), "Neural Ordinary Differential Equations", §5
(eqs. 11-13); Rubanova, Chen & Duvenaud (2019), "Latent ODEs for Irregularly-Sampled Time
Series", for the ODE-RNN encoder. With observations ``x_i`` at times ``t_i``:

    q(z_{t_0} | x_{1..n}) = N(μ, diag σ²),  (μ, log σ) = RNN_enc(x_n, ..., x_1)   (backwards)
    z_{t_0} ~ q,   z_{t_1}, ..., z_{t_m} = ODESolve(f_θ, z_{t_0}, t_0, ..., t_m)
    x_{t_i} ~ p(x | z_{t_i}) = N(dec(z_{t_i}), diag s²)

trained by the ELBO ``E_q[Σ_i log p(x_{t_i} | z_{t_i})] - KL(q(z_{t_0}) || N(0, I))`` with the
KL in closed form (:func:`genmodels.inference.elbo_analytic_kl`); :meth:`LatentODE.loss` is
the negative ELBO per observed value.

The latent state's time origin ``t_0`` is a fixed model constant (``t0``, default 0: every
``spirals`` window starts at t = 0), so the posterior means the same thing whatever the
targets are; targets before ``t_0`` are reached by solving backwards from it (the dynamics are
an ODE: both directions are exact), and a prediction is the same whether a target is asked
for alone or with others, up to the solver's error (the rk4 steps are the union's intervals).

Series of one batch have different observation times. The latent ODE is solved **once** on
the sorted union of the batch's times (rk4, one step per interval of the union: the grid of
torchdiffeq's latent ODE example when the times lie on a grid) and each series gathers its
own times from it: exact, because every row follows its own ODE from its own ``z_{t_0}`` and
the solver's steps are shared.

Encoders (reading the observations backwards in time, from the last to ``t_0``):

- ``"rnn"``: a GRU cell whose input at each observation is (values with missing entries as 0,
  the mask, the time gap to the next observation);
- ``"odernn"``: the ODE-RNN of Rubanova et al. (2019), Alg. 1: between observations the hidden
  state follows its own ODE ``dh/dt = g(h)`` (backwards over the gap, one rk4 step per gap on
  each row's own gap), then a GRU update at the observation; finally it is carried back to
  ``t_0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from ..inference import elbo_analytic_kl
from ..registry import DataInfo, register

__all__ = ["LatentODE", "LatentODEConfig", "build_latent_ode", "split_series"]


def split_series(batch, obs_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(times (B, n, 1), values (B, n, D), mask (B, n, D))`` of a series batch: a
    :class:`~genmodels.data.batches.Series` or ``(times, values)`` (NaN = missing), checked."""
    if hasattr(batch, "mask"):
        times, values, mask = batch.times, batch.values, batch.mask
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        times, values = batch
        if not isinstance(values, Tensor):
            raise TypeError(f"values must be a tensor (B, n, {obs_dim}), got {type(values)}")
        mask = ~torch.isnan(values)
        values = torch.nan_to_num(values, nan=0.0)
    else:
        raise TypeError(
            "a latent ODE's batch is (times (B, n, 1), values (B, n, D)) or a Series; got "
            f"{type(batch).__name__}"
        )
    check_times(times, "times")
    if values.dim() != 3 or values.shape[:2] != times.shape[:2] or values.shape[2] != obs_dim:
        raise ValueError(
            f"values must have shape (B, n, {obs_dim}) with the (B, n) of times "
            f"{tuple(times.shape[:2])}, got {tuple(values.shape)}"
        )
    if not bool(mask.flatten(1).any(1).all()):
        row = int((~mask.flatten(1).any(1)).nonzero()[0])
        raise ValueError(f"values: series {row} has no observed value (all NaN)")
    return times, values, mask


def check_times(times, name: str) -> Tensor:
    """``times`` must be a float tensor ``(B, n, 1)``, finite and strictly increasing per row."""
    if not isinstance(times, Tensor) or not times.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (B, n, 1), got {type(times).__name__}")
    if times.dim() != 3 or times.shape[-1] != 1 or times.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, n, 1), got {tuple(times.shape)}")
    t = times[..., 0]
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite")
    if not bool((t[:, 1:] > t[:, :-1]).all()):
        row = int((t[:, 1:] <= t[:, :-1]).any(1).nonzero()[0])
        raise ValueError(f"{name} must increase within each row; row {row} does not")
    return times


def _mlp(d_in: int, width: int, d_out: int, act=nn.ELU) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, width), act(), nn.Linear(width, width), act(), nn.Linear(width, d_out)
    )


class _Field(nn.Module):
    def __init__(self, dim: int, width: int):
        super().__init__()
        self.net = _mlp(dim, width, dim)

    def forward(self, t, z):
        return self.net(z)

    def solve_rk4(self, z: Tensor, grid: list[float]) -> Tensor:
        """z at every time of ``grid`` (``(len(grid), *z.shape)``, z at ``grid[0]`` first):
        rk4 (torchdiffeq's 3/8 rule, the ``"rk4"`` of :func:`~genmodels.integrate.odeint`)
        with one step per interval of ``grid`` (which may decrease: backwards in time).

        The steps of ``odeint(self, z, grid, method="rk4", grid = grid)``, with the MLP's
        layers called directly (no module dispatch per evaluation) and each stage's state a
        single fused ``add``."""
        (l1, _, l2, _, l3), elu = self.net, F.elu
        w1, b1, w2, b2, w3, b3 = l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias

        def f(y: Tensor) -> Tensor:
            return F.linear(elu(F.linear(elu(F.linear(y, w1, b1)), w2, b2)), w3, b3)

        out = [z]
        for t0, t1 in zip(grid[:-1], grid[1:]):
            dt = t1 - t0
            k1 = f(z)
            k2 = f(torch.add(z, k1, alpha=dt / 3))
            k3 = f(torch.add(torch.add(z, k2, alpha=dt), k1, alpha=-dt / 3))
            k4 = f(torch.add(z, k1 - k2 + k3, alpha=dt))
            z = torch.add(z, torch.add(k1 + k4, k2 + k3, alpha=3.0), alpha=dt / 8)
            out.append(z)
        return torch.stack(out)


def _rk4(g, h: Tensor, dt: Tensor) -> Tensor:
    """One classical rk4 step of the autonomous ``dh/dt = g(h)`` with a per-row step ``dt``
    ``(B, 1)`` (negative: backwards)."""
    k1 = g(h)
    k2 = g(h + 0.5 * dt * k1)
    k3 = g(h + 0.5 * dt * k2)
    k4 = g(h + dt * k3)
    return h + dt * (k1 + 2 * k2 + 2 * k3 + k4) / 6


class LatentODE(nn.Module):
    """Latent ODE VAE for irregular series (Chen et al. 2018 §5; Rubanova et al. 2019).

    Args:
        obs_dim: D, values per observation.
        latent_dim: size of z.
        encoder: ``"rnn"`` or ``"odernn"``.
        obs_std: the observation noise s; None: learned (a softplus parameter, starting at
            0.1).
        hidden: the encoder's hidden size; width: the latent field's and decoder's width.
        t0: the latent state's time origin.

    Example:
        >>> model = LatentODE(2)
        >>> t = torch.linspace(0, 1, 6).view(1, 6, 1).expand(3, 6, 1)
        >>> model.predict(t, torch.randn(3, 6, 2), torch.linspace(-1, 2, 9)[:, None]).mean.shape
        torch.Size([3, 9, 2])
    """

    train_defaults = {"lr": 1e-2}

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 4,
        *,
        encoder: str = "rnn",
        obs_std: float | None = None,
        hidden: int = 25,
        width: int = 20,
        t0: float = 0.0,
    ):
        super().__init__()
        if encoder not in ("rnn", "odernn"):
            raise ValueError(f"encoder must be 'rnn' or 'odernn', got {encoder!r}")
        self.obs_dim, self.latent_dim, self.encoder, self.t0 = obs_dim, latent_dim, encoder, t0
        self.cell = nn.GRUCell(2 * obs_dim + 1, hidden)
        self.to_q = nn.Linear(hidden, 2 * latent_dim)
        self.hidden_field = _mlp(hidden, hidden, hidden, nn.Tanh) if encoder == "odernn" else None
        self.field = _Field(latent_dim, width)
        self.decoder = _mlp(latent_dim, width, obs_dim, nn.ReLU)
        if obs_std is None:
            self.raw_std = nn.Parameter(torch.tensor(math.log(math.expm1(0.1))))
        else:
            self.register_buffer("raw_std", torch.tensor(math.log(math.expm1(obs_std))))

    @property
    def obs_std(self) -> Tensor:
        """s, the observation noise's standard deviation."""
        return F.softplus(self.raw_std)

    # -- q(z_{t0} | observations) ------------------------------------------------------------
    def posterior(self, times: Tensor, values: Tensor, mask: Tensor) -> Normal:
        """q(z_{t0}): a Normal of batch shape ``(B, latent_dim)``, from the observations read
        backwards (``times (B, n, 1)``, ``values``/``mask (B, n, D)``)."""
        B, n, _ = values.shape
        h = values.new_zeros(B, self.cell.hidden_size)
        m = mask.to(values.dtype)
        x = values * m
        t = times[..., 0]
        t_next = torch.cat([t[:, 1:], t[:, -1:]], 1)
        for i in range(n - 1, -1, -1):
            gap = (t_next[:, i] - t[:, i]).unsqueeze(-1)
            if self.hidden_field is not None and i < n - 1:
                h = _rk4(self.hidden_field, h, -gap)  # evolve back over the gap
            inp = torch.cat([x[:, i], m[:, i], gap], -1)
            h_new = self.cell(inp, h)
            seen = m[:, i].amax(-1, keepdim=True)  # a time with nothing observed: no update
            h = seen * h_new + (1 - seen) * h
        if self.hidden_field is not None:
            h = _rk4(self.hidden_field, h, (self.t0 - t[:, :1]))  # back to t0
        mu, raw = self.to_q(h).chunk(2, -1)
        return Normal(mu, F.softplus(raw) + 1e-4)

    # -- the latent trajectory on the union of times -----------------------------------------
    def trajectory(self, z0: Tensor, times: Tensor) -> Tensor:
        """z at each row's own times: ``z0 (..., B, L)``, ``times (B, m, 1)``
        -> ``(..., B, m, L)``.

        One rk4 solve on the sorted union of the batch's times (and ``t0``), forwards for
        times after ``t0`` and backwards for those before it, then a gather per row."""
        t = times[..., 0]
        union, where = torch.unique(t.detach().to(torch.float64), sorted=True, return_inverse=True)
        t0 = torch.tensor([self.t0], dtype=torch.float64, device=t.device)
        zs = z0.new_empty(union.shape[0], *z0.shape)
        after, before = union > self.t0, union < self.t0
        zs[union == self.t0] = z0
        if bool(after.any()):
            grid = torch.cat([t0, union[after]])
            out = self.field.solve_rk4(z0, grid.tolist())
            zs[after] = out[1:]
        if bool(before.any()):
            grid = torch.cat([t0, union[before].flip(0)])
            out = self.field.solve_rk4(z0, grid.tolist())
            zs[before] = out[1:].flip(0)
        # zs (U, ..., B, L) -> per row: zs[where[b, j], ..., b, :]
        zs = zs.movedim(0, -2)  # (..., B, U, L)
        idx = where.view(*([1] * (zs.dim() - 3)), *where.shape, 1)
        idx = idx.expand(*zs.shape[:-3], *where.shape, zs.shape[-1])
        return zs.gather(-2, idx)

    # -- the model contract -------------------------------------------------------------------
    def loss(self, batch, *, generator: torch.Generator | None = None) -> Tensor:
        """The negative ELBO per observed value (nats); ``batch = (times, values)`` with NaN
        = missing, or a :class:`~genmodels.data.batches.Series`."""
        times, values, mask = split_series(batch, self.obs_dim)
        q = self.posterior(times, values, mask)
        s = self.obs_std
        m = mask.to(values.dtype)

        def log_lik(z0: Tensor) -> Tensor:  # (S, B, L) -> (S, B)
            x = self.decoder(self.trajectory(z0, times))
            return (Normal(x, s).log_prob(values) * m).sum((-1, -2))

        prior = Independent(Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale)), 1)
        elbo = elbo_analytic_kl(
            log_lik, Independent(q, 1), prior, 1, generator=generator, reduce=False
        )
        return -elbo.sum() / m.sum()

    def predict(
        self,
        x_context: Tensor,
        y_context: Tensor,
        x_target: Tensor,
        *,
        n_samples: int = 0,
        generator: torch.Generator | None = None,
    ) -> Normal:
        """p(x at ``x_target`` | the context): a Normal of batch shape ``(B, m, D)``.

        Args:
            x_context: ``(B, n, 1)`` times, increasing within a row (rows may differ).
            y_context: ``(B, n, D)`` values, NaN = missing.
            x_target: ``(m, 1)`` shared or ``(B, m, 1)``; anywhere in time (before, between,
                after the observations); need not be sorted.
            n_samples: 0: the decoder at the posterior mean of z_{t0}; K > 0: the mean over K
                posterior draws, and the variance adds the draws' spread to s² (moment
                matching of the mixture).
        """
        times, values, mask = split_series((x_context, y_context), self.obs_dim)
        B = times.shape[0]
        if not isinstance(x_target, Tensor) or x_target.shape[-1:] != (1,):
            raise ValueError(f"x_target must be (m, 1) or (B, m, 1), got {x_target!r}")
        if x_target.dim() == 2:
            x_target = x_target.unsqueeze(0).expand(B, -1, -1)
        if x_target.dim() != 3 or x_target.shape[0] != B:
            raise ValueError(f"x_target must be (m, 1) or ({B}, m, 1), got {tuple(x_target.shape)}")
        q = self.posterior(times, values, mask)
        s = self.obs_std
        if n_samples == 0:
            mean = self.decoder(self.trajectory(q.loc, x_target))
            return Normal(mean, s.expand_as(mean))
        eps = torch.randn(
            (n_samples, *q.loc.shape), generator=generator, dtype=q.loc.dtype, device=q.loc.device
        )
        xs = self.decoder(self.trajectory(q.loc + q.scale * eps, x_target))
        return Normal(xs.mean(0), (s**2 + xs.var(0, unbiased=False)).sqrt())

    def sample(self, n: int, times: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``(n, m, D)``: trajectories from the prior, z_{t0} ~ N(0, I), decoded at ``times``
        ``(m,)`` or ``(m, 1)`` (the decoder's mean: the noise-free path)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        p = next(self.parameters())
        times = torch.as_tensor(times, dtype=p.dtype, device=p.device).reshape(1, -1, 1)
        z0 = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype, device=p.device)
        return self.decoder(self.trajectory(z0, times.expand(n, -1, -1)))


@dataclass
class LatentODEConfig:
    """``latent-ode`` (``--set model.KEY=VALUE``); ``obs_std`` 0 = learned."""

    latent_dim: int = 4
    encoder: str = "rnn"
    obs_std: float = 0.0
    hidden: int = 25
    width: int = 20


@register(
    "latent-ode",
    config=LatentODEConfig,
    default_data="spirals",
    task="series",
    section=4,
    data_kinds=("series",),
    description="latent ODE VAE for irregular series (Chen et al. 2018; ODE-RNN encoder option)",
)
def build_latent_ode(config: LatentODEConfig, info: DataInfo) -> LatentODE:
    if info.kind != "series" or len(info.event_shape) != 1:
        raise ValueError(f"latent-ode needs series data (times, values); got {info.kind}")
    return LatentODE(
        info.event_shape[0],
        config.latent_dim,
        encoder=config.encoder,
        obs_std=config.obs_std or None,
        hidden=config.hidden,
        width=config.width,
    )
