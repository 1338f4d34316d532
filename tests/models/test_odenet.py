"""ODE-Net: the adjoint's memory is constant in the number of steps; the classifier contract."""

from __future__ import annotations

import torch

from genmodels.models.odenet import ConvField, ODEBlock
from genmodels.registry import DataInfo, get

INFO = DataInfo("digits", "images", (1, 8, 8), num_classes=10)


def _saved_bytes(block: ODEBlock, h: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward during one forward pass."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(h)
    out.sum().backward()
    return total


def test_adjoint_memory_is_constant_in_the_number_of_steps_and_backprop_grows():
    torch.manual_seed(0)
    field = ConvField(8)
    h = torch.randn(4, 8, 8, 8)
    mem = {}
    for adjoint in (False, True):
        for step in (0.25, 0.125):
            block = ODEBlock(field, step_size=step, adjoint=adjoint)
            mem[adjoint, step] = _saved_bytes(block, h)
    assert mem[True, 0.125] == mem[True, 0.25]  # constant: O(1) in the steps
    assert mem[False, 0.125] > 1.8 * mem[False, 0.25]  # grows with them under backprop
    assert mem[True, 0.125] < 0.1 * mem[False, 0.125]


def test_odenet_and_resnet_follow_the_classifier_contract():
    x = torch.randn(5, 1, 8, 8)
    y = torch.randint(0, 10, (5,))
    sizes = {}
    for name in ("odenet", "resnet"):
        spec = get(name)
        assert spec.task == "classifier"
        model = spec.build(spec.make_config(), INFO)
        sizes[name] = sum(p.numel() for p in model.parameters())
        loss = model.loss((x, y))
        loss.backward()
        assert abs(float(loss.detach()) - torch.log(torch.tensor(10.0)).item()) < 1.0
        assert model.predict(x).probs.shape == (5, 10)
    # the same size but for the field's time channels (2 x 9 x channels weights)
    assert 0 < sizes["odenet"] - sizes["resnet"] <= 2 * 9 * 32


def test_odeblock_counts_evaluations_and_matches_odeint_adjoint_gradients():
    torch.manual_seed(1)
    field = ConvField(4).double()
    h = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        block = ODEBlock(field, step_size=1 / 32, adjoint=adjoint)
        field.zero_grad()
        block(h).square().sum().backward()
        assert block.stats.nfe == 128  # 32 rk4 steps of 4 stages
        grads.append([p.grad.clone() for p in field.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # both O(h^4) accurate


def test_odeblock_bad_times_and_options_are_one_clear_error():
    import math

    import pytest

    block = ODEBlock(ConvField(4))
    h = torch.randn(2, 4, 8, 8)
    for times, match in [
        ([0.0, 1.0, 0.5], "strictly increasing or strictly decreasing"),
        ([1.0, 0.0], "strictly increasing; times"),
        ([0.0, math.inf], "NaN or infinite"),
    ]:
        with pytest.raises(ValueError, match=f"ODEBlock: times .*{match}|{match}") as e:
            block(h, torch.tensor(times))
        assert "times" in str(e.value)
    assert block(h, torch.tensor([0.0, 0.5, 1.0])).shape == (3, 2, 4, 8, 8)
    with pytest.raises(ValueError, match="ODEBlock: T must be > 0"):
        ODEBlock(ConvField(4), T=-1.0)
    with pytest.raises(ValueError, match="ODEBlock: step_size must be > 0"):
        ODEBlock(ConvField(4), step_size=0.0)
