"""The probability flow ODE's ``variable`` through the models' ``log_prob`` and the CLI."""

import math

import pytest
import torch

from genmodels.models.ddpm import DDPM, NoiseSchedule
from genmodels.models.samplers import pf_ode_log_prob
from genmodels.models.sde import score_from_eps
from genmodels.nn import TimeMLP
from genmodels.registry import DataInfo, get


def _ddpm():
    torch.manual_seed(0)
    return DDPM(TimeMLP(2, 16, 2, 8), (2,), NoiseSchedule.linear(50), standardize=True).eval()


def test_ddpm_log_prob_takes_the_variable():
    m = _ddpm()
    m.init_from_data(torch.tensor([[0.0, 1.0], [2.0, -3.0], [1.0, 0.0]]))
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(1)).double()
    m = m.double()
    sde = m.sde
    lp_t = m.log_prob(x)
    for v in ("sigma", "log_sigma"):
        lp = m.log_prob(x, variable=v)
        want = pf_ode_log_prob(score_from_eps(m.eps_model, sde), sde, m._to_model(x), variable=v)
        torch.testing.assert_close(lp, want - m.data_std.log().sum(), rtol=0, atol=1e-9)
        # the same likelihood in other coordinates, up to the solvers' errors at rtol = atol =
        # 1e-5 (about 5e-3 nats here: an untrained net, T = 50); a wrong log-det of x -> x/m
        # would be off by D log(m(1)/m(eps)) ≈ 0.5 nats
        d = (lp - lp_t).abs()
        assert float(d.mean()) < 1e-2 and float(d.max()) < 3e-2, v
        assert float((lp - lp_t).abs().max()) > 0  # a different solve, not the t one again
    with pytest.raises(ValueError, match="variable must be one of 't', 'sigma', 'log_sigma'"):
        m.log_prob(x, variable="lambda")


@pytest.mark.parametrize("name", ["subvp", "vesde"])
def test_score_sde_log_prob_takes_the_variable(name):
    spec = get(name)
    torch.manual_seed(0)
    cfg = spec.make_config({"width": 16, "depth": 2, "emb_dim": 8})
    m = spec.build(cfg, DataInfo("moons", "points", (2,))).double().eval()
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(2)).double()
    lp_t, lp_s = m.log_prob(x), m.log_prob(x, variable="sigma")
    assert bool(torch.isfinite(lp_s).all())
    assert float((lp_s - lp_t).abs().max()) < 2e-3
    with pytest.raises(ValueError, match="variable must be one of"):
        m.log_prob(x, variable="sigma_bar")


def test_evaluate_model_refuses_a_variable_for_a_model_without_a_pf_ode():
    from genmodels.evaluate import evaluate_model

    spec = get("realnvp")
    flow = spec.build(spec.make_config({}), DataInfo("moons", "points", (2,)))
    with pytest.raises(ValueError, match="no probability flow ODE"):
        evaluate_model(flow, "moons", task="density", n=10, variable="sigma")
    with pytest.raises(ValueError, match="variable must be one of"):
        evaluate_model(_ddpm(), "moons", task="density", n=10, variable="x")


def test_cli_sample_and_evaluate_take_the_variable(tmp_path, capsys, monkeypatch):
    from genmodels.cli import main

    run = tmp_path / "ddpm"
    tiny = ["--set", "timesteps=50", "--set", "width=16", "--set", "depth=2", "--set", "emb_dim=8"]
    args = ["train", "ddpm", "--data", "moons", "--steps", "20", "--batch-size", "64"]
    assert main([*args, "--out", str(run), "--no-progress", *tiny]) == 0
    npy = tmp_path / "s.npy"
    outs = {}
    for v in ("t", "sigma", "log_sigma"):
        assert main(["sample", str(run), "--n", "30", "--out", str(npy), "--sampler", "ode",
                     "--variable", v]) == 0  # fmt: skip
        import numpy as np

        outs[v] = torch.from_numpy(np.load(npy))
    # the same map from the same x_T, solved in three coordinate systems (dopri5 at 1e-5)
    assert float((outs["sigma"] - outs["t"]).abs().max()) < 1e-2
    assert float((outs["log_sigma"] - outs["t"]).abs().max()) < 1e-2
    capsys.readouterr()
    for extra, message in [
        (["--sampler", "ode", "--variable", "lambda"], "variable must be one of"),
        (["--variable", "sigma"], "use it with --sampler ode"),
        (["--sampler", "ddim", "--variable", "sigma"], "use it with --sampler ode"),
    ]:
        assert main(["sample", str(run), "--n", "5", "--out", str(npy), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # evaluate: the flag reaches evaluate_run (its work is tested below through evaluate_model)
    import genmodels.evaluate as ev

    seen = {}
    monkeypatch.setattr(ev, "evaluate_run", lambda run_dir, **kw: seen.update(kw) or {})
    assert main(["evaluate", str(run), "--sampler", "ode", "--variable", "log_sigma"]) == 0
    assert seen["variable"] == "log_sigma" and seen["sampler"] == "ode"
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--n", "100", "--variable", "sig"]) == 2
    err = capsys.readouterr().err
    assert "variable must be one of" in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_model_passes_the_variable_to_the_likelihood_and_the_ode_sampler(monkeypatch):
    from genmodels.evaluate import evaluate_model

    m = _ddpm()
    calls = []
    for name in ("log_prob", "sample"):
        orig = getattr(m, name)

        def spy(*a, _orig=orig, _name=name, **kw):
            calls.append((_name, kw.get("variable"), kw.get("sampler")))
            return _orig(*a, **kw)

        monkeypatch.setattr(m, name, spy)
    quick = dict(task="density", n=50, nll_n=40, bound_n=10, test_n=200)
    out = evaluate_model(m, "moons", **quick, sampler="ode",
                         variable="log_sigma")  # fmt: skip
    assert out["eval_variable"] == "log_sigma" and math.isfinite(out["nll_nats"])
    assert ("sample", "log_sigma", "ode") in calls and ("log_prob", "log_sigma", None) in calls
    # another sampler: the variable is the likelihood's alone
    calls.clear()
    evaluate_model(m, "moons", **quick, sampler="ddim", variable="sigma")
    assert ("sample", None, "ddim") in calls and ("log_prob", "sigma", None) in calls
