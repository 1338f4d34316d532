"""Continuous normalizing flows: the instantaneous change of variables against closed forms."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from genmodels.distributions import Flow, Planar, standard_normal_log_prob
from genmodels.models.cnf import CNF, ConcatField, PlanarField, time_features
from genmodels.registry import DataInfo, get

D64 = torch.float64


class _Linear(nn.Module):
    """f(z, t) = A z."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


class _Zero(nn.Module):
    def forward(self, t, z):
        return torch.zeros_like(z)


def _field(d: int, seed: int = 0) -> ConcatField:
    torch.manual_seed(seed)
    f = ConcatField(d, hidden=16, depth=2).double()
    for p in f.parameters():  # the last layer starts at zero: make the field non-trivial
        nn.init.normal_(p, std=0.5)
    return f


def test_zero_field_gives_the_base_density():
    x = torch.randn(7, 3, dtype=D64)
    flow = Flow(CNF(_Zero()), (3,))
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(x), standard_normal_log_prob(x))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_linear_field_is_the_pushed_forward_gaussian(trace):
    # z(T) = e^{AT} x ~ N(0, I)  <=>  x ~ N(0, S), S = e^{-AT} e^{-A^T T}; ladj = T tr A
    A = torch.tensor([[0.3, -1.0, 0.2], [0.5, -0.4, 0.0], [0.1, 0.7, 0.2]], dtype=D64)
    T = 0.8
    cnf = CNF(_Linear(A.clone()), trace=trace, T=T, rtol=1e-10, atol=1e-10)
    x = torch.randn(6, 3, dtype=D64)
    M = torch.linalg.matrix_exp(-A * T)
    want = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=D64), M @ M.T).log_prob(x)
    g = torch.Generator().manual_seed(0)
    z, ladj = cnf(x, generator=g)  # Hutchinson is exact for a linear field only in expectation
    got = standard_normal_log_prob(z) + ladj
    if trace == "exact":
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(z, x @ torch.linalg.matrix_exp(A * T).T, rtol=1e-8, atol=1e-8)
    else:
        assert (got - want).abs().max() > 1e-6  # one draw is not the trace ...
        n = 4000  # ... but the mean over draws is
        xs = x[:1].expand(n, 3)
        zs, ls = cnf(xs, generator=g)
        est = standard_normal_log_prob(zs) + ls
        se = est.std() / math.sqrt(n)
        assert abs(float(est.detach().mean() - want[0])) < 4 * float(se.detach())


def test_inverse_undoes_forward_with_opposite_log_det():
    cnf = CNF(_field(2), rtol=1e-9, atol=1e-9)
    x = torch.randn(5, 2, dtype=D64)
    with torch.no_grad():
        z, ladj = cnf(x)
        x2, ladj2 = cnf.inverse(z)
    torch.testing.assert_close(x2, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ladj2, -ladj, rtol=1e-6, atol=1e-6)
    # log|det| against the autograd Jacobian of the whole solve
    J = torch.autograd.functional.jacobian(lambda v: cnf(v.unsqueeze(0))[0][0], x[0])
    torch.testing.assert_close(ladj[0], torch.linalg.slogdet(J)[1], rtol=1e-6, atol=1e-6)


