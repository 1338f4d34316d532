"""Run the whole lecture: every registered model trained, evaluated and pictured in one go.

:func:`run_tour` walks the lecture's sections (``registry.SECTIONS``) in order. Each model is
trained on its default data set, and every density model also on one shared 2-D data set
(:data:`COMPARISON_DATA`), so that one table compares their likelihoods (exact for flows and
CNFs, the probability-flow ODE's for diffusion, a bound for the VAE; always labelled), sample
distances beside the real-data floor, training and sampling time, and function evaluations
where an ODE is involved. Everything goes through the library's own seams: the budgets table
(``models/budgets.py``) scaled by the tour's budget, :func:`genmodels.train.fit` (which draws
the run's pictures with ``save_run_pictures``), :func:`genmodels.evaluate.evaluate_run`.

::

    OUT/results.json                      what the page reads (schema: RESULTS_SCHEMA below)
    OUT/runs/<model>-<data>/              one run directory per entry (train/run_dir.py)
    OUT/runs/<model>-<data>/tour.json     the entry, once the run is trained and evaluated

Budgets: ``smoke`` (a handful of steps per model, the whole tour in about a minute on two
CPU cores: it checks that everything runs, not what it learns), ``small`` (a fraction of each
model's budget; the whole tour in about a quarter of an hour) and ``full`` (the budgets
table's numbers, those of the docs).

A tour stopped and started again in the same ``OUT`` reuses what it finished: an entry whose
run directory holds its final weights, ``metrics.json`` and ``tour.json`` is read back, a run
with final weights but no evaluation is evaluated, and a half-trained run resumes from its
last checkpoint (``fit(resume=True)``, bit for bit as an uninterrupted one). A model that
fails is recorded with ``status: "failed"`` and its error; the others go on.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data as data_mod
from .. import registry
from ..evaluate import evaluate_run
from ..integrate import SolverStats
from ..train.checkpoint import read_json, write_json

__all__ = [
    "BUDGETS",
    "COMPARISON_DATA",
    "RESULTS_SCHEMA",
    "TourRun",
    "plan",
    "train_overrides",
    "run_tour",
]

BUDGETS = ("smoke", "small", "full")

#: The shared data set of the density comparison table (every density model on points).
COMPARISON_DATA = "moons"

#: The keys of one entry of ``results.json`` (the page codes against exactly these).
RESULTS_SCHEMA = (
    "section", "model", "data", "task", "status", "error", "run_dir", "metrics", "pictures",
    "train_s", "eval_s", "sample_s", "nfe", "nll_kind", "nll_nats", "sw", "sw_floor",
    "comparison",
)  # fmt: skip

#: Density models whose ``log_prob`` is the probability-flow ODE's (Song et al. 2021):
#: the likelihood of a diffusion model, labelled "pf-ode" (its ``nll_bound`` is the ELBO).
PF_ODE = frozenset({"ddpm", "subvp", "vesde"})

#: Where the ODE is: the vector field whose forward calls are the function evaluations.
ODE_FIELDS = {
    "ffjord": "cnf.field",
    "planar-cnf": "cnf.field",
    "odenet": "body.field",
    "latent-ode": "field",
    "neural-cde": "field",
    "ndp": "field",
    "nd2p": "field",
    "ddpm": "eps_model",
    "subvp": "eps_model",
    "vesde": "eps_model",
}

#: smoke: this many steps of at most this batch per model (no EMA: it would still hold the
#: initialisation); it proves the whole pipeline runs, not what a model learns.
SMOKE_STEPS = 4
SMOKE_BATCH = 64

#: small: steps per model (the budgets table's steps where fewer), sized from the CPU time
#: per step that benchmarks/tour_budget.py measures so that the whole tour (training,
#: evaluation and pictures) takes about 11 minutes of one core (docs/tour.md).
SMALL_STEPS = {
    "vae": 3000,
    "flow-classifier": 1000,
    "logreg": 3000,
    "mlp-classifier": 3000,
    "nice": 3000,
    "realnvp": 3000,
    "nsf": 1500,
    "odenet": 300,
    "resnet": 1500,
    "ffjord": 300,
    "planar-cnf": 500,
    "latent-ode": 300,
    "gru-seq2seq": 300,
    "neural-cde": 240,
    "gru-classifier": 240,
    "gp": 300,
    "cnp": 2940,
    "np": 2940,
    "ndp": 1000,
    "nd2p": 1000,
    "ncsn": 3000,
    "ddpm": 5000,
    "subvp": 4000,
    "vesde": 4000,
}
SMALL_DEFAULT_STEPS = 500

#: Model settings a budget changes (smoke: the cheapest model that still runs every line;
#: the numbers of a smoke tour mean nothing). Full and small: the models' own defaults.
MODEL_OVERRIDES = {
    "smoke": {
        "ddpm": {"timesteps": 50},
        "ncsn": {"steps_per_level": 5},
    },
}

#: evaluate_run's settings per budget: samples, test points for a bound and for an exact
#: (ODE) likelihood; None: evaluate's default (the whole test split).
EVAL_SETTINGS = {
    "smoke": dict(n=200, test_n=200, bound_n=32, nll_n=32),
    "small": dict(n=2000, test_n=2000, bound_n=500, nll_n=500),
    "full": dict(n=None, test_n=None, bound_n=None, nll_n=None),
}

#: Sampler settings per budget and model (smoke: a few steps of the SDE samplers).
EVAL_SAMPLER = {
    "smoke": {"subvp": {"steps": 20}, "vesde": {"steps": 20}},
}


@dataclass(frozen=True)
class TourRun:
    """One entry of the tour: a model on a data set, in its lecture section."""

    section: int
    model: str
    data: str
    task: str
    comparison: bool  # a row of the density comparison table (COMPARISON_DATA)

    @property
    def name(self) -> str:
        """The run directory's name under ``OUT/runs``."""
        return f"{self.model}-{self.data}"


