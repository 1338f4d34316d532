"""The probability flow ODE in σ̄ = σ/m and log σ̄ coordinates (``ode``/``pf_ode_log_prob``'s
``variable``), against the plain-t solve and the closed-form Gaussian-mixture p_t.

x̄ = x/m(t) solves dx̄/dσ̄ = -σ(t) ∇log p_t(x) (Song, Meng & Ermon 2021, sec. 4.3; Karras et
al. 2022): the same ODE as dx/dt = f - ½ g² ∇log p_t, so both must give the same map.
"""

import pytest
import torch

from genmodels.models.ddpm import DDPM, NoiseSchedule
from genmodels.models.noise import LinearVP, NoiseProcess
from genmodels.models.samplers import ode, pf_ode_log_prob
from genmodels.models.sde import SDE, VESDE, VPSDE, SubVPSDE, gaussian_mixture_marginal
from genmodels.nn import time_network

SDES = [VPSDE(), SubVPSDE(), VESDE(), VPSDE(process=NoiseSchedule.linear(100))]
IDS = ["vp", "subvp", "ve", "vp-ddpm100"]

MEANS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
W = torch.tensor([0.1, 0.2, 0.3, 0.4])
S = torch.tensor([0.3, 0.4, 0.3, 0.5])


def _draw(n, g):
    k = torch.multinomial(W, n, True, generator=g)
    return (MEANS[k] + S[k, None] * torch.randn(n, 2, generator=g)).double()


@pytest.mark.parametrize("process", [LinearVP(), LinearVP(0.0, 5.0), NoiseSchedule.linear(1000),
                                     NoiseSchedule.cosine(100)])  # fmt: skip
def test_time_at_inverts_log_alpha_bar(process):
    t = torch.cat([torch.tensor([0.0, 1e-4, 1.0]), torch.rand(200, dtype=torch.float64)])
    lab = process.log_alpha_bar(t)
    assert torch.allclose(process.time_at(lab), t, rtol=0, atol=1e-12)
    # the closed forms agree with the base class's bisection
    assert torch.allclose(NoiseProcess.time_at(process, lab), t, rtol=0, atol=1e-12)
    ends = process.time_at(torch.tensor([1.0, -1e9], dtype=torch.float64))  # out of range
    assert ends.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("sde", SDES + [SubVPSDE(process=NoiseSchedule.linear(100))],
                         ids=IDS + ["subvp-ddpm100"])  # fmt: skip