def test_exact_and_hutchinson_agree_in_expectation():
    f = _field(3, seed=1)
    x = torch.randn(1, 3, dtype=D64)
    with torch.enable_grad():
        exact = CNF(f, trace="exact", rtol=1e-9, atol=1e-9)
        z, l_exact = exact(x)
        n = 3000
        for noise in ("rademacher", "gaussian"):
            hut = CNF(f, trace="hutchinson", noise=noise, rtol=1e-9, atol=1e-9)
            g = torch.Generator().manual_seed(2)
            zs, ls = hut(x.expand(n, 3), generator=g)
            torch.testing.assert_close(zs, z.expand(n, 3), rtol=1e-6, atol=1e-6)
            se = float(ls.detach().std()) / math.sqrt(n)
            assert se > 0 and abs(float((ls.mean() - l_exact[0]).detach())) < 4 * se


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_gradients_equal_backprop(trace):
    x = torch.randn(4, 2, dtype=D64)
    grads = []
    for adjoint in (False, True):
        f = _field(2, seed=3)
        cnf = CNF(f, trace=trace, adjoint=adjoint, rtol=1e-9, atol=1e-9)
        z, ladj = cnf(x, generator=torch.Generator().manual_seed(0))
        (standard_normal_log_prob(z) + ladj).sum().backward()
        grads.append([p.grad.clone() for p in f.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_planar_cnf_matches_the_discrete_planar_flow_in_the_small_step_limit():
    # one unit, constant in t: over [0, h] the CNF's log-det is log|1 + h u^T w h'(w^T z + b)|
    # (the discrete planar flow with u -> h u) up to O(h^2)
    field = PlanarField(2, units=1, constant=True).double()
    u, w, b = (p.detach() for p in field.params(torch.zeros(()), D64))
    x = torch.randn(8, 2, dtype=D64)
    errs = []
    for h in (0.1, 0.05, 0.025):
        cnf = CNF(field, trace="field", T=h, rtol=1e-11, atol=1e-11)
        with torch.no_grad():
            _, ladj = cnf(x)
        # the discrete layer's formula log|1 + (1 - tanh^2) w^T u'| with u' = h u
        a = x @ w[0] + b[0]
        planar = torch.log((1 + (1 - torch.tanh(a) ** 2) * (w[0] @ (h * u[0]))).abs())
        errs.append(float((ladj - planar).abs().max()))
        assert float(ladj.abs().max()) > 10 * errs[-1]  # the first-order term dominates
    assert errs[1] / errs[0] < 0.3 and errs[2] / errs[1] < 0.3  # second order in h
    # and the closed-form trace equals autograd's
    z = torch.randn(5, 2, dtype=D64)
    exact = CNF(field, trace="exact", T=0.3)
    closed = CNF(field, trace="field", T=0.3)
    with torch.no_grad():
        torch.testing.assert_close(exact(z)[1], closed(z)[1], rtol=1e-9, atol=1e-9)
    assert Planar  # the discrete layer whose formula is written out above


@pytest.mark.parametrize("name", ["ffjord", "planar-cnf"])
def test_trained_2d_cnf_density_integrates_to_one(name):
    spec = get(name)
    torch.manual_seed(0)
    cfg = spec.make_config({"hidden": 16} if name == "ffjord" else {"units": 8})
    model = spec.build(cfg, DataInfo("8gaussians", "points", (2,)))
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(512, generator=g)  # a banana: x2 = x1^2 / 2 + noise
    data = torch.stack([x1, 0.5 * x1**2 - 0.5 + 0.3 * torch.randn(512, generator=g)], 1)
    model.init_from_data(data)
    for p in model.parameters():  # start away from the identity: a non-trivial density
        nn.init.normal_(p, std=0.3)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = float(model.loss(data[:256]).detach())
    for _ in range(15):
        loss = model.loss(data[:256], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first - 0.02  # it trained
    lo, hi, n = -4.5, 4.5, 120
    side = torch.linspace(lo, hi, n)
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = model.log_prob(grid).exp()
    cell = ((hi - lo) / (n - 1)) ** 2
    assert float(p.sum() * cell) == pytest.approx(1.0, abs=0.03)
    s = model.sample(5, generator=g)
    assert s.shape == (5, 2) and bool(torch.isfinite(s).all())
    d = model.distribution()
    assert d.log_prob(s).shape == (5,)


# --- bad input: one clear error naming the argument ----------------------------------------------


class _WrongShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)

    def forward(self, t, z):
        return self.lin(z)


class _NaN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, t, z):
        return self.lin(z) * math.nan


SOLVES = [{}, dict(method="rk4", step_size=0.25), dict(adjoint=True)]


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
@pytest.mark.parametrize("solve", SOLVES, ids=["dopri5", "rk4", "adjoint"])
def test_a_field_of_the_wrong_shape_or_nan_is_one_clear_error(trace, solve):
    from genmodels.integrate import NonFiniteSolutionError

    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match=r"vector field f\(t, z\) returned shape \(5, 3\); "
                                         r"expected z's shape \(5, 2\)"):  # fmt: skip
        CNF(_WrongShape(), trace=trace, **solve)(x)
    with pytest.raises(NonFiniteSolutionError, match=r"vector field returned non-finite.*t=0\.0"):
        CNF(_NaN(), trace=trace, **solve)(x)


