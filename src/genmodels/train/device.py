"""Devices and dtypes: ``--device auto|cpu|cuda``, ``--dtype float32|float64``."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` takes CUDA when present, else the CPU; ``"cuda"`` without CUDA raises."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (use cpu)")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}") from e


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` or ``"float64"`` (or the torch dtype itself)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return getattr(torch, dtype)
