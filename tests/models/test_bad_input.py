"""Density models on bad or edge-case input: one clear error (or the torch.distributions answer).

Point flows, image flows, the generative flow classifier and the VAE share the checks of
``genmodels.distributions.standardize`` (``check_batch`` with the model's dtype, ``check_count``);
an empty batch is a batch and gets an empty ``(0,)`` result, as in ``torch.distributions``.
"""

from __future__ import annotations

import pytest
import torch

from genmodels.models import classifier, flows, vae  # noqa: F401  (register the models)
from genmodels.registry import DataInfo, get

POINTS = DataInfo("moons", "points", (2,), num_classes=3)
IMAGES = DataInfo("tiny", "images", (2, 4, 4), None, 17)
CASES = {
    "realnvp": ("realnvp", POINTS, {"transforms": 2}),
    "nsf": ("nsf", POINTS, {"transforms": 2}),
    "realnvp-images": ("realnvp", IMAGES, {}),
    "flow-classifier": ("flow-classifier", POINTS, {}),
    "vae": ("vae", POINTS, {}),
    "vae-images": ("vae", IMAGES, {}),
}


def _build(case: str):
    name, info, over = CASES[case]
    torch.manual_seed(0)
    spec = get(name)
    model = spec.build(spec.make_config(over), info)
    return model.eval(), info


def _data(info: DataInfo, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if info.kind == "images":  # stored levels k w - 1
        k = torch.randint(info.levels, (n, *info.event_shape), generator=g)
        return 2 * k.float() / (info.levels - 1) - 1
    return torch.randn(n, *info.event_shape, generator=g)


def _density(model):
    """The model's per-example density method: log_prob where it has one, else nll_bound."""
    return model.log_prob if hasattr(model, "log_prob") else model.nll_bound


@pytest.mark.parametrize("case", list(CASES))
def test_empty_batch_gives_an_empty_result(case):
    model, info = _build(case)
    x = _data(info, 3)
    empty = x[:0]
    methods = [m for m in ("log_prob", "nll_bound") if hasattr(model, m)]
    for m in methods:
        out = getattr(model, m)(empty, **({"generator": None} if m == "nll_bound" else {}))
        assert out.shape == (0,) and out.dtype == x.dtype
    if hasattr(model, "log_prob"):  # and it changes nothing in a batch it is part of
        torch.testing.assert_close(model.log_prob(torch.cat([empty, x])), model.log_prob(x))


@pytest.mark.parametrize("case", list(CASES))
def test_float64_input_to_a_float32_model_names_both_dtypes_and_the_fixes(case):
    model, info = _build(case)
    x = _data(info, 3)
    with pytest.raises(ValueError, match=r"x has dtype torch.float64 .* torch.float32") as e:
        _density(model)(x.double())
    assert "model.double()" in str(e.value) and "x.float()" in str(e.value)
    # the first advice works: in float64 the model gives the float32 answer (log_prob), or a
    # finite bound (the VAE's nll_bound draws float64 noise, which differs from float32 noise)
    hi = _density(model.double())(x.double())
    assert hi.dtype == torch.float64 and bool(torch.isfinite(hi).all())
    if hasattr(model, "log_prob"):
        torch.testing.assert_close(hi.float(), _density(model.float())(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [-1, 0, 2.0, True, "3"])
def test_sample_count_must_be_a_positive_integer(case, n):
    model, _ = _build(case)
    with pytest.raises(ValueError, match=f"n must be a positive integer, got {n!r}"):
        model.sample(n)


@pytest.mark.parametrize("case", list(CASES))
def test_sample_shape_and_dtype_follow_the_model(case):
    model, info = _build(case)
    s = model.double().sample(3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, *info.event_shape) and s.dtype == torch.float64
