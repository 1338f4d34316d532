"""``DataInfo``: what a model builder may know about a data set without holding it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["DataInfo", "KINDS"]

#: The data kinds and what one batch of each is (``genmodels.data.base``).
KINDS = ("points", "images", "series", "tasks")


@dataclass(frozen=True)
class DataInfo:
    """What a builder may know about the data without holding it.

    Attributes:
        name: registered data set name (``"moons"``, ``"digits"``...), or ``"tensors"``.
        kind: ``"points"`` (``x`` is ``(n, d)``), ``"images"`` (``(n, c, h, w)``),
            ``"series"`` (irregular time series) or ``"tasks"`` (meta-learning tasks).
        event_shape: shape of one example (points, images), of one observation's values
            (series: ``(D,)``) or of one output (tasks: ``(dy,)``).
        num_classes: number of labels, or ``None`` when unlabelled.
        levels: number of discrete levels per value for quantised data (images), else None.
        input_shape: shape of one input point for series (``(1,)``: a time) and tasks
            (``(dx,)``); None otherwise.
        options: the data set's options as resolved (``--set data.KEY=VALUE``).
    """

    name: str
    kind: str
    event_shape: tuple[int, ...]
    num_classes: int | None = None
    levels: int | None = None
    input_shape: tuple[int, ...] | None = None
    options: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"DataInfo kind must be one of {KINDS}, got {self.kind!r}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["event_shape"] = list(self.event_shape)
        if self.input_shape is not None:
            d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> DataInfo:
        d = dict(d)
        d["event_shape"] = tuple(d["event_shape"])
        if d.get("input_shape") is not None:
            d["input_shape"] = tuple(d["input_shape"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
