"""How long a ``genmodels tour`` budget takes, per model, measured in CPU time.

For every run of the tour's plan (or ``--only`` some models) it trains the model with the
budget's settings but ``K1`` (twice: the first pays the one-off costs) and ``K2`` steps
(``--k1``, ``--k2``), through the tour's own code (``tour.run._train``: set-up, the steps,
the final weights and the run's pictures), and evaluates the K2 run as the tour does
(``evaluate_run`` with the budget's settings, and the NFE count). The process CPU time of
each part gives

    per_step = (train(K2) - train(K1)) / (K2 - K1)      fixed = train(K1) - K1 * per_step
    estimate = fixed + steps(budget) * per_step + eval(K2)

CPU time, not wall time: the machine these numbers come from is shared, and the process's
CPU time is what two idle cores would spend (one thread: OMP_NUM_THREADS=1). The evaluation
of a barely trained model is a lower bound for an ODE model (an adaptive solve needs more
steps as the field learns), which the output says.

With ``--run`` it runs the budget for real instead (``run_tour`` section by section into
``--out``) and reports each run's CPU time (training, evaluation, pictures, NFE count).

    OMP_NUM_THREADS=1 python benchmarks/tour_budget.py --budget small --json small.json
    OMP_NUM_THREADS=1 python benchmarks/tour_budget.py --budget small --only ffjord,ddpm
    OMP_NUM_THREADS=1 python benchmarks/tour_budget.py --budget small --run --sections 2,5,7
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from genmodels.evaluate import evaluate_run
from genmodels.tour import run as tour


def _cpu(fn):
    c0 = time.process_time()
    out = fn()
    return time.process_time() - c0, out


def measure(item: tour.TourRun, budget: str, k1: int, k2: int, tmp: Path) -> dict:
    full_steps = tour.train_overrides(item.model, item.data, budget)["steps"]
    saved = dict(tour.SMALL_STEPS)
    times = {}
    try:
        for k in (k1, k1, k2):  # the first run pays the one-off costs (imports, data sets)
            tour.SMALL_STEPS[item.model] = k
            run_dir = tmp / f"{item.name}-{k}"
            shutil.rmtree(run_dir, ignore_errors=True)
            times[k], _ = _cpu(lambda d=run_dir: tour._train(item, d, budget, "cpu"))
    finally:
        tour.SMALL_STEPS.clear()
        tour.SMALL_STEPS.update(saved)
    settings = dict(tour.EVAL_SETTINGS[budget],
                    **tour.EVAL_SAMPLER.get(budget, {}).get(item.model, {}))  # fmt: skip
    eval_cpu, _ = _cpu(lambda: evaluate_run(tmp / f"{item.name}-{k2}", device="cpu", **settings))
    nfe_cpu, nfe = _cpu(lambda: tour._count_nfe(item, tmp / f"{item.name}-{k2}", "cpu"))
    per_step = max(times[k2] - times[k1], 0.0) / (k2 - k1)
    fixed = max(times[k1] - k1 * per_step, 0.0)
    return {
        "model": item.model,
        "data": item.data,
        "steps": full_steps,
        "per_step_cpu_s": round(per_step, 5),
        "fixed_cpu_s": round(fixed, 3),
        "eval_cpu_s": round(eval_cpu + nfe_cpu, 3),
        "estimate_cpu_s": round(fixed + full_steps * per_step + eval_cpu + nfe_cpu, 1),
        "nfe_at_k2": nfe,
    }


def run_for_real(budget: str, sections, out: Path) -> list[dict]:
    """Run the tour's ``budget`` section by section into ``out``; CPU seconds per run."""
    rows, real = [], tour._run_one

    def timed(item, out, budget, device):
        c0 = time.process_time()
        e = real(item, out, budget, device)
        keep = ("status", "train_s", "eval_s", "nfe", "nll_kind", "nll_nats", "sw", "sw_floor")
        cpu = round(time.process_time() - c0, 1)
        rows.append(
            {"model": item.model, "data": item.data, "cpu_s": cpu, **{k: e[k] for k in keep}}
        )
        print(json.dumps(rows[-1]), flush=True)
        return e

    tour._run_one = timed
    try:
        for s in sections or sorted({i.section for i in tour.plan()}):
            tour.run_tour(out / f"s{s}", budget, sections=[s], device="cpu", progress=False)
    finally:
        tour._run_one = real
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default="small", choices=["small", "smoke"])
    p.add_argument("--only", help="comma-separated model names")
    p.add_argument("--sections", help="comma-separated lecture sections")
    p.add_argument("--k1", type=int, default=5)
    p.add_argument("--k2", type=int, default=25)
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--run", action="store_true", help="run the budget for real, per section")
    p.add_argument("--out", default="tour-budget", help="with --run: the tours' directory")
    a = p.parse_args()
    torch.set_num_threads(1)
    secs = [int(s) for s in a.sections.split(",")] if a.sections else None
    if a.run:
        rows = run_for_real(a.budget, secs, Path(a.out))
        total = sum(r["cpu_s"] for r in rows)
        print(f"total: {total:.0f} s CPU ({total / 60:.1f} min) for {len(rows)} runs")
        if a.json:
            Path(a.json).write_text(json.dumps({"budget": a.budget, "rows": rows}, indent=2))
        return
    if a.budget != "small":
        p.error("the extrapolation measures the small budget; --budget smoke needs --run")
    items = tour.plan(secs)
    if a.only:
        keep = set(a.only.split(","))
        items = [i for i in items if i.model in keep]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for item in items:
            row = measure(item, a.budget, a.k1, a.k2, Path(d))
            rows.append(row)
            print(
                f"{row['model']:>15} {row['data']:<17} steps {row['steps']:>5}  "
                f"step {1e3 * row['per_step_cpu_s']:7.2f} ms  fixed {row['fixed_cpu_s']:6.2f} s  "
                f"eval {row['eval_cpu_s']:6.2f} s  -> {row['estimate_cpu_s']:7.1f} s CPU",
                flush=True,
            )
    total = sum(r["estimate_cpu_s"] for r in rows)
    print(f"total estimate: {total:.0f} s CPU ({total / 60:.1f} min) for {len(rows)} runs "
          "(evaluation of ODE models after few steps: a lower bound)")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({"budget": a.budget, "rows": rows, "total_s": total},
                                           indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
