"""A tiny model for each data kind, trained by ``fit`` in a subprocess (used by
tests/test_data_kinds.py for SIGKILL/resume and 2-process DDP). Not collected by pytest.

    python kinds_worker.py KIND OUT STEPS BATCH [--resume] [--kill-at K]

``--kill-at K``: the process SIGKILLs itself inside its K-th call of ``loss`` (a kill in
the middle of a training step, at a point the test chooses).
"""

import os
import signal
import sys

import torch
from torch import nn

from genmodels.data import SeriesData, TaskData, TensorData
from genmodels.data.batches import Series, Tasks
from genmodels.train import TrainConfig, fit
from genmodels.train.checkpoint import save_tensors


class LabelledModel(nn.Module):
    """Softmax regression on NaN-coded inputs (NaN read as 0 plus a missing indicator)."""

    def __init__(self, d=3, k=3):
        super().__init__()
        self.net = nn.Linear(2 * d, k)

    def loss(self, batch, *, generator=None):
        x, y = batch
        assert y.dtype == torch.long
        miss = torch.isnan(x)
        h = torch.cat([torch.nan_to_num(x), miss.to(x.dtype)], -1).flatten(1)
        return nn.functional.cross_entropy(self.net(h), y)


class SeriesModel(nn.Module):
    """Masked regression of the values on (t, sin t) features; the mean over each series'
    observed values, then over the batch (so equal slices of a batch average to the whole)."""

    def __init__(self, d=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, d))

    def loss(self, batch, *, generator=None):
        assert isinstance(batch, Series) and batch.mask.dtype == torch.bool
        t = batch.times
        pred = self.net(torch.cat([t, torch.sin(t)], -1))
        err = (pred - batch.values).square() * batch.mask
        return (err.sum((1, 2)) / batch.mask.sum((1, 2)).clamp_min(1)).mean()


class TaskModel(nn.Module):
    """A deterministic conditional predictor: mean of y_context fed to an MLP of x_target."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))

    def loss(self, batch, *, generator=None):
        assert isinstance(batch, Tasks)
        c = batch.y_context.mean(1, keepdim=True).expand(-1, batch.x_target.shape[1], -1)
        mu, log_s = self.net(torch.cat([batch.x_target, c], -1)).chunk(2, -1)
        return nn.functional.gaussian_nll_loss(mu, batch.y_target, log_s.exp().square())


def make(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "labelled":
        x = torch.randn(300, 1, 3, generator=g)  # NaN-coded inputs (N, L, 1 + C)
        y = (x[:, 0, 0] > 0).long() + (x[:, 0, 1] > 0.5).long()
        x[torch.rand(x.shape, generator=g) < 0.2] = float("nan")
        return LabelledModel(), TensorData(x, y)
    if kind == "series":
        t = torch.rand(200, 12, 1, generator=g).sort(1).values * 6
        v = torch.cat([torch.sin(t), torch.cos(t)], -1) + 0.1 * torch.randn(200, 12, 2, generator=g)
        v[torch.rand(v.shape, generator=g) < 0.3] = float("nan")
        return SeriesModel(), SeriesData(t, v)
    if kind == "tasks":
        x = torch.linspace(-2, 2, 30).expand(150, 30).unsqueeze(-1).clone()
        a = torch.rand(150, 1, 1, generator=g) * 2 - 1
        return TaskModel(), TaskData(x, a * torch.sin(3 * x), context=(2, 10))
    raise ValueError(kind)


if __name__ == "__main__":
    kind, out, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    model, data = make(kind)
    if "--kill-at" in sys.argv:
        kill_at, calls = int(sys.argv[sys.argv.index("--kill-at") + 1]), [0]
        inner = model.loss

        def loss(batch, *, generator=None):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return inner(batch, generator=generator)

        model.loss = loss
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=1e-2,
        seed=5,
        progress=False,
        device="cpu",
        log_every=5,
        checkpoint_every=10,
        ema_decay=0.9,
    )
    fit(model, data, cfg, out=out, resume="--resume" in sys.argv)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    save_tensors(f"{out}/final-rank{rank}.safetensors", model.state_dict())
    if dist.is_initialized():
        dist.destroy_process_group()
