"""Score SDEs (models.sde), their samplers and likelihood (models.samplers), vs closed forms.

Gaussian-mixture data p_0 = Σ w_k N(μ_k, s_k² I) stays a mixture under every SDE here,
p_t = Σ w_k N(m(t) μ_k, (m(t)² s_k² + σ(t)²) I), so scores and log-densities are exact.
"""

import math

import pytest
import torch

from genmodels.evaluate.sample_metrics import sliced_wasserstein
from genmodels.integrate import sdeint
from genmodels.models.ddpm import DDPM, SAMPLERS, NoiseSchedule
from genmodels.models.samplers import euler_maruyama, ode, pc, pf_ode_log_prob
from genmodels.models.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    as_sde,
    gaussian_mixture_marginal,
    score_from_eps,
)
from genmodels.nn import time_network

SDES = [VPSDE(), SubVPSDE(), VESDE(), VPSDE(process=NoiseSchedule.linear(100))]
IDS = ["vp", "subvp", "ve", "vp-ddpm100"]

K = 4
MEANS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
W = torch.tensor([0.1, 0.2, 0.3, 0.4])
S = torch.tensor([0.3, 0.4, 0.3, 0.5])


def _draw(n, g):
    k = torch.multinomial(W, n, True, generator=g)
    return MEANS[k] + S[k, None] * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_solve_the_moment_equations(sde):
    # a linear SDE dx = a(t) x dt + g dw: m' = a m, (σ²)' = 2 a σ² + g² (Särkkä & Solin, 6.2)
    t = (torch.arange(20, dtype=torch.float64) + 0.37) / 20
    h = 1e-7
    m, s = sde.marginal(t)
    dm = (sde.mean_coef(t + h) - sde.mean_coef(t - h)) / (2 * h)
    dv = (sde.std(t + h) ** 2 - sde.std(t - h) ** 2) / (2 * h)
    a, g = sde.drift_coef(t), sde.diffusion(t)
    assert torch.allclose(dm, a * m, rtol=1e-5, atol=1e-8)
    assert torch.allclose(dv, 2 * a * s**2 + g**2, rtol=1e-5, atol=1e-6)
    m0, s0 = sde.marginal(0.0)
    assert float(m0) == 1.0 and float(s0) == 0.0


def test_the_three_sdes_closed_forms():
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    vp, sub, ve = VPSDE(), SubVPSDE(), VESDE()
    ab = torch.exp(-0.1 * t - 0.5 * 19.9 * t * t)
    assert torch.allclose(vp.std(t) ** 2, 1 - ab, rtol=1e-12)
    assert torch.allclose(sub.std(t), 1 - ab, rtol=1e-12)
    assert bool((sub.std(t) < vp.std(t)).all())
    assert torch.allclose(sub.diffusion(t) ** 2, (0.1 + 19.9 * t) * (1 - ab**2), rtol=1e-12)
    sig = 0.01 * 5000.0**t
    assert torch.allclose(ve.std(t) ** 2, sig**2 - 1e-4, rtol=1e-10)
    assert torch.allclose(ve.diffusion(t), sig * math.sqrt(2 * math.log(5000)), rtol=1e-12)
    x = torch.randn(5, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(torch.tensor(0.0).double(), 50.0).log_prob(x).sum(1)
    assert torch.allclose(ve.prior_log_prob(x), ref, rtol=1e-10)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_forward_sde_simulation_has_the_closed_form_marginal(sde):
    g = torch.Generator().manual_seed(0)
    n, x0 = 20000, 1.5
    y = sdeint(sde_view(sde), torch.full((n, 1), x0, dtype=torch.float64), [0.0, 0.6],
               method="euler", dt=2e-3, generator=g)[-1]  # fmt: skip
    m, s = (float(v) for v in sde.marginal(0.6))
    assert abs(float(y.mean()) - m * x0) < 4 * s / math.sqrt(n) + 0.01 * s
    assert abs(float(y.std()) / s - 1) < 0.03


def sde_view(sde):
    class Forward:
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return sde.drift(y, float(t))

        def g(self, t, y):
            return torch.full_like(y, float(sde.diffusion(float(t))))

    return Forward()


def test_a_ddpm_schedule_is_the_vp_sde_and_its_net_time_is_the_integer_step():
    s = NoiseSchedule.linear(1000)
    sde = as_sde(s)
    assert isinstance(sde, VPSDE) and sde.process is s
    i = torch.tensor([1, 10, 500, 1000])
    t = i.double() / 1000
    assert torch.allclose(sde.std(t), (1 - s.alphas_cumprod[i - 1]).sqrt(), rtol=1e-12)
    assert torch.equal(sde.net_time(t), (i - 1).double())
    assert abs(float(sde.net_time(0.0105)) - 9.5) < 1e-9  # between the grid: a real number
    # and the continuous VP SDE is its limit (docs/ddpm.md: within 1e-3 in sqrt(ᾱ))
    assert float((sde.mean_coef(t) - VPSDE().mean_coef(t)).abs().max()) < 1e-3


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_mixture_score_is_the_gradient_of_the_mixture_log_density(sde):
    lp, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x = (3 * torch.randn(7, 2, dtype=torch.float64)).requires_grad_(True)
    for t in (0.01, 0.3, 0.9):
        (grad,) = torch.autograd.grad(lp(x, t).sum(), x)
        assert torch.allclose(sc(x, t), grad, rtol=1e-9, atol=1e-12)
    lp0 = lp(x, 0.0).detach()
    comp = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(W.double()),
        torch.distributions.Independent(
            torch.distributions.Normal(MEANS.double(), S.double()[:, None].expand(K, 2)), 1
        ),
    )
    assert torch.allclose(lp0, comp.log_prob(x.detach()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "ode"])
