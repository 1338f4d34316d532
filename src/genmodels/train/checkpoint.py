"""Checkpoints: safetensors weights + JSON, written atomically, never unpickled.

What a run directory holds is listed in :mod:`genmodels.train.run_dir`; the resumable
state (model, EMA, optimizer, RNG, step) is one object, :class:`TrainingState`.

Every file is written to a temporary name in the same directory, flushed,
fsync'ed and renamed over the old one, so a run killed at any moment (even by
SIGKILL) leaves either the old or the new file, never half of one. The
checkpoint pair is made atomic by writing the step-numbered tensor file first
and then ``checkpoint.json`` that names it with its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "write_json",
    "read_json",
    "save_tensors",
    "load_tensors",
    "load_run",
    "load_state_into",
    "sha256_file",
    "TrainingState",
    "CHECKPOINT_NAME",
]


class CheckpointError(ValueError):
    """A missing, truncated, tampered or mismatched checkpoint file (names the file)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object; a missing or malformed file raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return _sha256(Path(path).read_bytes())


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> str:
    """Save tensors as safetensors atomically; returns the file's SHA-256 (hex)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    data = _st_save(flat)
    atomic_write_bytes(path, data)
    return _sha256(data)


def load_tensors(
    path: str | os.PathLike, *, sha256: str | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Load a safetensors file, checking its SHA-256 when given. Never unpickles.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated,
    not a safetensors file, or does not match ``sha256``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    if sha256 is not None and _sha256(data) != sha256:
        raise CheckpointError(
            f"{path}: SHA-256 does not match the one recorded with it (truncated or modified file)"
        )
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return {k: v.to(device) for k, v in tensors.items()}


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    """``module.load_state_dict`` with a clear error naming ``path`` on a mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit this model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]})"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{path}: tensor {k!r} has shape {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)}"
            )
    module.load_state_dict(tensors)


def load_run(run_dir: str | os.PathLike, *, device: str = "cpu", weights: str = "ema"):
    """Rebuild a trained model from a run directory (:func:`genmodels.train.run_dir.load_run`)."""
    from .run_dir import load_run as _load_run

    return _load_run(run_dir, device=device, weights=weights)


# ---------------------------------------------------------------------------
# The training state: what a checkpoint holds, saved and restored as one object.
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


#: The only names a checkpoint's tensor file may have: ``checkpoint.json``'s ``file`` is
#: confined to the run directory (no path, no other name), so nothing else is ever read or
#: deleted through it.
CHECKPOINT_NAME = re.compile(r"checkpoint-\d{8}\.safetensors")


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


@dataclass
class TrainingState:
    """Everything a resumable checkpoint holds: the model, its EMA, the optimizer, the torch
    RNG, the step and the loop's counters (wall time, best validation loss and weights).

    ``save(dir)`` writes ``checkpoint-<step>.safetensors`` and then ``checkpoint.json``
    naming it with its SHA-256 (the pair is atomic: a kill leaves the old pair or the new
    one), then removes the superseded tensor file; ``restore(dir)`` reads them back into
    the same objects.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Any = None
    step: int = 0
    wall: float = 0.0
    best_val: float = math.inf
    bad_evals: int = 0
    best_weights: dict | None = None

    def save(self, run_dir: str | os.PathLike) -> None:
        run_dir = Path(run_dir)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.tensors().items()})
        opt_tensors, opt_meta = _optimizer_to_flat(self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.best_weights is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_weights.items()})
        fname = f"checkpoint-{self.step:08d}.safetensors"
        sha = save_tensors(run_dir / fname, tensors)
        state_path = run_dir / "checkpoint.json"
        old = None
        if state_path.exists():
            try:
                old = read_json(state_path).get("file")
            except CheckpointError:
                old = None
        if not isinstance(old, str) or not CHECKPOINT_NAME.fullmatch(old):
            old = None  # never delete anything but a checkpoint file of this directory
        meta = {
            "step": self.step,
            "file": fname,
            "sha256": sha,
            "wall": self.wall,
            "optimizer": opt_meta,
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "bad_evals": self.bad_evals,
        }
        write_json(state_path, meta)
        if old and old != fname:
            try:
                (run_dir / old).unlink()
            except FileNotFoundError:
                pass

    def non_finite(self) -> list[str]:
        """The parts of the state holding NaN or inf (weights, EMA, optimizer moments):
        a checkpoint is written only when this is empty."""
        bad = []
        if any(
            not torch.isfinite(t).all()
            for t in self.model.state_dict().values()
            if t.is_floating_point()
        ):
            bad.append("weights")
        if self.ema is not None and any(not torch.isfinite(t).all() for t in self.ema.shadow):
            bad.append("EMA weights")
        for st in self.optimizer.state.values():
            if any(
                isinstance(v, torch.Tensor)
                and v.is_floating_point()
                and not torch.isfinite(v).all()
                for v in st.values()
            ):
                bad.append("optimizer state")
                break
        return bad

    def restore(self, run_dir: str | os.PathLike, *, device=None, ema_copying=None) -> None:
        """Load the checkpoint of ``run_dir`` into this state's objects.

        ``ema_copying(step) -> bool``: whether the EMA was still copying the raw weights at
        that step (then its shadow is the weights themselves).
        """
        run_dir = Path(run_dir)
        meta = read_json(run_dir / "checkpoint.json")
        try:
            file, sha = meta["file"], meta["sha256"]
            step = int(meta["step"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{run_dir / 'checkpoint.json'}: malformed ({e})") from e
        if not isinstance(file, str) or not CHECKPOINT_NAME.fullmatch(file):
            raise CheckpointError(
                f"{run_dir / 'checkpoint.json'}: 'file' must name a checkpoint-<step>.safetensors "
                f"in the run directory, got {file!r}"
            )
        path = run_dir / file
        tensors = load_tensors(path, sha256=sha, device=device or "cpu")
        load_state_into(self.model, _prefixed(tensors, "model."), path)
        _optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        if self.ema is not None:
            self.ema.load(_prefixed(tensors, "ema."))
            if ema_copying is not None and ema_copying(step):
                self.ema.reset()
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"].cpu())
        self.best_weights = _prefixed(tensors, "best.") or None
        self.step, self.wall = step, float(meta.get("wall", 0.0))
        best = meta.get("best_val")
        self.best_val = float(best) if best is not None else math.inf
        self.bad_evals = int(meta.get("bad_evals", 0))
