"""Run directories a user can trust (issue #12): a run killed at any moment goes on, resume
restores what was recorded, one writer at a time, no poisoned checkpoint, and one line with
exit 2 instead of a traceback. Each test names the defect it pins down."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from genmodels.cli import main
from genmodels.data import TensorData
from genmodels.train import NonFiniteLossError, RunDir, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
KILLER = str(ROOT / "tests" / "cli_killer.py")
TINY = ["--set", "timesteps=50", "--set", "width=32", "--set", "depth=2", "--set", "emb_dim=16"]
STEPS = 120


def _args(out, steps=STEPS, *extra):
    return [
        "train", "ddpm", "--data", "moons", "--steps", str(steps), "--batch-size", "64",
        "--out", str(out), "--no-progress", "--set", "checkpoint_every=50",
        "--set", "log_every=10", *TINY, *extra,
    ]  # fmt: skip


def _killer(spec, out, *extra, steps=STEPS, timeout=180):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, KILLER, spec, "--", *_args(out, steps, *extra)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _snapshot(d: Path) -> dict:
    """Every file's name and SHA-256: 'the run directory was not modified' (the lock file
    holds the pid of whoever last took the lock: not run data)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.iterdir())
        if p.is_file() and p.name != ".lock"
    }


def _same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "model_raw.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (in a subprocess, like the killed ones)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _killer("none", out)
    assert r.returncode == 0, r.stderr
    return out


def test_1_killed_before_the_first_checkpoint_resumes_from_step_0(reference, tmp_path):
    out = tmp_path / "run"
    assert _killer("step:20", out).returncode == -9
    assert (out / "config.json").exists() and not (out / "checkpoint.json").exists()
    assert _killer("none", out).returncode == 2  # a plain rerun is refused, not a dead end
    r = _killer("none", out, "--resume")
    assert r.returncode == 0, r.stderr
    _same_weights(reference, out)
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, STEPS + 1, 10))


def test_killed_before_the_first_step_leaves_nothing_or_a_resumable_run(tmp_path):
    out = tmp_path / "run"
    assert _killer("step:0", out).returncode == -9
    # nothing was written before the first step had run: the directory holds no run
    assert not RunDir(out).holds_run()
    assert _killer("none", out, steps=20).returncode == 0


def test_killed_during_a_checkpoint_write_resumes_and_cleans_up(reference, tmp_path):
    out = tmp_path / "run"
    assert _killer("write:checkpoint-00000100", out).returncode == -9
    assert list(out.glob(".checkpoint-00000100*.tmp")), "the kill came mid-write"
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 50
    r = _killer("none", out, "--resume")
    assert r.returncode == 0, r.stderr
    _same_weights(reference, out)
    # defect 10: temporary and superseded files are gone
    assert not list(out.glob(".*.tmp"))
    assert [p.name for p in out.glob("checkpoint-*.safetensors")] == [
        "checkpoint-00000120.safetensors"
    ]


def test_killed_during_the_final_save_resumes(reference, tmp_path):
    out = tmp_path / "run"
    assert _killer("write:model.safetensors", out).returncode == -9
    assert not (out / "model.safetensors").exists()
    r = _killer("none", out, "--resume")
    assert r.returncode == 0, r.stderr
    _same_weights(reference, out)


