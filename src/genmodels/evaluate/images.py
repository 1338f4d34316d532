"""Sample quality for images: a Fréchet distance in the features of a small classifier.

The Fréchet Inception Distance of Heusel et al. (2017) fits a Gaussian to the
penultimate-layer features of an Inception network for real and generated
images and reports the Fréchet (2-Wasserstein) distance between the two::

    FD = ‖μ1 - μ2‖² + tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2})

Inception knows nothing of 8x8 digits, so here the features come from a small
CNN (:class:`FeatureNet`) that the library trains deterministically on the data
set's training split the first time it is needed and caches (safetensors + JSON,
keyed by data set and library version) in ``$GENMODELS_CACHE``, else
``$XDG_CACHE_HOME/genmodels``, else ``~/.cache/genmodels``. Numbers are therefore
comparable within ``genmodels`` (same data set, same version), not with published FIDs.

Every distance is reported beside two references computed with the same number
of images against the test split: ``fd_floor`` (the training split itself: real
data) and ``fd_gaussian`` (a pixel-wise independent Gaussian fitted to the
training split: a model that knows only the pixel means and variances).
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from .. import data as data_mod
from ..train import checkpoint as ckpt

__all__ = [
    "FeatureNet",
    "frechet_distance",
    "gaussian_stats",
    "feature_classifier",
    "cache_dir",
    "image_metrics",
]

# Bump when FeatureNet or its training recipe changes (it is part of the cache key).
_RECIPE = 3


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), in float64.

    ``tr((Σ1 Σ2)^{1/2})`` is computed as ``Σ_k sqrt(λ_k)`` with λ the eigenvalues of
    the symmetric positive semi-definite ``Σ1^{1/2} Σ2 Σ1^{1/2}`` (which has the
    eigenvalues of Σ1 Σ2); tiny negative eigenvalues from round-off are set to 0.

    Args:
        mu1, mu2: means ``(d,)``; sigma1, sigma2: covariances ``(d, d)``.
    Returns:
        The squared-distance-like FD (≥ 0 up to round-off), a Python float.
    """
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    s1, s2 = torch.as_tensor(sigma1).double(), torch.as_tensor(sigma2).double()
    d2 = (mu1.shape[-1],) * 2
    if mu1.shape != mu2.shape or mu1.dim() != 1 or s1.shape != d2 or s2.shape != d2:
        raise ValueError(
            f"need means (d,) and covariances (d, d); got {tuple(mu1.shape)}, "
            f"{tuple(s1.shape)}, {tuple(mu2.shape)}, {tuple(s2.shape)}"
        )
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    w, v = torch.linalg.eigh(s1)
    s1_half = (v * w.clamp_min(0).sqrt()) @ v.T
    m = s1_half @ s2 @ s1_half
    lam = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0)
    fd = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * lam.sqrt().sum()
    return float(fd)


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of ``features (n, d)`` in float64."""
    f = features.double()
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, d), got {tuple(f.shape)}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


class FeatureNet(nn.Module):
    """A small CNN classifier; :meth:`features` is its penultimate layer ``(n, feature_dim)``.

    Small images (8x8 digits): conv3x3(16) → conv3x3/2(32) → conv3x3/2(32) → global
    average pool → linear(64) → ReLU (features) → linear(classes).
    Images of 16 pixels a side or more (28x28 mnist5k) add conv3x3/2(64) and flatten the
    ⌈h/8⌉x⌈w/8⌉ map instead of pooling it: pooling 7x7 maps of 7x7-pixel receptive fields
    throws the digit's layout away (test accuracy 0.67 on mnist5k, against 0.975 this way).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        feature_dim: int = 64,
        image_size: tuple[int, int] = (8, 8),
    ):
        super().__init__()
        h, w = image_size
        layers = [
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
        ]
        self.flatten = min(h, w) >= 16
        if self.flatten:
            layers += [nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()]
            width = 64 * (-(-h // 8)) * (-(-w // 8))
        else:
            width = 32
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(width, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h = h.flatten(1) if self.flatten else h.mean((-2, -1))
        return F.relu(self.fc(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_dir() -> Path:
    """``$GENMODELS_CACHE``, else ``$XDG_CACHE_HOME/genmodels``, else ``~/.cache/genmodels``."""
    if os.environ.get("GENMODELS_CACHE"):
        return Path(os.environ["GENMODELS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genmodels"


def _train_classifier(train, *, epochs: int, seed: int = 0) -> FeatureNet:
    """Deterministic training: fixed initialisation seed, batch order from a seeded generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(
            train.x.shape[1],
            int(train.info.num_classes or int(train.y.max()) + 1),
            image_size=tuple(train.x.shape[-2:]),
        )
    x, y = train.x.float(), train.y
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed + 1)
    n, bs = len(x), 64
    steps = epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for idx in perm.split(bs):
            xb = x[idx]
            # one-pixel random shifts: a little augmentation, drawn from the same generator
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(-2, -1))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net


@torch.no_grad()
def _accuracy(net: FeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    pred = torch.cat([net(b.float()).argmax(1) for b in x.split(1024)])
    return float((pred == y).double().mean())


def feature_classifier(data_name: str, *, retrain: bool = False) -> tuple[FeatureNet, dict]:
    """The cached feature network of image data set ``data_name`` and its JSON record.

    Trained (deterministically, a minute or less on a CPU) and cached on first use;
    the record holds its test accuracy. ``retrain=True`` ignores the cache.
    """
    info = data_mod.info(data_name)
    if info.kind != "images":
        raise ValueError(
            f"the image feature classifier needs image data; {data_name!r} is {info.kind}"
        )
    stem = f"fd-classifier-{data_name}-v{__version__}-r{_RECIPE}"
    d = cache_dir()
    wpath, jpath = d / f"{stem}.safetensors", d / f"{stem}.json"
    if not retrain and wpath.exists() and jpath.exists():
        try:
            rec = ckpt.read_json(jpath)
            tensors = ckpt.load_tensors(wpath, sha256=rec["sha256"])
            net = FeatureNet(
                info.event_shape[0],
                rec["num_classes"],
                rec["feature_dim"],
                image_size=tuple(info.event_shape[-2:]),
            )
            net.load_state_dict(tensors)
            return net.eval(), rec
        except (ckpt.CheckpointError, KeyError, RuntimeError):
            pass  # a broken cache entry: train again and overwrite it
    train = data_mod.load(data_name, "train")
    test = data_mod.load(data_name, "test")
    epochs = 20 if len(train) < 2000 else 8
    t0 = time.perf_counter()
    net = _train_classifier(train, epochs=epochs)
    rec = {
        "data": data_name,
        "genmodels_version": __version__,
        "recipe": _RECIPE,
        "num_classes": net.head.out_features,
        "feature_dim": net.fc.out_features,
        "epochs": epochs,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "test_accuracy": _accuracy(net, test.x, test.y),
    }
    try:
        d.mkdir(parents=True, exist_ok=True)
        rec["sha256"] = ckpt.save_tensors(wpath, net.state_dict())
        ckpt.write_json(jpath, rec)
    except OSError:
        pass  # a read-only cache: use the network without caching it
    return net, rec


@torch.no_grad()
def _features(net: FeatureNet, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([net.features(b.float().cpu()) for b in x.split(1024)]).double()


def image_metrics(
    model,
    data_name: str,
    *,
    n: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    sampler_options: dict | None = None,
) -> dict:
    """``fd``, ``fd_floor``, ``fd_gaussian`` against the test split, with ``eval_n`` images each.

    Args:
        model: anything with ``sample(n, generator=, sampler=, steps=)`` returning
            ``(n, c, h, w)`` images in [-1, 1].
        n: images per distance (default: the training split's size).
        seed: seeds the samples, the floor's subset and the Gaussian baseline.
        sampler, steps: default DDIM with 100 steps (a model with a ``default_sampler``:
            that one, at its default steps).
        sampler_options: further keyword arguments of ``model.sample`` (e.g. ``variable``).
    Returns:
        A dict with the three distances, ``classifier_accuracy`` (the feature
        network's test accuracy), ``eval_n``, ``eval_sampler``, ``eval_steps``,
        ``sampling_seconds``.
    """
    train = data_mod.load(data_name, "train")
    test = data_mod.load(data_name, "test")
    n = len(train) if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    takes_sampler = "sampler" in inspect.signature(model.sample).parameters
    if takes_sampler and sampler is None:
        # a DDPM: DDIM-100 unless told otherwise; a model with its own default sampler (a
        # score SDE, NCSN: DDIM does not apply) samples with that, at its own default steps
        sampler = getattr(model, "default_sampler", "ddim")
        if sampler == "ddim" and steps is None:
            steps = 100
    elif not takes_sampler and (sampler is not None or steps is not None):
        raise ValueError(f"{type(model).__name__} has one way to sample: drop --sampler/--steps")
    net, rec = feature_classifier(data_name)
    mu_t, s_t = gaussian_stats(_features(net, test.x))

    def fd_of(images: torch.Tensor) -> float:
        return frechet_distance(*gaussian_stats(_features(net, images)), mu_t, s_t)

    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    gen = torch.Generator(device=dev).manual_seed(seed)
    opts = {**(sampler_options or {}), **({"sampler": sampler} if takes_sampler else {})}
    if "progress" in inspect.signature(model.sample).parameters:
        opts["progress"] = True  # minutes on a CPU for 28x28 images
    if steps is not None:
        opts["steps"] = steps
    t0 = time.perf_counter()
    s = model.sample(n, generator=gen, **opts).detach().float().cpu()
    sampling_seconds = time.perf_counter() - t0
    if not torch.isfinite(s).all():
        raise ValueError("the model produced non-finite samples")
    g_cpu = torch.Generator().manual_seed(seed + 1)
    # the floor: the training split itself (a seeded subset of it when n is smaller)
    real = train.x if n >= len(train) else train.x[torch.randperm(len(train), generator=g_cpu)[:n]]
    x = train.x.double()
    mean, std = x.mean(0), x.std(0)
    gauss = mean + std * torch.randn((n, *mean.shape), generator=g_cpu, dtype=torch.float64)
    return {
        "fd": fd_of(s),
        "fd_floor": fd_of(real),
        "fd_gaussian": fd_of(gauss),
        "classifier_accuracy": rec["test_accuracy"],
        "eval_n": n,
        "eval_sampler": sampler or "ancestral",
        "eval_steps": steps,
        "sampling_seconds": round(sampling_seconds, 3),
    }
