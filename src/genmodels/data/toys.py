"""The 2D toy densities of the flow and diffusion literature.

Definitions follow FFJORD's toy data (Grathwohl et al. 2019, ``lib/toy_data.py``),
the field's de-facto convention, so numbers compare with published ones. Each
generator draws ``n`` points from a ``numpy.random.Generator`` and returns
``(x, y)``: float64 points ``(n, 2)`` and the generating label ``(n,)`` where the
toy has one (which moon, which Gaussian, which arm, which circle), else ``None``.

Closed-form log-densities exist for ``8gaussians`` (a mixture of 8 isotropic
Gaussians) and ``checkerboard`` (uniform on 8 squares of side 2); see
:func:`log_density`.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import datasets as skd

__all__ = ["TOYS", "log_density", "HAS_DENSITY"]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def swissroll(n: int, rng: np.random.Generator):
    """Swiss roll (noise 1.0), coordinates (x, z) divided by 5."""
    x = skd.make_swiss_roll(n_samples=n, noise=1.0, random_state=_seed(rng))[0]
    return x[:, [0, 2]] / 5.0, None


def circles(n: int, rng: np.random.Generator):
    """Two concentric circles (factor 0.5, noise 0.08), scaled by 3; y = which circle."""
    x, y = skd.make_circles(n_samples=n, factor=0.5, noise=0.08, random_state=_seed(rng))
    return x * 3.0, y


def rings(n: int, rng: np.random.Generator):
    """Four concentric rings of radii 3, 2.25, 1.5, 0.75 with Gaussian noise 0.08; y = ring."""
    n4 = n3 = n2 = n // 4
    n1 = n - n4 - n3 - n2
    # FFJORD's definition (x of the second ring uses the first ring's angles).
    l4 = np.linspace(0, 2 * np.pi, n4, endpoint=False)
    l3 = np.linspace(0, 2 * np.pi, n3, endpoint=False)
    l2 = np.linspace(0, 2 * np.pi, n2, endpoint=False)
    l1 = np.linspace(0, 2 * np.pi, n1, endpoint=False)
    xs = np.concatenate([np.cos(l4), np.cos(l4) * 0.75, np.cos(l2) * 0.5, np.cos(l1) * 0.25])
    ys = np.concatenate([np.sin(l4), np.sin(l3) * 0.75, np.sin(l2) * 0.5, np.sin(l1) * 0.25])
    label = np.repeat(np.arange(4), [n4, n3, n2, n1])
    x = np.stack([xs, ys], axis=1) * 3.0
    perm = rng.permutation(n)
    x, label = x[perm], label[perm]
    return x + rng.normal(scale=0.08, size=x.shape), label


def moons(n: int, rng: np.random.Generator):
    """scikit-learn's two moons (noise 0.1), scaled by 2 and shifted by (-1, -0.2); y = moon."""
    x, y = skd.make_moons(n_samples=n, noise=0.1, random_state=_seed(rng))
    return x * 2.0 + np.array([-1.0, -0.2]), y


_SQ2 = 1.0 / math.sqrt(2.0)
_8G_CENTRES = 4.0 * np.array(
    [(1, 0), (-1, 0), (0, 1), (0, -1), (_SQ2, _SQ2), (_SQ2, -_SQ2), (-_SQ2, _SQ2), (-_SQ2, -_SQ2)]
)
_8G_DIV = 1.414  # FFJORD divides by 1.414 (not sqrt 2)


def eight_gaussians(n: int, rng: np.random.Generator):
    """8 Gaussians (std 0.5) centred on a circle of radius 4, divided by 1.414; y = component."""
    idx = rng.integers(0, 8, size=n)
    x = rng.standard_normal((n, 2)) * 0.5 + _8G_CENTRES[idx]
    return x / _8G_DIV, idx


