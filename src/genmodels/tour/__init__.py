"""The tour: every lecture section run, measured and shown on one offline HTML page.

``run`` trains each registered model on its default data within a budget (``smoke``,
``small``, ``full``), evaluates it with the shared metrics and writes ``results.json``;
``lecture`` holds what the lecture itself says (titles, equations as MathML, citations) and
the pictures that need no training; ``page`` renders ``results.json`` into ``index.html``.
"""

from .run import BUDGETS, COMPARISON_DATA, TourRun, plan, run_tour

__all__ = ["BUDGETS", "COMPARISON_DATA", "TourRun", "plan", "run_tour"]
