"""Score matching (the lecture's section 6): DSM's minimiser, NoiseLevels, annealed Langevin
(the NCSN paper's mixture experiment with the exact score), and the NCSN model's contract."""

from __future__ import annotations

import math

import pytest
import torch

from genmodels.inference import ula
from genmodels.models.samplers import SAMPLERS, annealed_langevin
from genmodels.models.score import NCSN, NoiseLevels, dsm_loss, max_pairwise_distance, score_model
from genmodels.nn import TimeMLP

DT = torch.float64

# Song & Ermon (2019), sec. 3.2.2 and Fig. 3: 0.8 N((5,5), I) + 0.2 N((-5,-5), I)
W = torch.tensor([0.8, 0.2], dtype=DT)
MU = torch.tensor([[5.0, 5.0], [-5.0, -5.0]], dtype=DT)


def mixture_score(x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
    """The exact score of the mixture perturbed by N(0, σ²I): components N(μ_k, (1+σ²)I)."""
    v = 1 + sigma**2
    d = x[:, None, :] - MU[None].to(x)
    r = torch.softmax(W.log().to(x) - 0.5 * (d**2).sum(-1) / v, 1)
    return -(r[:, :, None] * d).sum(1) / v


def uniform_start(seed: int) -> tuple[torch.Tensor, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1280, 2, generator=g, dtype=DT) * 16 - 8, g


def weight_of_first_mode(x):
    return float((x.sum(1) > 0).double().mean())


# ---------------------------------------------------------------------------
# the mixture experiment


def test_plain_langevin_gets_the_mode_weights_wrong():
    # 1280 chains from U[-8, 8]², ε = 0.1, 1000 steps: the chains stay in the basin they
    # start in (the low-density gap between the modes is never crossed), so the weight is
    # the basins' share of the square, about 0.5 (the paper's Fig. 3b).
    x0, g = uniform_start(0)
    r = ula(x0, 0.1, 1000, score=mixture_score, generator=g, keep_chain=False)
    w = weight_of_first_mode(r.x)
    assert abs(w - 0.5) < 0.06  # binomial SE 0.014
    assert abs(w - 0.8) > 0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_annealed_langevin_recovers_the_mode_weights(seed):
    # σ geometric from 20 to 1, L = 10, T = 100, α_i = ε σ_i²/σ_L², ε = 0.1, the exact scores
    # of the perturbed mixtures: the weight 0.8 within 0.05 (binomial SE 0.011).
    x0, g = uniform_start(seed)
    levels = NoiseLevels.geometric(20.0, 1.0, 10)
    stats = {}
    x = annealed_langevin(
        score_model(mixture_score, levels),
        x0,
        levels,
        steps=100,
        step_size=0.1,
        denoise=False,
        generator=g,
        stats=stats,
    )
    assert abs(weight_of_first_mode(x) - 0.8) < 0.05
    assert stats["nfe"] == 1000
    # ...and the chains are at the modes, with the unit variance of each component
    # (σ_L = 1: the target of the last level is the mixture perturbed by N(0, I): variance 2)
    near = x[x.sum(1) > 0] - MU[0]
    assert abs(float(near.var(0).mean()) - 2.0) < 0.2


def test_annealed_langevin_is_algorithm_1_step_for_step():
    # the sampler against a literal transcription of Algorithm 1, same noise stream
    levels = NoiseLevels.geometric(3.0, 0.5, 4)
    eps_model = score_model(mixture_score, levels)
    x0 = torch.randn(7, 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    out = annealed_langevin(
        eps_model,
        x0,
        levels,
        steps=5,
        step_size=0.05,
        denoise=True,
        generator=torch.Generator().manual_seed(4),
    )
    g = torch.Generator().manual_seed(4)
    sig = levels.sigmas.tolist()
    x = x0.clone()
    for s in sig:
        a = 0.05 * s**2 / sig[-1] ** 2
        for _ in range(5):
            z = torch.randn(x.shape, generator=g, dtype=DT)
            x = x + a / 2 * mixture_score(x, s) + math.sqrt(a) * z
    x = x + sig[-1] ** 2 * mixture_score(x, sig[-1])  # Tweedie
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)
    assert SAMPLERS["annealed_langevin"] is annealed_langevin


def test_tweedie_denoising_of_gaussian_data():
    # data N(0, I): the last level's chain is N(0, (1+σ_L²)I) and E[x | x̃] = x̃/(1+σ_L²),
    # so the denoised samples have variance 1/(1+σ_L²) = 0.8 at σ_L = 0.5
    levels = NoiseLevels.geometric(5.0, 0.5, 8)
    g = torch.Generator().manual_seed(5)
    n = 4000
    x = annealed_langevin(
        score_model(lambda x, s: -x / (1 + s**2), levels),
        5 * torch.randn(n, 2, generator=g, dtype=DT),
        levels,
        steps=100,
        step_size=0.05,
        generator=g,
    )
    var = x.var(0)
    assert (var - 0.8).abs().max() < 4 * 0.8 * math.sqrt(2 / n) + 0.03  # + O(ε) ULA bias


def test_annealed_langevin_bad_input_is_one_clear_error():
    levels = NoiseLevels.geometric(3.0, 0.5, 4)
    em = score_model(mixture_score, levels)
    x = torch.zeros(3, 2, dtype=DT)
    for eps in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="step_size"):
            annealed_langevin(em, x, levels, step_size=eps)
    with pytest.raises(ValueError, match="steps"):
        annealed_langevin(em, x, levels, steps=0)
    with pytest.raises(ValueError, match="strictly decrease"):
        NoiseLevels([1.0, 2.0, 0.5])
    with pytest.raises(ValueError, match="strictly decrease"):
        NoiseLevels([1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="positive"):
        NoiseLevels([1.0, 0.0])
    with pytest.raises(ValueError, match="level 1 of 4"):
        annealed_langevin(lambda x, t: x * math.nan, x, levels, step_size=0.1, steps=2)


def test_noise_levels_are_geometric_and_interpolate():
    lv = NoiseLevels.geometric(20.0, 1.0, 10)
    s = lv.sigma(lv.grid())
    torch.testing.assert_close(s, 20.0 * (1 / 20.0) ** (torch.arange(10, dtype=DT) / 9))
    ratio = s[:-1] / s[1:]
    torch.testing.assert_close(ratio, torch.full_like(ratio, 20 ** (1 / 9)))
    # between levels: geometric in t (exactly, for a geometric sequence)
    t = torch.tensor([0.03, 0.5, 0.97], dtype=DT)
    torch.testing.assert_close(lv.sigma(t), 20.0**t)
    assert float(lv.mean_coef(0.3)) == 1.0


# ---------------------------------------------------------------------------
# denoising score matching


def test_dsm_minimiser_is_the_score_of_the_smoothed_gaussian():
    # data N(μ, Σ); the DSM minimiser over affine scores s(x̃) = A x̃ + b is the score of
    # N(μ, Σ + σ²I): A = -(Σ + σ²I)⁻¹, b = (Σ + σ²I)⁻¹ μ (Vincent 2011)
    g = torch.Generator().manual_seed(6)
    mu = torch.tensor([1.0, -2.0], dtype=DT)
    cov = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=DT)
    sigma, n = 0.7, 50_000
    x = mu + torch.randn(n, 2, generator=g, dtype=DT) @ torch.linalg.cholesky(cov).T
    A = torch.zeros(2, 2, dtype=DT, requires_grad=True)
    b = torch.zeros(2, dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([A, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dsm_loss(
            lambda xt, s: xt @ A.T + b, x, sigma, generator=torch.Generator().manual_seed(7)
        )
        loss.backward()
        return loss

    opt.step(closure)
    prec = torch.linalg.inv(cov + sigma**2 * torch.eye(2, dtype=DT))
    # regression standard errors are about 0.005 here
    torch.testing.assert_close(A.detach(), -prec, atol=0.03, rtol=0)
    torch.testing.assert_close(b.detach(), prec @ mu, atol=0.05, rtol=0)
    # ...not the unsmoothed score -Σ⁻¹
    assert (A.detach() + torch.linalg.inv(cov)).abs().max() > 0.2


def test_dsm_weighting_and_errors():
    x = torch.randn(64, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    s = torch.full((64,), 0.3, dtype=DT)
    zero = lambda xt, sig: torch.zeros_like(xt)  # noqa: E731
    # with s = 0: ½ σ² ‖z/σ‖² = ½‖z‖² (λ = σ²) and ½‖z‖²/σ² (λ = 1), same z
    a = dsm_loss(zero, x, s, generator=torch.Generator().manual_seed(1))
    b = dsm_loss(zero, x, s, generator=torch.Generator().manual_seed(1), weighting="none")
    torch.testing.assert_close(b, a / 0.09)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    torch.testing.assert_close(a, 0.5 * (z**2).sum(1).mean())
    with pytest.raises(ValueError, match="sigma"):
        dsm_loss(zero, x, 0.0)
    with pytest.raises(ValueError, match="shape"):
        dsm_loss(zero, x, torch.ones(3))
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(zero, x, 0.1, weighting="sigma")


# ---------------------------------------------------------------------------
# the NCSN model


def test_ncsn_sigma_max_from_the_data_and_the_loss_is_the_eps_loss():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    assert max_pairwise_distance(x) == pytest.approx(5.0)
    torch.manual_seed(0)
    m = NCSN(TimeMLP(2, 32, 2), (2,), levels=5, sigma_min=0.01)
    with pytest.raises(RuntimeError, match="init_from_data"):
        m.loss(x)
    m.init_from_data(x)
    torch.testing.assert_close(
        m.sigmas.double(), NoiseLevels.geometric(5.0, 0.01, 5).sigmas.float().double()
    )
    # λ(σ) = σ²: the DSM loss equals ½‖ε_θ(x + σ_i z, t_i) - z‖² with the same draws
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    loss = m.loss(x, generator=g1)
    i = torch.randint(0, 5, (3,), generator=g2)
    z = torch.randn(x.shape, generator=g2)
    sig = m.sigmas[i][:, None]
    eps = m.eps_model(x + sig * z, 999.0 * (1 - i.double() / 4))
    torch.testing.assert_close(loss, 0.5 * ((eps - z) ** 2).sum(1).mean(), rtol=1e-5, atol=1e-6)
    # score() is -ε/σ at a level
    torch.testing.assert_close(m.score(x, 4), m.eps_model(x, torch.full((3,), 0.0)) / -m.sigmas[4])


def test_ncsn_sample_chain_and_errors():
    torch.manual_seed(0)
    m = NCSN(TimeMLP(2, 16, 1), (2,), levels=4, sigma_max=3.0, sigma_min=0.1, steps_per_level=3)
    g = torch.Generator().manual_seed(0)
    stats = {}
    x, chain = m.sample(5, generator=g, return_chain=True, stats=stats)
    assert x.shape == (5, 2) and len(chain) == 5  # 4 levels + the denoised samples
    assert [round(s, 6) for s, _ in chain[:4]] == [round(float(s), 6) for s in m.sigmas]
    assert stats["nfe"] == 4 * 3 + 1
    with pytest.raises(ValueError, match="annealed_langevin"):
        m.sample(5, sampler="ddim")
    with pytest.raises(ValueError, match="shape"):
        m.loss(torch.zeros(4, 3))
    for kw in (dict(step_size=0.0), dict(sigma_max=0.005), dict(levels=1), dict(steps_per_level=0)):
        with pytest.raises(ValueError):
            NCSN(TimeMLP(2, 8, 1), (2,), **{"sigma_max": 3.0, **kw})
    bad = NCSN(lambda x, t: x * math.nan, (2,), levels=3, sigma_max=3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        bad.sample(2, steps=2)


def test_figure_4_picture(tmp_path):
    from genmodels.plot import annealed_chain

    torch.manual_seed(0)
    m = NCSN(TimeMLP(2, 8, 1), (2,), levels=3, sigma_max=3.0, sigma_min=0.1, steps_per_level=2)
    _, chain = m.sample(20, generator=torch.Generator().manual_seed(0), return_chain=True)
    annealed_chain(chain, tmp_path / "levels.png")
    assert (tmp_path / "levels.png").stat().st_size > 1000
    imgs = [(1.0, torch.rand(4, 1, 8, 8) * 2 - 1), (0.1, torch.rand(4, 1, 8, 8) * 2 - 1)]
    annealed_chain(imgs, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 500
    with pytest.raises(ValueError, match="empty"):
        annealed_chain([])


def test_ncsn_input_scale_feeds_the_network_x_over_sqrt_1_plus_sigma2():
    # with input_scale the network sees x̃ / sqrt(1 + σ_i²) at every level, in the loss, in
    # score() and in the sampler; without it, x̃ itself
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, t_net):
            seen.append((x.clone(), t_net.clone()))
            return torch.zeros_like(x)

    x = torch.randn(6, 2)
    for scale in (False, True):
        m = NCSN(Probe(), (2,), levels=4, sigma_max=3.0, sigma_min=0.1, input_scale=scale)
        for i in range(4):
            seen.clear()
            m.score(x, i)
            s = float(m.sigmas[i])
            want = x / math.sqrt(1 + s * s) if scale else x
            torch.testing.assert_close(seen[0][0], want)
        # the loss: the same draws as dsm_loss's, one level per example
        seen.clear()
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        m.loss(x, generator=g1)
        i = torch.randint(0, 4, (6,), generator=g2)
        sig = m.sigmas[i][:, None]
        xt = x + sig * torch.randn(x.shape, generator=g2)
        want = xt / (1 + sig**2).sqrt() if scale else xt
        torch.testing.assert_close(seen[0][0], want)
        # the sampler: the first call sees x̃_0 ~ N(0, σ_1²I) scaled by 1/sqrt(1 + σ_1²)
        seen.clear()
        m.sample(3, generator=torch.Generator().manual_seed(0), steps=1)
        x0 = torch.randn((3, 2), generator=torch.Generator().manual_seed(0)) * 3.0
        torch.testing.assert_close(seen[0][0], x0 / math.sqrt(10.0) if scale else x0)
        assert len(seen) == 4 + 1  # L levels of T = 1 step, and the denoising step


def test_ncsn_registered_defaults_by_data_kind_and_old_configs():
    from genmodels.registry import DataInfo, get

    spec = get("ncsn")
    points = spec.build(spec.make_config({}), DataInfo("moons", "points", (2,)))
    images = spec.build(spec.make_config({}), DataInfo("digits", "images", (1, 8, 8), levels=17))
    assert (points.num_levels, points.step_size, points.input_scale) == (10, 2e-5, True)
    assert (images.num_levels, images.step_size, images.input_scale) == (30, 3.3e-6, True)
    assert spec.make_config({"step_size": 1e-5}).input_scale  # a --set override: new default
    # a config.json written before input_scale existed: the unscaled network it trained
    old = dict(
        levels=None, sigma_min=0.01, sigma_max=None, step_size=2e-5, steps_per_level=100,
        denoise=True, net="auto", width=None, depth=None, mults=[1, 2, 2], emb_dim=128,
        activation="silu",
    )  # fmt: skip
    cfg = spec.make_config(old)
    assert cfg.input_scale is False and cfg.step_size == 2e-5
    assert spec.make_config({**old, "input_scale": True}).input_scale
