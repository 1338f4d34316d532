import math

import pytest
import torch
from torch import nn

from genmodels.models.ddpm import DDPM, NoiseSchedule, ancestral, ddim, ddim_timesteps
from genmodels.nn import TimeMLP


class _FixedEps(nn.Module):
    """A fixed smooth function of (x, t), standing in for a trained network."""

    def forward(self, x, t):
        t = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.tanh(0.7 * x + 0.001 * t) - 0.1 * x.flip(-1)


def test_schedule_closed_forms():
    s = NoiseSchedule.linear(1000)
    b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - b, 0))
    assert float(s.posterior_variance[0]) == 0.0
    t = 500
    expected = b[t] * (1 - s.alphas_cumprod[t - 1]) / (1 - s.alphas_cumprod[t])
    assert float(s.posterior_variance[t]) == pytest.approx(float(expected))


def test_q_sample_matches_the_forward_chain():
    # q(x_t|x_0) in closed form equals running the one-step chain t times
    torch.manual_seed(0)
    model = DDPM(_FixedEps(), (2,), NoiseSchedule.linear(100))
    x0 = torch.tensor([[1.5, -0.5]]).repeat(20000, 1)
    x = x0.clone()
    s = model.schedule
    for i in range(60):
        x = (1 - s.betas[i]).sqrt().float() * x + s.betas[i].sqrt().float() * torch.randn_like(x)
    i = torch.full((20000,), 59)
    closed = model.q_sample(x0, i, torch.randn_like(x0))
    ab = float(s.alphas_cumprod[59])
    for z in (x, closed):
        assert torch.allclose(z.mean(0), math.sqrt(ab) * x0[0], atol=0.03)
        assert torch.allclose(z.var(0), torch.full((2,), 1 - ab), atol=0.03)


def test_ancestral_equals_diffusers_ddpm_scheduler():
    diffusers = pytest.importorskip("diffusers")
    T = 50
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=T,
        beta_schedule="linear",
        beta_start=1e-3,
        beta_end=0.2,
        variance_type="fixed_small",
        clip_sample=False,
    )
    sched.set_timesteps(T)
    net = _FixedEps()
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    ours = ancestral(
        net, x_T, NoiseSchedule.linear(T, 1e-3, 0.2), generator=torch.Generator().manual_seed(2)
    )
    g = torch.Generator().manual_seed(2)
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(net(x, t.expand(64)), t, x, generator=g).prev_sample
    assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4)


def test_ddim_equals_diffusers_ddim_scheduler():
    diffusers = pytest.importorskip("diffusers")
    T, steps = 200, 20
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="linear",
        beta_start=1e-3,
        beta_end=0.05,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    sched.set_timesteps(steps)
    assert ddim_timesteps(T, steps) == [int(t) for t in sched.timesteps]
    net = _FixedEps()
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    ours = ddim(net, x_T, NoiseSchedule.linear(T, 1e-3, 0.05), steps=steps)
    x = x_T.clone()
    for t in sched.timesteps:
        x = sched.step(net(x, t.expand(32)), t, x, eta=0.0).prev_sample
    assert torch.allclose(ours, x, atol=1e-5, rtol=1e-5)


def test_clipped_path_equals_algorithm_2_when_nothing_is_clipped():
    s = NoiseSchedule.linear(40, 1e-3, 0.1)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ancestral(_FixedEps(), x_T, s, generator=torch.Generator().manual_seed(5))
    b = ancestral(_FixedEps(), x_T, s, clip=(-1e9, 1e9), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-10)
    c = ddim(_FixedEps(), x_T, s, steps=10, clip=(-1e9, 1e9))
    assert torch.allclose(c, ddim(_FixedEps(), x_T, s, steps=10), atol=1e-10)


def test_ddim_with_eta_one_and_all_steps_has_ddpm_variance():
    # eta = 1 over every step: sigma^2 = beta_tilde, so DDIM is DDPM's ancestral sampler
    s = NoiseSchedule.linear(30, 1e-3, 0.2)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ancestral(_FixedEps(), x_T, s, generator=torch.Generator().manual_seed(1))
    b = ddim(_FixedEps(), x_T, s, steps=30, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, atol=1e-8)


class _OptimalEpsForGaussian(nn.Module):
    """For x_0 ~ N(0, I), E[ε | x_t] = sqrt(1 - ᾱ_t) x_t: the best ε-predictor."""

    def __init__(self, schedule):
        super().__init__()
        self.register_buffer("c", (1 - schedule.alphas_cumprod).sqrt())
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.c[t].to(x.dtype).reshape(-1, 1) * x


