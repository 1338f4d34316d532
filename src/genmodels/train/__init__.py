"""One training loop for every model; checkpoints; devices."""

from .checkpoint import CheckpointError, load_run
from .device import resolve_device, resolve_dtype
from .loop import FitResult, NonFiniteLossError, TrainConfig, fit, step_generator

__all__ = [
    "fit",
    "TrainConfig",
    "FitResult",
    "NonFiniteLossError",
    "CheckpointError",
    "load_run",
    "resolve_device",
    "resolve_dtype",
    "step_generator",
]