@pytest.mark.parametrize(
    "times,match",
    [
        ([0.0, 0.5, 0.25], "strictly increasing or strictly decreasing"),
        ([0.5, 0.5], "strictly increasing or strictly decreasing"),
        ([1.0, 0.0], "strictly increasing; times"),
        ([0.0, 1.5], r"in \[0, T\]"),
        ([0.0, math.nan], "NaN"),
    ],
)
def test_a_bad_time_grid_is_one_clear_error_naming_times(times, match):
    cnf = CNF(_field(2))
    with pytest.raises(ValueError, match=f"CNF.trajectory: times .*{match}|{match}") as e:
        cnf.trajectory(torch.randn(3, 2, dtype=D64), torch.tensor(times, dtype=D64))
    assert "times" in str(e.value)
    for T in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="T must be > 0"):
            CNF(_field(2), T=T)


def test_trajectory_ends_where_forward_does_and_splits_the_log_det():
    cnf = CNF(_field(2), rtol=1e-9, atol=1e-9)
    x = torch.randn(4, 2, dtype=D64)
    with torch.no_grad():
        z, ladj = cnf(x)
        zs, ls = cnf.trajectory(x, torch.tensor([0.0, 0.4, 1.0], dtype=D64))
        z2, l2 = cnf.trajectory(zs[1], torch.tensor([0.4, 1.0], dtype=D64))
    assert zs.shape == (3, 4, 2) and ls.shape == (3, 4)
    torch.testing.assert_close(zs[-1], z, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(ls[-1], ladj, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(ls[1] + l2[-1], ladj, rtol=1e-7, atol=1e-7)  # additive in time
    torch.testing.assert_close(z2[-1], z, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("layer", ["concat", "concatsquash"])
def test_concat_field_activation_is_a_choice_and_starts_as_the_identity(layer):
    for act in ("tanh", "softplus", "elu"):
        f = ConcatField(2, hidden=8, depth=2, activation=act, layer=layer)
        z = torch.randn(3, 2)
        assert torch.equal(f(torch.tensor(0.3), z), torch.zeros(3, 2))  # last layer zero
    with pytest.raises(ValueError, match="activation must be one of"):
        ConcatField(2, activation="relu", layer=layer)
    with pytest.raises(ValueError, match=r"layer must be one of \('concat', 'concatsquash'\)"):
        ConcatField(2, layer="squash")


def test_concatsquash_layer_is_gated_and_shifted_by_t():
    # FFJORD's ConcatSquashLinear: (W h + b) * sigmoid(g t + c) + e t, then tanh between layers
    torch.manual_seed(1)
    f = ConcatField(3, hidden=5, depth=2, layer="concatsquash").double()
    for p in f.parameters():
        nn.init.normal_(p, std=0.7)
    t, z = torch.tensor(0.37, dtype=D64), torch.randn(4, 3, dtype=D64)
    h = z
    for i, (lin, gate, shift) in enumerate(zip(f.layers, f.gates, f.shifts)):
        W, b = lin.weight, lin.bias
        g, c, e = gate.weight[:, 0], gate.bias, shift.weight[:, 0]
        h = (h @ W.T + b) * torch.sigmoid(g * t + c) + e * t
        h = torch.tanh(h) if i < 2 else h
    torch.testing.assert_close(f(t, z), h, rtol=1e-12, atol=1e-12)
    # the field depends on t only through the gates and shifts: at t = 0 with c = 0 every
    # gate is 1/2 and every shift 0
    for gate in f.gates:
        nn.init.zeros_(gate.bias)
    h = z
    for i, lin in enumerate(f.layers):
        h = 0.5 * lin(h)
        h = torch.tanh(h) if i < 2 else h
    torch.testing.assert_close(f(torch.tensor(0.0, dtype=D64), z), h, rtol=1e-12, atol=1e-12)


def _reference_field(f: ConcatField, t: torch.Tensor, z: torch.Tensor, first_only: bool):
    """W [h, τ] + b written out: τ = (cos πjt, sin πjt)_{j=1..k}, τ at every layer or the first."""
    k = f.time_freqs
    j = torch.arange(1, k + 1, dtype=z.dtype)
    tau = torch.cat([torch.cos(math.pi * j * t), torch.sin(math.pi * j * t)]) if k else t[None]
    h = z
    for i, lin in enumerate(f.layers):
        inp = torch.cat([h, tau.expand(len(h), -1)], 1) if (i == 0 or not first_only) else h
        h = inp @ lin.weight.T + lin.bias
        h = f.act(h) if i < len(f.layers) - 1 else h
    return h


@pytest.mark.parametrize(
    "kw",
    [
        dict(activation="elu", time_freqs=3, time_input="first"),  # zuko's CNF field
        dict(activation="softplus", time_freqs=2, time_input="every"),
        dict(activation="elu", time_freqs=0, time_input="first"),
        dict(activation="tanh"),  # FFJORD's toy field: t itself, one concatenation per layer
        dict(activation="elu", time_freqs=1),  # the registered default
    ],
)
def test_concat_field_time_features_are_the_written_out_mlp(kw):
    torch.manual_seed(2)
    f = ConcatField(3, hidden=6, depth=2, **kw).double()
    z, t = torch.randn(5, 3, dtype=D64), torch.tensor(0.37, dtype=D64)
    assert torch.equal(f(t, z), torch.zeros(5, 3))  # the last layer starts at zero
    for p in f.parameters():
        nn.init.normal_(p, std=0.7)
    n_t = 2 * kw.get("time_freqs", 0) or 1
    first = kw.get("time_input") == "first"
    ins = [layer.in_features for layer in f.layers]
    assert ins == [3 + n_t, 6 + (0 if first else n_t), 6 + (0 if first else n_t)]
    out = f(t, z)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, _reference_field(f, t, z, first), rtol=1e-12, atol=1e-12)
    if kw.get("time_freqs"):  # Fourier features have period 2T: the field at t and t + 2T
        torch.testing.assert_close(f(t + 2.0, z), out, rtol=1e-10, atol=1e-10)
        g = ConcatField(3, hidden=6, depth=2, T=2.0, **kw).double()
        g.load_state_dict(f.state_dict())  # T rescales time: g at 2t is f at t
        torch.testing.assert_close(g(2 * t, z), out, rtol=1e-12, atol=1e-12)


def test_concat_field_time_options_are_validated():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="time_freqs must be an int >= 0"):
            ConcatField(2, time_freqs=bad)
    with pytest.raises(ValueError, match=r"time_input must be one of \('every', 'first'\)"):
        ConcatField(2, time_input="last")
    with pytest.raises(ValueError, match="time_input='first' needs layer='concat'"):
        ConcatField(2, layer="concatsquash", time_input="first")
    spec = get("ffjord")
    for over, match in [
        ({"time_freqs": -2}, "time_freqs must be an int >= 0"),
        ({"time_input": "middle"}, "time_input must be one of"),
        ({"activation": "relu"}, "activation must be one of"),
        ({"layer": "concatsquash", "time_input": "first"}, "needs layer='concat'"),
    ]:
        with pytest.raises(ValueError, match=match):
            spec.make_config(over)
    with pytest.raises(Exception, match="time_freqs"):  # the config's type check
        spec.make_config({"time_freqs": "3"})


def test_fourier_field_log_det_is_exact_against_autograd():
    # log|det ∂z(T)/∂x| of the solve map, by autograd through a tight dopri5 solve, equals the
    # integrated exact trace (the instantaneous change of variables) for zuko's field form
    torch.manual_seed(3)
    f = ConcatField(2, hidden=8, depth=2, activation="elu", time_freqs=3, time_input="first")
    f = f.double()
    for p in f.parameters():
        nn.init.normal_(p, std=0.6)
    cnf = CNF(f, rtol=1e-9, atol=1e-9)
    x = torch.randn(4, 2, dtype=D64, requires_grad=True)
    z, ladj = cnf(x)
    assert float((z - x).abs().max()) > 0.1 and float(ladj.abs().min()) > 1e-3  # non-trivial
    # the points are independent: row i of ∂z/∂x is the gradient of Σ_b z_b,i
    rows = [torch.autograd.grad(z[:, i].sum(), x, retain_graph=True)[0] for i in range(2)]
    jac = torch.stack(rows, 1)  # (B, 2, 2): jac[b, i, j] = ∂z_b,i / ∂x_b,j
    torch.testing.assert_close(torch.linalg.slogdet(jac)[1], ladj.detach(), rtol=1e-6, atol=1e-7)


def test_ffjord_config_round_trip_and_old_runs_build_the_same_field():
    from genmodels.config import to_json_dict

    spec = get("ffjord")
    info = DataInfo("8gaussians", "points", (2,))
    cfg = spec.make_config({"activation": "elu", "time_freqs": 3, "time_input": "first"})
    assert spec.make_config(to_json_dict(cfg)) == cfg
    torch.manual_seed(0)
    model = spec.build(cfg, info)
    torch.manual_seed(1)
    again = spec.build(spec.make_config(to_json_dict(cfg)), info)
    again.load_state_dict(model.state_dict())  # the same tensors, names and shapes
    x = torch.randn(6, 2)
    model.init_from_data(x)
    again.init_from_data(x)
    f, g = model.cnf.field, again.cnf.field
    for p in f.parameters():
        nn.init.normal_(p, std=0.3)
    g.load_state_dict(f.state_dict())
    with torch.no_grad():
        assert torch.equal(model.log_prob(x), again.log_prob(x))
    # a config.json written before these options existed (no time_* keys) trained with t
    # itself at every layer: it loads so, with the old names and shapes (one time column)
    old = {k: v for k, v in to_json_dict(spec.config()).items() if not k.startswith("time_")}
    assert spec.make_config(old) == replace(spec.config(), time_freqs=0)
    field = spec.build(spec.make_config(old), info).cnf.field
    shapes = {k: tuple(v.shape) for k, v in field.state_dict().items()}
    assert shapes == {
        "layers.0.weight": (64, 3), "layers.0.bias": (64,),
        "layers.1.weight": (64, 65), "layers.1.bias": (64,),
        "layers.2.weight": (64, 65), "layers.2.bias": (64,),
        "layers.3.weight": (2, 65), "layers.3.bias": (2,),
    }  # fmt: skip
    # the registered default: one Fourier pair (two time columns) at every layer
    field = spec.build(spec.config(), info).cnf.field
    shapes = {k: tuple(v.shape) for k, v in field.state_dict().items()}
    assert shapes["layers.0.weight"] == (64, 4) and shapes["layers.3.weight"] == (2, 66)


def test_ffjord_default_is_elu_and_a_run_saved_before_it_loads_with_tanh():
    from genmodels.config import to_json_dict

    spec = get("ffjord")
    assert spec.config().activation == "elu"
    saved = to_json_dict(spec.config())
    before = {k: v for k, v in saved.items() if k != "activation"}  # an old config.json
    assert spec.make_config(before).activation == "tanh"
    assert spec.make_config(saved).activation == "elu"
    assert spec.make_config({"hidden": 32}).activation == "elu"  # a user's override: the default
    field = spec.build(spec.make_config(before), DataInfo("moons", "points", (2,))).cnf.field
    assert isinstance(field.act, nn.Tanh)


def test_ffjord_default_time_features_are_one_fourier_pair_and_old_runs_keep_t():
    from genmodels.config import to_json_dict

    spec = get("ffjord")
    assert spec.config().time_freqs == 1
    saved = to_json_dict(spec.config())
    assert spec.make_config(saved).time_freqs == 1
    # a run saved with the ELU field of t itself (time_freqs written out) loads as it trained
    assert spec.make_config({**saved, "time_freqs": 0}).time_freqs == 0
    # a config.json from before time_freqs existed: t itself
    before = {k: v for k, v in saved.items() if k != "time_freqs"}
    assert spec.make_config(before).time_freqs == 0
    assert spec.make_config({"hidden": 32}).time_freqs == 1  # a user's override: the default
    # the default's time input is (cos πt/T, sin πt/T) at every layer
    f = spec.build(spec.config(), DataInfo("moons", "points", (2,))).cnf.field
    assert f.extra == [2, 2, 2, 2]
    t = torch.tensor(0.25)
    tau = time_features(t, f.time_freqs, f.T, torch.float32)
    torch.testing.assert_close(tau, torch.tensor([[math.cos(math.pi / 4), math.sin(math.pi / 4)]]))


def test_training_tolerances_apply_only_while_autograd_records():
    # train_rtol/train_atol (FFJORD's training vs test tolerances): a loose solve when
    # gradients are recorded, the tight one under no_grad (log_prob in evaluation)
    x = torch.randn(6, 2, dtype=D64)
    tight = CNF(_field(2), rtol=1e-9, atol=1e-9)
    loose = CNF(_field(2), rtol=1e-2, atol=1e-2)
    both = CNF(_field(2), rtol=1e-9, atol=1e-9, train_rtol=1e-2, train_atol=1e-2)
    with torch.no_grad():
        z_tight, l_tight = tight(x)
        z_loose, _ = loose(x)
        z_both, l_both = both(x)
    assert torch.equal(z_both, z_tight) and torch.equal(l_both, l_tight)
    assert not torch.allclose(z_loose, z_tight, rtol=1e-7, atol=1e-7)  # the two solves differ
    z_train, l_train = both(x)  # autograd on: the loose solve, bit for bit
    z_ref, l_ref = loose(x)
    assert torch.equal(z_train.detach(), z_ref.detach())
    assert torch.equal(l_train.detach(), l_ref.detach())
    assert z_train.requires_grad
    for bad in (0.0, -1e-3, math.nan):
        with pytest.raises(ValueError, match="train_rtol must be > 0 or None"):
            CNF(_field(2), train_rtol=bad)
        with pytest.raises(ValueError, match="train_atol must be > 0 or None"):
            CNF(_field(2), train_atol=bad)


# --- RNODE's regularisers (Finlay et al. 2020): kinetic energy and Jacobian Frobenius norm ---


def test_frobenius_norm_of_the_field_jacobian_exact_and_in_expectation():
    from genmodels.integrate import dynamics_with_divergence, hutchinson_noise

    f = _field(3)
    z = torch.randn(5, 3, dtype=D64)
    t = torch.tensor(0.4, dtype=D64)
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: f(t, v[None])[0], zi) for zi in z]
    )
    want = jac.square().sum((1, 2))
    dz, div, frob = dynamics_with_divergence(f, t, z, method="exact", frobenius=True)
    torch.testing.assert_close(frob, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        div, torch.diagonal(jac, dim1=1, dim2=2).sum(1), rtol=1e-10, atol=1e-12
    )
    # Hutchinson: ‖εᵀJ‖² is unbiased for ‖J‖_F² (E[εεᵀ] = I), for both noises
    n = 20000
    zs = z[:1].expand(n, 3)
    for kind in ("rademacher", "gaussian"):
        eps = hutchinson_noise(
            zs.shape, kind, generator=torch.Generator().manual_seed(1), dtype=D64
        )
        _, _, est = dynamics_with_divergence(
            f, t, zs, method="hutchinson", noise=eps, frobenius=True
        )
        se = float(est.std()) / math.sqrt(n)
        assert abs(float(est.mean()) - float(want[0])) < 4 * se


