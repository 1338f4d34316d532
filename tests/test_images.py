"""DDPM on images: the U-Net, the image branch of build_ddpm, Fréchet distances, pictures."""

from __future__ import annotations

import math

import pytest
import torch

from genmodels import data, registry
from genmodels.evaluate import images as img
from genmodels.models.ddpm import DDPM, DDPMConfig, NoiseSchedule
from genmodels.nn.unet import UNet
from genmodels.plot.chain import chain_grid


def _unzero(net):
    # the zero-initialised last layers (each block starts as the identity) would hide everything
    with torch.no_grad():
        net.out.weight.normal_()
        for block in net.modules():
            if hasattr(block, "conv2"):
                block.conv2.weight.normal_(std=0.1)


@pytest.mark.parametrize("size", [8, 28, 7])
def test_unet_keeps_the_shape_and_depends_on_t(size):
    torch.manual_seed(0)
    net = UNet(1, channels=8, mults=(1, 2, 2), blocks=1, emb_dim=16)
    _unzero(net)
    x = torch.randn(3, 1, size, size)
    a = net(x, torch.tensor([0, 0, 0]))
    b = net(x, torch.tensor([500, 500, 500]))
    assert a.shape == x.shape
    assert (a - b).abs().max() > 1e-4  # the time embedding reaches the output


def test_unet_is_translation_aware_not_per_pixel():
    # a pixel's output depends on its neighbours (convolutions), unlike a 1x1 map
    torch.manual_seed(0)
    net = UNet(1, channels=8, mults=(1, 2), emb_dim=16)
    _unzero(net)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    net(x, torch.tensor([10]))[0, 0, 4, 4].backward()
    assert (x.grad[0, 0].abs() > 0).sum() > 9


