"""How data enters a model: the batch-shape check and a standardisation set from data.

Every model family uses these two (DDPM, VAE, flows, classifiers), so that a wrong input
gets the same clear error everywhere and the statistics are computed in one place.

Example::

    >>> x = torch.randn(100, 2) * 3 + 1
    >>> s = Standardize.identity((2,)).set_(x)
    >>> z, ladj = s(x)
    >>> torch.allclose(z.mean(0), torch.zeros(2), atol=1e-6)
    True
    >>> check_batch(torch.zeros(4, 3), (2,), "batch")
    Traceback (most recent call last):
    ...
    ValueError: batch must have shape (batch, 2), got (4, 3)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .transforms import Transform

__all__ = ["Standardize", "check_batch", "check_count", "model_dtype"]

_CAST = {torch.float64: "double", torch.float32: "float", torch.float16: "half"}


def check_batch(
    x, event_shape: Sequence[int], name: str = "x", dtype: torch.dtype | None = None
) -> Tensor:
    """Return ``x`` if it is a tensor of shape ``(batch, *event_shape)`` (and of ``dtype``, when
    given: the model's), else raise.  An empty batch ``(0, *event_shape)`` is a batch.

    Raises:
        ValueError: naming ``name``, the expected shape ``(batch, *event_shape)`` and what was
            given (its shape, or its type when it is not a tensor); or naming both dtypes and
            the two conversions (nothing is cast silently).
    """
    event_shape = tuple(event_shape)
    if isinstance(x, Tensor) and x.ndim == 1 + len(event_shape) and x.shape[1:] == event_shape:
        if dtype is not None and x.dtype != dtype:
            to_model = f"model.{_CAST[x.dtype]}()" if x.dtype in _CAST else f"model.to({x.dtype})"
            to_x = f"{name}.{_CAST[dtype]}()" if dtype in _CAST else f"{name}.to({dtype})"
            raise ValueError(
                f"{name} has dtype {x.dtype} but the model computes in {dtype}; convert one: "
                f"{to_model} to work in {x.dtype}, or pass {to_x}"
            )
        return x
    given = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
    dims = ", ".join(map(str, ("batch", *event_shape)))
    hint = ""
    if isinstance(x, tuple):  # a labelled batch (x, y), a Series or Tasks batch
        hint = (
            f" (a batch of {len(x)} parts, e.g. labelled (x, y): this model takes a tensor of "
            "examples; train it on unlabelled data, e.g. genmodels.data.load(name))"
        )
    raise ValueError(f"{name} must have shape ({dims}), got {given}{hint}")


def check_count(n, name: str = "n") -> int:
    """Return ``n`` if it is a positive integer (a number of samples to draw), else raise
    ``ValueError`` naming ``name`` and the value given (``True`` and ``2.0`` are not counts)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def model_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype a model computes in: that of its first floating parameter or buffer
    (the default dtype when it has none)."""
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    for t in module.buffers():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


class Standardize(Transform):
    """Fixed elementwise affine map ``z = (x - loc) / scale``; log|det J| = -sum log scale.

    ``loc`` and ``scale`` are buffers of the event shape (a checkpoint carries them);
    ``set_(x)`` fills them from data: the mean and standard deviation over the batch
    dimension, the standard deviation floored at 1e-6.

    Example::

        >>> t = Standardize(torch.tensor([1.0]), torch.tensor([2.0]))
        >>> t(torch.tensor([[3.0]]))
        (tensor([[1.]]), tensor([-0.6931]))
    """

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.get_default_dtype()))

    @classmethod
    def identity(cls, event_shape: Sequence[int]) -> Standardize:
        """``loc = 0``, ``scale = 1`` of ``event_shape``, until :meth:`set_` is called."""
        return cls(torch.zeros(tuple(event_shape)), torch.ones(tuple(event_shape)))

    @torch.no_grad()
    def set_(self, x: Tensor) -> Standardize:
        """Set ``loc``/``scale`` to the mean/std of ``x`` over dim 0 (std floored at 1e-6)."""
        check_batch(x, self.loc.shape, "x")
        self.loc.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(1e-6))
        return self

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = -self.scale.log().sum().expand(x.shape[0])
        return (x - self.loc) / self.scale, ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = self.scale.log().sum().expand(z.shape[0])
        return z * self.scale + self.loc, ladj

    def keep_checkpoint_names(self, owner: nn.Module, loc: str, scale: str) -> Standardize:
        """Store the buffers in ``owner``'s state dict as ``loc`` and ``scale``, in place of
        ``<attribute>.loc`` and ``<attribute>.scale``.

        For models whose checkpoints stored these statistics as their own buffers before they
        used this module (DDPM's ``data_mean``/``data_std``, the VAE's ``shift``/``scale``):
        their run directories keep loading, and new checkpoints have the same keys. ``self``
        must already be a child of ``owner``; register it before the other children to keep
        the old key order too.
        """
        attr = next((n for n, m in owner.named_children() if m is self), None)
        if attr is None:
            raise ValueError("keep_checkpoint_names: register the Standardize on owner first")
        to_old = {f"{attr}.loc": loc, f"{attr}.scale": scale}
        to_new = {v: k for k, v in to_old.items()}

        def rename(state_dict, prefix: str, names: dict[str, str]) -> None:
            items = [
                (prefix + names[k[len(prefix) :]] if k[len(prefix) :] in names else k, v)
                if k.startswith(prefix)
                else (k, v)
                for k, v in state_dict.items()
            ]
            state_dict.clear()
            state_dict.update(items)

        owner.register_state_dict_post_hook(lambda m, sd, prefix, meta: rename(sd, prefix, to_old))
        owner.register_load_state_dict_pre_hook(
            lambda m, sd, prefix, *rest: rename(sd, prefix, to_new)
        )
        return self
