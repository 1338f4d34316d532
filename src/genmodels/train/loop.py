"""One training loop for every model of the library.

The loop only asks the data for a batch (``data.batch(size, generator)``, the batch
protocol of :mod:`genmodels.data.base`) and calls ``model.loss(batch, generator=g)``;
it knows nothing of what a batch holds. It owns all randomness: the batch of step ``k``
is drawn from a generator seeded by ``(seed, k)`` and the model's noise from another
seeded by ``(seed, k, rank)``, so a run that is killed and resumed from a checkpoint
reaches bit-for-bit the weights of an uninterrupted run. Adam/AdamW, warm-up, cosine
decay, gradient clipping, EMA, a progress bar, metric logging, atomic checkpoints,
resume, early stopping on a validation split and a non-finite-loss guard live here,
once; what a checkpoint holds is :class:`~genmodels.train.checkpoint.TrainingState` and
the run directory's files are :class:`~genmodels.train.run_dir.RunDir`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..config import apply_overrides, to_json_dict
from ..data.base import BatchData, as_data, slice_batch
from . import distributed as ddp
from .checkpoint import TrainingState
from .device import resolve_device, resolve_dtype
from .ema import EMA, ema_weights
from .run_dir import RunDir

__all__ = [
    "TrainConfig",
    "fit",
    "FitResult",
    "NonFiniteLossError",
    "step_generator",
    "resolve_train_config",
]

#: The learning rate of a model that states none (TrainConfig.lr = None).
DEFAULT_LR = 1e-3


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Settings of :func:`fit` (every field can be set by ``--set key=value``).

    Attributes:
        steps: optimizer steps in total.
        batch_size: examples per step (the global batch under torchrun).
        lr: peak learning rate; None: the model's own default (``model.train_defaults``,
            which a registered model carries for its data and a model class may define;
            1e-3 where neither does), so ``fit`` and the command line train the same thing.
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
    lr: float | None = None
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
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not (0 <= self.seed < 2**63)
        ):
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        lr_ok = isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0
        if self.lr is not None and not lr_ok:
            raise ValueError(f"lr must be a positive number or null, got {self.lr!r}")
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
    already_finished: bool = False


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


def resolve_train_config(cfg: TrainConfig, model: nn.Module) -> TrainConfig:
    """``cfg`` with the fields left to the model (``lr=None``) taken from
    ``model.train_defaults`` (a registered model's budget for its data, or the class's)."""
    if cfg.lr is not None:
        return cfg
    own = getattr(model, "train_defaults", None) or {}
    return dataclasses.replace(cfg, lr=float(own.get("lr", DEFAULT_LR)))


def _split_validation(data: BatchData, cfg: TrainConfig) -> tuple[BatchData, BatchData | None]:
    if cfg.val_fraction <= 0:
        return data, None
    n = len(data)
    g = torch.Generator().manual_seed(_mix(cfg.seed, 0xBA1))
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * cfg.val_fraction)))
    if n_val >= n:
        raise ValueError(
            f"val_fraction={cfg.val_fraction} leaves no training data out of {n} examples"
        )
    return data.subset(perm[n_val:].sort().values), data.subset(perm[:n_val].sort().values)


@torch.no_grad()
def _validation_loss(model, val: BatchData, cfg, device, batch_size=2048) -> float:
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device)
    total, count = 0.0, 0
    for k, batch in enumerate(val.batches(batch_size)):
        step_generator(gen, cfg.seed, k, 0x5A1)
        size = _batch_size(batch)
        total += float(model.loss(batch, generator=gen)) * size
        count += size
    model.train(was_training)
    return total / count


def _batch_size(batch) -> int:
    first = batch
    while isinstance(first, tuple):
        first = first[0]
    return int(first.shape[0])


class _Loop:
    """The state of one :func:`fit` call; ``run`` is the loop."""

    def __init__(self, model, data, cfg, out, resume, run_info, overrides=()):
        self.model, self.cfg = model, cfg
        self.committed = self.finished = False  # nothing written yet; nothing already done
        self.overrides, self.changes = frozenset(overrides), []
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype)
        # under torchrun: join the process group; rank 0 alone writes (train/distributed.py)
        self.rank, self.world, self.device = ddp.setup(self.device, cfg.batch_size)
        self.writer = self.rank == 0
        self.run = RunDir(out) if out is not None else None
        self.resume = resume
        self.run_info = dict(run_info or {})
        if "model" in self.run_info and "task" not in self.run_info:
            from .. import registry  # a registered model's declared task

            self.run_info["task"] = registry.get(self.run_info["model"]).task
        self.data = data
        torch.manual_seed(_mix(cfg.seed, 0x1417))  # anything a model draws outside `generator`
        model.to(device=self.device, dtype=self.dtype)
        ddp.broadcast_module(model, self.world)
        train, val = _split_validation(data, cfg)
        self.train = train.to(self.device, self.dtype)
        self.val = val.to(self.device, self.dtype) if val is not None else None
        self.history: list[dict] = []

    # -- set-up ---------------------------------------------------------------------------
    def prepare(self) -> TrainingState:
        """Lock the run directory, read what a resume continues from, and check it; writes
        nothing (the first write comes after the first step, :meth:`commit`)."""
        cfg, run = self.cfg, self.run
        self.committed = run is None or not self.writer
        self.recorded: dict | None = None
        if run is not None and self.writer:
            if self.resume and not run.holds_run():
                raise ValueError(f"--resume: {run.path} holds no run to resume")
            if not self.resume and run.holds_run():
                raise ValueError(
                    f"--out {run.path} already holds a run; pass --resume to continue it or "
                    "choose another --out"
                )
            run.acquire()
            if self.resume:
                run.clean_orphans()
                if run.config_path.exists():
                    self.recorded = run.read_config()
                    self._check_against_recorded(self.recorded)
        opt = _make_optimizer(self.model, cfg)
        ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        state = TrainingState(self.model, opt, ema)
        self.from_checkpoint = bool(
            self.resume and run is not None and run.checkpoint_path.exists()
        )
        if self.from_checkpoint:
            state.restore(run.path, device=self.device, ema_copying=lambda s: s <= cfg.ema_start)
            if state.step > cfg.steps:
                raise ValueError(
                    f"--steps {cfg.steps}: the run in {run.path} is already at step {state.step}; "
                    "a resume can only extend it"
                )
            self.last_good = state.step
            rec = self.recorded or {}
            done = rec.get("final_step") == state.step or rec.get("stopped_early")
            old_steps = (rec.get("train_config") or {}).get("steps")
            self.finished = bool(
                "model" in (rec.get("weights") or {}) and done and old_steps == cfg.steps
            )
        else:  # a new run, or one killed before its first checkpoint: from step 0
            self.last_good = None
            init = getattr(self.model, "init_from_data", None)
            if callable(init):
                init(self.train.full())
                if ema is not None:  # data-dependent init changes parameters (ActNorm)
                    ema.reset()
        self.run_cfg = {
            **self.run_info,
            "train_config": to_json_dict(cfg),
            "genmodels_version": __version__,
            "torch_version": torch.__version__,
            "seed": cfg.seed,
        }
        return state

    #: TrainConfig fields a resume may change: they do not change what is computed.
    RESUMABLE = ("steps", "progress", "device", "checkpoint_every")

    def _check_against_recorded(self, recorded: dict) -> None:
        """A resumed run keeps its recorded settings: any other value is one clear error."""
        where = f"--resume: {self.run.path}"
        old_train = recorded.get("train_config") or {}
        new_train = to_json_dict(self.cfg)
        for key, new in new_train.items():
            if key in self.RESUMABLE or key not in old_train:
                continue
            if old_train[key] != new:
                if key in self.overrides:  # explicit, and recorded in config.json
                    self.changes.append({"key": key, "old": old_train[key], "new": new})
                    continue
                raise ValueError(
                    f"{where} was trained with {key}={json.dumps(old_train[key])}, not "
                    f"{json.dumps(new)}; a resumed run keeps its recorded settings (only "
                    "--steps may change, to extend it; --override KEY changes one on purpose)"
                )
        for key in ("model", "data", "model_config", "data_options"):
            if key in self.run_info and key in recorded:
                if json.dumps(recorded[key], sort_keys=True) != json.dumps(
                    self.run_info[key], sort_keys=True
                ):
                    raise ValueError(
                        f"{where} holds a run with {key} {json.dumps(recorded[key])}, not "
                        f"{json.dumps(self.run_info[key])}"
                    )

    def commit(self, state: TrainingState) -> None:
        """The first write: after the first step has run (so refused or failing settings
        never touch a run directory), config.json and the metrics log."""
        if self.committed:
            return
        run = self.run
        if self.recorded is not None:  # keep what a resume does not redo
            for key in ("weights", "final_step", "stopped_early", "resume_overrides"):
                if key in self.recorded:
                    self.run_cfg[key] = self.recorded[key]
        if self.changes:  # explicit overrides on resume: recorded with the step they took effect
            at = state.step - 1 if self.from_checkpoint else 0
            self.run_cfg["resume_overrides"] = [
                *self.run_cfg.get("resume_overrides", []),
                *({**c, "from_step": at} for c in self.changes),
            ]
        if self.from_checkpoint:
            run.truncate_metrics(state.step)
        else:
            run.start_metrics()
        run.write_config(self.run_cfg)
        self.committed = True

    # -- the loop -------------------------------------------------------------------------
    def run_steps(self, state: TrainingState) -> bool:
        cfg, model, run = self.cfg, self.model, self.run
        opt, ema = state.optimizer, state.ema
        gen_idx = torch.Generator()  # batches are drawn on the CPU, as before
        gen_noise = torch.Generator(device=self.device)
        model.train()
        bar = tqdm(
            total=cfg.steps,
            initial=state.step,
            disable=not cfg.progress or not self.writer,
            desc=type(model).__name__,
            unit="step",
            dynamic_ncols=True,
        )
        metrics_file = None
        running = torch.zeros((), device=self.device, dtype=torch.float64)
        running_n, stopped_early = 0, False
        self.last_loss = float("nan")
        params = [p for p in model.parameters() if p.requires_grad]
        share = cfg.batch_size // self.world
        t0 = time.perf_counter()
        try:
            for step in range(state.step, cfg.steps):
                # every rank draws the same global batch and takes its contiguous slice
                batch = self.train.batch(cfg.batch_size, step_generator(gen_idx, cfg.seed, step, 0))
                if self.world > 1:
                    batch = slice_batch(batch, self.rank * share, (self.rank + 1) * share)
                noise = step_generator(gen_noise, cfg.seed, step, 1 + self.rank)
                loss = model.loss(batch, generator=noise)
                if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                    shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss)
                    raise ValueError(f"model.loss must return a scalar tensor, got {shape}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                ddp.average_gradients(params, self.world)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                lr = _lr_at(step, cfg)
                if cfg.warmup_steps or cfg.lr_schedule != "constant":
                    for g in opt.param_groups:
                        g["lr"] = lr
                opt.step()
                if ema is not None:
                    ema.update(copy=step + 1 <= cfg.ema_start)
                if not self.committed:  # the first step ran: now the run directory is written
                    self.commit(state)
                    metrics_file = run.open_metrics()
                running += loss.detach()
                running_n += 1
                done = step + 1
                is_log = done % cfg.log_every == 0 or done == cfg.steps
                is_ckpt = run is not None and (
                    done % cfg.checkpoint_every == 0 or done == cfg.steps
                )
                is_val = self.val is not None and (done % cfg.val_every == 0 or done == cfg.steps)
                if not (is_log or is_ckpt or is_val):
                    bar.update(1)
                    continue
                mean_loss = float(ddp.all_mean(running, self.world)) / running_n
                if not math.isfinite(mean_loss):
                    where = (
                        f"; the last good checkpoint (step {self.last_good}) is kept in {run.path}"
                        if self.last_good is not None
                        else ""
                    )
                    raise NonFiniteLossError(
                        f"non-finite loss ({mean_loss}) between steps {done - running_n + 1} "
                        f"and {done}{where}. {_REMEDY}"
                    )
                self.last_loss = mean_loss
                elapsed = state.wall + (time.perf_counter() - t0)
                rec = {"step": done, "loss": mean_loss, "lr": lr, "wall": round(elapsed, 4)}
                running.zero_()
                running_n = 0
                if is_val:
                    with ema_weights(ema):
                        v = _validation_loss(model, self.val, cfg, self.device)
                    rec["val_loss"] = v
                    if v < state.best_val - 1e-12:
                        state.best_val, state.bad_evals = v, 0
                        src = ema.state_dict(model) if ema is not None else model.state_dict()
                        state.best_weights = {k: t.detach().clone() for k, t in src.items()}
                    else:
                        state.bad_evals += 1
                self.history.append(rec)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
                patience_out = is_val and cfg.patience and state.bad_evals >= cfg.patience
                if is_ckpt or patience_out:
                    state.wall, state.step = elapsed, done
                    t0 = time.perf_counter()
                    if run is not None and self.writer:
                        self._check_finite(state, done)
                        state.save(run.path)
                        self.last_good = done
                bar.update(1)
                if patience_out:
                    stopped_early = True
                    break
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
        return stopped_early

    def _check_finite(self, state: TrainingState, step: int) -> None:
        """A checkpoint is written only when weights, EMA and optimizer state are finite:
        the kept "last good" checkpoint can never be poisoned."""
        bad = state.non_finite()
        if bad:
            where = (
                f"; the last good checkpoint (step {self.last_good}) is kept in {self.run.path}"
                if self.last_good is not None
                else ""
            )
            raise NonFiniteLossError(
                f"non-finite {' and '.join(bad)} at step {step} (the loss was finite){where}. "
                f"{_REMEDY}"
            )

    # -- the end --------------------------------------------------------------------------
    def finish(self, state: TrainingState, stopped_early: bool) -> FitResult:
        model, run, ema = self.model, self.run, state.ema
        final_step = self.history[-1]["step"] if self.history else state.step
        # Final weights: best-validation weights, else EMA, else raw.
        raw_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if state.best_weights is not None:
            final_state = state.best_weights
        elif ema is not None:
            final_state = ema.state_dict(model)
        else:
            final_state = raw_state
        model.load_state_dict(final_state)
        model.eval()
        if run is not None and self.writer:
            self.commit(state)  # a resume with no step left (killed during the final save)
            if any(
                not torch.isfinite(t).all() for t in final_state.values() if t.is_floating_point()
            ):
                raise NonFiniteLossError(
                    f"the final weights are not finite; the last good checkpoint (step "
                    f"{self.last_good}) is kept in {run.path}. {_REMEDY}"
                )
            raw = raw_state if final_state is not raw_state else None
            self.run_cfg["weights"] = run.save_weights(final_state, raw)
            self.run_cfg["final_step"] = final_step
            self.run_cfg["stopped_early"] = stopped_early
            run.write_config(self.run_cfg)
            self._pictures()
        return FitResult(
            model=model,
            steps=final_step,
            final_loss=self.last_loss,
            out=run.path if run is not None else None,
            stopped_early=stopped_early,
            best_val_loss=state.best_val if math.isfinite(state.best_val) else None,
            history=self.history,
        )

    def already_finished(self, state: TrainingState) -> FitResult:
        """A resume of a finished run with nothing to extend: load its final weights, write
        nothing."""
        from .checkpoint import load_state_into, load_tensors

        entry = self.recorded["weights"]["model"]
        path = self.run.path / entry["file"]
        load_state_into(self.model, load_tensors(path, sha256=entry["sha256"]), path)
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.committed = True  # keep the directory as it is
        self.last_loss = float("nan")
        return FitResult(
            model=self.model,
            steps=state.step,
            final_loss=self.last_loss,
            out=self.run.path,
            stopped_early=bool(self.recorded.get("stopped_early")),
            best_val_loss=state.best_val if math.isfinite(state.best_val) else None,
            history=[],
            already_finished=True,
        )

    def _pictures(self) -> None:
        """Pictures come after the final weights: one that fails costs a warning, never the
        weights."""
        import warnings

        from ..plot import save_run_pictures

        # the task the CLI recorded or the model class states; a plain module: the loss curve
        task = self.run_info.get("task") or getattr(self.model, "task", None)
        try:
            with torch.no_grad():
                save_run_pictures(
                    self.model,
                    self.data,
                    self.history,
                    self.run.path,
                    task=task,
                    seed=self.cfg.seed,
                )
        except Exception as e:  # noqa: BLE001 - a picture must never cost a finished run
            warnings.warn(
                f"could not draw the run's pictures: {type(e).__name__}: {e}", stacklevel=2
            )


_REMEDY = (
    "Start a new run (another --out) with a smaller --lr or --set grad_clip=1.0; a resumed "
    "run keeps its recorded settings"
)


def fit(
    model: nn.Module,
    data,
    config: TrainConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    run_info: dict | None = None,
    overrides: tuple[str, ...] = (),
) -> FitResult:
    """Train ``model`` on ``data`` by minimising ``model.loss(batch, generator=g)``.

    Args:
        model: an ``nn.Module`` with ``loss(batch, *, generator)``; the batch is whatever
            ``data.batch`` hands out (a tensor ``x``, ``(x, y)``, a ``Series``, a ``Tasks``:
            see :mod:`genmodels.data.base`). An optional ``model.init_from_data(batch)`` is
            called once before step 0 with the whole training split as one batch.
        data: a data object (``genmodels.data.load``, ``TensorData``, ``SeriesData``,
            ``TaskData``) or anything with tensors ``.x`` and ``.y`` (wrapped as
            ``TensorData(x, y)``: batches ``x[idx]``, or ``(x[idx], y[idx])`` when ``y`` is
            not None). NaN in the data is data, never an error.
        config: a :class:`TrainConfig` (defaults if None; ``lr=None`` is the model's own).
        out: run directory for checkpoints, metrics, weights and pictures (None:
            train in memory only).
        resume: continue the run in ``out`` from its last checkpoint (or from step 0 when it
            was killed before its first one). The run keeps its recorded settings: a
            ``config`` that differs from them is one clear error, except ``steps`` (to
            extend it), ``progress``, ``device``, ``checkpoint_every`` and the fields named
            in ``overrides`` (changed on purpose, and recorded in ``config.json`` under
            ``resume_overrides`` with the step they took effect).
        run_info: extra JSON fields for ``config.json`` (the CLI stores the model
            name, its task and config and the data set there, so :func:`genmodels.load`
            can rebuild the model).
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
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"{type(model).__name__} has no loss(batch, generator=) method")
    cfg = resolve_train_config(cfg, model)
    loop = _Loop(model, as_data(data), cfg, out, resume, run_info, overrides)
    try:
        state = loop.prepare()
        if loop.finished:  # nothing to do: the finished run is not touched
            return loop.already_finished(state)
        stopped_early = loop.run_steps(state)
        return loop.finish(state, stopped_early)
    finally:
        if loop.run is not None:  # refused before the first write: leave nothing behind
            loop.run.release(remove_if_untouched=not loop.committed)