def _check_sections(sections) -> tuple[int, ...] | None:
    if sections is None:
        return None
    if isinstance(sections, (int, str)):
        sections = [sections]
    out = []
    for s in sections:
        try:
            k = int(s)
        except (TypeError, ValueError):
            k = None
        if k is None or isinstance(s, bool) or k not in registry.SECTIONS:
            raise ValueError(
                f"sections: expected lecture sections among {sorted(registry.SECTIONS)}, got {s!r}"
            )
        out.append(k)
    if not out:
        raise ValueError("sections: expected at least one lecture section, got none")
    return tuple(sorted(set(out)))


def plan(sections: Iterable[int] | None = None) -> list[TourRun]:
    """The tour's runs in lecture order: each model on its default data set, and every
    density model on points also on :data:`COMPARISON_DATA` (right after its own run).

    Args:
        sections: lecture sections to run (default: all of them).
    """
    wanted = _check_sections(sections)
    specs = registry.specs()
    missing = [s.name for s in specs if s.section is None]
    if missing:
        raise ValueError(
            f"models {', '.join(missing)} state no lecture section (register(..., section=N))"
        )
    out = []
    for spec in sorted(specs, key=lambda s: (s.section, s.name)):
        if wanted is not None and spec.section not in wanted:
            continue
        on_shared = spec.default_data == COMPARISON_DATA
        density = spec.task == "density"
        out.append(TourRun(spec.section, spec.name, spec.default_data, spec.task,
                           density and on_shared))  # fmt: skip
        if density and not on_shared and "points" in spec.data_kinds:
            out.append(TourRun(spec.section, spec.name, COMPARISON_DATA, spec.task, True))
    return out


