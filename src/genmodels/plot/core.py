"""Samples over data for 2D, image grids, loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["scatter_samples", "image_grid", "loss_curve", "save_run_pictures"]


def _np(x):
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x


def scatter_samples(samples, data=None, path=None, *, title=None, lim=None, ax=None):
    """Scatter ``samples`` (n, 2) over ``data`` (m, 2) in grey; save to ``path`` if given."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 5))
    if data is not None:
        d = _np(data)
        ax.scatter(d[:, 0], d[:, 1], s=1, c="0.75", alpha=0.5, label="data", rasterized=True)
    s = _np(samples)
    ax.scatter(s[:, 0], s[:, 1], s=1, c="tab:blue", alpha=0.6, label="samples", rasterized=True)
    if lim is None and data is not None:
        d = _np(data)
        lo, hi = d.min(0), d.max(0)
        pad = 0.1 * (hi - lo)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    elif lim is not None:
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=8, fontsize=8)
    if title:
        ax.set_title(title)
    if own:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        plt.close(fig)
    return ax


def image_grid(images, path=None, *, nrow=None, title=None, value_range=(-1.0, 1.0)):
    """Tile images ``(n, c, h, w)`` (values in ``value_range``) into one grid picture."""
    x = _np(images)
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clip(0, 1)
    grid = torch.ones(c, ncol * (h + 1) + 1, nrow * (w + 1) + 1).numpy()
    for k in range(n):
        r, q = divmod(k, nrow)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[k]
    fig, ax = plt.subplots(figsize=(max(3, nrow * 0.5), max(3, ncol * 0.5)))
    if c == 1:
        ax.imshow(grid[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.transpose(1, 2, 0), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return grid


def loss_curve(history, path=None, *, title="training loss"):
    """Plot ``loss`` (and ``val_loss`` where present) against ``step`` from metric records."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["loss"] for r in history], lw=1, label="train")
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    if val:
        ax.plot(*zip(*val), "o-", ms=3, lw=1, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if history and min(r["loss"] for r in history) > 0:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    plt.close(fig)


PICTURE_TASKS = ("density", "classifier", "process", "series")


def _series_pictures(model, split, out_dir: Path) -> None:
    """``reconstructions.png``: the first series of each label of ``split``."""
    from .series import spiral_extrapolations

    rows = [int((split.labels == c).nonzero()[0]) for c in split.labels.unique().tolist()]
    p = next(model.parameters())
    times, values = split.times[rows].to(p), split.values[rows].to(p)
    mask = getattr(split, "mask", None)
    if mask is not None:
        values = values.masked_fill(~mask[rows].to(values.device), float("nan"))
    grid = split.grid.to(p)
    with torch.no_grad():
        mean = model.predict(times, values, grid.view(-1, 1)).mean
    names = {0: "counter-clockwise", 1: "clockwise"}
    titles = [names.get(int(split.labels[r]), f"label {int(split.labels[r])}") for r in rows]
    spiral_extrapolations(
        times, values, grid, split.clean[rows], mean, titles=titles,
        path=out_dir / "reconstructions.png",
    )  # fmt: skip


def save_run_pictures(
    model,
    data,
    history,
    out_dir,
    *,
    task: str | None = None,
    seed: int = 0,
    n_points: int = 2000,
    test=None,
):
    """Write a run's pictures into ``out_dir``, chosen by the model's ``task``.

    Always ``loss.png`` (when ``history`` has records), then by task:

    - ``"density"``: ``samples.png``, 64 samples in a grid for images, ``n_points`` samples over
      the data for 2-D points;
    - ``"classifier"``: ``decisions.png``, the decision regions faded by confidence, for 2-D
      points only (:func:`genmodels.plot.classifier.decision_map`);
    - ``"process"``: ``predictions.png``, the predictive mean ± 2σ on the first 4 tasks of
      ``test`` (else of ``data``) against their context and target points, for 1-D inputs
      (:func:`genmodels.plot.process.process_predictions`);
    - ``"series"``: ``reconstructions.png`` for a data set with noise-free curves (``clean``,
      ``grid``, ``labels``; e.g. ``spirals``): the model's ``predict`` mean on ``grid`` from
      the observed points of the first series of each label of ``test`` (else ``data``),
      reconstruction solid and extrapolation dashed
      (:func:`genmodels.plot.series.spiral_extrapolations`).

    Meant to be called after the final weights are written, so a picture that fails cannot
    cost them.

    Args:
        model: the trained model, following its task's contract (``sample``, ``predict``).
        data: the training data: ``.x`` (and ``.y`` for classifiers) for points and images,
            ``batches(size)`` yielding :class:`~genmodels.data.batches.Tasks` for processes.
        history: the metric records (``step``, ``loss``, optionally ``val_loss``).
        out_dir: the run directory.
        task: ``"density"``, ``"classifier"``, ``"process"`` or ``"series"``
            (``registry.get(name).task``); None (a model of no declared task): the loss
            curve only.
        seed: seeds the samples; n_points: samples drawn for 2-D points.
        test: the test split, where a picture draws held-out examples (processes).
    """
    if task is not None and task not in PICTURE_TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, PICTURE_TASKS))}, got {task!r}")
    out_dir = Path(out_dir)
    if history:
        loss_curve(history, out_dir / "loss.png")
    kind = getattr(getattr(data, "info", None), "kind", "points")
    if task == "density":
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        g = torch.Generator(device=dev).manual_seed(seed)
        if kind == "images":
            s = model.sample(64, generator=g)
            image_grid(s, out_dir / "samples.png", nrow=8, title="samples")
        else:
            s = model.sample(n_points, generator=g)
            if s.shape[-1] == 2:
                scatter_samples(
                    s, data.x[:n_points], out_dir / "samples.png", title="samples over data"
                )
    elif task == "classifier":
        if kind == "points" and data.x.shape[-1] == 2 and data.y is not None:
            from .classifier import decision_map

            decision_map(model, data.x, data.y, out_dir / "decisions.png")
    elif task == "series":
        split = data if test is None else test
        if all(getattr(split, k, None) is not None for k in ("clean", "grid", "labels")):
            _series_pictures(model, split, out_dir)
    elif task == "process":
        tasks = next(iter((data if test is None else test).batches(4)), None)
        if tasks is not None and tasks[0].shape[-1] == 1:
            from .process import process_predictions

            title_split = "training" if test is None else "test"
            fig = process_predictions(model, tasks)
            fig.suptitle(f"predictions on {title_split} tasks", fontsize=10)
            fig.tight_layout()
            fig.savefig(out_dir / "predictions.png", dpi=110)
            plt.close(fig)