def test_samplers_with_the_exact_score_draw_the_data_distribution(sde, name):
    g = torch.Generator().manual_seed(1)
    n = 3000
    _, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x_T = sde.prior_sample((n, 2), generator=g)
    stats = {}
    if name == "ode":
        x = ode(sc, sde, x_T, stats=stats)
        assert 20 < stats["nfe"] < 400
    else:
        fn = euler_maruyama if name == "euler_maruyama" else pc
        steps = 300 if name == "euler_maruyama" else 1000  # pc at 300 steps: 1.6-2.1x
        x = fn(sc, sde, x_T, steps=steps, generator=g, stats=stats)
        assert stats["nfe"] == (301 if name == "euler_maruyama" else 2000)
    test, fresh = _draw(n, g), _draw(n, g)
    ratio = sliced_wasserstein(x, test) / sliced_wasserstein(fresh, test)
    assert ratio < 2.0, ratio
    # the mixture's mean, Σ w_k μ_k = (-0.2, -0.2), within 5 standard errors
    sd = float(_draw(20000, g).std(0).max())
    assert float((x.mean(0) - W @ MEANS).abs().max()) < 5 * sd / math.sqrt(n)


def test_samplers_with_a_wrong_score_do_not_match():
    # the test above can fail: the N(0, I) score of the prior does not give the mixture
    g = torch.Generator().manual_seed(2)
    sde = VPSDE()
    x = euler_maruyama(lambda x, t: -x, sde, torch.randn(3000, 2, generator=g), steps=200,
                       generator=g)  # fmt: skip
    test, fresh = _draw(3000, g), _draw(3000, g)
    assert sliced_wasserstein(x, test) / sliced_wasserstein(fresh, test) > 3


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_pf_ode_likelihood_equals_the_exact_one(sde):
    g = torch.Generator().manual_seed(3)
    lp_t, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x = _draw(300, g).double()
    stats = {}
    with torch.no_grad():
        lp = pf_ode_log_prob(sc, sde, x, stats=stats)
    err = lp - lp_t(x, 0.0)
    # the target: the average NLL within 0.002 nats; per point the N(0, I) prior's
    # mismatch with p_1 (mean sqrt(ᾱ(1)) E[x_0] ≠ 0 here) leaves a few 1e-3
    assert abs(float(err.mean())) < 2e-3, float(err.mean())
    assert float(err.abs().max()) < 0.05
    assert stats["nfe"] <= 200
    # Hutchinson: unbiased per row, its mean within 4 standard errors
    st = {}
    lph = pf_ode_log_prob(sc, sde, x, trace="hutchinson", generator=g, stats=st)
    assert abs(float(lph.mean() - lp_t(x, 0.0).mean())) < 4 * st["se_nats"] + 2e-3
    assert float((lph - lp).abs().max()) > 1e-3  # it is an estimate, not the exact trace


