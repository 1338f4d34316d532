"""Neural ODE Processes: shapes, one solve on the union of times, sorting, t0, a loaded run."""

import json

import pytest
import torch

import genmodels
from genmodels import data, registry
from genmodels.cli import main
from genmodels.evaluate.process import process_metrics
from genmodels.integrate import odeint
from genmodels.models.ndp import NDP
from genmodels.train import TrainConfig, fit


def _tasks(b=3, nc=5, nt=8, dy=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    xc, xt = torch.rand(b, nc, 1, generator=g) * 3, torch.rand(b, nt, 1, generator=g) * 3
    return xc, torch.sin(xc).repeat(1, 1, dy), xt, torch.sin(xt).repeat(1, 1, dy)


@pytest.mark.parametrize("second_order", [False, True])
def test_shapes_and_samples(second_order):
    torch.manual_seed(0)
    m = NDP(1, 2, t0=-0.1, second_order=second_order)
    xc, yc, xt, _ = _tasks(dy=2)
    p = m.predict(xc, yc, xt)
    assert p.mean.shape == (3, 8, 2) and p.stddev.min().item() >= 0.1
    torch.testing.assert_close(m.predict(xc[1], yc[1], xt[1]).mean, p.mean[1], atol=1e-3, rtol=0)
    pk = m.predict(xc, yc, xt, n_samples=4, generator=torch.Generator().manual_seed(0))
    assert pk.mean.shape == (4, 3, 8, 2)
    assert (pk.mean[0] - pk.mean[1]).abs().max().item() > 1e-5  # the draws differ


def test_one_solve_on_the_union_equals_each_task_alone_and_order_does_not_matter():
    torch.manual_seed(1)
    m = NDP(1, 1, t0=-0.1, method="dopri5", n_steps=None, rtol=1e-10, atol=1e-12).double()
    xc, yc, xt, _ = (t.double() for t in _tasks())
    xt[2, 3] = xt[2, 1]  # a repeated time
    with torch.no_grad():
        p = m.predict(xc, yc, xt)
        for i in range(3):
            alone = m.predict(xc[i], yc[i], xt[i])
            torch.testing.assert_close(alone.mean, p.mean[i], atol=1e-7, rtol=0)
            torch.testing.assert_close(alone.stddev, p.stddev[i], atol=1e-7, rtol=0)
        perm = torch.randperm(8)
        q = m.predict(xc, yc, xt[:, perm])
    torch.testing.assert_close(q.mean, p.mean[:, perm], atol=1e-8, rtol=0)
    torch.testing.assert_close(p.mean[2, 3], p.mean[2, 1])
    # the context is a set
    cperm = torch.randperm(5)
    r = m.predict(xc[:, cperm], yc[:, cperm], xt)
    torch.testing.assert_close(r.mean, p.mean, atol=1e-8, rtol=0)


@pytest.mark.parametrize("second_order", [False, True])
def test_fixed_step_solve_equals_odeint_with_cubic_interpolation(second_order):
    """The vectorised Hermite interpolation of the fixed-step solve equals ``odeint``'s own
    ``interp="cubic"`` on the sorted union of times, and the field's split first layer equals
    the MLP on ``[l, d, t]``."""
    torch.manual_seed(2)
    m = NDP(1, 1, t0=-0.5, second_order=second_order).double()
    k, b = 2, 3
    xt = torch.rand(b, 7, 1, dtype=torch.float64) * 3
    xt[1, 2] = xt[0, 4]  # a time shared by two tasks
    latent = torch.randn(k, b, m.l_dim + m.d_dim, dtype=torch.float64)
    flat = latent.reshape(-1, latent.shape[-1])
    l0, d = flat[:, : m.l_dim], flat[:, m.l_dim :]
    f = m._rhs(d)

    def field(t, l):  # the field as written in the paper: an MLP on [l, d, t]
        dv = m.field(torch.cat([l, d, t.expand(*l.shape[:-1], 1)], -1))
        return torch.cat([l[..., m.l_dim // 2 :], dv], -1) if second_order else dv

    t = torch.tensor(0.3, dtype=torch.float64)
    torch.testing.assert_close(f(t, l0), field(t, l0), atol=1e-12, rtol=0)
    times, inverse = torch.unique(xt[..., 0], sorted=True, return_inverse=True)
    grid = torch.cat([times.new_tensor([m.t0]), times])
    opts = {"step_size": float(grid[-1] - grid[0]) / m.n_steps, "interp": "cubic"}
    ls = odeint(field, l0, grid, method="rk4", options=opts)[1:]
    ls = ls.reshape(ls.shape[0], k, b, m.l_dim).movedim(0, -2)
    want = ls.gather(-2, inverse.unsqueeze(-1).expand(k, b, 7, m.l_dim))
    got = m._solve_fixed(f, l0, xt, latent.shape[:-1])
    assert float(want.abs().max()) > 0.1
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    before = m.stats.nfe
    p = m.predict(torch.zeros(1, 1), torch.zeros(1, 1), xt[0])
    assert m.stats.nfe - before == 4 * m.n_steps + 1  # RK4's stages + the slopes at the grid
    with torch.no_grad():  # the solver's no-grad fast path (reused buffers) gives the same
        q = m.predict(torch.zeros(1, 1), torch.zeros(1, 1), xt[0])
    torch.testing.assert_close(q.mean, p.mean, atol=1e-12, rtol=0)


def test_times_before_t0_and_empty_context_are_clear_errors():
    m = NDP(1, 1, t0=0.5)
    xc, yc, xt, _ = _tasks()
    with pytest.raises(ValueError, match="t0 = 0.5"):
        m.predict(xc, yc, xt)
    with pytest.raises(ValueError, match="at least one context point"):
        NDP(1, 1, t0=-1.0).predict(xc[:, :0], yc[:, :0], xt)


def test_short_training_beats_the_baseline_on_sine():
    torch.manual_seed(0)
    train, test = data.load("sine"), data.load("sine", "test")
    spec = registry.get("ndp")
    model = spec.build(spec.make_config(), train.info)
    assert model.t0 == -3.2
    fit(model, train, TrainConfig(steps=300, batch_size=16, progress=False, seed=0))
    m = process_metrics(model, test.batches(100))
    assert m["target_ll_nats"] > m["baseline_target_ll_nats"] + 0.2
    assert m["target_mse"] < m["baseline_target_mse"]


@pytest.mark.parametrize("model, data_name", [("ndp", "oscil"), ("gp", "gp-rbf"), ("nd2p", "lv")])
def test_cli_train_evaluate_and_load_without_the_data(tmp_path, model, data_name):
    run = tmp_path / "run"
    args = ["train", model, "--data", data_name, "--steps", "3", "--out", str(run)]
    assert main([*args, "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert "t0" in json.dumps(cfg)
    if model == "gp":
        assert cfg["train_config"]["dtype"] == "float64"
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    flat = json.dumps(metrics)
    assert "target_ll_nats" in flat
    if data_name.startswith("gp-"):
        assert "oracle_target_ll_nats" in flat
    loaded = genmodels.load(run)
    b = next(data.load(data_name, "test").batches(2))
    pred = loaded.predict(b.x_context, b.y_context, b.x_target)
    assert pred.mean.shape == b.y_target.shape


def test_deterministic_path_is_read_by_the_decoder_and_r_dim_0_is_the_papers_ndp():
    """With ``r_dim > 0`` the decoder reads the context's ``r`` beside ``(t, l(t), d)``: at a
    fixed latent ``(L0, D)`` the prediction still moves with the context. With ``r_dim = 0``
    (the authors' NDP) the latent is all the decoder knows of the context."""
    torch.manual_seed(3)
    xc, yc, xt, _ = _tasks()
    for r_dim in (64, 0):
        m = NDP(1, 1, t0=-0.1, r_dim=r_dim)
        assert hasattr(m, "encoder") == (r_dim > 0)
        assert m.decoder[0][0].in_features == 1 + m.l_dim + m.d_dim + r_dim
        w = torch.randn(3, m.l_dim + m.d_dim)
        with torch.no_grad():
            a = m._decode_latent(xc, yc, xt, w)[0]
            b = m._decode_latent(xc, yc + 1.0, xt, w)[0]
            torch.testing.assert_close(
                a, m.decode(w, xt, m.represent(xc, yc) if r_dim else None)[0]
            )
        moved = float((a - b).abs().max())
        assert (moved > 1e-4) if r_dim else (moved == 0.0)
    with pytest.raises(ValueError, match="r_dim"):
        NDP(1, 1, t0=-0.1).decode(w.new_zeros(3, 32), xt)
