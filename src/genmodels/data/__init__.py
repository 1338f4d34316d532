"""Data sets: 2D toys (generated from a seed) and small image sets shipped in packages.

    >>> from genmodels import data
    >>> train = data.load("moons")            # 100k-point training pool, random order
    >>> train.x.shape, train.y.shape
    (torch.Size([100000, 2]), torch.Size([100000]))
    >>> test = data.load("moons", split="test")   # fixed 10k test set

Every pool is stored in random order, so any prefix is an i.i.d. sample.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..registry import DataInfo
from .images import IMAGES, load_image_arrays
from .toys import HAS_DENSITY, TOYS
from .toys import log_density as _toy_log_density

__all__ = ["Dataset", "load", "names", "describe", "log_density", "bits_per_dim", "DataInfo"]

TRAIN_SIZE = 100_000
TEST_SIZE = 10_000
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Dataset:
    """One split of a data set.

    Attributes:
        x: float32 tensor, ``(n, d)`` for points or ``(n, c, h, w)`` for images.
        y: int64 labels ``(n,)`` or ``None``.
        info: :class:`~genmodels.registry.DataInfo` (name, kind, event shape, classes, levels).
        split: ``"train"`` or ``"test"``.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    info: DataInfo
    split: str

    @property
    def name(self) -> str:
        return self.info.name

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index) -> Dataset:
        """The examples at ``index`` (a slice or an index tensor) as a new Dataset."""
        y = None if self.y is None else self.y[index]
        return Dataset(self.x[index], y, self.info, self.split)


def names() -> list[str]:
    """All data set names: the 2D toys, then the image sets."""
    return list(TOYS) + list(IMAGES)


def describe() -> dict[str, str]:
    """``{name: one-line description}`` for ``genmodels list``."""
    out = {k: v[1] for k, v in TOYS.items()}
    out.update({k: v[2] for k, v in IMAGES.items()})
    return out


def _check_name(name) -> None:
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(names())}")


def _seed_for(name: str, split: str) -> int:
    digest = hashlib.sha256(f"genmodels/{name}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, split: str) -> Dataset:
    if name in TOYS:
        make = TOYS[name][0]
        n = TRAIN_SIZE if split == "train" else TEST_SIZE
        rng = np.random.default_rng(_seed_for(name, split))
        x, y = make(n, rng)
        perm = rng.permutation(n)  # pools in random order: any prefix is i.i.d.
        x = x[perm]
        y = None if y is None else y[perm]
        num_classes = None if y is None else int(y.max()) + 1
        info = DataInfo(name=name, kind="points", event_shape=(2,), num_classes=num_classes)
    else:
        x, y = load_image_arrays(name, split)
        info = DataInfo(
            name=name,
            kind="images",
            event_shape=tuple(x.shape[1:]),
            num_classes=10,
            levels=IMAGES[name][1],
        )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    xt.requires_grad_(False)
    return Dataset(xt, yt, info, split)


def load(name: str, split: str = "train") -> Dataset:
    """Load data set ``name`` (see :func:`names`) and ``split`` (``"train"`` or ``"test"``).

    The tensors are shared with an in-process cache: clone before modifying in place.
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _load_cached(name, split)


def info(name: str) -> DataInfo:
    """The :class:`DataInfo` of data set ``name`` without keeping the tensors."""
    return load(name).info


def log_density(name: str, x) -> torch.Tensor:
    """Exact log-density in nats of the toy ``name`` at ``x`` ``(n, 2)``; ``(n,)`` float64.

    Available for data sets with a closed form: ``8gaussians`` (a mixture of 8
    Gaussians), ``checkerboard`` (uniform on 8 squares; ``-inf`` outside).
    """
    _check_name(name)
    if name not in HAS_DENSITY:
        raise ValueError(
            f"data set {name!r} has no closed-form density; those with one: "
            f"{', '.join(HAS_DENSITY)}"
        )
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {tuple(arr.shape)}")
    return torch.from_numpy(_toy_log_density(name, arr))


def bin_width(info: DataInfo) -> float | None:
    """Width of one quantisation bin in stored coordinates (2/(levels-1)), or None for points."""
    if info.levels is None:
        return None
    return 2.0 / (info.levels - 1)


def bits_per_dim(nll_nats, info: DataInfo, *, discrete: bool = False):
    """Convert a per-example NLL (nats) of the stored coordinates to bits/dim.

    For quantised data (images) this is the library's one convention, bits/dim of
    the *discrete* data:

    - ``discrete=False`` (default): ``nll_nats`` is a continuous density's NLL under
      uniform dequantisation over each level's bin (a flow; a VAE's ``nll_bound``),
      and bits/dim is NLL/(D ln 2) - log2(bin width) (+3 exactly for ``digits``,
      +log2 127.5 ≈ 6.994 for ``mnist5k``);
    - ``discrete=True``: ``nll_nats`` is already -log P(x) of the discrete values (or a
      bound on it: a DDPM with a discretised decoder, ``model.bound_is_discrete``), and
      bits/dim is NLL/(D ln 2) with no bin term.

    For points it is NLL/(D ln 2) either way.
    """
    d = math.prod(info.event_shape)
    out = nll_nats / (d * math.log(2.0))
    w = bin_width(info)
    if w is not None and not discrete:
        out = out - math.log2(w)
    return out
