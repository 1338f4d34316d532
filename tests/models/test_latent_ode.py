"""Latent ODE: the KL term in closed form, the union-of-times solve against per-row torchdiffeq
solves, predict before/between/after irregular observations, sample, bad input, and a short
run on spirals that lowers the RMSE."""

import pytest
import torch

from genmodels import data, registry
from genmodels.evaluate.run import evaluate_model
from genmodels.models.latent_ode import LatentODE

NAN = float("nan")


def _batch(b=3, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(0.05 + torch.rand(b, n, 1, generator=g, dtype=torch.float64), 1)
    return t, torch.randn(b, n, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("encoder", ["rnn", "odernn"])
def test_loss_is_reconstruction_plus_closed_form_kl(encoder):
    """With the decoder's output fixed at 0, -ELBO * (observed values) is the Gaussian
    reconstruction term plus KL(N(μ, σ²) || N(0, I)) = ½ Σ (μ² + σ² - 1 - log σ²)."""
    torch.manual_seed(0)
    model = LatentODE(2, 3, encoder=encoder, obs_std=0.5).double()
    last = model.decoder[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    t, v = _batch()
    v[0, 2, 1] = NAN
    loss = model.loss((t, v), generator=torch.Generator().manual_seed(1))
    mask = ~torch.isnan(v)
    q = model.posterior(t, torch.nan_to_num(v), mask)
    kl = 0.5 * (q.loc**2 + q.scale**2 - 1 - 2 * q.scale.log()).sum()
    recon = -torch.distributions.Normal(0.0, model.obs_std).log_prob(v[mask]).sum()
    torch.testing.assert_close(loss * mask.sum(), recon + kl, rtol=1e-10, atol=0)


def test_kl_warmup_weighs_the_kl_linearly_in_training_only():
    """With ``kl_warmup=K`` the k-th training loss is (reconstruction + min(1, k/K) KL) per
    observed value, the KL in closed form; in eval mode or without gradients it is the plain
    -ELBO and the count does not move; the count is saved with the weights."""
    torch.manual_seed(0)
    model = LatentODE(2, 3, obs_std=0.5, kl_warmup=4).double()
    last = model.decoder[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    t, v = _batch()
    mask = ~torch.isnan(v)
    q = model.posterior(t, v, mask)
    kl = 0.5 * (q.loc**2 + q.scale**2 - 1 - 2 * q.scale.log()).sum()
    recon = -torch.distributions.Normal(0.0, model.obs_std).log_prob(v).sum()
    for k in (1, 2, 3, 4, 5, 6):
        loss = model.loss((t, v)) * mask.sum()
        torch.testing.assert_close(loss, recon + min(1.0, k / 4) * kl, rtol=1e-10, atol=0)
        assert int(model.kl_steps) == k
    model.kl_steps.zero_()
    model.eval()
    torch.testing.assert_close(model.loss((t, v)) * mask.sum(), recon + kl, rtol=1e-10, atol=0)
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model.loss((t, v)) * mask.sum(), recon + kl, rtol=1e-10, atol=0)
    assert int(model.kl_steps) == 0
    assert "kl_steps" in model.state_dict() and "kl_steps" not in LatentODE(2).state_dict()
    with pytest.raises(ValueError, match="kl_warmup must be a non-negative integer"):
        LatentODE(2, kl_warmup=-1)


def test_union_of_times_solve_equals_per_row_solves():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    torch.manual_seed(1)
    model = LatentODE(2, 4).double()
    t, _ = _batch(b=4, n=9, seed=2)
    t = t - 0.3  # some rows start before t0 = 0: solved backwards
    z0 = torch.randn(4, 4, dtype=torch.float64)
    z = model.trajectory(z0, t)
    assert z.shape == (4, 9, 4)
    for b in range(4):
        tb = t[b, :, 0]
        fwd = tb[tb > 0]
        ref = torchdiffeq.odeint(
            model.field, z0[b], torch.cat([tb.new_zeros(1), fwd]), rtol=1e-11, atol=1e-12
        )[1:]
        torch.testing.assert_close(z[b, tb > 0], ref, rtol=0, atol=1e-6)
        back = tb[tb < 0].flip(0)
        ref = torchdiffeq.odeint(
            model.field, z0[b], torch.cat([tb.new_zeros(1), back]), rtol=1e-11, atol=1e-12
        )[1:].flip(0)
        torch.testing.assert_close(z[b, tb < 0], ref, rtol=0, atol=1e-6)


def test_predict_shapes_irregular_rows_and_any_target_times():
    torch.manual_seed(2)
    model = LatentODE(2).double()
    t, v = _batch(b=3, n=6)
    v[1, 0, :] = NAN  # first point missing
    v[2, 3, 0] = NAN
    shared = torch.tensor([[-1.0], [0.5], [0.2], [3.0], [10.0]], dtype=torch.float64)  # unsorted
    p = model.predict(t, v, shared)
    assert p.mean.shape == (3, 5, 2) and torch.isfinite(p.mean).all()
    assert torch.allclose(p.stddev, model.obs_std.expand(3, 5, 2).double())
    # a target alone predicts what it does among others (up to rk4's error: one step 0 -> 3
    # alone, three among the others); per-row targets agree with shared ones exactly
    alone = model.predict(t, v, shared[3:4]).mean
    torch.testing.assert_close(alone[:, 0], p.mean[:, 3], rtol=0, atol=1e-4)
    rows = model.predict(t, v, shared.unsqueeze(0).expand(3, -1, -1).clone())
    torch.testing.assert_close(rows.mean, p.mean, rtol=0, atol=1e-12)
    # posterior draws: averaged mean, wider than the observation noise
    pk = model.predict(t, v, shared, n_samples=4, generator=torch.Generator().manual_seed(0))
    assert pk.mean.shape == (3, 5, 2) and (pk.stddev >= model.obs_std - 1e-12).all()
    s = model.sample(5, torch.linspace(0, 2, 11), generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 11, 2) and torch.isfinite(s).all()


def test_bad_input_names_the_argument():
    model = LatentODE(2)
    t, v = _batch()
    t, v = t.float(), v.float()
    bad = t.clone()
    bad[2, 4] = bad[2, 3]
    with pytest.raises(ValueError, match="times must increase within each row; row 2"):
        model.loss((bad, v))
    nan = v.clone()
    nan[1] = NAN
    with pytest.raises(ValueError, match="series 1 has no observed value"):
        model.loss((t, nan))
    with pytest.raises(ValueError, match=r"values must have shape \(B, n, 2\)"):
        model.loss((t, v[:, :-1]))
    with pytest.raises(ValueError, match="x_target"):
        model.predict(t, v, torch.zeros(3, 2))


def test_short_run_on_spirals_lowers_the_rmse():
    from genmodels.train import TrainConfig, fit

    opts = dict(n_train=300, n_test=60)
    tr = data.load("spirals", **opts)
    spec = registry.get("latent-ode")
    assert spec.task == "series" and spec.default_data == "spirals"
    torch.manual_seed(0)
    model = spec.build(spec.make_config(), tr.info)
    assert model.train_defaults["steps"] == 1500 and model.train_defaults["batch_size"] == 128
    before = evaluate_model(model, "spirals", task="series", data_options=opts)
    fit(model, tr, TrainConfig(steps=60, batch_size=64, grad_clip=1.0, progress=False))
    after = evaluate_model(model, "spirals", task="series", data_options=opts)
    assert after["rmse_interp"] < 0.4 * before["rmse_interp"], (before, after)
    assert after["rmse_extrap"] < before["rmse_extrap"]


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_latent_solve_is_odeint_rk4_on_the_grid(direction):
    """The latent solve's own rk4 loop takes odeint's (torchdiffeq's) rk4 steps on the grid,
    forwards and backwards, values and gradients."""
    from genmodels.integrate import odeint

    torch.manual_seed(0)
    model = LatentODE(2, 4).double()
    z0 = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    grid = (direction * torch.tensor([0.0, 0.1, 0.35, 0.4, 1.0], dtype=torch.float64)).tolist()
    ours = model.field.solve_rk4(z0, grid)
    ref = odeint(
        model.field, z0, torch.tensor(grid, dtype=torch.float64), method="rk4",
        options={"grid_constructor": lambda f, y, t: grid},
    )  # fmt: skip
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    params = [z0, *model.field.parameters()]
    for a, b in zip(
        torch.autograd.grad(ours.square().sum(), params),
        torch.autograd.grad(ref.square().sum(), params),
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_latent_solve_backward_is_exact():
    """The solve's hand-written backward (the rk4 steps' discrete adjoint, one autograd node)
    passes gradcheck (float64, finite differences) for z0 and every weight, on a grid that
    goes forwards and back, with the loss reading every time of the grid; and a grid of one
    time is the identity."""
    from genmodels.models.latent_ode import _MLPRK4

    torch.manual_seed(3)
    model = LatentODE(2, 3, width=5).double()
    (l1, _, l2, _, l3) = model.field.net
    weights = [p.detach().clone().requires_grad_() for p in
               (l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias)]  # fmt: skip
    z0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    grid = [0.0, 0.3, 0.35, 0.9, 0.2, -0.4]
    assert torch.autograd.gradcheck(
        lambda z, *w: _MLPRK4.apply(z, grid, True, *w), (z0, *weights), atol=1e-7, rtol=1e-6
    )
    one = _MLPRK4.apply(z0, [0.5], True, *weights)
    assert one.shape == (1, 4, 3) and torch.equal(one[0], z0)
    (g,) = torch.autograd.grad(one.sum(), z0)
    assert torch.equal(g, torch.ones_like(z0))


def test_spirals_start_at_the_models_t0():
    """On ``spirals`` the issue's "the solve starts at the earliest requested time" and the
    model's fixed origin t0 = 0 are the same: training batches' unions of times and the
    evaluation's target grid all start at 0."""
    opts = dict(n_obs=30, n_train=200, n_test=20)
    tr = data.load("spirals", **opts)
    model = LatentODE(2)
    assert float(data.load("spirals", "test", **opts).grid.min()) == model.t0
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        b = tr.batch(128, g)
        assert float(b.times.min()) == model.t0


def test_defaults_and_old_runs_still_load():
    """The registered defaults (docs/series.md, "The latent ODE's seed 1 at n_obs 30"): latent
    size 8, field and decoder width 20, encoder GRU 25, a learned observation noise s (from
    0.1). Runs saved at size 4, learned s (``obs_std: 0.0``) or a fixed s rebuild as recorded
    and load their weights. A bad s is one clear error."""
    model = LatentODE(2)
    assert model.latent_dim == 8 and model.encoder == "rnn"
    assert model.field.net[0].in_features == 8 and model.decoder[0].in_features == 8
    assert model.field.net[0].out_features == 20 and model.cell.hidden_size == 25
    assert "raw_std" in dict(model.named_parameters())
    spec = registry.get("latent-ode")
    cfg = spec.make_config()
    assert (cfg.latent_dim, cfg.obs_std, cfg.width, cfg.hidden) == (8, 0.0, 20, 25)
    info = data.load("spirals", n_train=20, n_test=10).info
    built = spec.build(cfg, info)
    assert built.latent_dim == 8 and "raw_std" in dict(built.named_parameters())
    fixed = spec.build(spec.make_config({"obs_std": 0.3}), info)
    assert float(fixed.obs_std) == pytest.approx(0.3, rel=1e-6)
    assert "raw_std" in fixed.state_dict() and "raw_std" not in dict(fixed.named_parameters())
    small = LatentODE(2, 4)
    old4 = spec.build(spec.make_config({"latent_dim": 4, "obs_std": 0.0}), info)
    old4.load_state_dict(small.state_dict())  # a size-4 run's weights
    learned = LatentODE(2, obs_std=None)
    assert "raw_std" in dict(learned.named_parameters())
    assert float(learned.obs_std.detach()) == pytest.approx(0.1, rel=1e-6)
    old = spec.build(spec.make_config({"obs_std": 0.0}), info)  # an old run's config.json
    assert "raw_std" in dict(old.named_parameters())
    with torch.no_grad():
        learned.raw_std.fill_(-1.5)
    old.load_state_dict(learned.state_dict())
    assert torch.equal(old.obs_std, learned.obs_std)
    for bad in (-0.1, float("nan"), float("inf"), "0.3", True):
        with pytest.raises(ValueError, match="obs_std must be a positive number"):
            LatentODE(2, obs_std=bad)
    with pytest.raises(ValueError, match="obs_std must be a positive number"):
        spec.build(spec.make_config({"obs_std": -1.0}), info)
