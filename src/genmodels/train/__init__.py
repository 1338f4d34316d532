"""One training loop for every model; checkpoints; devices."""

from .checkpoint import CheckpointError, TrainingState, load_run
from .device import resolve_device, resolve_dtype
from .loop import FitResult, NonFiniteLossError, TrainConfig, fit, step_generator
from .run_dir import RunDir

__all__ = [
    "fit",
    "TrainConfig",
    "FitResult",
    "NonFiniteLossError",
    "CheckpointError",
    "load_run",
    "RunDir",
    "TrainingState",
    "resolve_device",
    "resolve_dtype",
    "step_generator",
]
