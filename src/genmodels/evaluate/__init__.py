"""Comparable numbers for any model: sample distances with floors, NLL, bounds."""

from .run import evaluate_model, evaluate_run, sample_metrics
from .sample_metrics import energy_distance, median_bandwidth, mmd2, sliced_wasserstein

__all__ = [
    "evaluate_model",
    "evaluate_run",
    "sample_metrics",
    "mmd2",
    "energy_distance",
    "sliced_wasserstein",
    "median_bandwidth",
]
