"""Langevin dynamics (the lecture's section 6) from ``inference.ula``/``mala``: the chain's law
is the Boltzmann density p ∝ e^{-E/T}, checked against quadrature at two temperatures, and the
lecture's slipped update is shown to miss it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genmodels.inference import NonFiniteError, hmc, mala, ula

DT = torch.float64


def energy(x):
    """A tilted double well: minima near x = ±1, the left one deeper by about 0.5."""
    return ((x**2 - 1) ** 2 + 0.25 * x).sum(-1)


def boltzmann_cdf(T: float):
    """The CDF of p ∝ e^{-E/T} on [-3, 3] by the trapezoid rule (mass outside < 1e-12)."""
    grid = torch.linspace(-3, 3, 60001, dtype=DT)
    w = torch.exp(-energy(grid[:, None]) / T)
    cdf = torch.cat([torch.zeros(1, dtype=DT), torch.cumsum((w[1:] + w[:-1]) / 2, 0)])
    return grid, cdf / cdf[-1]


def ks_distance(x: torch.Tensor, T: float) -> float:
    grid, cdf = boltzmann_cdf(T)
    xs = x.reshape(-1).sort().values
    f = torch.from_numpy(np.interp(xs.numpy(), grid.numpy(), cdf.numpy()))
    n = len(xs)
    i = torch.arange(1, n + 1, dtype=DT)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


# KS critical value at level 1e-3: sqrt(-log(α/2)/2) / sqrt(n) ≈ 1.95/sqrt(n)
N = 4000
KS_CRIT = math.sqrt(-math.log(1e-3 / 2) / 2) / math.sqrt(N)


@pytest.mark.parametrize("T", [1.0, 0.5])
def test_ula_on_a_double_well_matches_the_boltzmann_density(T):
    # every chain starts in the shallower (right) well: reaching the Boltzmann weights needs
    # barrier crossings (physical time τ = Δt n = 40 with Δt = εT/2; Kramers rate ≈ 0.1 at
    # T = 0.5). ε = 0.02 keeps ULA's O(ε) bias below the test's resolution (ε = 0.04 at
    # T = 0.5 fails it: KS 0.048).
    g = torch.Generator().manual_seed(10)
    x0 = torch.ones(N, 1, dtype=DT)
    r = ula(x0, 0.02, round(4000 / T), energy=energy, temperature=T, generator=g, keep_chain=False)
    d = ks_distance(r.x, T)
    assert d < KS_CRIT, (d, KS_CRIT)
    # the left-well weight against quadrature, within 4 binomial standard errors
    grid, cdf = boltzmann_cdf(T)
    w_left = float(cdf[torch.searchsorted(grid, torch.tensor(0.0, dtype=DT))])
    assert 0.6 < w_left < 0.9  # the tilt matters at both temperatures
    se = math.sqrt(w_left * (1 - w_left) / N)
    assert abs(float((r.x < 0).double().mean()) - w_left) < 4 * se
    # the two temperatures are distinguishable: the other temperature's density is rejected
    assert ks_distance(r.x, 1.5 - T) > 2 * KS_CRIT


def test_mala_on_the_double_well_at_low_temperature():
    g = torch.Generator().manual_seed(11)
    r = mala(torch.ones(N, 1, dtype=DT), 0.2, 1500, energy=energy, temperature=0.5, generator=g)
    assert 0.4 < r.mean_accept_prob < 0.95
    assert ks_distance(r.x, 0.5) < KS_CRIT


def test_the_slides_update_misses_the_boltzmann_density():
    # the slide: x ← x - Δt ∇E + Δt R (no square root on the noise): at Δt = 0.01 the noise
    # is 14x too small, and the chains freeze into the wells instead of sampling e^{-E/T}
    g = torch.Generator().manual_seed(12)
    T, dt = 1.0, 0.01
    x = torch.ones(N, 1, dtype=DT)
    for _ in range(4000):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(xg).sum(), xg)
        x = x - dt * grad + dt * torch.randn(x.shape, generator=g, dtype=DT)
    assert ks_distance(x, T) > 10 * KS_CRIT
    # the corrected update with the same Δt passes (test above); with the sign of ∇log p
    # flipped (the slide's second form) the chain runs away from the density altogether
    y = torch.ones(8, 1, dtype=DT)
    with pytest.raises(NonFiniteError):
        ula(y, 0.02, 4000, log_prob=lambda x: energy(x), generator=g, keep_chain=False)


def test_energy_temperature_and_log_prob_are_one_target():
    x0 = torch.linspace(-1, 1, 10, dtype=DT)[:, None]
    kw = dict(keep_chain=True)
    a = ula(
        x0, 0.1, 5, energy=energy, temperature=0.7, generator=torch.Generator().manual_seed(0), **kw
    )
    b = ula(
        x0,
        0.1,
        5,
        log_prob=lambda x: -energy(x) / 0.7,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    c = ula(
        x0,
        0.1,
        5,
        score=lambda x: -(4 * x * (x**2 - 1) + 0.25),
        temperature=0.7,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    torch.testing.assert_close(a.chain, b.chain)
    torch.testing.assert_close(a.chain, c.chain)
    for sampler in (mala, hmc):
        e = sampler(
            x0, 0.1, 5, energy=energy, temperature=2.0, generator=torch.Generator().manual_seed(1)
        )
        f = sampler(
            x0,
            0.1,
            5,
            log_prob=lambda x: -energy(x) / 2,
            generator=torch.Generator().manual_seed(1),
        )
        torch.testing.assert_close(e.chain, f.chain)


def test_one_argument_order_and_clear_errors():
    x0 = torch.zeros(4, 1, dtype=DT)
    for sampler in (ula, mala, hmc):
        with pytest.raises(TypeError, match="initial state"):
            sampler(energy, x0, 0.1)  # the old (log_prob, x0, step_size, ...) order
        with pytest.raises(ValueError, match="exactly one"):
            sampler(x0, 0.1, 3, log_prob=energy, energy=energy)
        for T in (0.0, -1.0, math.inf, math.nan):
            with pytest.raises(ValueError, match="temperature"):
                sampler(x0, 0.1, 3, energy=energy, temperature=T)
    for sampler in (mala, hmc):
        with pytest.raises(TypeError):  # no score: the acceptance ratio needs density values
            sampler(x0, 0.1, 3, score=lambda x: -x)