def test_pf_ode_likelihood_sees_a_wrong_score():
    sde, g = VPSDE(), torch.Generator().manual_seed(4)
    lp_t, _ = gaussian_mixture_marginal(W, MEANS, S, sde)
    x = _draw(200, g).double()
    lp = pf_ode_log_prob(lambda x, t: -x, sde, x)  # the score of N(0, I) at every t
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1).double()
    assert torch.allclose(lp, ref, atol=1e-3)
    assert float((lp_t(x, 0.0) - lp).mean()) > 0.5  # the data is far from N(0, I)


def _tiny_ddpm():
    torch.manual_seed(0)
    return DDPM(time_network((2,), width=16, depth=1, emb_dim=8), (2,), NoiseSchedule.linear(50))


@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "ode"])
def test_ddpm_samples_with_every_sde_sampler(name):
    m = _tiny_ddpm()
    assert name in SAMPLERS
    stats = {}
    steps = None if name == "ode" else 7
    chain_x, chain = m.sample(5, sampler=name, steps=steps, stats=stats, return_chain=True,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert chain_x.shape == (5, 2) and bool(torch.isfinite(chain_x).all())
    assert stats["nfe"] == {"euler_maruyama": 8, "pc": 14}.get(name, stats["nfe"])
    assert torch.equal(chain[-1][1], chain_x)


def test_the_ddpm_eps_network_becomes_the_score_through_sigma():
    m = _tiny_ddpm()
    sde = as_sde(m.schedule)
    x = torch.randn(4, 2)
    t = 0.3  # the grid point 15/50: the net sees the integer step 14
    want = m.eps_model(x, torch.full((4,), 14)) / -float(m.schedule.sigma(t))
    assert torch.allclose(score_from_eps(m.eps_model, sde)(x, t), want, rtol=1e-6)


def test_sampler_errors_are_clear():
    m = _tiny_ddpm()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        m.sample(3, sampler="ode", steps=0)
    with pytest.raises(ValueError, match="steps"):
        m.sample(3, sampler="pc", steps=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        m.sample(3, sampler="heun")
    with pytest.raises(ValueError, match="NaN"):
        euler_maruyama(lambda x, t: x * float("nan"), VPSDE(), torch.randn(3, 2), steps=5)
    with pytest.raises(ValueError, match="NaN"):
        ode(lambda x, t: x * float("nan"), VPSDE(), torch.randn(3, 2))


def test_a_model_samples_with_pc_at_its_data_kinds_snr_unless_told():
    from genmodels.models.samplers import DEFAULT_PC_SNR, default_pc_snr

    assert default_pc_snr((2,)) == DEFAULT_PC_SNR["points"] == 0.04
    assert default_pc_snr((1, 8, 8)) == DEFAULT_PC_SNR["images"] == 0.16
    m = _tiny_ddpm()

    def draw(**kw):
        return m.sample(64, sampler="pc", steps=6, generator=torch.Generator().manual_seed(1), **kw)

    # the model's default is points' 0.04, not pc's own 0.16: equal to passing 0.04 ...
    assert torch.equal(draw(), draw(snr=0.04))
    assert not torch.allclose(draw(), draw(snr=0.16))
    # ... and pc called directly with that snr gives the same samples from the same x_T
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(64, 2, generator=g)
    sde = as_sde(m.schedule)
    direct = pc(score_from_eps(m.eps_model, sde), sde, x_T, steps=6, snr=0.04, generator=g)
    assert torch.allclose(m._to_data(direct), draw(), atol=1e-6)
    with pytest.raises(ValueError, match="snr must be a number > 0"):
        draw(snr=0.0)
    with pytest.raises(ValueError, match="snr is pc's"):
        m.sample(3, sampler="euler_maruyama", steps=3, snr=0.1)


def test_ddpm_log_prob_is_the_pf_ode_likelihood_with_the_standardisation():
    m = _tiny_ddpm()
    x = torch.randn(6, 2)
    with torch.no_grad():
        lp = m.log_prob(x)
    sde = as_sde(m.schedule)
    want = pf_ode_log_prob(score_from_eps(m.eps_model, sde), sde, x)
    assert torch.allclose(lp, want, rtol=0, atol=1e-6)
    # a standardised model is the same density in other coordinates: log-det of x -> (x-a)/s
    ms = DDPM(m.eps_model, (2,), m.schedule, standardize=True)
    ms.init_from_data(torch.tensor([[0.0, 0.0], [2.0, 8.0]]))
    mean, std = ms.data_mean, ms.data_std
    y = x * std + mean
    assert torch.allclose(ms.log_prob(y), lp - std.log().sum(), rtol=0, atol=1e-5)


TINY = ["--set", "width=32", "--set", "depth=2", "--set", "emb_dim=16"]


def _cli_train(model, out, *extra):
    from genmodels.cli import main

    args = ["train", model, "--data", "moons", "--steps", "30", "--batch-size", "64"]
    return main([*args, "--out", str(out), "--no-progress", *TINY, *extra])


def test_cli_sde_samplers_for_a_ddpm_and_a_subvp_model(tmp_path, capsys):
    import json

    from genmodels.cli import main

    ddpm, sub = tmp_path / "ddpm", tmp_path / "subvp"
    assert _cli_train("ddpm", ddpm, "--set", "timesteps=50") == 0
    assert _cli_train("subvp", sub) == 0
    out = str(tmp_path / "s.npy")
    for run, sampler, steps in [(ddpm, "pc", "5"), (ddpm, "euler_maruyama", "5"), (sub, "pc", "5")]:
        assert main(["sample", str(run), "--n", "20", "--out", out, "--sampler", sampler,
                     "--steps", steps]) == 0  # fmt: skip
    assert main(["sample", str(sub), "--n", "20", "--out", out, "--sampler", "ode"]) == 0
    # fixed steps: Heun in t, 2 evaluations a step
    assert main(["sample", str(ddpm), "--n", "20", "--out", out, "--sampler", "ode",
                 "--steps", "4"]) == 0  # fmt: skip
    capsys.readouterr()
    for run, extra, message in [
        (ddpm, ["--sampler", "ode", "--steps", "0"], "steps must be a positive integer"),
        (ddpm, ["--sampler", "pc", "--steps", "0"], "steps must be"),
        (sub, ["--sampler", "ddim"], "applies to the discrete VP chain"),
        (sub, ["--sampler", "nosuch"], "unknown sampler"),
        (sub, ["--sampler", "ode", "--snr", "0.1"], "--snr is the pc sampler's"),
        (sub, ["--sampler", "pc", "--snr", "-1"], "snr must be a number > 0"),
    ]:
        assert main(["sample", str(run), "--n", "5", "--out", out, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["evaluate", str(sub), "--n", "200", "--sampler", "ode"]) == 0
    m = json.loads((sub / "metrics.json").read_text())
    assert math.isfinite(m["nll_nats"]) and "nll_bound_nats" not in m and "eval_snr" not in m
    assert main(["sample", str(sub), "--n", "20", "--out", out, "--sampler", "pc", "--steps", "5",
                 "--snr", "0.1"]) == 0  # fmt: skip
    assert main(["evaluate", str(ddpm), "--n", "100", "--sampler", "pc", "--steps", "5"]) == 0
    assert json.loads((ddpm / "metrics.json").read_text())["eval_snr"] == 0.04
    assert main(["evaluate", str(ddpm), "--n", "100", "--sampler", "pc", "--steps", "5",
                 "--snr", "0.16"]) == 0  # fmt: skip
    assert json.loads((ddpm / "metrics.json").read_text())["eval_snr"] == 0.16
