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

import numpy as np
import torch

from .base import BatchData, SeriesData, TaskData, TensorData, as_data, move_batch, slice_batch
from .batches import Series, Tasks
from .functions import FUNCTIONS
from .images import IMAGES, load_image_arrays
from .info import KINDS, DataInfo
from .series import SERIES
from .toys import HAS_DENSITY, TOYS
from .toys import log_density as _toy_log_density

__all__ = [
    "Dataset",
    "TensorData",
    "SeriesData",
    "TaskData",
    "BatchData",
    "Series",
    "Tasks",
    "DataInfo",
    "KINDS",
    "as_data",
    "move_batch",
    "slice_batch",
    "load",
    "info",
    "names",
    "describe",
    "options",
    "log_density",
    "bits_per_dim",
]

TRAIN_SIZE = 100_000
TEST_SIZE = 10_000
SPLITS = ("train", "test")


class Dataset(TensorData):
    """One split of a registered data set (points or images; ``tasks`` sets are
    :class:`TaskData`).

    Attributes:
        x: float32 tensor, ``(n, d)`` for points or ``(n, c, h, w)`` for images.
        y: int64 labels ``(n,)`` or ``None``.
        info: :class:`DataInfo` (name, kind, event shape, classes, levels, options).
        split: ``"train"`` or ``"test"``.

    A batch is ``x[idx]``; :meth:`labelled` gives the same data with batches ``(x, y)``
    (what a classifier trains on).
    """

    def __init__(self, x, y, info: DataInfo, split: str):
        super().__init__(x, y, info=info)
        self.with_y = False
        self.split = split

    @property
    def name(self) -> str:
        return self.info.name


class TaskDataset(TaskData):
    """One split of a registered tasks data set (a fixed set of functions)."""

    def __init__(self, x, y, info: DataInfo, split: str, *, context, extra, first_in_context):
        super().__init__(
            x, y, context=context, extra=extra, first_in_context=first_in_context, info=info
        )
        self.split = split

    @property
    def name(self) -> str:
        return self.info.name


def names() -> list[str]:
    """All data set names: the 2D toys, the image sets, the task families, the series."""
    return list(TOYS) + list(IMAGES) + list(FUNCTIONS) + list(SERIES)


def describe() -> dict[str, str]:
    """``{name: one-line description}`` for ``genmodels list``."""
    out = {k: v[1] for k, v in TOYS.items()}
    out.update({k: v[2] for k, v in IMAGES.items()})
    out.update({k: v[2] for k, v in FUNCTIONS.items()})
    out.update({k: v[2] for k, v in SERIES.items()})
    return out


def _check_name(name) -> None:
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(names())}")


def options(name: str, overrides: dict | None = None):
    """The options dataclass of data set ``name`` with ``overrides`` applied and checked
    (None for a data set without options; then any override is an error)."""
    from ..config import ConfigError, apply_overrides

    _check_name(name)
    overrides = dict(overrides or {})
    table = FUNCTIONS if name in FUNCTIONS else SERIES
    cls = table[name][1] if name in table else None
    if cls is None:
        if overrides:
            raise ConfigError(
                f"data set {name!r} takes no options; got data.{next(iter(overrides))}"
            )
        return None
    return apply_overrides(cls(), overrides, what=f"data set {name!r} option")


def _seed_for(name: str, split: str) -> int:
    digest = hashlib.sha256(f"genmodels/{name}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, split: str, opts_json: str) -> BatchData:
    import json

    if name in SERIES:
        make, cls, _ = SERIES[name]
        opts = cls(**json.loads(opts_json))
        n = opts.n_train if split == "train" else opts.n_test
        rng = np.random.default_rng(_seed_for(name, split))
        return make(name, n, opts, rng, json.loads(opts_json))
    if name in FUNCTIONS:
        make, cls, _ = FUNCTIONS[name]
        opts = cls(**json.loads(opts_json))
        n = opts.n_train if split == "train" else opts.n_test
        rng = np.random.default_rng(_seed_for(name, split))
        x, y = make(n, opts, rng)
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        info = DataInfo(
            name,
            "tasks",
            (yt.shape[2],),
            input_shape=(xt.shape[2],),
            options=json.loads(opts_json),
        )
        return TaskDataset(
            xt,
            yt,
            info,
            split,
            context=(opts.context_min, opts.context_max),
            extra=(opts.extra_min, opts.extra_max),
            first_in_context=opts.first_in_context,
        )
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


def load(name: str, split: str = "train", **options_) -> BatchData:
    """Load data set ``name`` (see :func:`names`) and ``split`` (``"train"`` or ``"test"``).

    ``options_`` are the data set's options (``genmodels train ... --set data.KEY=VALUE``);
    unknown keys and values of the wrong type are one clear error. The tensors are shared
    with an in-process cache: clone before modifying in place.
    """
    import dataclasses
    import json

    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    opts = options(name, options_)
    opts_json = "{}" if opts is None else json.dumps(dataclasses.asdict(opts), sort_keys=True)
    return _load_cached(name, split, opts_json)


def info(name: str, **options_) -> DataInfo:
    """The :class:`DataInfo` of data set ``name`` (with ``options_``)."""
    return load(name, **options_).info


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
