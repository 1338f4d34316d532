"""Uniform dequantisation as a training option of the diffusion models (#17): ``ddpm``,
``subvp`` and ``vesde`` with ``dequantize="uniform"`` train on ``x + w u`` and report the
PF-ODE NLL of the dequantised images in the flows' bits/dim convention."""

import math

import pytest
import torch

from genmodels import registry
from genmodels.config import apply_overrides
from genmodels.data import DataInfo, bits_per_dim
from genmodels.evaluate.density import _pf_ode_dequantized
from genmodels.models.sde import dequantization_width, uniform_dequantize

DIGITS = DataInfo("digits", "images", (1, 8, 8), num_classes=10, levels=17)
MOONS = DataInfo("moons", "points", (2,), num_classes=2)


def test_the_width_is_one_bin_and_bad_settings_are_clear_errors():
    assert dequantization_width("none", 17) is None
    assert dequantization_width("uniform", 17) == 0.125  # digits: levels k/8 - 1
    with pytest.raises(ValueError, match="dequantize must be one of"):
        dequantization_width("variational", 17)
    with pytest.raises(ValueError, match="needs quantised data"):
        dequantization_width("uniform", None)
    x = torch.tensor([-1.0, 0.0, 1.0]).repeat(2000)
    d = uniform_dequantize(x, 0.125, torch.Generator().manual_seed(0))
    assert bool(((d >= x) & (d < x + 0.125)).all())  # the bin of x is [x, x + w)
    assert float((d - x).mean()) == pytest.approx(0.0625, abs=0.003)


def _build(name, info, **sets):
    spec = registry.get(name)
    cfg = apply_overrides(spec.make_config(), sets) if sets else spec.make_config()
    torch.manual_seed(0)
    return spec.build(cfg, info)


@pytest.mark.parametrize("name", ["ddpm", "subvp", "vesde"])
def test_the_loss_is_the_plain_loss_on_the_dequantised_batch(name):
    """``u`` is drawn first from the step's generator, then the model's own noise: the
    dequantised model's loss equals the plain model's on ``x + w u``."""
    deq = _build(name, DIGITS, dequantize="uniform").eval()
    plain = _build(name, DIGITS).eval()
    plain.load_state_dict(deq.state_dict())
    x = (torch.randint(0, 17, (6, 1, 8, 8)) / 8.0 - 1.0).float()
    a = deq.loss(x, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    b = plain.loss(uniform_dequantize(x, 0.125, g), generator=g)
    torch.testing.assert_close(a, b)
    c = plain.loss(x, generator=torch.Generator().manual_seed(1))
    assert float((a - c).abs()) > 1e-4  # the option changes what is trained


@pytest.mark.parametrize("name", ["ddpm", "subvp", "vesde"])
def test_the_option_needs_quantised_data_and_is_validated(name):
    assert _build(name, DIGITS).dequant_width is None  # off by default
    assert _build(name, DIGITS, dequantize="uniform").dequant_width == 0.125
    with pytest.raises(ValueError, match="needs quantised data"):
        _build(name, MOONS, dequantize="uniform")
    with pytest.raises(ValueError, match="dequantize must be one of"):
        registry.get(name).make_config().__class__(dequantize="yes").validate()


class _UniformOnTheDomain(torch.nn.Module):
    """A density uniform on the dequantised domain [-1, 1 + w)^D; records its inputs."""

    dequant_width = 0.125

    def __init__(self):
        super().__init__()
        self.seen = []

    def log_prob(self, x, *, generator=None, stats=None):
        self.seen.append(x)
        stats["nfe"] = 7
        d = x[0].numel()
        return torch.full((len(x),), -d * math.log(2 + self.dequant_width), dtype=torch.float64)


def test_evaluation_dequantises_and_uses_the_flows_convention():
    """Uniform on [-1, 1 + w)^D is the uniform distribution over the 17 levels once
    dequantised: exactly log2(17) bits/dim in the discrete data's convention."""
    m = _UniformOnTheDomain()
    x = (torch.randint(0, 17, (50, 1, 8, 8)) / 8.0 - 1.0).float()
    out = _pf_ode_dequantized(m, x, DIGITS, n=20, seed=0, generator=torch.Generator())
    assert out["pf_ode_n"] == 20 and out["pf_ode_nfe"] == 7
    assert out["bits_per_dim_pf_ode"] == pytest.approx(math.log2(17), abs=1e-9)
    assert out["bits_per_dim_pf_ode"] == bits_per_dim(out["nll_pf_ode_nats"], DIGITS)
    seen = m.seen[0]
    k = torch.floor((seen + 1) * 8)  # each value sits in its level's bin [x, x + w)
    assert bool((seen - (k / 8 - 1) < 0.125).all()) and bool((seen > -1).all())
    assert float((seen - (k / 8 - 1)).std()) > 0.02  # noise, not the grid values


def test_the_image_subset_is_n_or_all_and_bad_values_are_clear_errors():
    """``bound_n`` (``genmodels evaluate --bound-n N|all``) sets the PF-ODE's images: the
    default 100 (capped at the split), N, or ``"all"`` of them; the same rows for the same
    seed and N whatever the model."""
    x = (torch.randint(0, 17, (150, 1, 8, 8), generator=torch.Generator().manual_seed(0)) / 8.0
         - 1.0).float()  # fmt: skip
    g = torch.Generator()
    run = lambda n: _pf_ode_dequantized(  # noqa: E731
        _UniformOnTheDomain(), x, DIGITS, n=n, seed=0, generator=g.manual_seed(0)
    )
    assert run(None)["pf_ode_n"] == 100 and run(7)["pf_ode_n"] == 7
    assert run("all")["pf_ode_n"] == 150 and run(10**6)["pf_ode_n"] == 150
    for bad in (0, -3, True, "some", 2.5):
        with pytest.raises(ValueError, match="bound_n must be a positive integer or 'all'"):
            run(bad)


def test_cli_bound_n_takes_a_count_or_all(tmp_path, capsys):
    from genmodels.cli import _count_or_all, main

    assert _count_or_all("all") == "all" and _count_or_all("ALL") == "all"
    assert _count_or_all("360") == 360
    for bad in ("0", "-1", "some", "2.5"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", str(tmp_path), "--bound-n", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--bound-n" in err[0] and "positive integer or 'all'" in err[0]
