"""The tour: every model of the lecture trained, measured and pictured, section by section.

``run`` trains each registered model on its default data within a budget (``smoke``,
``small``, ``full``), evaluates it with the shared metrics and writes ``results.json``.
"""

from .run import BUDGETS, COMPARISON_DATA, TourRun, plan, run_tour

__all__ = ["BUDGETS", "COMPARISON_DATA", "TourRun", "plan", "run_tour"]
