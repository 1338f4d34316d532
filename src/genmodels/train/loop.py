"""One training loop for every model of the library.

The loop only calls ``model.loss(batch, generator=g)``. It owns all randomness:
the batch indices of step ``k`` come from a generator seeded by ``(seed, k)``
and the model's noise from another seeded by ``(seed, k, rank)``, so a run that
is killed and resumed from a checkpoint reaches bit-for-bit the weights of an
uninterrupted run. Adam/AdamW, warm-up, cosine decay, gradient clipping, EMA,
a progress bar, metric logging, atomic checkpoints, resume, early stopping on a
validation split and a non-finite-loss guard live here, once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..config import apply_overrides, to_json_dict
from . import checkpoint as ckpt
from . import distributed as ddp
from .device import resolve_device, resolve_dtype

__all__ = ["TrainConfig", "fit", "FitResult", "NonFiniteLossError", "step_generator"]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Settings of :func:`fit` (every field can be set by ``--set key=value``).

    Attributes:
        steps: optimizer steps in total.
        batch_size: examples per step (the global batch under torchrun).
        lr: peak learning rate.
        optimizer: ``"adam"`` or ``"adamw"``.
        weight_decay: AdamW's decoupled weight decay (Adam: L2 added to the gradient).
        betas: Adam's (β1, β2).
        warmup_steps: linear warm-up of the learning rate from 0.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at ``steps``).
        grad_clip: clip the global gradient norm to this value (None: off).
        ema_decay: exponential moving average of the weights (None: off).
        ema_start: the EMA copies the raw weights for the first ``ema_start`` steps and
            averages only after them (``update_after_step`` in ema-pytorch and diffusers'
            EMAModel). With a short budget an EMA that starts at the initialisation still
            holds ``decay**steps`` of it: 0.999**1000 = 0.37, and a DDPM's samples are noise.
        seed: seeds the weights' initialisation, batches and the model's noise.
        checkpoint_every: steps between resumable checkpoints (and at the end).
        log_every: steps between lines of ``metrics.jsonl``.
        val_fraction: fraction of the training data held out for validation
            (0: none). With it, the run keeps the best-validation weights.
        val_every: steps between validation evaluations.
        patience: stop after this many evaluations without improvement (0: never).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"`` or ``"float64"``.
        progress: show a progress bar.
    """

    steps: int = 5000
    batch_size: int = 1024
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    grad_clip: float | None = None
    ema_decay: float | None = None
    ema_start: int = 0
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    val_fraction: float = 0.0
    val_every: int = 500
    patience: int = 0
    device: str = "auto"
    dtype: str = "float32"
    progress: bool = True

    def validate(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "val_every"):
            positive_int(name)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        if self.warmup_steps < 0 or self.patience < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps, patience and weight_decay must be >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) or null, got {self.ema_decay!r}")
        if not isinstance(self.ema_start, int) or self.ema_start < 0:
            raise ValueError(f"ema_start must be an integer >= 0, got {self.ema_start!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        resolve_dtype(self.dtype)
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied and checked."""
        return apply_overrides(self, changes, what="train config")


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model and where things went."""

    model: nn.Module
    steps: int
    final_loss: float
    out: Path | None
    stopped_early: bool = False
    best_val_loss: float | None = None
    history: list[dict] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------
# Randomness: one generator per (seed, step, stream), nothing global.
# ---------------------------------------------------------------------------

_MASK = (1 << 64) - 1


def _mix(*parts: int) -> int:
    """SplitMix64 over the parts: a well-spread 63-bit seed."""
    z = 0x9E3779B97F4A7C15
    for p in parts:
        z = (z + (p & _MASK) + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z ^= z >> 31
    return z >> 1


def step_generator(gen: torch.Generator, seed: int, step: int, stream: int) -> torch.Generator:
    """Re-seed ``gen`` for ``(seed, step, stream)`` and return it."""
    gen.manual_seed(_mix(seed, step, stream))
    return gen


# ---------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------


class _EMA:
    """θ_ema ← decay θ_ema + (1 - decay) θ after every step (one fused call)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, copy: bool = False) -> None:
        """One step of the average; ``copy``: take the raw weights as they are."""
        w = 1.0 if copy else 1.0 - self.decay
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], w)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the EMA values in place of the parameters."""
        sd = dict(model.state_dict())
        sd.update(dict(zip(self.names, self.shadow)))
        return sd

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for s, n in zip(self.shadow, self.names):
            s.copy_(tensors[n])


# ---------------------------------------------------------------------------
# Optimizer state <-> flat tensors + JSON (safetensors holds tensors only).
# ---------------------------------------------------------------------------


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    try:  # one fused kernel for every tensor (CPU since torch 2.4): less Python per step
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(params, **kwargs)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    lr = cfg.lr
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(cfg.steps - cfg.warmup_steps, 1)
        frac = (step - cfg.warmup_steps) / span
        return 0.5 * lr * (1 + math.cos(math.pi * min(frac, 1.0)))
    return lr


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def _split_validation(n: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    if cfg.val_fraction <= 0:
        return torch.arange(n), None
    g = torch.Generator().manual_seed(_mix(cfg.seed, 0xBA1))
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * cfg.val_fraction)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _batch(x, y, idx, uses_labels):
    return (x[idx], y[idx]) if uses_labels else x[idx]


@torch.no_grad()
def _validation_loss(model, x, y, uses_labels, cfg, device, batch_size=2048) -> float:
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device)
    total, count = 0.0, 0
    for k, start in enumerate(range(0, x.shape[0], batch_size)):
        idx = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        step_generator(gen, cfg.seed, k, 0x5A1)
        loss = model.loss(_batch(x, y, idx, uses_labels), generator=gen)
        total += float(loss) * len(idx)
        count += len(idx)
    model.train(was_training)
    return total / count


def fit(
    model: nn.Module,
    data,
    config: TrainConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    run_info: dict | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` by minimising ``model.loss(batch, generator=g)``.

    Args:
        model: an ``nn.Module`` with ``loss(batch, *, generator)``; the batch is the
            tensor ``x[idx]`` or, if ``model.uses_labels``, the tuple ``(x[idx], y[idx])``.
            An optional ``model.init_from_data(x)`` is called once before step 0.
        data: a :class:`genmodels.data.Dataset` (anything with ``.x`` and ``.y``).
        config: a :class:`TrainConfig` (defaults if None).
        out: run directory for checkpoints, metrics, weights and pictures (None:
            train in memory only).
        resume: continue from the last checkpoint in ``out``.
        run_info: extra JSON fields for ``config.json`` (the CLI stores the model
            name, its config and the data set there, so :func:`genmodels.load` can
            rebuild the model).
    Returns:
        A :class:`FitResult`; the model holds the final weights (EMA weights where
        EMA is on; the best-validation weights where a validation split is used).

    Example::

        model = genmodels.registry.get("ddpm").build(DDPMConfig(), data.info)
        fit(model, genmodels.data.load("moons"), TrainConfig(steps=1000), out="runs/x")
    """
    cfg = config if config is not None else TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    cfg.validate()
    if not hasattr(model, "loss"):
        raise TypeError(f"{type(model).__name__} has no loss(batch, generator=) method")
    uses_labels = bool(getattr(model, "uses_labels", False))
    x_all = getattr(data, "x", None)
    if not isinstance(x_all, torch.Tensor) or x_all.dim() < 2 or x_all.shape[0] < 1:
        raise ValueError("data.x must be a tensor of shape (n, ...) with n >= 1")
    y_all = getattr(data, "y", None)
    if uses_labels and y_all is None:
        raise ValueError(f"{type(model).__name__} needs labelled data (data.y is None)")

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    # under torchrun: join the process group; rank 0 alone writes (train/distributed.py)
    rank, world_size, device = ddp.setup(device, cfg.batch_size)
    writer = rank == 0
    torch.manual_seed(_mix(cfg.seed, 0x1417))  # anything a model draws outside `generator`
    model.to(device=device, dtype=dtype)
    ddp.broadcast_module(model, world_size)
    train_idx, val_idx = _split_validation(x_all.shape[0], cfg)
    x = x_all[train_idx].to(device=device, dtype=dtype)
    y = y_all[train_idx].to(device) if (uses_labels and y_all is not None) else None
    if val_idx is not None:
        x_val = x_all[val_idx].to(device=device, dtype=dtype)
        y_val = y_all[val_idx].to(device) if y is not None else None
    n = x.shape[0]

    out_dir = Path(out) if out is not None else None
    state_path = out_dir / "checkpoint.json" if out_dir else None
    if resume and (out_dir is None or not state_path.exists()):
        raise ValueError(f"--resume: no checkpoint found in {out_dir}")
    if out_dir is not None and writer:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"out directory {out_dir} is not writable ({e.strerror})") from e

    opt = _make_optimizer(model, cfg)
    ema = _EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    start, wall, best_val, bad_evals, best_state, last_good = 0, 0.0, math.inf, 0, None, None
    history: list[dict] = []

    if resume:
        state = ckpt.read_json(state_path)
        tensors = ckpt.load_tensors(out_dir / state["file"], sha256=state["sha256"], device=device)
        ckpt.load_state_into(
            model,
            {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
            out_dir / state["file"],
        )
        _optimizer_from_flat(opt, tensors, state["optimizer"])
        if ema is not None:
            ema.load({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
            if state["step"] <= cfg.ema_start:  # still copying: the shadow is the weights
                ema.shadow = [p.detach().clone() for p in ema.params]
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"].cpu())
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        best_state = best or None
        start, wall = state["step"], state["wall"]
        best_val = state["best_val"] if state.get("best_val") is not None else math.inf
        bad_evals = state.get("bad_evals", 0)
        last_good = start
        if writer:
            _truncate_metrics(out_dir / "metrics.jsonl", start)
    else:
        init = getattr(model, "init_from_data", None)
        if callable(init):
            init(x)
            if ema is not None:  # data-dependent init changes parameters (ActNorm)
                ema.shadow = [p.detach().clone() for p in ema.params]
        if out_dir is not None and writer:
            (out_dir / "metrics.jsonl").write_text("")

    run_cfg = {
        **(run_info or {}),
        "train_config": to_json_dict(cfg),
        "genmodels_version": __version__,
        "torch_version": torch.__version__,
        "seed": cfg.seed,
    }
    if out_dir is not None and writer:
        if resume and (out_dir / "config.json").exists():
            prev = ckpt.read_json(out_dir / "config.json")
            run_cfg["weights"] = prev.get("weights", {})
        ckpt.write_json(out_dir / "config.json", run_cfg)

    def save_checkpoint(step: int) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in zip(ema.names, ema.shadow)})
        opt_tensors, opt_meta = _optimizer_to_flat(opt)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        fname = f"checkpoint-{step:08d}.safetensors"
        sha = ckpt.save_tensors(out_dir / fname, tensors)
        old = None
        if state_path.exists():
            try:
                old = ckpt.read_json(state_path).get("file")
            except ckpt.CheckpointError:
                old = None
        meta = {
            "step": step,
            "file": fname,
            "sha256": sha,
            "wall": wall,
            "optimizer": opt_meta,
            "best_val": best_val if math.isfinite(best_val) else None,
            "bad_evals": bad_evals,
        }
        ckpt.write_json(state_path, meta)
        if old and old != fname:
            try:
                (out_dir / old).unlink()
            except FileNotFoundError:
                pass

    gen_idx = torch.Generator()
    gen_noise = torch.Generator(device=device)
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not cfg.progress or not writer,
        desc=type(model).__name__,
        unit="step",
        dynamic_ncols=True,
    )
    metrics_file = open(out_dir / "metrics.jsonl", "a") if out_dir and writer else None  # noqa: SIM115
    running = torch.zeros((), device=device, dtype=torch.float64)
    running_n, last_loss, stopped_early = 0, float("nan"), False
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    try:
        for step in range(start, cfg.steps):
            idx = torch.randint(
                0, n, (cfg.batch_size,), generator=step_generator(gen_idx, cfg.seed, step, 0)
            )
            if world_size > 1:  # the global batch's indices, this rank's contiguous slice
                idx = ddp.local_slice(idx, rank, world_size)
            if idx.device != x.device:
                idx = idx.to(x.device)
            batch = _batch(x, y, idx, uses_labels)
            loss = model.loss(batch, generator=step_generator(gen_noise, cfg.seed, step, 1 + rank))
            if loss.dim() != 0:
                raise ValueError(f"model.loss must return a scalar, got shape {tuple(loss.shape)}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ddp.average_gradients(params, world_size)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            lr = _lr_at(step, cfg)
            if cfg.warmup_steps or cfg.lr_schedule != "constant":
                for g in opt.param_groups:
                    g["lr"] = lr
            opt.step()
            if ema is not None:
                ema.update(copy=step + 1 <= cfg.ema_start)
            running += loss.detach()
            running_n += 1
            done = step + 1
            is_log = done % cfg.log_every == 0 or done == cfg.steps
            is_ckpt = out_dir is not None and (
                done % cfg.checkpoint_every == 0 or done == cfg.steps
            )
            is_val = val_idx is not None and (done % cfg.val_every == 0 or done == cfg.steps)
            if is_log or is_ckpt or is_val:
                mean_loss = float(ddp.all_mean(running, world_size)) / running_n
                if not math.isfinite(mean_loss):
                    where = (
                        f"; the last good checkpoint (step {last_good}) is kept in {out_dir}"
                        if last_good is not None
                        else ""
                    )
                    raise NonFiniteLossError(
                        f"non-finite loss ({mean_loss}) between steps {done - running_n + 1} and "
                        f"{done}{where}. Try a smaller --lr or --set grad_clip=1.0"
                    )
                last_loss = mean_loss
                elapsed = wall + (time.perf_counter() - t0)
                rec = {"step": done, "loss": mean_loss, "lr": lr, "wall": round(elapsed, 4)}
                running.zero_()
                running_n = 0
                if is_val:
                    with _ema_weights(ema):
                        v = _validation_loss(model, x_val, y_val, uses_labels, cfg, device)
                    rec["val_loss"] = v
                    if v < best_val - 1e-12:
                        best_val, bad_evals = v, 0
                        src = ema.state_dict(model) if ema is not None else model.state_dict()
                        best_state = {k: t.detach().clone() for k, t in src.items()}
                    else:
                        bad_evals += 1
                history.append(rec)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
                if is_ckpt or (is_val and cfg.patience and bad_evals >= cfg.patience):
                    wall = elapsed
                    t0 = time.perf_counter()
                    if out_dir is not None and writer:
                        save_checkpoint(done)
                        last_good = done
                if is_val and cfg.patience and bad_evals >= cfg.patience:
                    stopped_early = True
                    bar.update(1)
                    break
            bar.update(1)
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()

    final_step = history[-1]["step"] if history else start
    # Final weights: best-validation weights, else EMA, else raw.
    raw_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        final_state = best_state
    elif ema is not None:
        final_state = ema.state_dict(model)
    else:
        final_state = raw_state
    model.load_state_dict(final_state)
    model.eval()
    if out_dir is not None and writer:
        from ..plot import save_run_pictures

        save_run_pictures(model, data, history, out_dir, seed=cfg.seed)
        weights = {"model": {"file": "model.safetensors"}}
        weights["model"]["sha256"] = ckpt.save_tensors(out_dir / "model.safetensors", final_state)
        if final_state is not raw_state:
            sha = ckpt.save_tensors(out_dir / "model_raw.safetensors", raw_state)
            weights["raw"] = {"file": "model_raw.safetensors", "sha256": sha}
        run_cfg["weights"] = weights
        run_cfg["final_step"] = final_step
        run_cfg["stopped_early"] = stopped_early
        ckpt.write_json(out_dir / "config.json", run_cfg)
    return FitResult(
        model=model,
        steps=final_step,
        final_loss=last_loss,
        out=out_dir,
        stopped_early=stopped_early,
        best_val_loss=best_val if math.isfinite(best_val) else None,
        history=history,
    )


class _ema_weights:
    """Context manager: the EMA weights swapped into the model, then swapped back."""

    def __init__(self, ema: _EMA | None):
        self.ema = ema

    def __enter__(self):
        if self.ema is not None:
            self.saved = [p.detach().clone() for p in self.ema.params]
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.ema.params], self.ema.shadow)

    def __exit__(self, *exc):
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.ema.params], self.saved)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by the kill
    ckpt.atomic_write_bytes(path, ("\n".join(keep) + ("\n" if keep else "")).encode())
