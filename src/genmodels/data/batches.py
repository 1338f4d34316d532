"""What a batch is, for the data kinds that are not one tensor.

``points`` and ``images`` hand the training loop a tensor ``x`` ``(B, *event_shape)``;
labelled data the tuple ``(x, y)`` with ``y`` int64 ``(B,)``. The two kinds below are
named tuples, so a model reads ``batch.x_context`` (or unpacks them in order) and the
training loop can move and slice every field alike (``None`` fields stay ``None``).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["Series", "Tasks"]


class Series(NamedTuple):
    """Irregular time series, padded to a common length ``n``.

    Attributes:
        times: ``(B, n, 1)`` observation times, increasing within a row.
        values: ``(B, n, D)`` observed values; entries where ``mask`` is False are
            missing (stored as 0, never read as data).
        mask: ``(B, n, D)`` bool, True where a value was observed.
        labels: ``(B,)`` int64 class labels, or None.
    """

    times: Tensor
    values: Tensor
    mask: Tensor
    labels: Tensor | None = None


class Tasks(NamedTuple):
    """A batch of meta-learning tasks: ``B`` functions, each with context and target points.

    Attributes:
        x_context: ``(B, n_context, dx)`` inputs where the function is observed.
        y_context: ``(B, n_context, dy)`` observed outputs.
        x_target: ``(B, n_target, dx)`` inputs to predict at (by convention they include
            the context inputs, as in the neural-process literature).
        y_target: ``(B, n_target, dy)`` the outputs to predict.
    """

    x_context: Tensor
    y_context: Tensor
    x_target: Tensor
    y_target: Tensor
