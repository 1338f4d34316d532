"""The tour's runner (``genmodels tour``): every section's models trained, evaluated and
recorded in results.json; failures recorded, finished runs reused, half-trained runs resumed."""

import json
import math

import pytest
import torch

from genmodels import registry
from genmodels.cli import main
from genmodels.tour import COMPARISON_DATA, plan, run_tour
from genmodels.tour import run as tour

SECTIONS = [3, 5]  # flows (density, exact NLL, comparison rows) and processes (ODE: NDP)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    return out, run_tour(out, "smoke", sections=SECTIONS, device="cpu", progress=False)


def test_every_model_has_a_lecture_section():
    secs = {s.name: s.section for s in registry.specs()}
    assert all(k in registry.SECTIONS for k in secs.values()), secs
    assert secs["vae"] == 1 and secs["realnvp"] == 3 and secs["ddpm"] == 7
    assert {s for s in secs.values()} == set(registry.SECTIONS)  # no section left empty


def test_register_refuses_an_unknown_section():
    from dataclasses import dataclass

    @dataclass
    class C:
        pass

    with pytest.raises(ValueError, match="section must be one of"):
        registry.register("x-bad-section", config=C, default_data="moons", task="density",
                          description="", section=9)  # fmt: skip


def test_plan_places_density_models_on_the_shared_data_too():
    runs = plan()
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    assert [r.section for r in runs] == sorted(r.section for r in runs)
    assert {r.model for r in runs} == set(registry.names())
    density = {s.name for s in registry.specs() if s.task == "density"}
    shared = {r.model for r in runs if r.comparison}
    assert shared == density  # every density model is a row of the comparison table
    assert all(r.data == COMPARISON_DATA for r in runs if r.comparison)
    assert [r.model for r in plan([5])] == ["cnp", "gp", "nd2p", "ndp", "np"]
    with pytest.raises(ValueError, match="sections"):
        plan([8])


def test_budgets_scale_the_budgets_table():
    full = tour.train_overrides("realnvp", "8gaussians", "full")
    assert full == registry.get("realnvp").train_defaults("points", "8gaussians")
    small = tour.train_overrides("ddpm", "moons", "small")
    smoke = tour.train_overrides("ddpm", "moons", "smoke")
    assert smoke["steps"] < small["steps"] < full["steps"] or full["steps"] == small["steps"]
    assert small["ema_start"] > 0  # the average must not still hold the initialisation
    assert smoke["ema_decay"] is None and smoke["batch_size"] <= tour.SMOKE_BATCH
    with pytest.raises(ValueError, match="budget"):
        tour.train_overrides("ddpm", "moons", "huge")


def test_smoke_tour_writes_every_entry(smoke):
    out, results = smoke
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    assert on_disk["budget"] == "smoke" and on_disk["sections"] == SECTIONS
    assert on_disk["total_s"] > 0 and on_disk["created"][:2] == "20"
    entries = on_disk["entries"]
    assert [(e["model"], e["data"]) for e in entries] == [(r.model, r.data) for r in plan(SECTIONS)]
    for e in entries:
        assert tuple(e) == tour.RESULTS_SCHEMA
        assert e["status"] == "ok", e["error"]
        assert (out / e["run_dir"] / "model.safetensors").exists()
        assert e["pictures"] and all((out / p).is_file() for p in e["pictures"])
        assert e["metrics"]["data"] == e["data"] and e["train_s"] > 0 and e["eval_s"] > 0
    flows = [e for e in entries if e["section"] == 3]
    assert {e["comparison"] for e in flows if e["data"] == COMPARISON_DATA} == {True}
    for e in flows:  # an exact likelihood, labelled, and the sample distance beside its floor
        assert e["nll_kind"] == "exact" and math.isfinite(e["nll_nats"])
        assert e["nll_nats"] == e["metrics"]["nll_nats"]
        assert e["sw"] > 0 and e["sw_floor"] > 0 and e["sample_s"] is not None
        assert e["nfe"] is None  # no ODE in a coupling flow
    by_model = {e["model"]: e for e in entries}
    assert by_model["ndp"]["nfe"] > 0 and by_model["cnp"]["nfe"] is None
    assert by_model["gp"]["nll_kind"] is None and "target_ll_nats" in by_model["gp"]["metrics"]
    assert any(p.endswith("predictions.png") for p in by_model["np"]["pictures"])


