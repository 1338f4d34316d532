"""The data kinds of the batch protocol (genmodels.data.base): what a batch is, and every kind
through fit, a checkpoint, a SIGKILL and a bit-exact resume, and 2-process DDP == 1 process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genmodels import data
from genmodels.data import Series, SeriesData, TaskData, Tasks, TensorData
from genmodels.train import TrainConfig, fit
from genmodels.train.checkpoint import load_tensors

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
WORKER = str(ROOT / "tests" / "kinds_worker.py")
KINDS = ("labelled", "series", "tasks")


def test_tensor_data_infers_the_kind_and_keeps_dtypes():
    g = torch.Generator().manual_seed(0)
    pts = TensorData(torch.randn(50, 2), torch.randint(0, 4, (50,)))
    assert pts.info.kind == "points" and pts.info.num_classes == 4
    xb, yb = pts.batch(8, g)
    assert xb.shape == (8, 2) and yb.dtype == torch.long
    imgs = TensorData(torch.rand(10, 1, 8, 8))
    assert imgs.info.kind == "images" and imgs.info.event_shape == (1, 8, 8)
    assert imgs.batch(4, g).shape == (4, 1, 8, 8)  # no labels: the batch is x
    times, values = torch.rand(6, 5, 1), torch.randn(6, 5, 3)
    ser = TensorData(times, values)
    assert ser.info.kind == "series" and ser.info.event_shape == (3,)
    tb, vb = ser.batch(2, g)
    assert tb.shape == (2, 5, 1) and vb.shape == (2, 5, 3)
    nan_coded = torch.randn(7, 4, 3)
    nan_coded[0, 1, 2] = float("nan")  # NaN is data
    lab = TensorData(nan_coded, torch.arange(7) % 2)
    assert lab.info.kind == "series" and lab.info.num_classes == 2
    moved = lab.to(dtype=torch.float64)
    assert moved.x.dtype == torch.float64 and moved.y.dtype == torch.long
    assert torch.isnan(moved.x).sum() == 1


def test_registered_data_is_points_unless_labelled():
    train = data.load("moons")
    g = torch.Generator().manual_seed(0)
    assert isinstance(train.batch(4, g), torch.Tensor)
    x, y = train.labelled().batch(4, torch.Generator().manual_seed(0))
    assert torch.equal(x, train.batch(4, torch.Generator().manual_seed(0)))
    assert y.dtype == torch.long
    with pytest.raises(ValueError, match="no labels"):
        TensorData(torch.zeros(3, 2)).labelled()


def test_series_data_masks_nan_and_moves_with_its_dtypes():
    t = torch.rand(4, 6, 1).sort(1).values
    v = torch.randn(4, 6, 2)
    v[1, 2, 0] = float("nan")
    s = SeriesData(t, v, labels=torch.tensor([0, 1, 1, 0]))
    b = s.to(dtype=torch.float64).batch(3, torch.Generator().manual_seed(1))
    assert isinstance(b, Series)
    assert b.values.dtype == torch.float64 and b.mask.dtype == torch.bool
    assert b.labels.dtype == torch.long
    assert not torch.isnan(s.values).any() and s.mask.sum() == v.numel() - 1
    with pytest.raises(ValueError, match="same n"):
        SeriesData(t, torch.randn(4, 5, 2))
    with pytest.raises(ValueError, match="mask must be bool"):
        SeriesData(t, v, mask=torch.ones(4, 6, 2))


def test_task_data_draws_context_and_targets_from_the_generator():
    x = torch.linspace(0, 1, 20).expand(9, 20).unsqueeze(-1).clone()
    y = x * torch.arange(9.0).view(9, 1, 1)  # function i has slope i
    td = TaskData(x, y, context=(3, 7))
    sizes = set()
    for s in range(30):
        b = td.batch(5, torch.Generator().manual_seed(s))
        assert isinstance(b, Tasks)
        k = b.x_context.shape[1]
        sizes.add(k)
        assert 3 <= k <= 7 and b.x_target.shape == (5, 20, 1)
        # every context point is a point of the same function, and the targets are all of them
        slope_c = b.y_context[:, :, 0] / b.x_context[:, :, 0].clamp_min(1e-9)
        slope_t = b.y_target.sum(1) / b.x_target.sum(1)
        nonzero = b.x_context[:, :, 0] > 0
        assert torch.allclose(slope_c[nonzero], slope_t.expand_as(slope_c)[nonzero], atol=1e-5)
        assert torch.allclose(b.x_target.sort(1).values, x[:5])
    assert len(sizes) > 2  # the context size varies between batches
    a = td.batch(5, torch.Generator().manual_seed(3))
    b = td.batch(5, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    e1, e2 = list(td.batches(4)), list(td.batches(4))  # evaluation: deterministic
    assert len(e1) == 3 and all(torch.equal(u, v) for p, q in zip(e1, e2) for u, v in zip(p, q))
    with pytest.raises(ValueError, match="context"):
        TaskData(x, y, context=(3, 20))
    with pytest.raises(ValueError, match="same n"):
        TaskData(x, y[:, :10])


def test_registered_tasks_take_options_and_reject_unknown_ones():
    d = data.load("sine", n_train=50, context_max=5)
    assert d.info.kind == "tasks" and len(d) == 50 and d.info.options["context_max"] == 5
    b = d.batch(8, torch.Generator().manual_seed(0))
    # the NDP protocol (issue 15): targets are the context plus 0..5 further points
    k = b.x_context.shape[1]
    assert k <= 5 and b.y_target.shape[0] == 8 and k <= b.y_target.shape[1] <= k + 5
    # the sine family: |y| <= |a| <= 1
    assert b.y_target.abs().max() <= 1
    with pytest.raises(ValueError, match="unknown key 'n_obs'"):
        data.load("sine", n_obs=3)
    with pytest.raises(ValueError, match="expected an integer"):
        data.load("sine", points="many")
    with pytest.raises(ValueError, match="takes no options"):
        data.load("moons", drop=0.5)


def _run(kind, out, steps, batch, *extra, env_extra=None):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    if not env_extra:
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            env.pop(k, None)
    cmd = [sys.executable, WORKER, kind, str(out), str(steps), str(batch), *extra]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_resumes_bit_exact_after_sigkill(kind, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = _run(kind, full, 60, 16)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    p = _run(kind, killed, 60, 16, "--kill-at", "37")  # inside step 37; last checkpoint: 30
    p.wait(timeout=120)
    assert p.returncode == -9
    assert json.loads((killed / "checkpoint.json").read_text())["step"] == 30
    assert not (killed / "model.safetensors").exists()
    p = _run(kind, killed, 60, 16, "--resume")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    for name in ("model.safetensors", "model_raw.safetensors"):
        a, b = load_tensors(full / name), load_tensors(killed / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [json.loads(s)["step"] for s in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 65, 5))
    # training moved the weights: the comparison is not vacuous
    assert any(
        (load_tensors(full / "model_raw.safetensors")[k] - v).abs().max() > 1e-3
        for k, v in load_tensors(full / "model.safetensors").items()
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_the_same_on_two_processes(kind, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    p = _run(kind, one, 20, 32)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    port = str(_free_port())
    procs = [
        _run(
            kind,
            two,
            20,
            32,
            env_extra=dict(
                RANK=str(r),
                LOCAL_RANK=str(r),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),
        )
        for r in range(2)
    ]
    errs = [q.communicate(timeout=120)[1] for q in procs]
    assert [q.returncode for q in procs] == [0, 0], errs
    w1 = load_tensors(one / "final-rank0.safetensors")
    w2 = load_tensors(two / "final-rank0.safetensors")
    w2b = load_tensors(two / "final-rank1.safetensors")
    for k in w1:
        scale = w1[k].abs().max().clamp_min(1e-12)
        assert (w1[k] - w2[k]).abs().max() / scale < 1e-4, k
        assert torch.equal(w2[k], w2b[k]), k


def test_fit_takes_plain_objects_and_nan_inputs():
    class Plain:  # anything with tensors .x and .y
        x = torch.randn(64, 1, 3)
        y = torch.arange(64) % 3

    Plain.x[0, 0, 0] = float("nan")
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from kinds_worker import LabelledModel
    finally:
        sys.path.pop(0)
    res = fit(LabelledModel(), Plain(), TrainConfig(steps=5, batch_size=8, progress=False))
    assert res.steps == 5 and res.model.net.weight.isfinite().all()


def test_lr_none_is_the_models_own_default():
    from genmodels import registry

    spec = registry.get("logreg")
    info = data.info("moons")
    model = spec.build(spec.config(), info)
    assert model.train_defaults["lr"] == 1e-2  # the budget table's, as the CLI uses
    res = fit(model, data.load("moons").labelled(), TrainConfig(steps=3, progress=False))
    assert res.steps == 3

    class Own(torch.nn.Module):  # a class that states its own default
        train_defaults = {"lr": 0.5}

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        def loss(self, batch, *, generator=None):
            return (batch - self.w).square().sum(1).mean()

    m = Own()
    fit(m, TensorData(torch.ones(10, 2)), TrainConfig(steps=1, batch_size=4, progress=False))
    # one Adam step moves every weight by lr in the direction of the gradient's sign
    assert torch.allclose(m.w, torch.full((2,), 0.5), atol=1e-6)


def test_a_batch_of_the_wrong_kind_is_one_clear_error():
    from genmodels import registry

    info = data.info("moons")
    ddpm = registry.get("ddpm").build(registry.get("ddpm").make_config({"timesteps": 10}), info)
    cfg = TrainConfig(steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match=r"must have shape \(batch, 2\), got tuple \(a batch of 2"):
        fit(ddpm, data.load("moons").labelled(), cfg)  # (x, y) for a density model
    clf = registry.get("logreg").build(registry.get("logreg").config(), info)
    with pytest.raises(TypeError, match=r"batch must be \(x, y\)"):
        fit(clf, data.load("moons"), cfg)  # x alone for a classifier
