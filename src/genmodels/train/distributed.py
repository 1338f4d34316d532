"""Data parallel training under ``torchrun`` (gloo on CPU, NCCL on GPU).

``torchrun --nproc_per_node N -m genmodels train ...`` starts N copies of the
command; :func:`fit` calls :func:`setup` and then, on every step:

- draws the **global** batch indices from the generator seeded by (seed, step),
  identical on every rank, and keeps rank r's contiguous slice
  (:func:`local_slice`); ``--batch-size`` is the global batch;
- computes ``model.loss`` on the slice with the noise generator seeded by
  (seed, step, 1 + rank);
- averages the gradients over ranks with one ``all_reduce`` per step
  (:func:`average_gradients`) before the optimizer step.

Why an explicit all-reduce rather than wrapping the model in
``DistributedDataParallel``: the loop's contract is ``model.loss(batch,
generator=)``, a method, and DDP only synchronises gradients of a call to the
wrapper's ``forward``. Averaging the gradients after ``backward`` keeps the
contract untouched for every model, is the same mathematics (the mean of the
per-rank mean losses is the mean loss of the global batch when slices have equal
size), and is deterministic: all ranks apply the identical averaged gradient, so
their weights stay equal without broadcasting them. It gives up DDP's overlap of
communication with the backward pass, which does not matter for models this size.

Only rank 0 writes checkpoints, metrics, weights and pictures; it saves the model
itself (no wrapper), so a run trained on N processes loads and resumes like one
trained on one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "setup",
    "world",
    "local_slice",
    "average_gradients",
    "broadcast_module",
    "all_mean",
    "is_distributed",
    "shutdown",
]


def is_distributed() -> bool:
    """True when launched by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device, batch_size: int) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (if any); returns ``(rank, world, device)``.

    On CUDA each rank takes GPU ``LOCAL_RANK``. Raises ``ValueError`` when the
    global batch does not split evenly over the processes.
    """
    if not is_distributed():
        return 0, 1, device
    world_size = int(os.environ["WORLD_SIZE"])
    if batch_size % world_size:
        raise ValueError(
            f"--batch-size {batch_size} (the global batch) is not divisible by the "
            f"{world_size} processes; choose a multiple of {world_size}"
        )
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def local_slice(idx: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of the global batch indices ``idx``."""
    per = idx.shape[0] // world_size
    return idx[rank * per : (rank + 1) * per]


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Replace every gradient by its mean over the processes (one flat all-reduce)."""
    if world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if len(grads) != len(params):
        # a parameter without gradient on this rank: give it zeros so every rank
        # contributes the same flat vector
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world_size)
    for g, f in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(f.view_as(g))


def barrier() -> None:
    """Wait for every process (no-op outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_mean(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """The mean of a tensor over processes (for the logged loss)."""
    if world_size == 1:
        return value
    v = value.detach().clone()
    dist.all_reduce(v)
    return v / world_size


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, world_size: int) -> None:
    """Copy rank 0's parameters and buffers to every process (a safety net: the CLI
    already seeds the initialisation identically on every rank)."""
    if world_size == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def shutdown() -> None:
    """Leave the process group (no-op outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
