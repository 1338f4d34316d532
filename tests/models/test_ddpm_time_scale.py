"""The time embedding's scale (``DDPMConfig.time_scale``): the network's sinusoidal embedding
sees ``time_scale · t``; the field round-trips, old runs load with 1.0, bad values are refused,
and the samplers still equal diffusers with a scaled network."""

import json
import math

import pytest
import torch

from genmodels.config import to_json_dict
from genmodels.models.ddpm import DEFAULT_TIME_SCALE, NoiseSchedule, ancestral, ddim
from genmodels.nn import TimeMLP, UNet, sinusoidal_embedding, time_network
from genmodels.nn.embeddings import check_time_scale, scale_time
from genmodels.registry import DataInfo, get

MOONS = DataInfo("moons", "points", (2,))


def _pair(scale: float, cls=TimeMLP, **kw):
    """Two networks with the same weights, one with ``time_scale=scale``, one unscaled."""
    torch.manual_seed(0)
    a = cls(**kw, time_scale=scale)
    b = cls(**kw)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("scale", [0.1, 0.37, 2.5])
def test_time_mlp_with_scale_s_at_t_equals_scale_1_at_s_t(scale):
    a, b = _pair(scale, features=3, width=32, depth=2, emb_dim=16)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = a.double(), b.double()
    t = torch.tensor([0.0, 1.5, 17.25, 400.0, 999.0, 3.0, 250.5], dtype=torch.float64)
    assert torch.allclose(a(x, t), b(x, scale * t), rtol=1e-12, atol=1e-12)
    # integer steps, per row and shared by every row (the samplers' stride-0 view)
    i = torch.tensor([0, 1, 5, 100, 500, 998, 999])
    assert torch.allclose(a(x, i), b(x, scale * i.double()), rtol=1e-6, atol=1e-6)
    shared = torch.tensor(640).expand(7)
    assert torch.allclose(a(x, shared), b(x, torch.full((7,), 640.0 * scale)), atol=1e-6)
    # and it is a different function of t than the unscaled network
    assert not torch.allclose(a(x, t), b(x, t), atol=1e-3)


def test_the_embedding_sees_the_scaled_time(monkeypatch):
    """What TimeMLP and UNet hand their sinusoidal embedding is s·t, for integer and real t."""
    import genmodels.nn.mlp
    import genmodels.nn.unet

    seen = []

    def recording(t, dim, **kw):
        seen.append(t.detach().clone())
        return sinusoidal_embedding(t, dim, **kw)

    monkeypatch.setattr(genmodels.nn.mlp, "sinusoidal_embedding", recording)
    monkeypatch.setattr(genmodels.nn.unet, "sinusoidal_embedding", recording)
    net = TimeMLP(2, width=8, depth=1, emb_dim=6, time_scale=0.1)
    net(torch.zeros(2, 2), torch.tensor([123, 4]))
    net(torch.zeros(2, 2), torch.tensor([2.5, 700.0]))
    UNet(1, 8, (1,), 1, 8, time_scale=0.1)(torch.zeros(2, 1, 4, 4), torch.tensor([10, 990]))
    assert torch.allclose(seen[0], torch.tensor([12.3, 0.4]))
    assert seen[0].is_floating_point()
    assert torch.allclose(seen[1], torch.tensor([0.25, 70.0]))
    assert torch.allclose(seen[2], torch.tensor([1.0, 99.0]))
    # the fastest frequency is 1 rad per unit of the embedded time: 0.1 rad per step
    emb = sinusoidal_embedding(scale_time(torch.tensor([10]), 0.1), 6)
    assert emb[0, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)


def test_scale_one_is_the_unscaled_network_bit_for_bit():
    i = torch.tensor([0, 7, 999])
    assert scale_time(i, 1.0) is i  # integer steps stay integers
    a, b = _pair(1.0, features=2, width=16, depth=2, emb_dim=8)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a(x, i), b(x, i))