def test_nll_bound_is_exact_for_the_optimal_model_of_gaussian_data():
    # For x_0 ~ N(0, I) the true reverse kernel q(x_{t-1}|x_t) is N(sqrt(α_t) x_t, β_t I):
    # with σ_t² = β_t and the optimal ε-predictor the reverse chain is exact, so the
    # bound's expectation equals the true NLL (up to KL(q(x_T|x_0)||N(0,I)) ~ 1e-4).
    s = NoiseSchedule.linear(1000)
    net = _OptimalEpsForGaussian(s).double()
    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    true_nll = 0.5 * (x**2).sum(1) + math.log(2 * math.pi)
    exact = DDPM(net, (2,), s, variance="beta").nll_bound(
        x, generator=torch.Generator().manual_seed(1)
    )
    gap = exact - true_nll
    se = float(gap.std()) / math.sqrt(len(x))
    assert abs(float(gap.mean())) < 4 * se + 1e-3
    # with σ_t² = β̃_t the reverse kernels are too narrow: a strictly looser bound
    loose = DDPM(net, (2,), s).nll_bound(x, generator=torch.Generator().manual_seed(1))
    assert float((loose - true_nll).mean()) > 0.1


def test_loss_weighting_and_standardisation():
    torch.manual_seed(0)
    x = torch.randn(256, 2) * 3 + 5
    m = DDPM(TimeMLP(2, 16, 1, 8), (2,), NoiseSchedule.linear(20), standardize=True)
    m.init_from_data(x)
    assert torch.allclose(m.data_mean, x.mean(0)) and torch.allclose(m.data_std, x.std(0))
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(m.loss(x, generator=g))
    w = DDPM(TimeMLP(2, 16, 1, 8), (2,), NoiseSchedule.linear(20), loss_type="weighted")
    assert float(w.loss_weight.mean()) == pytest.approx(1.0)
    assert torch.isfinite(w.loss_weight).all()
    s = m.sample(10, generator=g)
    assert s.shape == (10, 2)


def test_timemlp_shared_timestep_matches_per_row():
    net = TimeMLP(2, 32, 3, 16)
    x = torch.randn(7, 2)
    shared = net(x, torch.full((1,), 9).expand(7))
    rows = net(x, torch.full((7,), 9))
    scalar = net(x, torch.tensor(9))
    assert torch.allclose(shared, rows, atol=1e-6) and torch.allclose(scalar, rows, atol=1e-6)
    # and equals the textbook network on the concatenation [x, emb(t)]
    from genmodels.nn import sinusoidal_embedding

    h = net.act(net.inp(torch.cat([x, sinusoidal_embedding(torch.full((7,), 9), 16)], 1)))
    for layer in net.hidden:
        h = net.act(layer(h))
    assert torch.allclose(net.out(h), rows, atol=1e-6)


def test_bad_input():
    m = DDPM(TimeMLP(2, 8, 1, 8), (2,), NoiseSchedule.linear(10))
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        m.loss(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="unknown sampler"):
        m.sample(3, sampler="euler")
    with pytest.raises(ValueError, match="positive integer"):
        m.sample(0)
    with pytest.raises(ValueError, match="steps must be in"):
        m.sample(3, steps=11)
    with pytest.raises(ValueError, match="steps must be in"):
        m.sample(3, sampler="ddim", steps=50)
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))


def test_sample_progress_bar_counts_the_sampler_steps(capsys):
    # the bar is a view on the callback: same samples, one tick per sampler step
    capsys.readouterr()
    from genmodels.models.ddpm import DDPM, NoiseSchedule
    from genmodels.nn import TimeMLP

    torch.manual_seed(0)
    model = DDPM(TimeMLP(2, 16, 2, 8), (2,), NoiseSchedule.linear(20))
    a = model.sample(5, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=7)
    b = model.sample(
        5, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=7, progress=True
    )
    assert torch.equal(a, b)
    err = capsys.readouterr().err
    assert "7/7" in err and "ddim sampling" in err


# ---------------------------------------------------------------------------
# The discretised decoder (Ho et al. 2020, eq. 13) and bits/dim of quantised data.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretised_gaussian_is_a_distribution_over_the_levels(levels):
    from genmodels.models.ddpm import discretised_gaussian_log_prob

    k = torch.arange(levels).view(-1, 1)
    mean = torch.tensor([-1.3, -0.2, 0.0, 0.51, 1.0, 4.0], dtype=torch.float64)
    std = torch.tensor([0.01, 0.05, 0.3, 0.002, 1.0, 0.2], dtype=torch.float64)
    lp = discretised_gaussian_log_prob(k, mean, std, levels)  # (levels, 6)
    assert torch.isfinite(lp).all() and bool((lp <= 0).all())  # L_0 = -log P >= 0
    assert torch.allclose(lp.exp().sum(0), torch.ones(6, dtype=torch.float64), atol=1e-12)
    # the closed form Φ(upper) - Φ(lower), ends open, where it is not in a far tail
    w = 2 / (levels - 1)
    x = k.double() * w - 1
    up = torch.special.ndtr((x + w / 2 - mean) / std)
    lo = torch.special.ndtr((x - w / 2 - mean) / std)
    up[-1], lo[0] = 1.0, 0.0
    p = up - lo
    ok = p > 1e-8  # the naive difference loses ~1e-16/p relative: compare to 1e-6
    assert torch.allclose(lp.exp()[ok], p[ok], rtol=1e-6, atol=0)


