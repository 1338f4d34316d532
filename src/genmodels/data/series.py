"""Time-series data sets (the ``series`` data kind; lecture section 4, latent ODEs and Neural CDEs).

``spirals`` (the latent ODE's task; Chen et al. 2018, §5.1 and Fig. 8): the bi-directional
spirals of torchdiffeq's ``examples/latent_ode.py`` (``generate_spiral2d`` with stop 6π,
a = 0, b = 0.3 on a 1000-point grid ``s_k = 6π k / 999``):

    clockwise:          r = b · 50 / (6π + 1 - s),  angle 6π + 1 - s,  centre (-5, 0)
    counter-clockwise:  r = b · s,                  angle s,           centre ( 5, 0)

Each series is a window of 200 consecutive grid points starting at a uniformly drawn index
in [0, 800] (half of the series of each direction), with times ``s_k - s_start`` (the
dynamics are time-invariant, so every window starts at t = 0). Gaussian noise of standard
deviation ``noise`` is added to the first 100 points, of which ``n_obs`` are kept at random
(sorted; irregular and different per series). The remaining 100 points are never observed:
the score is the RMSE to the noise-free curve on the first 100 grid times (interpolation) and
on the next 100 (extrapolation), as in the paper's Table 2.

``spiral-chirality`` (the Neural CDE's task): torchcde's ``example/time_series_classification.py``
spirals: 100 points ``t`` on [0, 4π], ``x = cos(s + t) / (1 + t/2)``, ``y = sin(s + t) / (1 + t/2)``
with ``s ~ U(0, 2π)``, ``x`` mirrored for the clockwise half (label 1), Gaussian noise of std
``noise`` on both coordinates; a fraction ``drop`` of the time points of each series is
dropped (NaN in both value channels, anywhere, first and last point included: Kidger et al.
2020's protocol). Inputs ``(N, 100, 3)``: channel 0 the time (never NaN), channels 1-2 the
values; batches ``(x, labels)``.

Both splits are fixed sets drawn from a seed per (data set, split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import SeriesData, TensorData
from .info import DataInfo

__all__ = [
    "SpiralsOptions",
    "ChiralityOptions",
    "SpiralsData",
    "spiral_curves",
    "make_spirals",
    "make_chirality",
    "SERIES",
]

#: The spirals' grid: 1000 points on [0, 6π] (torchdiffeq's ``ntotal=1000, stop=6π``).
SPIRAL_GRID = 1000
SPIRAL_STOP = 6 * math.pi
SPIRAL_B = 0.3
WINDOW = 200
OBSERVED_PART = 100


@dataclass
class SpiralsOptions:
    """Options of ``spirals`` (``--set data.KEY=VALUE``).

    n_obs: observed points per series among the first 100 grid times (the paper: 30, 50, 100);
    noise: std of the observation noise; n_train, n_test: series per split.
    """

    n_obs: int = 30
    noise: float = 0.1
    n_train: int = 1000
    n_test: int = 500

    def validate(self) -> None:
        if not 2 <= self.n_obs <= OBSERVED_PART:
            raise ValueError(f"data option n_obs must be in [2, 100], got {self.n_obs}")
        if not self.noise >= 0:
            raise ValueError(f"data option noise must be >= 0, got {self.noise}")
        for k in ("n_train", "n_test"):
            if getattr(self, k) < 2:
                raise ValueError(f"data option {k} must be >= 2, got {getattr(self, k)}")


@dataclass
class ChiralityOptions:
    """Options of ``spiral-chirality`` (``--set data.KEY=VALUE``).

    drop: fraction of time points dropped per series (the paper: 0, 0.3, 0.5, 0.7);
    noise: std of the Gaussian noise on both coordinates (torchcde's example: 0.01);
    n_train, n_test: series per split.
    """

    drop: float = 0.0
    noise: float = 0.3
    n_train: int = 256
    n_test: int = 1000

    def validate(self) -> None:
        if not 0 <= self.drop < 0.99:
            raise ValueError(f"data option drop must be in [0, 0.99), got {self.drop}")
        if not self.noise >= 0:
            raise ValueError(f"data option noise must be >= 0, got {self.noise}")
        for k in ("n_train", "n_test"):
            if getattr(self, k) < 2:
                raise ValueError(f"data option {k} must be >= 2, got {getattr(self, k)}")


def spiral_curves() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid ``s`` (1000,) and the noise-free clockwise and counter-clockwise spirals
    ``(1000, 2)`` each (torchdiffeq's ``generate_spiral2d`` with a = 0, b = 0.3, stop 6π)."""
    s = np.linspace(0.0, SPIRAL_STOP, SPIRAL_GRID)
    z_cw = SPIRAL_STOP + 1.0 - s
    r_cw = SPIRAL_B * 50.0 / z_cw
    cw = np.stack([r_cw * np.cos(z_cw) - 5.0, r_cw * np.sin(z_cw)], 1)
    r_cc = SPIRAL_B * s
    cc = np.stack([r_cc * np.cos(s) + 5.0, r_cc * np.sin(s)], 1)
    return s, cw, cc


class SpiralsData(SeriesData):
    """A split of ``spirals``: batches are :class:`~genmodels.data.batches.Series` of the
    observed points; ``clean`` ``(N, 200, 2)`` holds each window's noise-free curve at
    ``grid`` ``(200,)`` (the first 100 times: interpolation, the next 100: extrapolation);
    ``labels`` is the direction (1 = clockwise)."""

    def __init__(self, times, values, clean, grid, labels, *, info: DataInfo):
        super().__init__(times, values, labels=labels, info=info)
        self.clean, self.grid = clean, grid

    def _fields(self):
        return {**super()._fields(), "clean": self.clean}


def make_spirals(n: int, opts: SpiralsOptions, rng: np.random.Generator):
    """``(times (n, n_obs, 1), values (n, n_obs, 2), clean (n, 200, 2), grid (200,),
    clockwise (n,))`` as float64/int64 arrays."""
    s, cw, cc = spiral_curves()
    clockwise = rng.permutation(np.arange(n) < n // 2)  # half of each direction
    start = rng.integers(0, SPIRAL_GRID - WINDOW + 1, size=n)
    idx = start[:, None] + np.arange(WINDOW)[None, :]
    clean = np.where(clockwise[:, None, None], cw[idx], cc[idx])  # (n, 200, 2)
    noisy = clean[:, :OBSERVED_PART] + opts.noise * rng.standard_normal((n, OBSERVED_PART, 2))
    keep = np.sort(rng.random((n, OBSERVED_PART)).argsort(1)[:, : opts.n_obs], 1)
    grid = s[:WINDOW] - s[0]
    times = grid[keep][..., None]
    values = np.take_along_axis(noisy, keep[..., None], 1)
    return times, values, clean, grid, clockwise.astype(np.int64)


def make_chirality(n: int, opts: ChiralityOptions, rng: np.random.Generator):
    """``(x (n, 100, 3), labels (n,))``: channel 0 the time, 1-2 the values (NaN = dropped)."""
    t = np.linspace(0.0, 4 * math.pi, 100)
    start = rng.uniform(0.0, 2 * math.pi, size=(n, 1))
    labels = rng.permutation(np.arange(n) < n // 2).astype(np.int64)  # 1 = clockwise
    decay = 1.0 + 0.5 * t
    xs = np.cos(start + t) / decay
    ys = np.sin(start + t) / decay
    xs = np.where(labels[:, None] == 1, -xs, xs)
    xs = xs + opts.noise * rng.standard_normal(xs.shape)
    ys = ys + opts.noise * rng.standard_normal(ys.shape)
    n_drop = int(round(opts.drop * len(t)))
    if n_drop:
        dropped = rng.random((n, len(t))).argsort(1)[:, :n_drop]
        np.put_along_axis(xs, dropped, np.nan, 1)
        np.put_along_axis(ys, dropped, np.nan, 1)
    x = np.stack([np.broadcast_to(t, xs.shape), xs, ys], 2)
    return x, labels


def _load_spirals(name, n, opts, rng, options: dict):
    times, values, clean, grid, cw = make_spirals(n, opts, rng)

    def f32(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    info = DataInfo(name, "series", (2,), 2, input_shape=(1,), options=options)
    return SpiralsData(
        f32(times), f32(values), f32(clean), f32(grid), torch.from_numpy(cw), info=info
    )


def _load_chirality(name, n, opts, rng, options: dict):
    x, labels = make_chirality(n, opts, rng)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    info = DataInfo(name, "series", (3,), 2, input_shape=(3,), options=options)
    return TensorData(xt, torch.from_numpy(labels), info=info)


#: name -> (loader(name, n, opts, rng, options_dict) -> BatchData, options class, description)
SERIES = {
    "spirals": (
        _load_spirals,
        SpiralsOptions,
        "bi-directional 2D spirals, n_obs of 100 points observed (latent ODE, Chen et al. 2018)",
    ),
    "spiral-chirality": (
        _load_chirality,
        ChiralityOptions,
        "spirals to classify clockwise/counter-clockwise, points dropped (Neural CDE)",
    ),
}
