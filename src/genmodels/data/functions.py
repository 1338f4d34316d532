"""Meta-learning task families (the ``tasks`` data kind): functions observed at points.

``sine``: the Neural ODE Processes paper's sine family (Norcliffe et al. 2021):
y = a sin(t - b), a ~ U(-1, 1), b ~ U(-0.5, 0.5), observed at t = linspace(-π, π, 100).
Each split is a fixed set of functions drawn from a seed; a batch's context/target split is
drawn from the training step's generator (:class:`~genmodels.data.base.TaskData`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SineOptions", "make_sine", "FUNCTIONS"]


@dataclass
class SineOptions:
    """Options of ``sine`` (``--set data.KEY=VALUE``).

    n_train, n_test: functions in each split; points: observation points per function;
    context_min, context_max: range of context sizes per batch (targets are all points).
    """

    n_train: int = 1000
    n_test: int = 100
    points: int = 100
    context_min: int = 1
    context_max: int = 10

    def validate(self) -> None:
        for k in ("n_train", "n_test", "points", "context_min", "context_max"):
            if getattr(self, k) < 1:
                raise ValueError(f"data option {k} must be >= 1, got {getattr(self, k)}")
        if not self.context_min <= self.context_max < self.points:
            raise ValueError(
                f"data options need context_min <= context_max < points, got "
                f"{self.context_min}, {self.context_max}, {self.points}"
            )


def make_sine(n: int, opts: SineOptions, rng: np.random.Generator):
    """``(x, y)`` arrays ``(n, points, 1)`` of ``n`` sine functions."""
    a = rng.uniform(-1.0, 1.0, size=(n, 1, 1))
    b = rng.uniform(-0.5, 0.5, size=(n, 1, 1))
    t = np.linspace(-math.pi, math.pi, opts.points)[None, :, None].repeat(n, 0)
    return t, a * np.sin(t - b)


FUNCTIONS = {
    "sine": (make_sine, SineOptions, "NDP sine tasks y = a sin(t - b), 100 points each"),
}