def train_overrides(model: str, data: str, budget: str) -> dict:
    """The TrainConfig fields of ``model`` on ``data`` under ``budget``: the budgets table's
    (``full``), with fewer steps (``small``: :data:`SMALL_STEPS`; ``smoke``:
    :data:`SMOKE_STEPS` of at most :data:`SMOKE_BATCH` examples, no EMA)."""
    _check_budget(budget)
    spec = registry.get(model)
    full = spec.train_defaults(data_mod.info(data).kind, data)
    if budget == "full":
        return full
    if budget == "smoke":
        out = dict(full, steps=SMOKE_STEPS, ema_decay=None, ema_start=0, warmup_steps=0)
        out["batch_size"] = min(full.get("batch_size", SMOKE_BATCH), SMOKE_BATCH)
        out.update(log_every=1, checkpoint_every=SMOKE_STEPS, val_every=SMOKE_STEPS)
        return out
    steps = min(full.get("steps", SMALL_DEFAULT_STEPS), SMALL_STEPS.get(model, SMALL_DEFAULT_STEPS))
    out = dict(full, steps=steps)
    out["checkpoint_every"] = min(full.get("checkpoint_every", 1000), steps)
    if "val_every" in full:
        out["val_every"] = max(1, min(full["val_every"], steps // 5))
    if full.get("ema_decay") is not None:  # the average must not still hold the init
        out["ema_start"] = min(full.get("ema_start", 0), steps // 2) or steps // 2
    if full.get("warmup_steps"):
        out["warmup_steps"] = min(full["warmup_steps"], steps // 10)
    return out


def _check_budget(budget) -> None:
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")


# ---------------------------------------------------------------------------------------------
# One run: train (or resume, or reuse), evaluate, measure.
# ---------------------------------------------------------------------------------------------


def _finished(run_dir: Path, steps: int) -> bool:
    """Whether ``run_dir`` holds a training run finished at ``steps`` (or stopped early by its
    validation) with its final weights written; a run of fewer steps is extended."""
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        return False
    try:
        cfg = read_json(cfg_path)
    except Exception:  # noqa: BLE001 - an unreadable config is no finished run
        return False
    done = cfg.get("final_step") == steps or bool(cfg.get("stopped_early"))
    return "model" in (cfg.get("weights") or {}) and done


def _train(item: TourRun, run_dir: Path, budget: str, device: str) -> None:
    """Train ``item`` into ``run_dir`` as ``genmodels train`` would (resuming a half-trained
    run there)."""
    from ..config import apply_overrides, to_json_dict
    from ..train import TrainConfig, fit
    from ..train.run_dir import RunDir

    spec = registry.get(item.model)
    info = data_mod.info(item.data)
    model_cfg = spec.make_config(MODEL_OVERRIDES.get(budget, {}).get(item.model, {}))
    train_over = {**train_overrides(item.model, item.data, budget), "device": device}
    train_over["progress"] = False
    cfg = apply_overrides(TrainConfig(), train_over, what="train config")
    torch.manual_seed(cfg.seed)  # the weights' initialisation, as the command line does
    model = spec.build(model_cfg, info)
    dataset = data_mod.load(item.data, "train")
    if spec.task == "classifier":
        dataset = dataset.labelled()
    run_info = {
        "model": spec.name,
        "task": spec.task,
        "data": item.data,
        "data_options": info.options,
        "model_config": to_json_dict(model_cfg),
        "data_info": info.to_json(),
        "tour_budget": budget,
    }
    fit(model, dataset, cfg, out=run_dir, resume=RunDir(run_dir).holds_run(), run_info=run_info)


def _train_seconds(run_dir: Path) -> float | None:
    """Training time of the run (the loop's own clock: no set-up, checkpoint loading or
    pictures), from the last line of ``metrics.jsonl``."""
    last = None
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.strip():
            last = line
    return float(json.loads(last)["wall"]) if last else None


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        model = getattr(model, part)
    return model


class _CountCalls:
    """Count the evaluations of an ODE's vector field ``field`` while in the ``with`` block.

    Fields are evaluated in several ways: called (``forward``), with their divergence (a
    CNF's ``with_divergence``), through a fused product function (a Neural CDE's
    ``times()``, counted per call of the function it returns), or by a fused fixed-grid
    RK4 (a latent ODE's ``solve_rk4``: four evaluations per step, its stages). Instance
    attributes shadow the methods for the block and are removed after it."""

    def __init__(self, field: torch.nn.Module):
        self.field, self.n = field, 0

    def _tick(self, k: int = 1) -> None:
        self.n += k

    def __enter__(self) -> _CountCalls:
        field, cls = self.field, type(self.field)

        def counted(method):
            def call(*args, **kwargs):
                self._tick()
                return method(*args, **kwargs)

            return call

        def counted_times(method):
            def times(*args, **kwargs):
                return counted(method(*args, **kwargs))

            return times

        def counted_rk4(method):
            def solve(z, grid, *args, **kwargs):
                self._tick(4 * (len(grid) - 1))
                return method(z, grid, *args, **kwargs)

            return solve

        self.patched = []
        for name, wrap in (("forward", counted), ("with_divergence", counted),
                           ("times", counted_times), ("solve_rk4", counted_rk4)):  # fmt: skip
            if callable(getattr(cls, name, None)):
                setattr(field, name, wrap(getattr(field, name)))
                self.patched.append(name)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.patched:
            self.field.__dict__.pop(name, None)


def _count_nfe(item: TourRun, run_dir: Path, device: str) -> int | None:
    """Function evaluations of the model's ODE for one pass over a test batch of 64: the
    likelihood's solve for a density model (``log_prob``: a CNF's, or a diffusion model's
    probability-flow ODE), the loss's for the others (a classifier's, a process's or a
    series model's forward solve). The solver's own count where the model keeps one (a
    :class:`~genmodels.integrate.SolverStats` as ``stats``: ODE-Net, NDP), else the
    evaluations of the vector field (:data:`ODE_FIELDS`, :class:`_CountCalls`); None for a
    model with no ODE."""
    if item.model not in ODE_FIELDS:
        return None
    from ..train.run_dir import load_run

    model = load_run(run_dir, device=device)
    test = data_mod.load(item.data, "test", **(model.run_config.get("data_options") or {}))
    if item.task == "classifier":
        test = test.labelled()
    p = next(model.parameters())
    batch = next(iter(test.to(p.device, p.dtype).batches(64)))
    g = torch.Generator(device=p.device).manual_seed(0)
    own = [m.stats for m in model.modules() if isinstance(getattr(m, "stats", None), SolverStats)]
    before = sum(s.nfe for s in own)
    with _CountCalls(_submodule(model, ODE_FIELDS[item.model])) as count, torch.no_grad():
        if item.task == "density":
            model.log_prob(batch)
        else:
            model.loss(batch, generator=g)
    return sum(s.nfe for s in own) - before if own else count.n


def _finite(x):
    """JSON-safe: non-finite floats become None (the page reads the file as JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _nll(item: TourRun, metrics: dict) -> tuple[str | None, float | None]:
    """The density NLL of the comparison, labelled: exact (flows, CNFs), pf-ode (diffusion),
    bound (a VAE, or a diffusion model whose ODE likelihood was skipped)."""
    if item.task != "density":
        return None, None
    if metrics.get("nll_nats") is not None:
        return ("pf-ode" if item.model in PF_ODE else "exact"), metrics["nll_nats"]
    if metrics.get("nll_bound_nats") is not None:
        return "bound", metrics["nll_bound_nats"]
    return None, None


def _entry(item: TourRun, **fields) -> dict:
    """The entry of ``item`` in results.json: every key of :data:`RESULTS_SCHEMA`."""
    base = {
        "section": item.section,
        "model": item.model,
        "data": item.data,
        "task": item.task,
        "status": "ok",
        "error": None,
        "run_dir": f"runs/{item.name}",
        "metrics": {},
        "pictures": [],
        "train_s": None,
        "eval_s": None,
        "sample_s": None,
        "nfe": None,
        "nll_kind": None,
        "nll_nats": None,
        "sw": None,
        "sw_floor": None,
        "comparison": item.comparison,
    }
    base.update(fields)
    return base


def _pictures(run_dir: Path, out: Path) -> list[str]:
    return [p.relative_to(out).as_posix() for p in sorted(run_dir.glob("*.png"))]


def _run_one(item: TourRun, out: Path, budget: str, device: str) -> dict:
    """Train (or resume, or reuse), evaluate and measure one entry; its entry dict."""
    run_dir = out / "runs" / item.name
    saved = run_dir / "tour.json"
    finished = _finished(run_dir, train_overrides(item.model, item.data, budget)["steps"])
    if finished and saved.exists() and (run_dir / "metrics.json").exists():
        return read_json(saved)  # trained and evaluated before: nothing to redo
    saved.unlink(missing_ok=True)
    if not finished:
        _train(item, run_dir, budget, device)
    train_s = _train_seconds(run_dir)
    settings = dict(EVAL_SETTINGS[budget], **EVAL_SAMPLER.get(budget, {}).get(item.model, {}))
    t0 = time.perf_counter()
    metrics = evaluate_run(run_dir, device=device, **settings)
    eval_s = time.perf_counter() - t0
    nfe = _count_nfe(item, run_dir, device)
    nll_kind, nll_nats = _nll(item, metrics)
    entry = _entry(
        item,
        metrics=_finite(metrics),
        pictures=_pictures(run_dir, out),
        train_s=train_s,
        eval_s=round(eval_s, 3),
        sample_s=metrics.get("sampling_seconds"),
        nfe=nfe,
        nll_kind=nll_kind,
        nll_nats=nll_nats,
        sw=metrics.get("swd"),
        sw_floor=metrics.get("swd_floor"),
    )
    entry = _finite(entry)
    write_json(saved, entry)
    return entry


# ---------------------------------------------------------------------------------------------
# The tour
# ---------------------------------------------------------------------------------------------


def _write_results(path: Path, budget, created, t0, sections, entries) -> dict:
    results = {
        "budget": budget,
        "created": created,
        "total_s": round(time.perf_counter() - t0, 3),
        "sections": list(sections),
        "entries": entries,
    }
    write_json(path, _finite(results))
    return results


def run_tour(
    out: str | Path,
    budget: str = "smoke",
    sections: Iterable[int] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Train, evaluate and picture every model of the lecture; write ``out/results.json``.

    Args:
        out: the tour's directory (created); runs go to ``out/runs/<model>-<data>``.
        budget: ``"smoke"`` (about a minute in all on two CPU cores: a check that everything
            runs), ``"small"`` (about 15 minutes: a fraction of each model's steps) or
            ``"full"`` (the budgets table, the numbers of the docs; hours).
        sections: lecture sections to run (default: all; see ``registry.SECTIONS``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for training and evaluation.
        progress: a progress bar naming the model that runs and the time left.

    Returns:
        The results dict, as written to ``out/results.json`` after every entry: ``budget``,
        ``created`` (ISO time), ``total_s``, ``sections`` and one entry per run, with the
        keys :data:`RESULTS_SCHEMA` (``status`` ``"ok"`` or ``"failed"`` with its ``error``).

    A tour restarted in the same ``out`` reuses what it finished (see the module docstring);
    ``out`` that holds a tour of another budget is refused.
    """
    _check_budget(budget)
    from ..train.device import resolve_device

    resolve_device(device)  # a clear error for cuda without CUDA, before any work
    out = Path(out)
    results_path = out / "results.json"
    if results_path.exists():
        prev = read_json(results_path).get("budget")
        if prev != budget:
            raise ValueError(
                f"{out} holds a {prev!r} tour (results.json), not {budget!r}; choose another "
                "output directory (--out)"
            )
    items = plan(sections)
    sections = sorted({item.section for item in items})
    (out / "runs").mkdir(parents=True, exist_ok=True)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    entries: list[dict] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), disable=not progress, unit="run", dynamic_ncols=True,
               desc=f"tour ({budget})", file=sys.stderr)  # fmt: skip
    try:
        for item in items:
            bar.set_postfix_str(f"section {item.section}: {item.model} on {item.data}")
            try:
                entry = _run_one(item, out, budget, device)
            except Exception as e:  # noqa: BLE001 - one failing model never stops the tour
                msg = f"{type(e).__name__}: {e}".strip()
                entry = _entry(item, status="failed", error=msg[:2000],
                               pictures=_pictures(out / "runs" / item.name, out))  # fmt: skip
                bar.write(f"tour: {item.name} failed: {msg.splitlines()[0][:200]}")
            entries.append(entry)
            _write_results(results_path, budget, created, t0, sections, entries)
            bar.update(1)
    finally:
        bar.close()
    return _write_results(results_path, budget, created, t0, sections, entries)
