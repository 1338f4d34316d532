"""DDPM training on continuous time (``time_sampling="continuous"``): real net times, the
schedule's interpolated ᾱ (the map the continuous samplers read the network through)."""

import json
import math

import pytest
import torch
from torch import nn

from genmodels.config import to_json_dict
from genmodels.models.ddpm import DDPM, NoiseSchedule
from genmodels.registry import DataInfo, get


class _Probe(nn.Module):
    """ε̂ = 0.1 x, recording what the loss feeds it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.1))
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x.detach().clone(), t.detach().clone()))
        return self.w * x


def _log_alpha_bar_closed_form(u: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """log ᾱ at net time u ∈ [0, T-1]: step u + 1 of the chain, with log ᾱ_k = Σ_{s≤k}
    log(1 - β_s) at the integers and linear in between (written here independently)."""
    log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log1p(-betas).cumsum(0)])
    pos = u + 1  # position on the grid 0..T
    k = pos.floor().clamp(max=len(betas) - 1).long()
    f = pos - k
    return (1 - f) * log_ab[k] + f * log_ab[k + 1]


def test_continuous_loss_uses_real_times_and_the_interpolated_alpha_bar():
    T, n = 50, 4000
    probe = _Probe()
    m = DDPM(probe, (2,), NoiseSchedule.linear(T), time_sampling="continuous")
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1)) * 2 + 1
    loss = m.loss(x0, generator=torch.Generator().manual_seed(3))
    (x_t, t_net), = probe.seen  # fmt: skip
    # the same draws, in the loss's order: u ~ U[0, T-1] (float64), then ε
    g = torch.Generator().manual_seed(3)
    u = torch.rand(n, generator=g, dtype=torch.float64) * (T - 1)
    eps = torch.randn(x0.shape, generator=g)
    assert t_net.is_floating_point()
    torch.testing.assert_close(t_net, u)
    frac = u - u.round()
    assert float((frac.abs() > 0.01).double().mean()) > 0.95  # between the integer steps
    assert 0 <= float(u.min()) < 0.1 and T - 1.1 < float(u.max()) <= T - 1
    lab = _log_alpha_bar_closed_form(u, torch.linspace(1e-4, 0.02, T, dtype=torch.float64))
    a, s = (0.5 * lab).exp()[:, None], (-torch.expm1(lab)).sqrt()[:, None]
    torch.testing.assert_close(x_t, (a * x0 + s * eps).float(), rtol=1e-5, atol=1e-5)
    # the loss is ‖ε - ε̂(x_t, u)‖² with these x_t
    want = (eps - 0.1 * x_t).square().mean()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    # and x_t's law is the VP SDE's marginal at t = (u + 1)/T, where the continuous samplers
    # call the network with net time t·T - 1 = u
    t = (u + 1) / T
    mean, std = m.sde.marginal(t)
    torch.testing.assert_close(mean, a[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, s[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.sde.net_time(t), u, rtol=0, atol=1e-9)
    # at integer net times the closed form is the discrete ᾱ of Algorithm 1 (q_sample)
    i = torch.arange(T)
    lab_i = _log_alpha_bar_closed_form(i.double(), m.schedule.betas)
    torch.testing.assert_close(lab_i.exp(), m.schedule.alphas_cumprod, rtol=1e-12, atol=0)


def test_discrete_loss_still_draws_integer_steps():
    probe = _Probe()
    m = DDPM(probe, (2,), NoiseSchedule.linear(20))
    assert m.time_sampling == "discrete"
    m.loss(torch.randn(64, 2), generator=torch.Generator().manual_seed(0))
    (_, t_net), = probe.seen  # fmt: skip
    assert t_net.dtype == torch.long and 0 <= int(t_net.min()) and int(t_net.max()) <= 19


def test_time_sampling_config_round_trip_and_old_configs():
    spec = get("ddpm")
    info = DataInfo("moons", "points", (2,))
    cfg = spec.make_config({"time_sampling": "continuous"})
    saved = json.loads(json.dumps(to_json_dict(cfg)))
    assert saved["time_sampling"] == "continuous"
    assert spec.make_config(saved) == cfg
    assert spec.build(cfg, info).time_sampling == "continuous"
    disc = spec.make_config({"time_sampling": "discrete"})
    assert spec.build(disc, info).time_sampling == "discrete"
    # a config.json written before the field existed: the integer steps it trained on
    old = {k: v for k, v in to_json_dict(spec.make_config({})).items() if k != "time_sampling"}
    assert spec.make_config(old).time_sampling == "discrete"
    # ... also one from before width/depth were merged (test_build_digests' moons entry)
    older = dict(
        timesteps=1000, beta_start=0.0001, beta_end=0.02, schedule="linear",
        variance="beta_tilde", loss_type="simple", width=64, depth=2, emb_dim=128,
        activation="silu", standardize=False, net="auto", image_mlp_width=512,
        image_mlp_depth=4, channels=16, mults=[1, 2, 2], blocks=1,
    )  # fmt: skip
    up = spec.make_config(older)
    assert up.time_sampling == "discrete" and (up.width, up.depth) == (64, 2)
    # a few --set overrides are not an old config: the current default applies
    assert spec.make_config({"width": 64}).time_sampling == spec.make_config({}).time_sampling


def test_time_sampling_bad_values():
    spec = get("ddpm")
    with pytest.raises(ValueError, match="time_sampling must be 'discrete' or 'continuous'"):
        spec.make_config({"time_sampling": "uniform"})
    with pytest.raises(ValueError, match="loss_type='simple'"):
        spec.make_config({"time_sampling": "continuous", "loss_type": "weighted"})
    with pytest.raises(ValueError, match="time_sampling must be"):
        DDPM(_Probe(), (2,), time_sampling="real")
    with pytest.raises(ValueError, match="loss_type='simple'"):
        DDPM(_Probe(), (2,), loss_type="weighted", time_sampling="continuous")


def test_an_old_run_directory_loads_as_discrete(tmp_path):
    import genmodels
    from genmodels.cli import main

    run = tmp_path / "run"
    args = ["train", "ddpm", "--data", "moons", "--steps", "5", "--batch-size", "32"]
    tiny = ["--set", "timesteps=20", "--set", "width=16", "--set", "depth=1", "--set", "emb_dim=8"]
    assert main([*args, "--out", str(run), "--no-progress", *tiny]) == 0
    cfg_file = run / "config.json"
    cfg = json.loads(cfg_file.read_text())
    assert cfg["model_config"]["time_sampling"] == get("ddpm").make_config({}).time_sampling
    del cfg["model_config"]["time_sampling"]  # as written before the field existed
    cfg_file.write_text(json.dumps(cfg))
    model = genmodels.load(run)
    assert model.time_sampling == "discrete"
    x = model.sample(4, generator=torch.Generator().manual_seed(0), sampler="ddim", steps=5)
    assert x.shape == (4, 2) and bool(torch.isfinite(x).all())
    assert math.isfinite(float(model.loss(torch.randn(8, 2)).detach()))