def test_2_3_6_resume_restores_the_recorded_config(reference, tmp_path, capsys):
    before = _snapshot(reference)
    for extra, msg in (
        (["--batch-size", "32"], "batch_size=64, not 32"),
        (["--lr", "0.5"], "lr=0.001, not 0.5"),
        (["--set", "ema_decay=null"], "ema_decay=0.999, not null"),
        (["--set", "width=64"], "model_config"),
        (["--override", "batch_size"], None),  # allowed, then fails: allocation below
    ):
        args = [a for a in _args(reference) if a not in ("--batch-size", "64")] + ["--resume"]
        if msg is None:  # defect 6: a failing resume (allocation) touches nothing
            args += ["--batch-size", "100000000000", "--steps", "130"]
        assert main(args + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and (msg is None or msg in err[0]), err
        assert _snapshot(reference) == before  # the finished run is not modified
    # resuming a finished run with nothing to extend: exit 0, nothing written
    assert main([*_args(reference), "--resume"]) == 0
    assert "already holds the finished run" in capsys.readouterr().out
    assert _snapshot(reference) == before


def test_2_extending_a_resumed_run_keeps_its_settings(reference, tmp_path):
    ext = tmp_path / "ext"
    for p in reference.iterdir():
        (ext / p.name).parent.mkdir(exist_ok=True)
        (ext / p.name).write_bytes(p.read_bytes())
    # no --batch-size, no --set: the recorded ones, not the registry's defaults
    args = ["train", "ddpm", "--data", "moons", "--out", str(ext), "--resume", "--steps", "150"]
    assert main([*args, "--no-progress"]) == 0
    cfg = json.loads((ext / "config.json").read_text())
    assert cfg["train_config"]["batch_size"] == 64 and cfg["train_config"]["steps"] == 150
    assert cfg["model_config"]["timesteps"] == 50 and cfg["final_step"] == 150
    fresh = tmp_path / "fresh"
    assert main([*_args(fresh, 150)]) == 0
    _same_weights(fresh, ext)  # extending == training that long from the start


class _Exploding(nn.Module):
    """A finite loss throughout; from call ``at`` on, its gradient is 1e20, whose square
    overflows Adam's float32 second moments (the issue's poisoned checkpoint: inf in the
    optimizer state while the loss looked fine)."""

    def __init__(self, at=15):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))
        self.calls, self.at = 0, at

    def loss(self, batch, *, generator=None):
        self.calls += 1
        if self.calls >= self.at:
            return 1e20 * self.w.sum()  # finite, with a gradient whose square is not
        return (self.w - batch.mean()).square().sum()


