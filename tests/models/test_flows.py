"""NICE, RealNVP and NSF models: the model contract and the change-of-variables identities."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from genmodels.models import flows
from genmodels.registry import DataInfo, get

NAMES = ("nice", "realnvp", "nsf")
INFO = DataInfo("moons", "points", (2,))


def _moons(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x, y], 1) * 2 + torch.tensor([1.0, 3.0])  # off-centre on purpose
    return pts + 0.1 * torch.randn(n, 2, generator=g)


def _model(name: str, perturb: bool = True, **overrides) -> flows.FlowModel:
    spec = get(name)
    torch.manual_seed(0)
    model = spec.build(spec.make_config({"transforms": 4, **overrides}), INFO)
    model.init_from_data(_moons(2000))
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                s = 0.5 / math.sqrt(p.shape[-1]) if p.ndim == 2 else 0.3
                p.add_(torch.randn(p.shape, generator=g) * s)
    return model


def test_registered_with_the_agreed_defaults():
    for name in NAMES:
        spec = get(name)
        cfg = spec.config()
        # None: the measured defaults for the data (8 couplings, 2 x 64 conditioner MLPs)
        assert (cfg.transforms, cfg.width, cfg.depth) == (None, None, None)
        assert spec.task == "density"
        want = dict(steps=5000, batch_size=512, lr=1e-3, ema_decay=None)
        assert spec.train_defaults("points") == want
        # a model built through the registry carries its budget (fit's lr=None uses it)
        assert spec.build(cfg, DataInfo("moons", "points", (2,))).train_defaults == want
        assert spec.data_kinds == ("points", "images")  # images: tests/models/test_image_flows.py


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name):
    """The grid integral of p over a box equals the fraction of samples in the box (so p
    integrates to one and sample/log_prob are the same distribution), within 1%."""
    model = _model(name).eval()
    n, (x0, x1), (y0, y1) = 301, (-4.0, 6.0), (-2.0, 8.0)
    xx, yy = torch.meshgrid(torch.linspace(x0, x1, n), torch.linspace(y0, y1, n), indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        mass = float(model.log_prob(pts).exp().sum()) * (x1 - x0) * (y1 - y0) / (n - 1) ** 2
    s = model.sample(20000, generator=torch.Generator().manual_seed(0))
    inside = ((s[:, 0] > x0) & (s[:, 0] < x1) & (s[:, 1] > y0) & (s[:, 1] < y1)).float().mean()
    assert float(inside) > 0.95
    assert math.isclose(mass, float(inside), rel_tol=0.01), (mass, float(inside))


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_includes_the_standardisation(name):
    """Rescaling the data by c moves log p by -D log c, for a model fitted to the rescaled data
    with the same internal weights (the standardisation absorbs the scale)."""
    model = _model(name)
    x = _moons(64, seed=5)
    lp = model.log_prob(x)
    scaled = _model(name)
    scaled.init_from_data(_moons(2000) * 3.0)
    torch.testing.assert_close(scaled.log_prob(x * 3.0), lp - 2 * math.log(3.0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_sample_inverts_log_prob_and_uses_the_generator(name):
    model = _model(name).eval()
    a = model.sample(256, generator=torch.Generator().manual_seed(0))
    b = model.sample(256, generator=torch.Generator().manual_seed(0))
    assert a.shape == (256, 2) and torch.equal(a, b)
    z, _ = model.transform(a)
    z_again = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, z_again, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_equals_train_mode(name):
    model = _model(name)
    x = _moons(50, seed=2)
    train_lp = model.train().log_prob(x)
    eval_lp = model.eval().log_prob(x)
    torch.testing.assert_close(train_lp, eval_lp)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    model = _model(name)
    model.loss(_moons(128, seed=3)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_round_trip(name, tmp_path):
    model = _model(name, mixing="lu") if name != "nice" else _model(name)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    fresh = _model(name, perturb=False, mixing="lu") if name != "nice" else _model(name, False)
    fresh.standardize.set_(torch.randn(10, 2))  # scrambled: the file must restore it
    fresh.load_state_dict(load_file(str(path)))
    x = _moons(32, seed=4)
    torch.testing.assert_close(fresh.log_prob(x), model.log_prob(x))


def test_actnorm_state_is_carried_by_the_checkpoint(tmp_path):
    model = _model("realnvp", actnorm=True)
    state = model.state_dict()
    assert any(k.endswith("initialized") for k in state)
    assert all(int(v) == 1 for k, v in state.items() if k.endswith("initialized"))


@pytest.mark.parametrize("name", NAMES)
def test_distribution_view(name):
    model = _model(name).eval()
    dist = model.distribution()
    assert isinstance(dist, torch.distributions.Distribution)
    x = _moons(20, seed=6)
    torch.testing.assert_close(dist.log_prob(x), model.log_prob(x))
    assert dist.sample((3, 5), generator=torch.Generator()).shape == (3, 5, 2)
    assert dist.rsample((4,)).requires_grad


@pytest.fixture
def one_thread():
    """Small-op training is faster on one thread (and the CI cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_lowers_the_nll(one_thread):
    model = _model("realnvp", perturb=False)
    data = _moons(4000)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    with torch.no_grad():
        before = float(model.loss(data))
    for _ in range(150):
        loss = model.loss(data[torch.randint(len(data), (256,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(model.loss(data))
    assert after < before - 0.4, (before, after)


def test_bad_shapes_and_data_kinds_raise():
    model = _model("realnvp")
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="point data"):
        get("nsf").build(get("nsf").config(), DataInfo("ts", "series", (16,), input_shape=(1,)))
    with pytest.raises(ValueError, match="kind must be one of"):
        DataInfo("tokens", "sequences", (16,))
    with pytest.raises(ValueError, match="mixing"):
        get("realnvp").build(get("realnvp").make_config({"mixing": "shuffle"}), INFO)
