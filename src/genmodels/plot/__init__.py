"""Pictures (matplotlib's non-interactive Agg backend; no model code here)."""

from .core import (
    image_grid,
    loss_curve,
    save_run_pictures,
    scatter_samples,
)
from .paths import plot_paths
from .score import annealed_chain

__all__ = [
    "scatter_samples",
    "image_grid",
    "loss_curve",
    "save_run_pictures",
    "plot_paths",
    "annealed_chain",
]