def test_discretised_gaussian_far_tails_stay_finite():
    from genmodels.models.ddpm import discretised_gaussian_log_prob

    # 60 standard deviations from the mean on either side: Φ differences are 0 in float64
    k = torch.tensor([0, 1, 15, 16])
    lp = discretised_gaussian_log_prob(k, torch.tensor([0.75, 0.75, -0.75, -0.75]), 0.01, 17)
    assert torch.isfinite(lp).all() and bool((lp < -1000).all())
    # and the log-mass matches the Gaussian tail asymptote log φ(z) - log z to 1e-3
    z = torch.tensor((0.75 - (-1 + 0.125 + 0.0625)) / 0.01, dtype=torch.float64)
    tail = -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - z.log()
    assert float(lp[1]) == pytest.approx(float(tail), abs=1e-3)


class _OnePointEps(nn.Module):
    """The optimal ε-network for data that is the single point c: μ_θ(x_1, 1) = c exactly."""

    def __init__(self, schedule, c):
        super().__init__()
        self.register_buffer("ab", schedule.alphas_cumprod)
        self.register_buffer("c", c)
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, i):
        ab = self.ab[i].view(-1, *([1] * (x.dim() - 1)))
        return (x - ab.sqrt() * self.c) / (1 - ab).sqrt()


def test_discretised_decoder_makes_the_image_bound_a_bound_on_the_discrete_nll():
    # One image of 17 grey levels, learnt perfectly. The continuous L_0 is a density with
    # σ_1 = sqrt(β_1) = 0.01: density x bin = 0.125 / (0.01 sqrt(2π)) ≈ 5 > 1 per pixel,
    # so its "bits/dim" falls below 0, impossible for a discrete NLL. The discretised
    # decoder's L_0 is -log of a probability (>= 0), so the bound is >= 0.
    from genmodels.data import bits_per_dim
    from genmodels.registry import DataInfo

    info = DataInfo("digits", "images", (1, 4, 4), levels=17)
    s = NoiseSchedule.linear(100, 1e-4, 0.2)
    c = (
        torch.randint(0, 17, (1, 1, 4, 4), generator=torch.Generator().manual_seed(0)) / 8 - 1
    ).double()
    net = _OnePointEps(s, c[0])
    x = c.expand(3, 1, 4, 4)
    old = DDPM(net, (1, 4, 4), s).nll_bound(x, generator=torch.Generator().manual_seed(1))
    new = DDPM(net, (1, 4, 4), s, levels=17)
    assert new.bound_is_discrete
    nb = new.nll_bound(x, generator=torch.Generator().manual_seed(1))
    # same L_T and KL terms (same draws); only L_0 differs: 16 x (-log(0.01 sqrt(2π)) - 0.5·0)
    l0_old = 16 * 0.5 * math.log(2 * math.pi * 1e-4)
    assert l0_old < -50
    assert torch.allclose(old - nb, torch.full((3,), l0_old, dtype=torch.float64), atol=1e-6)
    assert float(bits_per_dim(old.mean(), info)) < 0  # the old bound: below any discrete NLL
    assert float(bits_per_dim(nb.mean(), info, discrete=True)) >= 0
    # the discrete bound's L_0 is 16 x -log P(|N(0, 1)| < 6.25) ≈ 16 x 4e-10: ~0
    assert float(bits_per_dim(nb.mean(), info, discrete=True)) == pytest.approx(
        float(bits_per_dim(old.mean() - l0_old, info, discrete=True)), abs=1e-6
    )
    with pytest.raises(ValueError, match="17 levels"):
        new.nll_bound(x + 0.05)


def test_bits_per_dim_of_a_discrete_nll_has_no_bin_term():
    from genmodels.data import bits_per_dim
    from genmodels.registry import DataInfo

    info = DataInfo("digits", "images", (1, 8, 8), levels=17)
    nll = 64 * math.log(2.0) * 2.5  # 2.5 bits/dim
    assert bits_per_dim(nll, info, discrete=True) == pytest.approx(2.5)
    assert bits_per_dim(nll, info) == pytest.approx(2.5 + 3)  # -log2(0.125) = 3
    points = DataInfo("moons", "points", (2,))
    assert bits_per_dim(2 * math.log(2.0), points, discrete=True) == pytest.approx(1.0)
