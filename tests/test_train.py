import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import nn

import genmodels
from genmodels import data
from genmodels.train import CheckpointError, NonFiniteLossError, TrainConfig, fit
from genmodels.train import checkpoint as ckpt

TINY = ["--set", "timesteps=50", "--set", "width=32", "--set", "depth=2", "--set", "emb_dim=16"]


def _train_cmd(out, steps, extra=()):
    return [
        sys.executable,
        "-m",
        "genmodels",
        "train",
        "ddpm",
        "--data",
        "moons",
        "--steps",
        str(steps),
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "checkpoint_every=50",
        "--set",
        "log_every=10",
        *TINY,
        *extra,
    ]


def _weights(run):
    return load_file(str(Path(run) / "model.safetensors"))


def test_sigkill_and_resume_is_bit_exact(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cmd(full, 300), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        _train_cmd(killed, 600), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            state = killed / "checkpoint.json"
            if state.exists():
                try:
                    if json.loads(state.read_text())["step"] >= 100:
                        break
                except (json.JSONDecodeError, KeyError):
                    pass
            if proc.poll() is not None:
                pytest.fail("the training process ended before it could be killed")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    step = json.loads((killed / "checkpoint.json").read_text())["step"]
    assert 100 <= step < 300
    assert not (killed / "model.safetensors").exists()
    r = subprocess.run(
        _train_cmd(killed, 300, ["--resume"]), env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    a, b = _weights(full), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = load_file(str(full / "model_raw.safetensors"))
    rb = load_file(str(killed / "model_raw.safetensors"))
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    steps = [
        json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 300


class _Quadratic(nn.Module):
    """loss = mean |x - w|²: deterministic given the batch; NaN after `nan_at` calls."""

    def __init__(self, d=2, nan_at=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))
        self.calls, self.nan_at = 0, nan_at

    def loss(self, batch, *, generator=None):
        self.calls += 1
        out = (batch - self.w).square().sum(1).mean()
        if self.nan_at is not None and self.calls > self.nan_at:
            out = out * float("nan")
        return out


def test_fit_converges_and_ema_and_files(tmp_path):
    d = data.load("8gaussians")
    cfg = TrainConfig(
        steps=300, batch_size=256, lr=0.05, ema_decay=0.9, progress=False, checkpoint_every=100
    )
    res = fit(_Quadratic(), d, cfg, out=tmp_path)
    assert torch.allclose(res.model.w.detach(), d.x.mean(0), atol=0.1)
    cfg_json = json.loads((tmp_path / "config.json").read_text())
    assert cfg_json["weights"]["model"]["sha256"] == ckpt.sha256_file(
        tmp_path / "model.safetensors"
    )
    assert cfg_json["torch_version"] == torch.__version__ and cfg_json["seed"] == 0
    ema, raw = _weights(tmp_path), load_file(str(tmp_path / "model_raw.safetensors"))
    assert not torch.equal(ema["w"], raw["w"])
    assert torch.equal(res.model.w.detach(), ema["w"])
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_ema_start_copies_then_averages_and_resumes(tmp_path):
    d = data.load("8gaussians")

    def run(steps, out=None, resume=False, overrides=(), **kw):
        cfg = TrainConfig(steps=steps, batch_size=64, lr=0.05, progress=False, **kw)
        return fit(_Quadratic(), d, cfg, out=out, resume=resume, overrides=overrides)

    raw40, raw41 = run(40).model.w.detach(), run(41).model.w.detach()
    # copying all along: the "average" is the raw weights
    assert torch.equal(run(41, ema_decay=0.9, ema_start=41).model.w.detach(), raw41)
    # one averaged step after 40 copied ones
    ema = run(41, ema_decay=0.9, ema_start=40).model.w.detach()
    assert torch.allclose(ema, 0.9 * raw40 + 0.1 * raw41, atol=1e-6)
    # a run checkpointed at step 20 without ema_start, resumed with ema_start=40, equals a
    # fresh run with ema_start=40 (the shadow is reset while still copying)
    run(20, out=tmp_path, ema_decay=0.9, checkpoint_every=20)
    with pytest.raises(ValueError, match="ema_start=0, not 40"):  # not silently
        run(41, out=tmp_path, resume=True, ema_decay=0.9, ema_start=40)
    resumed = run(
        41, out=tmp_path, resume=True, overrides=("ema_start",), ema_decay=0.9, ema_start=40
    )
    assert torch.equal(resumed.model.w.detach(), ema)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["resume_overrides"] == [{"key": "ema_start", "old": 0, "new": 40, "from_step": 19}]
    assert cfg["train_config"]["ema_start"] == 40
    with pytest.raises(ValueError, match="ema_start"):
        TrainConfig().replace(ema_start=-1)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(
        steps=500, batch_size=16, lr=0.01, progress=False, checkpoint_every=100, log_every=10
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint \\(step 200\\)"):
        fit(_Quadratic(nan_at=205), data.load("moons"), cfg, out=tmp_path)
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["step"] == 200
    t = ckpt.load_tensors(tmp_path / state["file"], sha256=state["sha256"])
    assert torch.isfinite(t["model.w"]).all()


def test_validation_split_and_early_stopping(tmp_path):
    cfg = TrainConfig(
        steps=2000,
        batch_size=32,
        lr=0.5,
        progress=False,
        val_fraction=0.1,
        val_every=20,
        patience=3,
        log_every=20,
    )
    res = fit(_Quadratic(), data.load("moons"), cfg)
    assert res.stopped_early and res.steps < 2000
    assert res.best_val_loss is not None
    vals = [r["val_loss"] for r in res.history if "val_loss" in r]
    assert res.best_val_loss == pytest.approx(min(vals))


def test_bad_train_config():
    for bad in (
        dict(steps=0),
        dict(lr=-1.0),
        dict(optimizer="sgd"),
        dict(ema_decay=1.5),
        dict(batch_size=2.5),
    ):
        with pytest.raises(ValueError):
            TrainConfig().replace(**bad)


def _tiny_run(tmp_path):
    run = tmp_path / "run"
    from genmodels.cli import main

    assert main(_train_cmd(run, 20)[3:]) == 0
    return run


def test_load_never_unpickles(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path)

    def boom(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    model = genmodels.load(run)
    assert not model.training
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)


def test_truncated_or_tampered_checkpoint_is_one_clear_error(tmp_path):
    run = _tiny_run(tmp_path)
    f = run / "model.safetensors"
    blob = f.read_bytes()
    f.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        genmodels.load(run)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    f.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="model.safetensors.*SHA-256"):
        genmodels.load(run)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=300), prefix=st.booleans())
def test_random_bytes_never_crash_the_loader(tmp_path, blob, prefix):
    p = tmp_path / "x.safetensors"
    if prefix:  # a plausible header length followed by junk
        blob = (len(blob)).to_bytes(8, "little") + blob
    p.write_bytes(blob)
    try:
        out = ckpt.load_tensors(p)
    except CheckpointError as e:
        assert "x.safetensors" in str(e)
    else:
        assert isinstance(out, dict)
