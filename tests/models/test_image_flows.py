"""Image variants of NICE, RealNVP and NSF: the model contract, the change of variables, and
the dequantisation bound on the discrete likelihood."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import genmodels
from genmodels import data
from genmodels.cli import main
from genmodels.models import flows
from genmodels.registry import DataInfo, get

NAMES = ("nice", "realnvp", "nsf")
INFO = DataInfo("tiny", "images", (2, 4, 4), None, 17)  # w = 1/8, like digits
TINY = {"width": 4, "depth": 1, "scales": 1, "transforms": 1, "bins": 4}


def _config(name: str, **over):
    cfg = {k: v for k, v in TINY.items() if k != "bins" or name == "nsf"}
    return get(name).make_config({**cfg, **over})


def _images(n: int, info: DataInfo = INFO, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, info.levels, (n, *info.event_shape), generator=g)
    return k * (2.0 / (info.levels - 1)) - 1


def _model(name: str, info: DataInfo = INFO, perturb: bool = True, **over):
    torch.manual_seed(0)
    model = get(name).build(_config(name, **over), info)
    model.init_from_data(_images(64, info))
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                fan_in = math.prod(p.shape[1:]) if p.ndim > 1 else 1
                p.add_(torch.randn(p.shape, generator=g) * 0.3 / math.sqrt(fan_in))
    return model


def test_registered_for_images_with_image_training_defaults():
    for name in NAMES:
        spec = get(name)
        assert spec.data_kinds == ("points", "images")
        pts = spec.train_defaults("points")
        assert pts == dict(steps=5000, batch_size=512, lr=1e-3, ema_decay=None)  # 2D unchanged
        img = spec.train_defaults("images")
        assert img["batch_size"] == 64 and img["val_fraction"] > 0
        model = spec.build(spec.config(), data.info("digits"))
        assert isinstance(model, flows.ImageFlowModel)
        assert model.transform[0].high == pytest.approx(1 + 1 / 8)  # the dequantised domain


@pytest.mark.parametrize("name", NAMES)
def test_whole_flow_inverts(name):
    model = _model(name).double()
    x = model.dequantize(_images(6).double(), generator=torch.Generator().manual_seed(2))
    z, ladj = model.transform(x)
    back, ladj_inv = model.transform.inverse(z)
    torch.testing.assert_close(back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-9, rtol=0)
    m32 = _model(name)
    x32 = x.float()
    back32 = m32.transform.inverse(m32.transform(x32)[0])[0]
    assert ((back32 - x32).abs() <= 1e-4 * x32.abs().clamp_min(1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_whole_flow_log_det_matches_autograd_jacobian(name):
    model = _model(name).double()
    x = model.dequantize(_images(2).double(), generator=torch.Generator().manual_seed(3))
    ladj = model.transform(x)[1]
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v: model.transform(v.view(1, *INFO.event_shape))[0].reshape(-1),
            x[i].reshape(-1),
        )
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], atol=1e-8, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_equals_train_mode(name):
    model = _model(name)
    x = model.dequantize(_images(8), generator=torch.Generator().manual_seed(4))
    train = model.train().log_prob(x)
    torch.testing.assert_close(model.eval().log_prob(x), train)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    model = _model(name)
    model.loss(_images(16, seed=5), generator=torch.Generator().manual_seed(0)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_round_trip(name, tmp_path):
    model = _model(name)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    fresh = get(name).build(_config(name), INFO)  # ActNorm not initialised
    fresh.load_state_dict(load_file(str(path)))
    x = model.dequantize(_images(8), generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(fresh.train().log_prob(x), model.log_prob(x))


def test_loss_and_bound_use_the_generator_for_dequantisation():
    model = _model("realnvp")
    x = _images(32, seed=7)
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    with torch.no_grad():
        assert float(model.loss(x, generator=gen(0))) == float(model.loss(x, generator=gen(0)))
        assert float(model.loss(x, generator=gen(0))) != float(model.loss(x, generator=gen(1)))
    bound = model.nll_bound(x, generator=gen(0))
    assert bound.shape == (32,)
    d = math.prod(INFO.event_shape)
    torch.testing.assert_close(bound.mean() / d, model.loss(x, generator=gen(0)).detach())


def _tiny_discrete_model(name: str):
    """A two-pixel image with 3 levels (w = 1, data domain [-1, 2)^2).

    The logit pre-transform maps the domain onto [logit a, logit(1 - a)] only, so the density
    lives on the domain widened by d = 3 a / (1 - 2 a) = 1/6 on each side (a = 0.05). A
    midpoint grid of spacing 1/60 over the widened square, aligned with the bins, gives the
    total mass and the mass P(k) of every bin."""
    info = DataInfo("pair", "images", (1, 1, 2), None, 3)
    model = _model(name, info, logit_alpha=0.05).double().eval()
    h = 1 / 60
    mid = -1 - 10 * h + h * (torch.arange(200, dtype=torch.float64) + 0.5)  # [-7/6, 13/6]
    grid = torch.stack(torch.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 1, 1, 2)
    with torch.no_grad():
        mass = (model.log_prob(grid).exp() * h * h).view(200, 200)
    edges = [10 + 60 * j for j in range(4)]  # grid indices of -1, 0, 1, 2
    probs = torch.stack(
        [
            torch.stack(
                [mass[edges[i] : edges[i + 1], edges[j] : edges[j + 1]].sum() for j in range(3)]
            )
            for i in range(3)
        ]
    )
    return model, mass.sum(), probs


@pytest.mark.parametrize("name", NAMES)
def test_dequantised_density_gives_bin_probabilities_that_its_bound_bounds(name):
    """The continuous density integrates to one; its samples fall in the bins with the
    probabilities P(k) = integral over the bin; E[-log p(x + w u)] >= -log P(x) + D log w
    (Jensen; here w = 1)."""
    model, total, probs = _tiny_discrete_model(name)
    assert abs(float(total) - 1) < 5e-3  # midpoint rule, h = 1/60
    assert 0.5 < float(probs.sum()) < 1  # some mass lies outside the data domain
    s = model.sample(20000, generator=torch.Generator().manual_seed(8), quantize=False)
    k = torch.floor(s.view(-1, 2) + 1).long()
    inside = ((k >= 0) & (k <= 2)).all(1)
    k = k[inside]
    freq = torch.bincount(k[:, 0] * 3 + k[:, 1], minlength=9).double() / len(s)
    p = probs.reshape(-1)
    se = (p * (1 - p) / len(s)).sqrt()
    assert ((freq - p).abs() <= 4 * se + 2e-3).all(), (freq, p)
    levels = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    x = torch.stack(torch.meshgrid(levels, levels, indexing="ij"), -1).view(9, 1, 1, 2)
    bound = model.nll_bound(x, generator=torch.Generator().manual_seed(9), draws=400)
    assert (bound >= -p.log() - 0.02).all()


def test_sample_is_quantised_and_reproducible():
    model = _model("nsf")
    a = model.sample(5, generator=torch.Generator().manual_seed(0))
    b = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (5, *INFO.event_shape) and torch.equal(a, b)
    k = (a + 1) * 8
    assert torch.equal(k, k.round()) and k.min() >= 0 and k.max() <= 16
    raw = model.sample(5, generator=torch.Generator().manual_seed(0), quantize=False)
    assert not torch.equal(raw, a) and torch.equal(torch.floor((raw + 1) * 8).clamp(0, 16), k)


def test_distribution_view_is_the_continuous_density():
    model = _model("realnvp").eval()
    x = model.dequantize(_images(4), generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(model.distribution().log_prob(x), model.log_prob(x))


def test_bad_input_raises_naming_the_argument():
    model = _model("realnvp")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2, 4, 4\)"):
        model.log_prob(torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"x must have shape"):
        model.nll_bound(torch.zeros(3, 32))
    with pytest.raises(ValueError, match="draws"):
        model.nll_bound(_images(2), draws=0)
    with pytest.raises(ValueError, match="quantised"):
        get("nice").build(get("nice").config(), DataInfo("x", "images", (1, 4, 4)))


def test_cli_train_evaluate_load_digits(tmp_path):
    run = tmp_path / "run"
    args = ["train", "realnvp", "--data", "digits", "--steps", "3", "--out", str(run)]
    args += ["--no-progress", "--set", "width=8", "--set", "transforms=1"]
    assert main(args) == 0
    assert main(["evaluate", str(run), "--n", "64"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert "bits_per_dim" not in m  # the density at the stored values is not bits/dim
    assert math.isfinite(m["bits_per_dim_bound"]) and math.isfinite(m["fd"])
    assert m["bits_per_dim_bound"] == pytest.approx(
        m["nll_bound_nats"] / (64 * math.log(2)) + 3, abs=1e-9
    )
    model = genmodels.load(run)
    x = data.load("digits", "test").x[:16]
    g = torch.Generator().manual_seed(0)
    first = model.nll_bound(x, generator=g)
    again = genmodels.load(run).nll_bound(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first, again)