def test_4_a_checkpoint_is_never_poisoned(tmp_path):
    cfg = TrainConfig(
        steps=100, batch_size=8, lr=0.01, checkpoint_every=10, progress=False, ema_decay=None
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite optimizer state at step") as e:
        fit(_Exploding(), TensorData(torch.randn(50, 2)), cfg, out=tmp_path)
    bad_step = int(str(e.value).split("at step ")[1].split()[0])
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["step"] == bad_step - 10 and f"(step {state['step']})" in str(e.value)
    tensors = load_file(str(tmp_path / state["file"]))
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert not list(tmp_path.glob(f"checkpoint-{bad_step:08d}*"))  # never written


def test_5_one_writer_at_a_time(tmp_path, capsys):
    out = tmp_path / "run"
    held = RunDir(out)
    held.acquire()
    try:
        assert main(_args(out, 20)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another genmodels process" in err[0]
        assert not (out / "config.json").exists()
    finally:
        held.release()
    assert main(_args(out, 20)) == 0
    # a killed holder leaves no stuck lock: the kernel drops a flock with its process
    out2 = tmp_path / "run2"
    r = _killer("step:5", out2)
    assert r.returncode == -9
    assert main([*_args(out2), "--resume"]) == 0


def test_5_two_runs_on_one_out(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, KILLER, "none", "--", *_args(out, 400)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, KILLER, "none", "--", *_args(out, 400, "--set", "seed=2")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["final_step"] == 400
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 410, 10))  # every line once


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "."], "is a directory"),
        (["--set", "width=1000000000"], "out of memory"),
        (["--set", "val_fraction=0.9999999"], "leaves no training data"),
        (["--set", "seed=1e23"], "seed must be an integer"),
        (["--device", "cuda"], "CUDA is not available"),
    ],
)
def test_7_refused_training_input_is_one_line_and_leaves_nothing(args, message, tmp_path, capsys):
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("checks the message without CUDA")
    out = tmp_path / "new"
    os.chdir(tmp_path)
    assert main([*_args(out, 5), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_7_sample_and_evaluate_check_where_they_write_first(reference, tmp_path, capsys):
    before = _snapshot(reference)
    (tmp_path / "d.npy").mkdir()
    assert main(["sample", str(reference), "--out", str(tmp_path / "d.npy"), "--n", "5"]) == 2
    assert "is a directory" in capsys.readouterr().err
    missing = tmp_path / "no" / "s.npy"
    assert main(["sample", str(reference), "--out", str(missing), "--n", "5"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # evaluate where metrics.json cannot be written: one line, exit 2
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in reference.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "metrics.json").mkdir()
    assert main(["evaluate", str(bad), "--n", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json" in err[0]
    assert _snapshot(reference) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_7_evaluate_on_a_read_only_run(reference, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    for p in reference.iterdir():
        (ro / p.name).write_bytes(p.read_bytes())
    ro.chmod(0o555)
    try:
        assert main(["evaluate", str(ro), "--n", "50"]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_8_the_checkpoint_file_is_confined_to_the_run(reference, tmp_path, capsys):
    run, victim = tmp_path / "R", tmp_path / "V"
    for d in (run, victim):
        d.mkdir()
        for p in reference.iterdir():
            (d / p.name).write_bytes(p.read_bytes())
    meta = json.loads((run / "checkpoint.json").read_text())
    meta["file"] = "../V/" + meta["file"]
    (run / "checkpoint.json").write_text(json.dumps(meta))
    assert main([*_args(run, 200), "--resume"]) == 2
    assert "must name a checkpoint-<step>.safetensors" in capsys.readouterr().err
    assert _snapshot(victim) == _snapshot(reference)


def test_11_sample_refuses_weights_that_hold_nan(reference, tmp_path, capsys):
    run = tmp_path / "nan"
    run.mkdir()
    for p in reference.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    w = load_file(str(run / "model.safetensors"))
    w[next(k for k in w if k.endswith("weight"))].view(-1)[0] = float("nan")
    save_file(w, str(run / "model.safetensors"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["weights"]["model"]["sha256"] = hashlib.sha256(
        (run / "model.safetensors").read_bytes()
    ).hexdigest()
    (run / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "--out", str(out), "--n", "10"]) == 2
    assert "the weights hold NaN or inf" in capsys.readouterr().err
    assert not out.exists()


# -- properties --------------------------------------------------------------------------

FLAGS = st.lists(
    st.sampled_from(
        [
            ["--resume"],
            ["--steps", "0"],
            ["--steps", "-3"],
            ["--steps", str(STEPS)],
            ["--steps", "10"],
            ["--batch-size", "0"],
            ["--batch-size", "32"],
            ["--lr", "-1"],
            ["--lr", "0.01"],
            ["--seed", "3"],
            ["--set", "lr=nan"],
            ["--set", "nosuch=1"],
            ["--set", "data.x=1"],
            ["--set", "ema_decay=2"],
            ["--set", "width=0"],
            ["--override", "lr"],
            ["--override", "nosuch"],
            ["--config", "/nonexistent.json"],
            ["--dtype", "float16"],
        ]
    ),
    max_size=3,
)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(flags=FLAGS)
def test_property_cli_flags_exit_0_or_one_line_and_never_modify_a_finished_run(
    reference, flags, capsys
):
    """Random flag combinations on a finished run: exit 0 (a resume with nothing to do) or
    one line with exit 2; never a traceback (any other exception fails this test); the
    finished run is never modified."""
    before = _snapshot(reference)
    args = ["train", "ddpm", "--data", "moons", "--out", str(reference), "--no-progress"]
    args += [a for f in flags for a in f]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 2)
    if code == 2:
        assert len(err) == 1 and err[0].startswith("genmodels: error:"), err
    assert _snapshot(reference) == before


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(kill=st.one_of(
    st.integers(0, STEPS - 1).map(lambda s: f"step:{s}"),
    st.sampled_from(["write:checkpoint-00000050", "write:checkpoint-00000100",
                     "write:config.json", "write:model.safetensors"]),
))  # fmt: skip
def test_property_a_run_killed_anywhere_resumes_to_the_same_weights(
    reference, kill, tmp_path_factory
):
    out = tmp_path_factory.mktemp("kill") / "run"
    assert _killer(kill, out).returncode == -9
    for _ in range(2):  # a resume killed again must still end in the same place
        r = _killer("none", out, "--resume") if RunDir(out).holds_run() else _killer("none", out)
        assert r.returncode == 0, r.stderr
        break
    _same_weights(reference, out)
