"""Pictures (matplotlib's non-interactive Agg backend; no model code here)."""

from .core import (
    image_grid,
    loss_curve,
    save_run_pictures,
    scatter_samples,
)

__all__ = ["scatter_samples", "image_grid", "loss_curve", "save_run_pictures"]