@pytest.mark.parametrize("net", ["unet", "mlp"])
def test_build_ddpm_for_images(net):
    info = data.info("digits")
    torch.manual_seed(0)
    cfg = DDPMConfig(timesteps=50, net=net, width=8 if net == "unet" else 32)
    model = registry.get("ddpm").build(cfg, info)
    assert isinstance(model, DDPM) and model.clip == (-1.0, 1.0)
    assert model.event_shape == (1, 8, 8)
    x = data.load("digits").x[:16]
    loss = model.loss(x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dim() == 0 and math.isfinite(loss.item())
    s = model.sample(4, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(1))
    assert s.shape == (4, 1, 8, 8)
    # deterministic DDIM's last step returns the clipped x̂_0 itself: inside the box
    assert s.min() >= -1 - 1e-5 and s.max() <= 1 + 1e-5


def test_image_defaults_come_from_the_registry():
    spec = registry.get("ddpm")
    assert "images" in spec.data_kinds
    d = spec.train_defaults("images")
    assert d["batch_size"] != spec.train_defaults("points")["batch_size"]
    # a data set may carry its own budget on top of its kind's
    m = spec.train_defaults("images", "mnist5k")
    assert m["steps"] != d["steps"] and m["batch_size"] == d["batch_size"]
    assert spec.train_defaults("images", "digits") == d


def test_auto_picks_an_mlp_for_small_images_and_a_unet_for_large():
    from genmodels.nn import FlatTimeNetwork

    cfg = DDPMConfig(timesteps=10)
    small = registry.get("ddpm").build(cfg, registry.DataInfo("digits", "images", (1, 8, 8)))
    large = registry.get("ddpm").build(cfg, registry.DataInfo("mnist5k", "images", (1, 28, 28)))
    assert isinstance(small.eps_model, FlatTimeNetwork)
    assert isinstance(large.eps_model, UNet)
    forced = DDPMConfig(timesteps=10, net="mlp", width=16)
    m = registry.get("ddpm").build(forced, registry.DataInfo("mnist5k", "images", (1, 28, 28)))
    assert isinstance(m.eps_model, FlatTimeNetwork)


def test_frechet_distance_closed_form_and_scipy():
    g = torch.Generator().manual_seed(0)
    d = 6
    # commuting (diagonal) covariances: FD = |μ1-μ2|² + Σ (√a - √b)²
    a = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    m1 = torch.randn(d, generator=g, dtype=torch.float64)
    m2 = torch.randn(d, generator=g, dtype=torch.float64)
    expect = (m1 - m2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    fd = img.frechet_distance(m1, torch.diag(a), m2, torch.diag(b))
    assert fd == pytest.approx(float(expect), rel=1e-10)
    # general covariances: agree with scipy.linalg.sqrtm
    scipy_linalg = pytest.importorskip("scipy.linalg")
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    B = torch.randn(d, d, generator=g, dtype=torch.float64)
    s1, s2 = A @ A.T + 0.1 * torch.eye(d), B @ B.T + 0.1 * torch.eye(d)
    covmean = scipy_linalg.sqrtm((s1 @ s2).numpy()).real
    ref = float((m1 - m2).double().square().sum() + (s1 + s2).trace()) - 2 * covmean.trace()
    assert img.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)
    assert img.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_of_sample_statistics_matches_two_gaussians():
    # FD between empirical statistics of two Gaussian samples approaches the closed form
    g = torch.Generator().manual_seed(1)
    n, d = 20000, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 2.0 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0
    fd = img.frechet_distance(*img.gaussian_stats(x), *img.gaussian_stats(y))
    assert fd == pytest.approx(d * 1.0 + d * (1 - 2) ** 2, rel=0.05)  # d·1² + d·(1-2)²


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="covariances"):
        img.frechet_distance(torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENMODELS_CACHE", str(tmp_path / "c"))
    assert img.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GENMODELS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert img.cache_dir() == tmp_path / "x" / "genmodels"


class _Replay(torch.nn.Module):
    """A stand-in image model: 'samples' are noisy copies of given images."""

    def __init__(self, pool, noise):
        super().__init__()
        self.pool, self.noise = pool, noise
        self.w = torch.nn.Parameter(torch.zeros(()))

    def sample(self, n, *, generator=None, sampler=None, steps=None):
        k = torch.randint(0, len(self.pool), (n,), generator=generator)
        return self.pool[k] + self.noise * torch.randn(self.pool[k].shape, generator=generator)


def test_image_metrics_order_real_noisy_and_gaussian(monkeypatch, tmp_path):
    # a cheap feature network (2 epochs) through the real cache path; the distances
    # must order: training data ≈ floor < noisy copies < the pixel-wise Gaussian
    monkeypatch.setenv("GENMODELS_CACHE", str(tmp_path))
    train = img._train_classifier
    monkeypatch.setattr(img, "_train_classifier", lambda d, epochs: train(d, epochs=2))
    pool = data.load("digits").x
    m = img.image_metrics(_Replay(pool, 0.0), "digits", n=400)
    assert m["eval_n"] == 400 and m["eval_sampler"] == "ddim" and m["eval_steps"] == 100
    assert 0 < m["classifier_accuracy"] <= 1
    assert m["fd"] < 0.5 * m["fd_gaussian"] and m["fd_floor"] < 0.5 * m["fd_gaussian"]
    noisy = img.image_metrics(_Replay(pool, 0.5), "digits", n=400)
    assert m["fd"] < noisy["fd"]
    assert list(tmp_path.glob("fd-classifier-digits-*.safetensors"))  # cached, not pickled
    assert list(tmp_path.glob("fd-classifier-digits-*.json"))
    # the second call loads the cache (no retraining) and gives the same floor
    monkeypatch.setattr(img, "_train_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = img.image_metrics(_Replay(pool, 0.0), "digits", n=400)
    assert again["fd_floor"] == pytest.approx(m["fd_floor"], rel=1e-9)
    # a model with its own default sampler (a score SDE: DDIM does not apply) samples with it
    asked = []

    class SDELike(_Replay):
        default_sampler = "euler_maruyama"

        def sample(self, n, *, generator=None, sampler=None, steps=None):
            asked.append((sampler, steps))
            return super().sample(n, generator=generator)

    m = img.image_metrics(SDELike(pool, 0.0), "digits", n=400)
    assert m["eval_sampler"] == "euler_maruyama" and m["eval_steps"] is None
    assert asked == [("euler_maruyama", None)]


def test_chain_grid_starts_at_the_sampler_noise(tmp_path):
    torch.manual_seed(0)
    cfg = DDPMConfig(timesteps=20, net="mlp", width=16)
    model = registry.get("ddpm").build(cfg, data.info("digits"))
    g = torch.Generator().manual_seed(5)
    tiles = chain_grid(model, tmp_path / "chain.png", n=3, frames=4, generator=g)
    assert (tmp_path / "chain.png").stat().st_size > 0
    assert tiles.shape == (12, 1, 8, 8)
    x_T = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(tiles.view(3, 4, 1, 8, 8)[:, 0], x_T.clamp(-1, 1))
    x0 = model.sample(3, sampler="ancestral", generator=torch.Generator().manual_seed(5))
    assert torch.allclose(tiles.view(3, 4, 1, 8, 8)[:, -1], x0.clamp(-1, 1), atol=1e-6)


def test_linear_schedule_unchanged_for_images():
    # the image branch keeps the DDPM paper's schedule
    model = registry.get("ddpm").build(DDPMConfig(net="mlp"), data.info("digits"))
    ref = NoiseSchedule.linear(1000)
    assert torch.equal(model.schedule.betas, ref.betas)


def _fit_small(tmp_path, device, dtype):
    from genmodels.train import TrainConfig, fit

    torch.manual_seed(0)
    info = data.info("digits")
    cfg = DDPMConfig(timesteps=20, net="unet", width=8, mults=(1,))
    model = registry.get("ddpm").build(cfg, info)
    run_info = {"model": "ddpm", "data": "digits", "model_config": cfg.__dict__ | {"mults": [1]}}
    run_info["data_info"] = info.to_json()
    tc = TrainConfig(steps=3, batch_size=8, progress=False, device=device, dtype=dtype)
    return fit(model, data.load("digits"), tc, out=tmp_path / "run", run_info=run_info)


def test_float64_image_run_trains_samples_and_reloads(tmp_path):
    from genmodels.train.checkpoint import load_run

    res = _fit_small(tmp_path, "cpu", "float64")
    assert next(res.model.parameters()).dtype == torch.float64
    assert (tmp_path / "run" / "samples.png").exists()
    loaded = load_run(tmp_path / "run")
    s = loaded.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 1, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_image_run_loads_on_cpu(tmp_path):
    from genmodels.train.checkpoint import load_run

    res = _fit_small(tmp_path, "cuda", "float32")
    assert next(res.model.parameters()).device.type == "cuda"
    g = torch.Generator(device="cuda").manual_seed(0)
    assert res.model.sample(2, sampler="ddim", steps=3, generator=g).device.type == "cuda"
    loaded = load_run(tmp_path / "run", device="cpu")
    assert next(loaded.parameters()).device.type == "cpu"
    s = loaded.sample(2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0))
    assert s.device.type == "cpu" and torch.isfinite(s).all()


def test_evaluate_spends_the_bound_on_a_seeded_subset(monkeypatch):
    # a DDPM's bound costs T passes per image: images get default_bound_n (100) test
    # points, points data all of them; --bound-n overrides; bad values are refused
    from genmodels.evaluate import run as ev

    monkeypatch.setattr(img, "image_metrics", lambda *a, **k: {})
    cfg = DDPMConfig(timesteps=4, net="mlp", width=16, depth=1)
    model = registry.get("ddpm").build(cfg, data.load("digits").info)
    assert model.default_bound_n == 100
    m = ev.evaluate_model(model, "digits", task="density")
    assert m["bound_n"] == 100 and math.isfinite(m["nll_bound_nats"])
    m7 = ev.evaluate_model(model, "digits", task="density", bound_n=7)
    assert m7["bound_n"] == 7 and m7["nll_bound_nats"] != m["nll_bound_nats"]
    assert ev.evaluate_model(model, "digits", task="density", bound_n=10**6)["bound_n"] == 360
    with pytest.raises(ValueError, match="bound_n"):
        ev.evaluate_model(model, "digits", task="density", bound_n=0)


def test_feature_net_keeps_the_layout_of_large_images():
    # 8x8: pooled features (invariant to where a pattern sits); 28x28: the 4x4 map is
    # flattened, so moving content across the image changes the features
    small, large = img.FeatureNet(image_size=(8, 8)), img.FeatureNet(image_size=(28, 28))
    assert not small.flatten and large.flatten
    x = torch.zeros(1, 1, 28, 28)
    x[..., 2:10, 2:10] = 1.0
    moved = torch.roll(x, shifts=(16, 16), dims=(-2, -1))
    with torch.no_grad():
        assert large.features(x).shape == (1, 64)
        assert not torch.allclose(large.features(x), large.features(moved))
        assert small.features(torch.randn(3, 1, 8, 8)).shape == (3, 64)


def test_evaluate_reports_the_ddpm_image_bound_as_discrete_bits_per_dim(monkeypatch):
    # the image DDPM carries the data's levels (discretised decoder): its bound is on
    # -log P(x) itself, so bits/dim is NLL/(D ln 2) with no dequantisation term
    from genmodels.evaluate import run as ev

    monkeypatch.setattr(img, "image_metrics", lambda *a, **k: {})
    cfg = DDPMConfig(timesteps=4, net="mlp", width=16, depth=1)
    model = registry.get("ddpm").build(cfg, data.load("digits").info)
    assert model.levels == 17 and model.bound_is_discrete
    m = ev.evaluate_model(model, "digits", task="density", bound_n=5)
    assert m["bits_per_dim_bound"] == pytest.approx(m["nll_bound_nats"] / (64 * math.log(2)))
    assert m["bits_per_dim_bound"] > 0