def test_restart_reuses_finished_runs(smoke, monkeypatch):
    out, results = smoke
    weights = sorted((out / "runs").glob("*/model.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in weights]
    calls = []
    monkeypatch.setattr(tour, "_train", lambda *a: calls.append(a))
    monkeypatch.setattr(tour, "evaluate_run", lambda *a, **k: calls.append(a), raising=False)
    again = run_tour(out, "smoke", sections=SECTIONS, device="cpu", progress=False)
    assert calls == []  # nothing trained nor evaluated again
    assert [p.stat().st_mtime_ns for p in weights] == mtimes
    strip = lambda r: [{k: v for k, v in e.items()} for e in r["entries"]]  # noqa: E731
    assert strip(again) == strip(results)
    with pytest.raises(ValueError, match="holds a 'smoke' tour"):
        run_tour(out, "small", sections=SECTIONS, progress=False)


def test_an_interrupted_tour_resumes_its_half_trained_run(tmp_path, monkeypatch):
    from genmodels.train import loop

    real_over, real_lr = tour.train_overrides, loop._lr_at
    monkeypatch.setattr(  # a checkpoint every 2 of the 4 smoke steps
        tour, "train_overrides", lambda *a: {**real_over(*a), "checkpoint_every": 2}
    )

    def lr_at(step, cfg):  # Ctrl-C during step 3 (after the checkpoint at step 2)
        if step == 2:
            raise KeyboardInterrupt
        return real_lr(step, cfg)

    monkeypatch.setattr(loop, "_lr_at", lr_at)
    monkeypatch.setattr(tour, "plan", lambda sections: _only(sections, "cnp", "gp"))
    with pytest.raises(KeyboardInterrupt):
        run_tour(tmp_path, "smoke", sections=[5], device="cpu", progress=False)
    run_dir = tmp_path / "runs" / "cnp-sine"  # section 5's first run
    first = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in first] == [1, 2] and not (run_dir / "model.safetensors").exists()
    monkeypatch.setattr(loop, "_lr_at", real_lr)
    results = run_tour(tmp_path, "smoke", sections=[5], device="cpu", progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert lines[:2] == first  # the first two steps were not run again
    assert json.loads((run_dir / "config.json").read_text())["final_step"] == 4
    assert [(e["model"], e["status"]) for e in results["entries"]] == [("cnp", "ok"), ("gp", "ok")]


def _only(sections, *models):
    return [r for r in plan(sections) if r.model in models]


def test_a_failing_model_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    real = tour._train

    def train(item, *args):
        if item.model == "logreg":
            raise RuntimeError("boom: the model blew up")
        return real(item, *args)

    monkeypatch.setattr(tour, "_train", train)
    monkeypatch.setattr(tour, "plan", lambda s: _only(s, "logreg", "mlp-classifier", "cnp"))
    results = run_tour(tmp_path, "smoke", sections=[2, 5], device="cpu", progress=False)
    status = {e["model"]: (e["status"], e["error"]) for e in results["entries"]}
    assert status["logreg"] == ("failed", "RuntimeError: boom: the model blew up")
    assert status["mlp-classifier"] == ("ok", None) and status["cnp"] == ("ok", None)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert [e["status"] for e in on_disk["entries"]] == ["failed", "ok", "ok"]
    failed = next(e for e in on_disk["entries"] if e["status"] == "failed")
    assert tuple(failed) == tour.RESULTS_SCHEMA and failed["metrics"] == {}
    # the next start retries the failed model alone
    trained = []
    monkeypatch.setattr(tour, "_train", lambda item, *a: (trained.append(item.model),
                                                           real(item, *a)))  # fmt: skip
    again = run_tour(tmp_path, "smoke", sections=[2, 5], device="cpu", progress=False)
    assert [e["status"] for e in again["entries"]] == ["ok", "ok", "ok"]
    assert trained == ["logreg"]


def test_cli_tour(smoke, capsys):
    out, _ = smoke
    assert main(["tour", "--budget", "smoke", "--out", str(out), "--sections", "5",
                 "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "5 of 5 runs ok" in text and str(out / "results.json") in text
    assert json.loads((out / "results.json").read_text())["sections"] == [5]
    for bad, msg in (("0", "got '0'"), ("3,x", "got 'x'")):
        assert main(["tour", "--out", str(out), "--sections", bad]) == 2
        assert msg in capsys.readouterr().err


def test_nfe_counts_the_solvers_evaluations(smoke):
    """The counter agrees with the solver's own count (NDP's SolverStats)."""
    out, _ = smoke
    from genmodels import data
    from genmodels.train.run_dir import load_run

    item = next(r for r in plan([5]) if r.model == "ndp")
    counted = tour._count_nfe(item, out / "runs" / item.name, "cpu")
    model = load_run(out / "runs" / item.name)
    batch = next(iter(data.load("sine", "test").batches(64)))
    model.stats.nfe = 0
    with torch.no_grad():
        model.loss(batch, generator=torch.Generator().manual_seed(0))
    assert counted == model.stats.nfe > 0