def test_unet_and_factory_thread_the_scale():
    a, b = _pair(0.2, UNet, in_channels=1, channels=8, mults=(1, 2), blocks=1, emb_dim=16)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the output conv starts at zero: give it weights
        for net in (a, b):
            torch.nn.init.normal_(net.out.weight, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([300.0, 12.0])
    assert torch.allclose(a(x, t), b(x, 0.2 * t), atol=1e-5)
    assert time_network((2,), time_scale=0.3).time_scale == 0.3
    assert time_network((1, 8, 8), time_scale=0.3).net.time_scale == 0.3  # flat MLP
    assert time_network((1, 28, 28), time_scale=0.3).time_scale == 0.3  # U-Net
    assert time_network((2,)).time_scale == 1.0


def test_config_round_trip_default_and_old_configs():
    spec = get("ddpm")
    cfg = spec.make_config({"time_scale": 0.1})
    saved = json.loads(json.dumps(to_json_dict(cfg)))
    assert saved["time_scale"] == 0.1
    assert spec.make_config(saved) == cfg
    assert spec.build(cfg, MOONS).eps_model.time_scale == 0.1
    # None: the data kind's measured default
    default = spec.make_config({})
    assert default.time_scale is None
    assert spec.build(default, MOONS).eps_model.time_scale == DEFAULT_TIME_SCALE["points"]
    digits = DataInfo("digits", "images", (1, 8, 8), levels=17)
    assert spec.build(default, digits).eps_model.net.time_scale == DEFAULT_TIME_SCALE["images"]
    # a config.json written before the field existed: the unscaled embedding it trained with
    old = {k: v for k, v in to_json_dict(default).items() if k != "time_scale"}
    assert spec.make_config(old).time_scale == 1.0
    assert spec.build(spec.make_config(old), MOONS).eps_model.time_scale == 1.0
    # a few --set overrides are not an old config: the default applies
    assert spec.make_config({"width": 64}).time_scale is None


@pytest.mark.parametrize("bad", [0, -0.1, float("inf"), float("nan"), "fast", True])
def test_bad_time_scale_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="time_scale"):
        check_time_scale(bad)
    with pytest.raises(ValueError, match="time_scale must be a positive finite number"):
        TimeMLP(2, time_scale=bad)
    with pytest.raises(ValueError, match="time_scale must be a positive finite number"):
        UNet(1, 8, time_scale=bad)
    if not isinstance(bad, str):  # a string is refused by the config's type check first
        with pytest.raises(ValueError, match="time_scale"):
            get("ddpm").make_config({"time_scale": bad})


def test_score_sde_configs_take_the_field_with_default_one():
    for name in ("subvp", "vesde"):
        spec = get(name)
        assert spec.make_config({}).time_scale == 1.0
        assert spec.build(spec.make_config({}), MOONS).eps_model.net.time_scale == 1.0
        cfg = spec.make_config({"time_scale": 0.25})
        assert spec.make_config(json.loads(json.dumps(to_json_dict(cfg)))) == cfg
        assert spec.build(cfg, MOONS).eps_model.net.time_scale == 0.25
        old = {k: v for k, v in to_json_dict(spec.make_config({})).items() if k != "time_scale"}
        assert spec.make_config(old).time_scale == 1.0
        with pytest.raises(ValueError, match="time_scale"):
            spec.make_config({"time_scale": -1.0})


def test_samplers_equal_diffusers_with_a_scaled_network():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    net = TimeMLP(2, width=32, depth=2, emb_dim=16, time_scale=0.1).eval()
    T = 50
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=T, beta_schedule="linear", beta_start=1e-3, beta_end=0.2,
        variance_type="fixed_small", clip_sample=False,
    )  # fmt: skip
    sched.set_timesteps(T)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = ancestral(
            net, x_T, NoiseSchedule.linear(T, 1e-3, 0.2), generator=torch.Generator().manual_seed(2)
        )
        g, x = torch.Generator().manual_seed(2), x_T.clone()
        for t in sched.timesteps:
            x = sched.step(net(x, t.expand(64)), t, x, generator=g).prev_sample
        assert torch.allclose(ours, x, atol=1e-4, rtol=1e-4)
        sched = diffusers.DDIMScheduler(
            num_train_timesteps=T, beta_schedule="linear", beta_start=1e-3, beta_end=0.2,
            clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading",
        )  # fmt: skip
        sched.set_timesteps(10)
        ours = ddim(net, x_T, NoiseSchedule.linear(T, 1e-3, 0.2), steps=10)
        x = x_T.clone()
        for t in sched.timesteps:
            x = sched.step(net(x, t.expand(64)), t, x, eta=0.0).prev_sample
        assert torch.allclose(ours, x, atol=1e-5, rtol=1e-5)


def test_a_run_saved_before_the_field_resumes_with_1(tmp_path, capsys):
    """A config.json without ``time_scale`` (nor ``time_sampling``) is the same model on
    resume; changing the scale on resume is one clear error."""
    import genmodels
    from genmodels.cli import main

    run = tmp_path / "run"
    tiny = ["--set", "timesteps=20", "--set", "width=16", "--set", "depth=1"]
    common = ["train", "ddpm", "--data", "moons", "--out", str(run), "--no-progress"]
    assert main([*common, "--steps", "2", "--batch-size", "16", *tiny]) == 0
    cfg_path = run / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("time_scale", "time_sampling"):  # as main wrote it before these fields
        del cfg["model_config"][key]
    cfg_path.write_text(json.dumps(cfg))
    assert genmodels.load(run).eps_model.time_scale == 1.0
    assert main([*common, "--resume", "--steps", "4"]) == 0
    assert genmodels.load(run).eps_model.time_scale == 1.0
    capsys.readouterr()
    assert main([*common, "--resume", "--steps", "6", "--set", "time_scale=0.1"]) == 2
    assert "holds a run with model_config" in capsys.readouterr().err