def test_sigma_bar_and_its_inverse(sde):
    t = torch.linspace(1e-4, 1.0, 301, dtype=torch.float64)
    sb = sde.sigma_bar(t)
    assert torch.allclose(sb, sde.std(t) / sde.mean_coef(t), rtol=1e-12)
    assert bool((sb[1:] > sb[:-1]).all())  # increasing: a valid integration variable
    assert torch.allclose(sde.time_at_sigma_bar(sb), t, rtol=0, atol=1e-10)
    assert torch.allclose(SDE.time_at_sigma_bar(sde, sb), t, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
@pytest.mark.parametrize("variable", ["sigma", "log_sigma"])
def test_ode_in_sigma_coordinates_is_the_same_map(sde, variable):
    # dx̄/dσ̄ = ε and dx/dt = f - ½ g² ∇log p_t are one ODE: the same x at every output time.
    # (A DDPM's schedule, β piecewise constant, is in the DDPM tests below: there the t
    # solve is the expensive one, ~13000 evaluations at 1e-8 with T = 100, ~300 in σ̄.)
    g = torch.Generator().manual_seed(0)
    _, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x_T = sde.prior_sample((200, 2), generator=g, dtype=torch.float64)
    ts = [1.0, 0.6, 0.2, 0.05, 1e-3]
    tol = dict(rtol=1e-9, atol=1e-9)
    ref, got = [], []
    x_ref = ode(sc, sde, x_T, ts, callback=lambda d: ref.append(d["x"]), **tol)
    x = ode(sc, sde, x_T, ts, variable=variable, callback=lambda d: got.append(d["x"]), **tol)
    assert len(got) == len(ts) - 1
    for a, b in zip(got, ref):  # the callback sees x, not x̄
        assert float((a - b).abs().max()) < 1e-5
    assert float((x - x_ref).abs().max()) < 1e-5
    # and at the default tolerances, within the solvers' own errors
    y = ode(sc, sde, x_T, variable=variable)
    assert float((y - x_ref).norm(dim=1).max()) < 1e-2


def test_sigma_coordinates_need_far_fewer_evaluations_where_t_is_stiff():
    # The cosine schedule's last β is 0.999: β(t) = -T log(1 - β_i) reaches 690 near t = 1
    # (T = 100) and σ̄(1) ≈ 2000. In t the drift -½ β x is stiff there: dopri5 at the
    # default 1e-5 lands up to ~1 away from the solution (at 1e-9 the t solve converges to
    # the σ̄ solution below, within 2.4e-4 on 500 points, but takes ~22000 evaluations:
    # docs/sde.md); in σ̄ or log σ̄ the field is ε, of size 1.
    sde = VPSDE(process=NoiseSchedule.cosine(100))
    assert float(sde.beta(0.995)) > 600 and float(sde.sigma_bar(1.0)) > 1000
    g = torch.Generator().manual_seed(0)
    _, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x_T = sde.prior_sample((64, 2), generator=g, dtype=torch.float64)
    ref = ode(sc, sde, x_T, variable="sigma", rtol=1e-10, atol=1e-10)
    err, nfe = {}, {}
    for variable in ("t", "log_sigma"):
        st = {}
        x = ode(sc, sde, x_T, variable=variable, stats=st)
        err[variable], nfe[variable] = float((x - ref).norm(dim=1).max()), st["nfe"]
    assert err["t"] > 0.1, err  # the t solve at 1e-5 misses ...
    assert err["log_sigma"] < 1e-2, err  # ... the log σ̄ one does not
    assert nfe["log_sigma"] < 0.6 * nfe["t"], nfe  # and takes fewer evaluations


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
@pytest.mark.parametrize("variable", ["sigma", "log_sigma"])
def test_pf_ode_likelihood_in_sigma_coordinates_equals_the_exact_one(sde, variable):
    # log p(x) = log p_1(m(1) x̄(1)) + D log(m(1)/m(eps)) + ∫ tr(∂F/∂x̄) du
    g = torch.Generator().manual_seed(3)
    lp_t, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x = _draw(200, g)
    st = {}
    lp = pf_ode_log_prob(sc, sde, x, variable=variable, stats=st)
    err = lp - lp_t(x, 0.0)
    assert abs(float(err.mean())) < 2e-3, float(err.mean())
    assert float(err.abs().max()) < 0.05
    lp_plain = pf_ode_log_prob(sc, sde, x)
    assert float((lp - lp_plain).abs().mean()) < 2e-3
    # without the log-det of x -> x/m the VP/sub-VP values would be off by D log(m1/m_eps)
    if not isinstance(sde, VESDE):
        assert abs(2 * float(torch.log(sde.mean_coef(1.0) / sde.mean_coef(1e-5)))) > 5


def test_the_variable_through_a_ddpm_and_its_errors():
    # An untrained net on the DDPM's piecewise-constant β (T = 50): the field in t jumps at
    # every grid point, which the t solve needs tight tolerances to step across (at 1e-7 it
    # is still ~3e-3 off); in σ̄ the field ε is continuous in σ̄.
    torch.manual_seed(0)
    net = time_network((2,), width=16, depth=1, emb_dim=8).double()
    m = DDPM(net, (2,), NoiseSchedule.linear(50))
    g = torch.Generator().manual_seed(1)
    st = {}
    ref = m.sample(20, sampler="ode", rtol=1e-9, atol=1e-9, generator=g, stats=st)
    for v in ("sigma", "log_sigma"):
        st_v = {}
        x = m.sample(20, sampler="ode", variable=v, rtol=1e-7, atol=1e-7, stats=st_v,
                     generator=torch.Generator().manual_seed(1))  # fmt: skip
        assert float((x - ref).abs().max()) < 3e-4
        assert st_v["nfe"] < st["nfe"] / 4, (st_v, st)
    with pytest.raises(ValueError, match="variable must be one of"):
        m.sample(3, sampler="ode", variable="lambda")
    with pytest.raises(ValueError, match="variable must be one of"):
        pf_ode_log_prob(lambda x, t: -x, VPSDE(), torch.randn(3, 2), variable="s")


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
@pytest.mark.parametrize("variable", ["t", "sigma", "log_sigma"])
def test_fixed_step_heun_converges_at_second_order(sde, variable):
    # steps=K: Heun's method (2 evaluations a step) on K fixed steps of the chosen variable;
    # halving the step divides the error by ~4 (measured 3.8-5.1)
    g = torch.Generator().manual_seed(0)
    _, sc = gaussian_mixture_marginal(W, MEANS, S, sde)
    x_T = sde.prior_sample((100, 2), generator=g, dtype=torch.float64)
    ref = ode(sc, sde, x_T, rtol=1e-9, atol=1e-9)
    err = []
    for k in (50, 100):
        st = {}
        x = ode(sc, sde, x_T, variable=variable, steps=k, stats=st)
        assert st["nfe"] == 2 * k
        err.append(float((x - ref).norm(dim=1).mean()))
    assert 3.0 < err[0] / err[1] < 6.0, err
    assert err[1] < 0.07, err
