"""check_batch and Standardize: the one way data enters every model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genmodels.distributions import Standardize, check_batch


def test_check_batch_names_argument_expected_shape_and_given():
    x = torch.zeros(4, 1, 8, 8)
    assert check_batch(x, (1, 8, 8)) is x
    with pytest.raises(
        ValueError, match=r"^batch must have shape \(batch, 1, 8, 8\), got \(4, 64\)$"
    ):
        check_batch(torch.zeros(4, 64), (1, 8, 8), "batch")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\), got \(2,\)"):
        check_batch(torch.zeros(2), (2,))
    with pytest.raises(ValueError, match=r"got list"):
        check_batch([[0.0, 0.0]], (2,))


def test_standardize_from_data_and_its_log_determinant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1])
    s = Standardize.identity((3,)).double().set_(x)
    z, ladj = s(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(z.std(0), torch.ones(3, dtype=torch.float64))
    # an elementwise affine map: log|det J| = -Σ log scale, the same for every row
    jac = torch.autograd.functional.jacobian(lambda v: s(v[None])[0][0], x[0])
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac)[1].expand(500))
    back, inv_ladj = s.inverse(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(inv_ladj, -ladj)
    # a constant column: the std is floored, not zero
    const = Standardize.identity((2,)).set_(torch.ones(10, 2))
    assert torch.all(const.scale == 1e-6)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        s.set_(x[:, :2])


class _Owner(nn.Module):
    def __init__(self):
        super().__init__()
        self.standardizer = Standardize.identity((2,))
        self.standardizer.keep_checkpoint_names(self, "data_mean", "data_std")
        self.net = nn.Linear(2, 2)


def test_kept_checkpoint_names_save_and_load_under_the_old_keys():
    model = nn.Sequential(_Owner())  # nested: the owner's prefix is respected
    assert list(model.state_dict()) == ["0.data_mean", "0.data_std", "0.net.weight", "0.net.bias"]
    sd = model.state_dict()
    sd["0.data_mean"] = torch.tensor([1.0, 2.0])
    sd["0.data_std"] = torch.tensor([3.0, 4.0])
    fresh = nn.Sequential(_Owner())
    fresh.load_state_dict(sd)  # strict: no missing or unexpected keys
    assert torch.equal(fresh[0].standardizer.loc, torch.tensor([1.0, 2.0]))
    assert torch.equal(fresh[0].standardizer.scale, torch.tensor([3.0, 4.0]))
    with pytest.raises(ValueError, match="register the Standardize"):
        Standardize.identity((2,)).keep_checkpoint_names(nn.Module(), "a", "b")


def test_check_batch_names_both_dtypes_and_check_count_rejects_non_counts():
    from genmodels.distributions import check_batch, check_count

    x = torch.zeros(0, 2)
    assert check_batch(x, (2,), "x", torch.float32) is x  # an empty batch is a batch
    with pytest.raises(ValueError, match=r"batch has dtype torch.float64 .*batch.float\(\)"):
        check_batch(x.double(), (2,), "batch", torch.float32)
    with pytest.raises(ValueError, match=r"model.to\(torch.int64\)"):
        check_batch(x.long(), (2,), "x", torch.float32)
    assert check_count(3) == 3
    for bad in (0, -2, 1.5, False, None):
        with pytest.raises(ValueError, match=f"n must be a positive integer, got {bad!r}"):
            check_count(bad)
