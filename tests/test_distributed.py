"""Data parallel training: 2 real processes (gloo on 127.0.0.1) == 1 process, same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from genmodels.train.checkpoint import load_tensors
from genmodels.train.distributed import local_slice

SRC = str(Path(__file__).resolve().parents[1] / "src")

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from genmodels.train import TrainConfig, fit
    from genmodels.train.checkpoint import save_tensors
    import torch.distributed as dist


    class Regressor(nn.Module):
        # loss deterministic given the batch: no noise drawn from the generator
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

        def loss(self, batch, *, generator=None):
            target = torch.sin(3 * batch[:, :1]) * batch[:, 1:]
            return (self.net(batch) - target).square().mean()


    class Data:
        x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
        y = None


    out = sys.argv[1]
    steps = int(sys.argv[2])
    batch = int(sys.argv[3])
    torch.manual_seed(0)
    model = Regressor()
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, seed=3, progress=False,
                      device="cpu", log_every=5, checkpoint_every=10, ema_decay=0.9)
    res = fit(model, Data(), cfg, out=out)
    rank = dist.get_rank() if dist.is_initialized() else 0
    save_tensors(f"{out}/final-rank{rank}.safetensors", model.state_dict())
    if dist.is_initialized():
        dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: Path, out: Path, world: int, steps: int, batch: int):
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "PYTHONPATH": SRC,
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
        else:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
                env.pop(k, None)
        cmd = [sys.executable, str(script), str(out), str(steps), str(batch)]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=120)[1] for p in procs]
    return [p.returncode for p in procs], errs


def test_local_slices_partition_the_global_batch():
    idx = torch.arange(12) * 7
    parts = [local_slice(idx, r, 3) for r in range(3)]
    assert torch.equal(torch.cat(parts), idx)
    assert all(len(p) == 4 for p in parts)


def test_two_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    one, two = tmp_path / "one", tmp_path / "two"
    codes, errs = _launch(script, one, 1, 20, 32)
    assert codes == [0], errs
    codes, errs = _launch(script, two, 2, 20, 32)
    assert codes == [0, 0], errs
    w1 = load_tensors(one / "final-rank0.safetensors")
    w2 = load_tensors(two / "final-rank0.safetensors")
    w2b = load_tensors(two / "final-rank1.safetensors")
    saved = load_tensors(two / "model.safetensors")
    assert w1.keys() == w2.keys() == saved.keys()  # the unwrapped module's keys
    for k in w1:
        scale = w1[k].abs().max().clamp_min(1e-12)
        assert (w1[k] - w2[k]).abs().max() / scale < 1e-5, k
        assert torch.equal(w2[k], w2b[k]), k  # the ranks agree exactly
    # only rank 0 wrote: one metrics file with one line per logged step, one checkpoint
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines] == [5, 10, 15, 20]
    assert len(list(two.glob("checkpoint-*.safetensors"))) == 1
    # training moved the weights (the comparison above is not vacuous)
    torch.manual_seed(0)
    init = torch.nn.Linear(2, 16).weight  # the worker's first layer, same seed
    assert (w1["net.0.weight"] - init).abs().max() > 1e-3


def test_global_batch_not_divisible_is_one_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    cmd = [sys.executable, "-m", "genmodels", "train", "ddpm", "--data", "moons"]
    cmd += ["--steps", "2", "--batch-size", "33", "--out", str(tmp_path / "r"), "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "not divisible" in err[0] and "33" in err[0]
    # every other rank fails the same way, with exit code 2 and nothing on stderr: one line
    env["RANK"] = env["LOCAL_RANK"] = "1"
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_one_clear_error(tmp_path):
    cmd = [sys.executable, "-m", "genmodels", "train", "ddpm", "--data", "moons", "--steps", "2"]
    cmd += ["--device", "cuda", "--out", str(tmp_path / "r"), "--no-progress"]
    p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]
