"""Checkpoints: safetensors weights + JSON, written atomically, never unpickled.

A run directory holds::

    config.json                      model name, model/train config, data, versions, hashes
    model.safetensors                final weights (EMA weights where EMA is on)
    model_raw.safetensors            the raw (non-EMA) weights, where EMA is on
    metrics.jsonl                    one JSON line per logged step
    checkpoint.json                  the resumable state: step, optimizer groups, file + SHA-256
    checkpoint-<step>.safetensors    model, EMA, optimizer and RNG tensors of that step

Every file is written to a temporary name in the same directory, flushed,
fsync'ed and renamed over the old one, so a run killed at any moment (even by
SIGKILL) leaves either the old or the new file, never half of one. The
checkpoint pair is made atomic by writing the step-numbered tensor file first
and then ``checkpoint.json`` that names it with its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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
    "sha256_file",
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
    """Rebuild a trained model from a run directory, in eval mode.

    Args:
        run_dir: a directory written by ``genmodels train`` / :func:`genmodels.train.fit`.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        weights: ``"ema"`` (the default: EMA weights where the run kept them) or ``"raw"``.
    Returns:
        The ``nn.Module``, with attributes ``run_config`` (the parsed config.json)
        and ``data_info``.
    """
    from .. import registry
    from ..config import apply_overrides
    from .device import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a run directory")
    cfg = read_json(run_dir / "config.json")
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    try:
        name = cfg["model"]
        spec = registry.get(name)
        info = registry.DataInfo.from_json(cfg["data_info"])
        model_cfg = apply_overrides(spec.config(), cfg.get("model_config", {}), what=name)
        files = cfg["weights"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{run_dir / 'config.json'}: missing or malformed field {e}") from e
    if "model" not in files:
        raise CheckpointError(f"{run_dir}: the run has not finished (no final weights yet)")
    key = "raw" if weights == "raw" and "raw" in files else "model"
    model = spec.build(model_cfg, info)
    entry = files[key]
    path = run_dir / entry["file"]
    dev = resolve_device(device)
    tensors = load_tensors(path, sha256=entry["sha256"])
    load_state_into(model, tensors, path)
    dtype = getattr(torch, cfg.get("train_config", {}).get("dtype", "float32"))
    model.to(device=dev, dtype=dtype).eval()
    model.run_config = cfg
    model.data_info = info
    return model