def test_regularised_solve_integrates_kinetic_energy_and_frobenius_of_a_linear_field():
    # f = A z: z(t) = e^{At} x, K = ∫_0^T ‖A e^{At} x‖² dt, J = T ‖A‖_F² (constant Jacobian)
    A = torch.tensor([[0.3, -1.0], [0.5, -0.4]], dtype=D64)
    T = 0.7
    cnf = CNF(_Linear(A.clone()), T=T, rtol=1e-10, atol=1e-10)
    x = torch.randn(4, 2, dtype=D64)
    z, ladj, k, j = cnf.regularised(x)
    z0, l0 = cnf(x)
    torch.testing.assert_close(z, z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj, l0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        j, torch.full_like(j, T * float(A.square().sum())), rtol=1e-8, atol=1e-8
    )
    ts = torch.linspace(0, T, 2001, dtype=D64)  # Simpson's rule on a fine grid
    vals = torch.stack([(x @ torch.linalg.matrix_exp(A * s).T @ A.T).square().sum(1) for s in ts])
    w = torch.ones(len(ts), dtype=D64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    want_k = (w[:, None] * vals).sum(0) * (T / (len(ts) - 1)) / 3
    torch.testing.assert_close(k, want_k, rtol=1e-7, atol=1e-9)


def test_ffjord_loss_adds_the_weighted_regularisers_and_they_are_validated():
    from genmodels.models.cnf import CNFModel, FFJORDConfig, build_ffjord

    info = DataInfo("8gaussians", "points", (2,))
    torch.manual_seed(0)
    tight = dict(hidden=16, depth=2, rtol=1e-9, atol=1e-9, train_rtol=1e-9, train_atol=1e-9)
    plain = build_ffjord(FFJORDConfig(**tight), info).double()
    for p in plain.cnf.field.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(32, 2, dtype=D64) * 2 + 1
    plain.init_from_data(x)
    reg = build_ffjord(FFJORDConfig(**tight, kinetic=0.3, jacobian=0.05), info).double()
    reg.load_state_dict(plain.state_dict())
    nll = plain.loss(x)
    z0, _ = plain.standardize(x)
    _, _, k, j = plain.cnf.regularised(z0)
    torch.testing.assert_close(
        reg.loss(x), nll + 0.3 * k.mean() + 0.05 * j.mean(), rtol=1e-6, atol=1e-8
    )
    assert float(k.mean()) > 0 and float(j.mean()) > 0
    with torch.no_grad():  # log_prob is the model's density whatever the training penalty
        torch.testing.assert_close(reg.log_prob(x), plain.log_prob(x), rtol=0, atol=1e-12)
    reg.loss(x).backward()  # the penalty is differentiable through the solve
    assert all(p.grad is not None for p in reg.cnf.field.parameters())
    for bad in (-0.1, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="kinetic must be a number >= 0"):
            FFJORDConfig(kinetic=bad).validate()
        with pytest.raises(ValueError, match="jacobian must be a number >= 0"):
            CNFModel(plain.cnf, (2,), jacobian=bad)
    planar = get("planar-cnf").build(get("planar-cnf").config(), info)
    with pytest.raises(ValueError, match="trace='field'"):
        CNFModel(planar.cnf, (2,), kinetic=0.1)
