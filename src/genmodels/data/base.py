"""The batch protocol: a data set hands the training loop a batch for a step.

Every data object of the library (``genmodels.data.load(...)``, :class:`TensorData`,
:class:`SeriesData`, :class:`TaskData`) offers the same small protocol, and
:func:`genmodels.train.fit` knows nothing else about data::

    data.info                         DataInfo: name, kind, shapes, classes, options
    len(data)                         number of examples (points, images, series, functions)
    data.batch(size, generator)       a random batch for one training step, drawn from the
                                      step's generator: whatever the model's loss takes
    data.batches(size)                the whole split in order, deterministic (validation,
                                      evaluation)
    data.full()                       the whole split as one batch (``init_from_data``)
    data.subset(index)                the examples at ``index`` (a validation split)
    data.to(device, dtype)            float tensors follow dtype; labels and masks keep theirs

What a batch is, by kind::

    points, images   x                                   (B, *event_shape)
    labelled         (x, y)                              y int64 (B,)
    series           Series(times, values, mask, labels) (see genmodels.data.batches)
    tasks            Tasks(x_context, y_context, x_target, y_target)

A new kind is one subclass of :class:`BatchData` that says how to ``take`` the examples at
an index (and may draw more from the step's generator, as tasks draw their context split).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .batches import Series, Tasks
from .info import DataInfo

__all__ = [
    "BatchData",
    "TensorData",
    "SeriesData",
    "TaskData",
    "as_data",
    "move_batch",
    "slice_batch",
]


def _move(t, device, dtype):
    if not isinstance(t, Tensor):
        return t
    if t.is_floating_point() and dtype is not None:
        return t.to(device=device, dtype=dtype)
    return t.to(device=device)


def move_batch(batch: Any, device=None, dtype: torch.dtype | None = None) -> Any:
    """``batch`` (a tensor, tuple or named tuple of tensors) on ``device``; float tensors in
    ``dtype``, integer and bool tensors (labels, masks) keep their dtype."""
    if isinstance(batch, Tensor) or batch is None:
        return _move(batch, device, dtype)
    if isinstance(batch, tuple):
        items = [move_batch(b, device, dtype) for b in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    return batch


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor of ``batch`` (a rank's share of a global batch)."""
    if isinstance(batch, Tensor):
        return batch[start:stop]
    if batch is None:
        return None
    if isinstance(batch, tuple):
        items = [slice_batch(b, start, stop) for b in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    raise TypeError(f"cannot slice a batch of type {type(batch).__name__}")


class BatchData:
    """Base of every data object: the protocol above, from ``take(index, generator)``.

    Subclasses hold tensors whose first dimension indexes examples (``self._tensors()``
    returns them by name) and implement :meth:`take`.
    """

    info: DataInfo

    # -- what a subclass provides ------------------------------------------------------
    def _fields(self) -> dict[str, Tensor | None]:
        raise NotImplementedError

    def _replace(self, **fields) -> BatchData:
        raise NotImplementedError

    def take(self, index: Tensor, generator: torch.Generator | None = None):
        """The batch of the examples at ``index`` (``generator``: any further draw)."""
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------
    def _first(self) -> Tensor:
        """The first tensor field: it fixes the number of examples and the device."""
        return next(v for v in self._fields().values() if v is not None)

    def __len__(self) -> int:
        return self._first().shape[0]

    def batch(self, size: int, generator: torch.Generator):
        """A training batch of ``size`` examples drawn with replacement from ``generator``."""
        first = self._first()
        idx = torch.randint(0, first.shape[0], (size,), generator=generator)
        if idx.device != first.device:
            idx = idx.to(first.device)
        return self.take(idx, generator)

    def batches(self, size: int, *, seed: int = 0) -> Iterator:
        """The whole split in order, ``size`` examples at a time (the last may be smaller).

        Any further draw (a task's context split) comes from a generator seeded by ``seed``
        and the batch number, so evaluation is deterministic.
        """
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        first = self._first()
        n = first.shape[0]
        g = torch.Generator()
        for k, start in enumerate(range(0, n, size)):
            g.manual_seed(seed * 1_000_003 + k)
            idx = torch.arange(start, min(start + size, n), device=first.device)
            yield self.take(idx, g)

    def full(self):
        """The whole split as one batch (what ``init_from_data`` receives)."""
        first = self._first()
        g = torch.Generator().manual_seed(0)
        return self.take(torch.arange(len(self), device=first.device), g)

    def subset(self, index) -> BatchData:
        """The examples at ``index`` (a slice or an index tensor), same kind and info."""
        return self._replace(
            **{k: (None if v is None else v[index]) for k, v in self._fields().items()}
        )

    def to(self, device=None, dtype: torch.dtype | None = None) -> BatchData:
        """On ``device``; float tensors in ``dtype``; labels and masks keep their dtype."""
        return self._replace(**{k: _move(v, device, dtype) for k, v in self._fields().items()})

    @property
    def x(self) -> Tensor:
        return self._fields()["x"]

    @property
    def y(self) -> Tensor | None:
        return self._fields().get("y")


def _check_rows(name: str, t, n: int | None, *, what: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor ({what}), got {type(t).__name__}")
    if t.dim() < 1 or t.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (n, ...) with n >= 1 ({what}), got {tuple(t.shape)}"
        )
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but x has {n}; they must match")


def _infer_info(x: Tensor, y: Tensor | None, name: str) -> DataInfo:
    labels = y is not None and not y.is_floating_point()
    num_classes = int(y.max()) + 1 if labels and y.numel() else None
    if x.dim() == 2:
        return DataInfo(name, "points", tuple(x.shape[1:]), num_classes)
    if x.dim() == 4:
        return DataInfo(name, "images", tuple(x.shape[1:]), num_classes)
    if x.dim() == 3:
        # series: times (N, n, 1) with values y (N, n, D), or NaN-coded inputs (N, L, 1 + C)
        # with labels; the event is one observation's values
        if y is not None and y.is_floating_point():
            return DataInfo(name, "series", tuple(y.shape[2:]), None, input_shape=(x.shape[2],))
        return DataInfo(name, "series", (x.shape[2],), num_classes, input_shape=(x.shape[2],))
    raise ValueError(
        f"x must have 2 (points), 3 (series) or 4 (images) dimensions, got {tuple(x.shape)}"
    )


class TensorData(BatchData):
    """A user's own tensors as a data set: the batch is ``x[idx]`` or ``(x[idx], y[idx])``.

    Args:
        x: ``(N, ...)``: points ``(N, d)``, images ``(N, C, H, W)``, series times
            ``(N, n, 1)`` or NaN-coded inputs ``(N, L, 1 + C)``. NaN in ``x`` is data
            (a missing value), never an error.
        y: ``(N, ...)`` or None: int64 labels ``(N,)``, or float values (series values
            ``(N, n, D)`` beside times ``x``).
        info: the :class:`DataInfo`; inferred from the tensors when None (kind from
            ``x``'s dimensions, classes from integer ``y``).

    Example::

        >>> data = TensorData(torch.randn(500, 2), torch.randint(0, 3, (500,)))
        >>> data.info.kind, data.info.num_classes
        ('points', 3)
        >>> xb, yb = data.batch(8, torch.Generator().manual_seed(0))
    """

    def __init__(self, x: Tensor, y: Tensor | None = None, *, info: DataInfo | None = None):
        _check_rows("x", x, None, what="examples first")
        if y is not None:
            _check_rows("y", y, x.shape[0], what="labels or values, one row per example")
        self._x, self._y = x, y
        self.info = info if info is not None else _infer_info(x, y, "tensors")
        self.with_y = y is not None

    def _fields(self):
        return {"x": self._x, "y": self._y}

    def _replace(self, **fields):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._x, new._y = fields.get("x", self._x), fields.get("y", self._y)
        return new

    def take(self, index, generator=None):
        return (self._x[index], self._y[index]) if self.with_y else self._x[index]

    def labelled(self) -> TensorData:
        """The same tensors as labelled data: batches are ``(x, y)``."""
        if self._y is None:
            raise ValueError(f"data set {self.info.name!r} has no labels (y is None)")
        new = self._replace()
        new.with_y = True
        return new

    def unlabelled(self) -> TensorData:
        """The same tensors with batches ``x`` only."""
        new = self._replace()
        new.with_y = False
        return new


class SeriesData(BatchData):
    """Irregular time series: batches are :class:`~genmodels.data.batches.Series`.

    Args:
        times: ``(N, n, 1)`` observation times, increasing within a row.
        values: ``(N, n, D)``; entries where ``mask`` is False are missing.
        mask: ``(N, n, D)`` bool (default: ``values`` is not NaN; NaN values become 0).
        labels: ``(N,)`` int64 or None.
    """

    def __init__(self, times, values, mask=None, labels=None, *, info: DataInfo | None = None):
        _check_rows("times", times, None, what="(N, n, 1)")
        _check_rows("values", values, times.shape[0], what="(N, n, D)")
        if times.dim() != 3 or values.dim() != 3 or values.shape[1] != times.shape[1]:
            raise ValueError(
                f"times must be (N, n, 1) and values (N, n, D) with the same n; got "
                f"{tuple(times.shape)} and {tuple(values.shape)}"
            )
        if mask is None:
            mask = ~torch.isnan(values)
            values = torch.nan_to_num(values, nan=0.0)
        elif mask.shape != values.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool with the shape of values {tuple(values.shape)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if labels is not None:
            _check_rows("labels", labels, times.shape[0], what="int64 (N,)")
        self.times, self.values, self.mask, self.labels = times, values, mask, labels
        if info is None:
            k = int(labels.max()) + 1 if labels is not None else None
            info = DataInfo("tensors", "series", (values.shape[2],), k, input_shape=(1,))
        self.info = info

    def _fields(self):
        return {
            "times": self.times,
            "values": self.values,
            "mask": self.mask,
            "labels": self.labels,
        }

    def _replace(self, **f):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for k, v in f.items():
            setattr(new, k, v)
        return new

    def take(self, index, generator=None):
        lab = None if self.labels is None else self.labels[index]
        return Series(self.times[index], self.values[index], self.mask[index], lab)

    @property
    def x(self) -> Tensor:
        return self.times

    @property
    def y(self) -> Tensor | None:
        return self.labels


class TaskData(BatchData):
    """Meta-learning tasks: ``N`` functions observed at ``n`` points each; batches are
    :class:`~genmodels.data.batches.Tasks` with a context/target split drawn from the step's
    generator.

    A training batch (:meth:`batch`) draws the number of context points ``k`` uniformly on
    ``context`` (inclusive; one ``k`` per batch so the tensors are rectangular) and shuffles
    each function's points independently: the first ``k`` are the context (with
    ``first_in_context``, point 0, the first time point, is always one of them). The targets
    are the context plus ``e`` further points, ``e`` uniform on ``extra`` (one per batch); or,
    without ``extra``, all ``n`` points (``n_target=None``, the neural-process convention that
    targets include the context) or the first ``k + n_target``.

    Evaluation (:meth:`batches`) draws the context the same way from a seeded generator and
    takes the whole series, in its stored order, as the targets.

    Args:
        x: ``(N, n, dx)`` inputs; y: ``(N, n, dy)`` outputs.
        context: ``(lo, hi)`` range of context sizes, ``1 <= lo <= hi < n``.
        n_target: extra target points beyond the context (None: all points).
        extra: ``(lo, hi)`` range of extra target points (overrides ``n_target``).
        first_in_context: the context always holds point 0 (a series' first time point).
    """

    def __init__(
        self,
        x,
        y,
        *,
        context=(3, 50),
        n_target: int | None = None,
        extra: tuple[int, int] | None = None,
        first_in_context: bool = False,
        info=None,
    ):
        _check_rows("x", x, None, what="(N, n, dx)")
        _check_rows("y", y, x.shape[0], what="(N, n, dy)")
        if x.dim() != 3 or y.dim() != 3 or x.shape[1] != y.shape[1]:
            raise ValueError(
                f"tasks need x (N, n, dx) and y (N, n, dy) with the same n; got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        n = x.shape[1]
        lo, hi = (int(c) for c in context)
        if not 1 <= lo <= hi < n:
            raise ValueError(
                f"context must be (lo, hi) with 1 <= lo <= hi < {n} points, got {context}"
            )
        if n_target is not None and not (1 <= n_target and hi + n_target <= n):
            raise ValueError(
                f"n_target must be >= 1 with context max + n_target <= {n}, got {n_target}"
            )
        if extra is not None:
            elo, ehi = (int(e) for e in extra)
            if not (0 <= elo <= ehi and hi + ehi <= n):
                raise ValueError(
                    f"extra must be (lo, hi) with 0 <= lo <= hi and context max + hi <= {n}, "
                    f"got {extra}"
                )
            extra = (elo, ehi)
        self._x, self._y = x, y
        self.context, self.n_target, self.extra = (lo, hi), n_target, extra
        self.first_in_context = bool(first_in_context)
        self.info = info or DataInfo("tensors", "tasks", (y.shape[2],), input_shape=(x.shape[2],))

    def _fields(self):
        return {"x": self._x, "y": self._y}

    def _replace(self, **f):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._x, new._y = f.get("x", self._x), f.get("y", self._y)
        return new

    def take(self, index, generator=None, *, whole: bool = False):
        """The tasks at ``index``; ``whole``: the targets are every point in stored order."""
        x, y = self._x[index], self._y[index]
        b, n = x.shape[0], x.shape[1]
        lo, hi = self.context
        # drawn on the generator's device (the CPU for the training loop), then moved
        k = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        if self.first_in_context:  # point 0, then the others shuffled
            rest = torch.rand(b, n - 1, generator=generator).argsort(1) + 1
            order = torch.cat([torch.zeros(b, 1, dtype=rest.dtype), rest], 1).to(x.device)
        else:
            order = torch.rand(b, n, generator=generator).argsort(1).to(x.device)
        if whole:
            tgt = torch.arange(n, device=x.device).expand(b, n)
        elif self.extra is not None:
            e = int(torch.randint(self.extra[0], self.extra[1] + 1, (1,), generator=generator))
            tgt = order[:, : k + e]
        else:
            tgt = order[:, : n if self.n_target is None else k + self.n_target]
        ctx = order[:, :k]

        def gather(t, i):
            return t.gather(1, i.unsqueeze(-1).expand(-1, -1, t.shape[-1]))

        return Tasks(gather(x, ctx), gather(y, ctx), gather(x, tgt), gather(y, tgt))

    def batches(self, size: int, *, seed: int = 0) -> Iterator:
        """Evaluation: the whole split in order, ``size`` tasks at a time; each task's
        context drawn as in training from a generator seeded by ``seed`` and the batch
        number, and its targets the whole series (every point, in stored order)."""
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        n = len(self)
        g = torch.Generator()
        for j, start in enumerate(range(0, n, size)):
            g.manual_seed(seed * 1_000_003 + j)
            idx = torch.arange(start, min(start + size, n), device=self._x.device)
            yield self.take(idx, g, whole=True)


def as_data(data) -> BatchData:
    """``data`` as a :class:`BatchData`: data objects pass through; any object with tensors
    ``.x`` and ``.y`` (``y`` may be None) becomes a :class:`TensorData`."""
    if isinstance(data, BatchData):
        return data
    x = getattr(data, "x", None)
    if not isinstance(x, Tensor):
        raise TypeError(
            "data must be a genmodels data object (genmodels.data.load, TensorData, SeriesData, "
            f"TaskData) or have tensors .x and .y; got {type(data).__name__}"
        )
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(
            f"data.x must be a tensor of shape (n, ...) with n >= 1, got {tuple(x.shape)}"
        )
    return TensorData(x, getattr(data, "y", None))
