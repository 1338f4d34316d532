"""Comparable numbers for any model, chosen by its task: density, classifier, process."""

from .classification import classifier_metrics, expected_calibration_error
from .density import density_metrics, sample_metrics
from .process import context_mean_baseline, process_metrics
from .run import TASKS, evaluate_model, evaluate_run
from .sample_metrics import energy_distance, median_bandwidth, mmd2, sliced_wasserstein

__all__ = [
    "TASKS",
    "evaluate_model",
    "evaluate_run",
    "density_metrics",
    "classifier_metrics",
    "process_metrics",
    "sample_metrics",
    "expected_calibration_error",
    "context_mean_baseline",
    "mmd2",
    "energy_distance",
    "sliced_wasserstein",
    "median_bandwidth",
]
