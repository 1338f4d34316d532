"""Private helpers: one flat state tensor for tensor or tuple states, checks, error norms."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, ...]

# 0-d time tensors by (dtype, device), then by the float time: a solve on a fixed grid (every
# training step of a model trained through rk4 steps) asks for the same few hundred times again
# and again, and ``torch.scalar_tensor`` costs about as much as a small elementwise op.
_TIME_TENSORS: dict = {}
_TIME_CACHE_SIZE = 1 << 14


def time_cache(dtype: torch.dtype, device: torch.device) -> Callable[[float], Tensor]:
    """``tt(t)``: the 0-d tensor of time ``t`` (a Python float) in ``dtype`` on ``device``.

    Tensors are shared between calls (and solves); one that the vector field modified in place
    (its version counter moved) or turned into a leaf requiring grad is replaced, so the field
    always sees a fresh-valued, grad-free time, as with a new tensor per call.  They are made
    outside inference mode, so a time first asked for under ``torch.inference_mode`` can still
    be saved for backward in a later solve."""
    cache = _TIME_TENSORS.setdefault((dtype, device), {})

    def tt(t: float) -> Tensor:
        x = cache.get(t)
        if x is None or x._version or x.requires_grad:
            if len(cache) >= _TIME_CACHE_SIZE:
                cache.clear()
            with torch.inference_mode(False):  # a normal tensor, also when made in inference
                x = cache[t] = torch.scalar_tensor(t, dtype=dtype, device=device)
        return x

    return tt


class FlatState:
    """Packs a tensor or a tuple of tensors into one 1-D tensor once, and back.

    A single tensor ``y0`` is viewed as ``y0.reshape(-1)``; a tuple is concatenated.  The user's
    ``func(t, y)`` always sees the original shapes; the solver sees one vector.
    """

    def __init__(self, y0: State, name: str = "y0"):
        self.is_tuple = isinstance(y0, tuple)
        parts = y0 if self.is_tuple else (y0,)
        if len(parts) == 0:
            raise ValueError(f"{name} is an empty tuple")
        for i, p in enumerate(parts):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}{f'[{i}]' if self.is_tuple else ''} must be a tensor, "
                                f"got {type(p).__name__}")  # fmt: skip
            if not p.is_floating_point():
                raise TypeError(f"{name} must be floating point, got {p.dtype}")
        dtypes = {p.dtype for p in parts}
        devices = {p.device for p in parts}
        if len(dtypes) > 1 or len(devices) > 1:
            got = f"{sorted(map(str, dtypes))} on {sorted(map(str, devices))}"
            raise ValueError(f"all tensors of {name} must share one dtype and device, got {got}")
        self.shapes = [p.shape for p in parts]
        self.sizes = [p.numel() for p in parts]
        self.numel = sum(self.sizes)
        self.dtype = parts[0].dtype
        self.device = parts[0].device
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)

    def flatten(self, y: State) -> Tensor:
        if not self.is_tuple:
            return y.reshape(-1)
        return torch.cat([p.reshape(-1) for p in y])

    def unflatten(self, y: Tensor) -> State:
        """(..., numel) -> the original structure with leading dims (...)."""
        lead = tuple(y.shape[:-1])
        # view((...)) with a tuple: a 0-d state with no leading dims is view(()), not view()
        if not self.is_tuple:
            return y.view((*lead, *self.shapes[0]))
        return tuple(
            y[..., a:b].view((*lead, *s))
            for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        )

    def wrap(self, func: Callable, time_dtype: torch.dtype | None = None) -> Callable:
        """``func(t, y)`` on structured states as ``f(t_float, y_flat, out=None) -> flat``.

        A tuple-state ``func`` with a callable ``func.flat_forward(t, y_flat) -> flat`` (the
        same numbers as flattening ``func(t, unflatten(y_flat))``) is called through it: no
        slices, views or concatenation per evaluation (a CNF's ``(z, log-det)`` dynamics with
        the fused exact trace). The first evaluation still goes through ``func`` itself
        (``checked_field``'s structure checks)."""
        tt = time_cache(time_dtype or self.dtype, self.device)
        shapes = self.shapes
        flat_func = getattr(func, "flat_forward", None) if self.is_tuple else None
        if callable(flat_func):

            def f_flat(t: float, y: Tensor, out: Tensor | None = None) -> Tensor:
                r = flat_func(tt(t), y)
                return r if out is None else out.copy_(r)

            return f_flat
        if not self.is_tuple:
            shape = shapes[0]

            def f(t: float, y: Tensor, out: Tensor | None = None) -> Tensor:
                r = func(tt(t), y.view(shape))
                if out is None:
                    return r.reshape(-1)
                return out.copy_(r.reshape(-1))

            def shaped(t: float, y: Tensor, out: Tensor) -> Tensor:
                # y and out already have the state's shape: no view ops in the hot loop
                return out.copy_(func(tt(t), y))

            shaped.shape = shape
            f.shaped = shaped
            return f
        offsets = self.offsets

        def f(t: float, y: Tensor, out: Tensor | None = None) -> Tensor:
            ys = tuple(y[a:b].view(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes))
            r = func(tt(t), ys)
            flat = [ri.reshape(-1) for ri in r]
            if out is None:
                return torch.cat(flat)
            return torch.cat(flat, out=out)

        return f

    def wrap_shaped(self, func: Callable) -> Callable:
        """``func(t, y)`` of a single-tensor state as ``f(t_float, y, out=None)`` on the state's
        own shape (the autograd path: no view ops, so no extra nodes in the graph)."""
        tt = time_cache(self.dtype, self.device)

        def f(t: float, y: Tensor, out: Tensor | None = None) -> Tensor:
            r = func(tt(t), y)
            return r if out is None else out.copy_(r)

        return f


def returned(r: object) -> str:
    """How to name a vector field's wrong return value in an error: its shape or its type."""
    if r is None:
        return "None"
    if isinstance(r, Tensor):
        return f"a tensor of shape {tuple(r.shape)}"
    return f"a {type(r).__name__}"


def check_output(r: State, flat: FlatState, t: float) -> None:
    """Clear error when ``func``'s output does not match the state's structure."""
    want = tuple(flat.shapes[0]) if not flat.is_tuple else tuple(map(tuple, flat.shapes))
    if r is None or not isinstance(r, (Tensor, tuple)):
        what = "a tensor" if not flat.is_tuple else f"a tuple of {len(flat.shapes)} tensors"
        raise TypeError(f"the vector field func(t, y) returned {returned(r)}; expected {what} "
                        f"of shape {want} like y0 (at t={t!r})")  # fmt: skip
    parts = r if isinstance(r, tuple) else (r,)
    if isinstance(r, tuple) != flat.is_tuple or len(parts) != len(flat.shapes):
        raise ValueError(f"func(t, y) must return the same structure as y0 (at t={t!r})")
    for i, (p, s) in enumerate(zip(parts, flat.shapes)):
        if not isinstance(p, Tensor):
            raise TypeError(f"the vector field func(t, y) returned {returned(p)} for component "
                            f"{i}; expected a tensor of shape {tuple(s)} (at t={t!r})")  # fmt: skip
        if p.shape != s:
            raise ValueError(f"func(t, y) returned shape {tuple(p.shape)} for component {i}, "
                             f"expected {tuple(s)} like y0 (at t={t!r})")  # fmt: skip


def make_norm(segments: Sequence[tuple[int, int]], numel: int) -> Callable[[Tensor], float]:
    """Max over segments of the RMS of the flat ratio vector ``err / (atol + rtol |y|)``.

    One segment (a plain tensor state) is one fused op and one ``.item()``.
    """
    if len(segments) == 1 and segments[0] == (0, numel):
        inv = 1.0 / math.sqrt(max(numel, 1))

        def rms(r: Tensor) -> float:
            return torch.linalg.vector_norm(r).item() * inv

        return rms
    if len(segments) == 1:
        a, b = segments[0]
        inv = 1.0 / math.sqrt(max(b - a, 1))

        def rms1(r: Tensor) -> float:
            return torch.linalg.vector_norm(r[a:b]).item() * inv

        return rms1
    cache: dict = {}

    def mixed(r: Tensor) -> float:
        key = (r.device, r.dtype)
        if key not in cache:
            ids = torch.full((numel,), len(segments), dtype=torch.long, device=r.device)
            counts = torch.ones(len(segments) + 1, dtype=r.dtype, device=r.device)
            for j, (a, b) in enumerate(segments):
                ids[a:b] = j
                counts[j] = max(b - a, 1)
            cache[key] = (ids, counts)
        ids, counts = cache[key]
        sq = torch.zeros(len(segments) + 1, dtype=r.dtype, device=r.device)
        sq.index_add_(0, ids, r * r)
        return math.sqrt(sq[:-1].div_(counts[:-1]).max().item())

    return mixed


def user_norm(norm: Callable, flat: FlatState) -> Callable[[Tensor], float]:
    """Wraps a torchdiffeq-style ``norm(tensor or tuple) -> scalar`` for the flat vector."""

    def f(r: Tensor) -> float:
        return float(norm(flat.unflatten(r)))

    return f