def pinwheel(n: int, rng: np.random.Generator):
    """Pinwheel with 5 arms (radial std 0.3, tangential std 0.1, rate 0.25), times 2; y = arm."""
    k, per = 5, n // 5
    m = k * per
    rads = np.linspace(0, 2 * np.pi, k, endpoint=False)
    feats = rng.standard_normal((m, 2)) * np.array([0.3, 0.1])
    feats[:, 0] += 1.0
    labels = np.repeat(np.arange(k), per)
    ang = rads[labels] + 0.25 * np.exp(feats[:, 0])
    c, s = np.cos(ang), np.sin(ang)
    # row-vector times rotation [[c, -s], [s, c]]
    x = np.stack([feats[:, 0] * c + feats[:, 1] * s, -feats[:, 0] * s + feats[:, 1] * c], axis=1)
    perm = rng.permutation(m)
    x, labels = 2.0 * x[perm], labels[perm]
    if m < n:  # FFJORD returns 5 * (n // 5) points; top up so every pool has n
        extra_x, extra_y = pinwheel(5 * ((n - m + 4) // 5), rng)
        x = np.concatenate([x, extra_x[: n - m]])
        labels = np.concatenate([labels, extra_y[: n - m]])
    return x, labels


def two_spirals(n: int, rng: np.random.Generator):
    """Two interleaved spirals (540 degrees), divided by 3, Gaussian noise 0.1; y = spiral."""
    h = n // 2
    t = np.sqrt(rng.random((h, 1))) * 540 * (2 * np.pi) / 360
    dx = -np.cos(t) * t + rng.random((h, 1)) * 0.5
    dy = np.sin(t) * t + rng.random((h, 1)) * 0.5
    x = np.concatenate([np.hstack([dx, dy]), np.hstack([-dx, -dy])]) / 3.0
    y = np.repeat([0, 1], h)
    x = x + rng.standard_normal(x.shape) * 0.1
    if 2 * h < n:
        ex, ey = two_spirals(2, rng)
        x, y = np.concatenate([x, ex[: n - 2 * h]]), np.concatenate([y, ey[: n - 2 * h]])
    perm = rng.permutation(n)
    return x[perm], y[perm]


def checkerboard(n: int, rng: np.random.Generator):
    """Uniform on the 8 black squares of a 4x4 board on [-4, 4]^2 (squares of side 2)."""
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 2.0, None


TOYS = {
    "swissroll": (swissroll, "Swiss roll (FFJORD)"),
    "circles": (circles, "two concentric circles, labelled (FFJORD)"),
    "rings": (rings, "four concentric rings, labelled (FFJORD)"),
    "moons": (moons, "two moons, labelled (FFJORD)"),
    "8gaussians": (eight_gaussians, "mixture of 8 Gaussians on a circle, labelled (FFJORD)"),
    "pinwheel": (pinwheel, "pinwheel with 5 arms, labelled (FFJORD)"),
    "2spirals": (two_spirals, "two spirals, labelled (FFJORD)"),
    "checkerboard": (checkerboard, "uniform checkerboard on [-4, 4]^2 (FFJORD)"),
}

HAS_DENSITY = ("8gaussians", "checkerboard")


def log_density(name: str, x: np.ndarray) -> np.ndarray:
    """Exact log-density (nats) of toy ``name`` at points ``x`` (n, 2), as float64 (n,)."""
    if name == "8gaussians":
        s = 0.5 / _8G_DIV
        c = _8G_CENTRES / _8G_DIV
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)  # (n, 8)
        comp = -d2 / (2 * s * s) - math.log(2 * math.pi * s * s) - math.log(8.0)
        m = comp.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(comp - m).sum(axis=1, keepdims=True)))[:, 0]
    if name == "checkerboard":
        u = x / 2.0  # back to the unscaled board [-2, 2]^2
        inside = (np.abs(u[:, 0]) <= 2) & (u[:, 1] >= -2) & (u[:, 1] <= 2)
        black = (np.floor(u[:, 0]) % 2) == (np.floor(u[:, 1]) % 2)
        out = np.full(len(x), -np.inf)
        out[inside & black] = -math.log(32.0)  # 8 squares of side 2: area 32
        return out
    raise ValueError(
        f"data set {name!r} has no closed-form density; those with one: {', '.join(HAS_DENSITY)}"
    )
