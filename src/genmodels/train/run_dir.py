"""A run directory: one home for the files that training writes and that ``evaluate``,
the command line and :func:`genmodels.load` read.

::

    config.json                      model name, model/train/data config, versions, hashes
    model.safetensors                final weights (EMA weights where EMA is on)
    model_raw.safetensors            the raw (non-EMA) weights, where EMA is on
    metrics.jsonl                    one JSON line per logged step
    metrics.json                     what ``genmodels evaluate`` measured
    checkpoint.json                  the resumable state: step, optimizer groups, file + SHA-256
    checkpoint-<step>.safetensors    model, EMA, optimizer and RNG tensors of that step
    loss.png, samples.png, ...       pictures (chosen by the model's task)

Every file is written atomically (:mod:`genmodels.train.checkpoint`).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import torch

from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    atomic_write_bytes,
    load_state_into,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)

__all__ = ["RunDir", "load_run", "RunInUseError", "CHECKPOINT_NAME"]


class RunInUseError(ValueError):
    """Another process holds the run directory's lock (one writer at a time)."""


class RunDir:
    """The files of one run directory (paths, and reading and writing them)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._created = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- paths ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_log(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.json"

    def holds_run(self) -> bool:
        """Whether a run was started here (a config or a checkpoint exists)."""
        return self.config_path.exists() or self.checkpoint_path.exists()

    # -- directory -----------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the directory and check that a file can be written in it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"--out {self.path}: cannot write there ({e.strerror})") from e

    def acquire(self) -> None:
        """Create the directory if needed and take its lock (``.lock``, an exclusive
        ``flock``: the kernel drops it when the process ends, however it ends, so a killed
        run never leaves it stuck). A second writer gets :class:`RunInUseError`."""
        if self._lock_fd is not None:
            return
        self._created = not self.path.exists()
        self.ensure_writable()
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = ""
            try:
                pid = (self.path / ".lock").read_text().strip()
                holder = f" (pid {pid})" if pid else ""
            except OSError:
                pass
            raise RunInUseError(
                f"--out {self.path} is in use by another genmodels process{holder}; wait for it "
                "to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self, *, remove_if_untouched: bool = False) -> None:
        """Drop the lock. ``remove_if_untouched``: a directory this process created and left
        empty (a refused or failed start) is removed, so refused input leaves nothing."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        if remove_if_untouched and self._created:
            try:
                if {p.name for p in self.path.iterdir()} <= {".lock"}:
                    (self.path / ".lock").unlink(missing_ok=True)
                    self.path.rmdir()
            except OSError:
                pass
        os.close(fd)

    def clean_orphans(self) -> list[str]:
        """Remove what a killed run can leave behind: temporary files of an interrupted
        atomic write (``.NAME.*.tmp``) and checkpoint tensor files that ``checkpoint.json``
        does not name (superseded, or written just before a kill). Returns their names."""
        current = None
        if self.checkpoint_path.exists():
            try:
                current = self.checkpoint_file()
            except CheckpointError:
                return []  # an unreadable checkpoint.json: keep every file for a person to see
        removed = []
        for p in self.path.iterdir():
            orphan_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
            stale = CHECKPOINT_NAME.fullmatch(p.name) and p.name != current
            if p.is_file() and (orphan_tmp or stale):
                p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    def checkpoint_file(self) -> str:
        """The tensor file ``checkpoint.json`` names, checked to be a plain checkpoint name
        inside this directory."""
        meta = read_json(self.checkpoint_path)
        name = meta.get("file")
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
            raise CheckpointError(
                f"{self.checkpoint_path}: 'file' must name a checkpoint-<step>.safetensors in "
                f"the run directory, got {name!r}"
            )
        return name

    # -- config.json ---------------------------------------------------------------------
    def read_config(self) -> dict:
        return read_json(self.config_path)

    def write_config(self, cfg: dict) -> None:
        write_json(self.config_path, cfg)

    # -- metrics.jsonl -------------------------------------------------------------------
    def start_metrics(self) -> None:
        self.metrics_log.write_text("")

    def open_metrics(self):
        return open(self.metrics_log, "a")  # noqa: SIM115 (closed by the loop)

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines written after the checkpoint we resume from."""
        path = self.metrics_log
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by the kill
        atomic_write_bytes(path, ("\n".join(keep) + ("\n" if keep else "")).encode())

    def read_metrics_log(self) -> list[dict]:
        """The records of ``metrics.jsonl`` (lines cut by a kill are skipped)."""
        out = []
        if self.metrics_log.exists():
            for line in self.metrics_log.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    # -- weights -------------------------------------------------------------------------
    def save_weights(self, final: dict, raw: dict | None = None) -> dict:
        """Write ``model.safetensors`` (and ``model_raw.safetensors`` when the final weights
        are not the raw ones); returns the ``weights`` entry of ``config.json``."""
        weights = {"model": {"file": "model.safetensors"}}
        weights["model"]["sha256"] = save_tensors(self.path / "model.safetensors", final)
        if raw is not None:
            sha = save_tensors(self.path / "model_raw.safetensors", raw)
            weights["raw"] = {"file": "model_raw.safetensors", "sha256": sha}
        return weights

    # -- metrics.json --------------------------------------------------------------------
    def write_evaluation(self, metrics: dict) -> None:
        write_json(self.path / "metrics.json", metrics)

    # -- the model -----------------------------------------------------------------------
    def load_model(self, *, device: str = "cpu", weights: str = "ema"):
        """Rebuild the trained model, in eval mode (see :func:`load_run`)."""
        from .. import registry
        from ..config import apply_overrides
        from ..data import DataInfo
        from .device import resolve_device

        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a run directory")
        cfg = self.read_config()
        if weights not in ("ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        try:
            name = cfg["model"]
            spec = registry.get(name)
            info = DataInfo.from_json(cfg["data_info"])
            model_cfg = apply_overrides(spec.config(), cfg.get("model_config", {}), what=name)
            files = cfg["weights"]
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{self.config_path}: missing or malformed field {e}") from e
        if "model" not in files:
            raise CheckpointError(f"{self.path}: the run has not finished (no final weights yet)")
        key = "raw" if weights == "raw" and "raw" in files else "model"
        model = spec.build(model_cfg, info)
        entry = files[key]
        path = self.path / entry["file"]
        dev = resolve_device(device)
        tensors = load_tensors(path, sha256=entry["sha256"])
        load_state_into(model, tensors, path)
        dtype = getattr(torch, cfg.get("train_config", {}).get("dtype", "float32"))
        model.to(device=dev, dtype=dtype).eval()
        model.run_config = cfg
        model.data_info = info
        model.task = spec.task
        return model

    def data_options(self) -> dict:
        """The data set's options recorded in ``config.json``."""
        cfg = self.read_config()
        return dict(cfg.get("data_options") or cfg.get("data_info", {}).get("options") or {})


def load_run(run_dir: str | os.PathLike, *, device: str = "cpu", weights: str = "ema"):
    """Rebuild a trained model from a run directory, in eval mode.

    Args:
        run_dir: a directory written by ``genmodels train`` / :func:`genmodels.train.fit`.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        weights: ``"ema"`` (the default: EMA weights where the run kept them) or ``"raw"``.
    Returns:
        The ``nn.Module``, with attributes ``run_config`` (the parsed config.json),
        ``data_info`` and ``task``.
    """
    return RunDir(run_dir).load_model(device=device, weights=weights)
