"""GRU seq2seq (the latent ODE's RNN baseline): encoder and decoder against a hand-rolled
GRUCell loop, the loss in closed form, predict's shapes on irregular rows and unsorted targets,
bad input, and a short run on spirals that lowers the RMSE."""

import pytest
import torch

from genmodels import data, registry
from genmodels.evaluate.run import evaluate_model
from genmodels.models.latent_ode import GRUSeq2Seq

NAN = float("nan")


def _batch(b=3, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(0.05 + torch.rand(b, n, 1, generator=g, dtype=torch.float64), 1)
    return t, torch.randn(b, n, 2, generator=g, dtype=torch.float64)


def _cell(gru: torch.nn.GRU) -> torch.nn.GRUCell:
    cell = torch.nn.GRUCell(gru.input_size, gru.hidden_size).double()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in gru.state_dict().items()})
    return cell


@pytest.mark.parametrize("union", [False, True])
def test_encoder_and_decoder_are_the_gru_recursions(union):
    """h_0 = W e + b with e the encoder read backwards over (x m, m, t_{i+1} - t_i), then
    h_j = GRU(τ_j - τ_{j-1}, h_{j-1}) from τ_0 = t0, written out with GRUCell: τ each row's
    own sorted targets, or (union) the sorted union of every row's targets; predict returns
    the means in the targets' own (unsorted) order."""
    torch.manual_seed(0)
    model = GRUSeq2Seq(2, 6, union=union).double()
    t, v = _batch()
    v[1, 2, 0] = NAN
    mask = ~torch.isnan(v)
    x = torch.nan_to_num(v) * mask
    enc, dec = _cell(model.encoder), _cell(model.decoder)
    targets = torch.tensor(
        [[0.7, 0.0, 3.5, 0.2, 0.2], [0.1, 0.7, 0.0, 5.0, 0.3], [0.7, 0.0, 3.5, 0.2, 0.2]],
        dtype=torch.float64,
    ).unsqueeze(-1)
    p = model.predict(t, v, targets)
    for b in range(3):
        h = torch.zeros(1, 6, dtype=torch.float64)
        for i in range(6, -1, -1):
            gap = t[b, i + 1, 0] - t[b, i, 0] if i < 6 else torch.tensor(0.0).double()
            inp = torch.cat([x[b, i], mask[b, i].double(), gap.view(1)])[None]
            h = enc(inp, h)
        h = model.to_h0(h)
        # union: one step per distinct time of the batch; own: one per target of the row (a
        # repeated time takes a step of gap 0)
        steps = targets.unique().tolist() if union else targets[b, :, 0].sort().values.tolist()
        prev, means = 0.0, []
        for tau in steps:
            h = dec(torch.tensor([[tau - prev]], dtype=torch.float64), h)
            means.append(model.readout(h)[0])
            prev = tau
        where = (
            [steps.index(tau) for tau in targets[b, :, 0].tolist()]
            if union
            else targets[b, :, 0].argsort(stable=True).argsort().tolist()
        )
        ref = torch.stack([means[j] for j in where])
        torch.testing.assert_close(p.mean[b], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("union", [False, True])
def test_loss_is_the_gaussian_nll_of_the_observed_values(union):
    """With the readout at 0 the loss is -mean log N(v | 0, s²) over observed values; in
    general it is predict's log-density at the observation times, averaged the same way."""
    torch.manual_seed(1)
    model = GRUSeq2Seq(2, obs_std=0.5, union=union).double()
    t, v = _batch()
    v[0, 2, 1] = NAN
    v[2, 0, :] = NAN
    mask = ~torch.isnan(v)
    lp = model.predict(t, v, t).log_prob(torch.nan_to_num(v))
    torch.testing.assert_close(model.loss((t, v)), -lp[mask].mean(), rtol=1e-12, atol=0)
    torch.nn.init.zeros_(model.readout.weight)
    torch.nn.init.zeros_(model.readout.bias)
    ref = -torch.distributions.Normal(0.0, model.obs_std).log_prob(v[mask]).mean()
    torch.testing.assert_close(model.loss((t, v)), ref, rtol=1e-12, atol=0)


def test_predict_shapes_irregular_rows_and_target_orders():
    torch.manual_seed(2)
    model = GRUSeq2Seq(2).double()
    assert model.union  # the default: the decoder steps over the batch's union of times
    t, v = _batch(b=3, n=6)
    v[1, 0, :] = NAN
    shared = torch.tensor([[0.5], [0.2], [3.0], [10.0]], dtype=torch.float64)  # unsorted
    p = model.predict(t, v, shared)
    assert p.mean.shape == (3, 4, 2) and torch.isfinite(p.mean).all()
    torch.testing.assert_close(p.stddev, model.obs_std.expand(3, 4, 2).double())
    rows = model.predict(t, v, shared.unsqueeze(0).expand(3, -1, -1).clone())
    torch.testing.assert_close(rows.mean, p.mean, rtol=0, atol=1e-12)
    # per-row targets in other orders: the same union, so each row's means permuted
    perms = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]
    q = model.predict(t, v, torch.stack([shared[i] for i in perms]))
    for b, i in enumerate(perms):
        torch.testing.assert_close(q.mean[b], p.mean[b, i], rtol=0, atol=1e-12)
    # each row on its own times: a row's prediction depends on its own targets only
    own = GRUSeq2Seq(2, union=False).double()
    own.load_state_dict(model.state_dict())
    per_row = torch.stack([shared, shared[:, :1] + 1.0, shared.flip(0)])
    r = own.predict(t, v, per_row)
    for b in range(3):
        ref = own.predict(t[b : b + 1], v[b : b + 1], per_row[b]).mean[0]
        torch.testing.assert_close(r.mean[b], ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.mean[2], own.predict(t, v, shared).mean[2].flip(0))
    # deterministic: posterior draws change nothing
    k = model.predict(t, v, shared, n_samples=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(k.mean, p.mean, rtol=0, atol=0)
    # the context decides: another row's values give another prediction
    other = model.predict(t, v.flip(0), shared).mean
    assert (other[0] - p.mean[0]).abs().max() > 1e-6


def test_bad_input_names_the_argument():
    model = GRUSeq2Seq(2)
    t, v = _batch()
    t, v = t.float(), v.float()
    bad = t.clone()
    bad[2, 4] = bad[2, 3]
    with pytest.raises(ValueError, match="times must increase within each row; row 2"):
        model.loss((bad, v))
    nan = v.clone()
    nan[1] = NAN
    with pytest.raises(ValueError, match="series 1 has no observed value"):
        model.loss((t, nan))
    with pytest.raises(ValueError, match=r"values must have shape \(B, n, 2\)"):
        model.loss((t, v[:, :-1]))
    with pytest.raises(ValueError, match="x_target must be"):
        model.predict(t, v, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"x_target must be at or after t0 = 0.0"):
        model.predict(t, v, torch.tensor([[-0.5], [1.0]]))
    with pytest.raises(ValueError, match="times must be at or after t0"):
        model.loss((t - 1.0, v))
    with pytest.raises(ValueError, match="n_samples"):
        model.predict(t, v, t, n_samples=-1)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        GRUSeq2Seq(2, 0)
    with pytest.raises(ValueError, match="gru-seq2seq needs series data"):
        spec = registry.get("gru-seq2seq")
        spec.build(spec.make_config(), data.load("moons").info)


def test_short_run_on_spirals_lowers_the_rmse():
    from genmodels.train import TrainConfig, fit

    opts = dict(n_train=300, n_test=60)
    tr = data.load("spirals", **opts)
    spec = registry.get("gru-seq2seq")
    assert spec.task == "series" and spec.default_data == "spirals"
    torch.manual_seed(0)
    model = spec.build(spec.make_config(), tr.info)
    # the latent ODE's budget, for a same-budget comparison
    assert model.train_defaults == registry.get("latent-ode").train_defaults("series", "spirals")
    before = evaluate_model(model, "spirals", task="series", data_options=opts)
    fit(model, tr, TrainConfig(steps=80, batch_size=64, grad_clip=1.0, progress=False))
    after = evaluate_model(model, "spirals", task="series", data_options=opts)
    assert after["rmse_interp"] < 0.7 * before["rmse_interp"], (before, after)
    assert after["context_nll_nats"] < before["context_nll_nats"]
