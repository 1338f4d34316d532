"""Metrics for classifiers (task ``"classifier"``, ``predict(x) -> Categorical``).

``classifier_metrics`` reports, on the test split, for any input the model takes (points,
images, series):

- ``accuracy`` and ``nll_nats`` (``-mean log p(y|x)`` of the true labels, nats);
- ``ece``: the expected calibration error of Guo et al. (2017), "On calibration of modern
  neural networks", eq. (3): the confidences ``max_k p(k|x)`` are put in 15 equal-width bins
  ``((m-1)/15, m/15]`` and ``ECE = sum_m |B_m|/n |acc(B_m) - conf(B_m)|``
  (:func:`expected_calibration_error`; 0 = calibrated, at most 1).

and, for points only (inputs ``(n, d)``; generative vs discriminative, lecture section 2):

- ``auroc_ood``: how well the model separates test inputs from inputs far from the training
  data (the OOD set below). A generative model scores with ``-log p(x)``; a discriminative
  one with its only handle, ``1 - max_k p(k|x)``. 0.5 = blind, 1 = perfect.
- ``accuracy_missing_x{j}`` and ``accuracy_missing``: accuracy when coordinate ``j`` is hidden.
  A generative model integrates it out, ``p(y|x_obs) ∝ ∫ p(x_obs, x_j, y) dx_j``, by a
  Riemann sum on a uniform 256-point grid over the training range (at least mean ± 3 std; the
  grid step cancels in the normalisation); a model without ``log_joint`` imputes the training
  mean of ``x_j`` (the usual best effort). ``missing_integrated`` says which was used (1.0 =
  integrated, 0.0 = mean imputation, so the dict stays ``dict[str, float]``).

The OOD set is deterministic given the data: a regular 60 x 60 grid on the training data's
bounding box blown up 2x around its centre, keeping the points whose distance to the nearest
of (a fixed stride of) 5000 training points exceeds both ``3 x`` the 99th percentile of the
test-to-train nearest-neighbour distance and 10% of the bounding box's diagonal.
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

__all__ = [
    "classifier_metrics",
    "expected_calibration_error",
    "ood_points",
    "predict_with_missing",
]


def _subsample(x: Tensor, n: int) -> Tensor:
    stride = max(1, len(x) // n)
    return x[::stride][:n]


def ood_points(train_x: Tensor, test_x: Tensor, grid: int = 60) -> Tensor:
    """Deterministic out-of-distribution inputs far from the training data: ``(m, 2)``.

    Example::

        >>> tr = torch.randn(2000, 2)
        >>> ood = ood_points(tr, torch.randn(500, 2))
        >>> bool(torch.cdist(ood, tr).min() > 0.1)
        True
    """
    if train_x.ndim != 2:
        raise ValueError(f"train_x must be (n, d), got {tuple(train_x.shape)}")
    ref = _subsample(train_x, 5000)
    lo, hi = train_x.min(0).values, train_x.max(0).values
    mid, half = (lo + hi) / 2, (hi - lo)  # 2x the half-width
    axes = [torch.linspace(float(m - h), float(m + h), grid) for m, h in zip(mid, half)]
    pts = torch.stack([a.reshape(-1) for a in torch.meshgrid(*axes, indexing="ij")], 1)
    nn_test = torch.cdist(_subsample(test_x, 2000), ref).min(1).values
    radius = torch.maximum(3 * torch.quantile(nn_test, 0.99), 0.1 * (hi - lo).norm())
    far = torch.cdist(pts, ref).min(1).values > radius
    return pts[far]


@torch.no_grad()
def predict_with_missing(
    model, x: Tensor, missing: int, train_x: Tensor, points: int = 256
) -> tuple[Tensor, str]:
    """``p(y | x without coordinate missing)``: ``(n, K)`` probabilities and the method used.

    Generative (``model.log_joint``): ``log p(x_obs, y) = logsumexp_g log p(x_obs, g, y) + log dg``
    over ``points`` grid values ``g`` of the missing coordinate. Otherwise the training mean is
    imputed.
    """
    x = x.clone()
    if hasattr(model, "log_joint"):
        col = train_x[:, missing]
        m, s = float(col.mean()), float(col.std())
        lo, hi = min(float(col.min()), m - 3 * s), max(float(col.max()), m + 3 * s)
        grid = torch.linspace(lo, hi, points, dtype=x.dtype)
        n = len(x)
        rep = x.repeat_interleave(points, 0)
        rep[:, missing] = grid.repeat(n)
        joint = model.log_joint(rep).view(n, points, -1)
        post = torch.softmax(torch.logsumexp(joint, 1), 1)  # the grid step cancels
        return post, "integrated"
    x[:, missing] = train_x[:, missing].mean()
    return model.predict(x).probs, "mean-imputed"


def expected_calibration_error(probs: Tensor, y: Tensor, *, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017, eq. 3) of predictions ``probs`` for ``y``.

    With confidence ``c_i = max_k probs[i, k]`` and prediction ``argmax_k probs[i, k]``, the
    examples fall into ``bins`` equal-width bins ``B_m = {i : c_i in ((m-1)/M, m/M]}`` and

        ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|,

    acc and conf being the bin's accuracy and mean confidence (empty bins add nothing).

    Args:
        probs: ``(n, K)`` class probabilities (rows sum to 1).
        y: ``(n,)`` int64 true labels.
        bins: M.

    Example::

        >>> p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
        >>> y = torch.tensor([0, 1, 1, 1])
        >>> round(expected_calibration_error(p, y), 6)  # 2/4 |0.5-0.9| + 1/4 |1-0.7| + 1/4 |1-0.6|
        0.375
    """
    if probs.ndim != 2 or y.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (n, K) and y (n,), got probs {tuple(probs.shape)}, y {tuple(y.shape)}"
        )
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    conf, pred = probs.double().max(1)
    correct = (pred == y).double()
    # bin m (0-based) holds (m/M, (m+1)/M]; a confidence of exactly 0 cannot occur (>= 1/K)
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    # per bin, sums of correctness and of confidence: |B_m| |acc - conf| = |sum_acc - sum_conf|
    acc = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, correct)
    cnf = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, conf)
    return float((acc - cnf).abs().sum() / len(y))


def _labelled_chunks(test, size: int):
    """``(inputs, labels)`` chunks of ``test`` in order: ``.x``/``.y`` tensors for points and
    images; a series data set's ``batches(size)`` with the labels taken out of each
    :class:`~genmodels.data.batches.Series`."""
    kind = getattr(getattr(test, "info", None), "kind", None)
    if kind == "series":
        for b in test.batches(size):
            if not hasattr(b, "labels"):  # NaN-coded inputs with labels: (x, y)
                yield b
                continue
            if b.labels is None:
                raise ValueError("classifier metrics need labelled series (batch.labels is None)")
            yield b._replace(labels=None), b.labels
        return
    if test.y is None:
        raise ValueError("classifier_metrics needs labelled data (test.y is None)")
    yield from zip(test.x.split(size), test.y.split(size))


def _to(x, device):
    if isinstance(x, Tensor):
        return x.to(device)
    return type(x)(*(None if v is None else v.to(device) for v in x))  # a named tuple batch


@torch.no_grad()
def classifier_metrics(
    model, train, test, *, generator: torch.Generator | None = None, max_missing: int = 2000
) -> dict[str, float]:
    """Accuracy, label NLL (nats), ECE; for points also OOD AUROC and missing-coordinate accuracy.

    Args:
        model: has ``predict(x) -> Categorical`` for a chunk ``x`` of the test inputs; for
            points, if it also has ``log_prob`` (``p(x)``) it is scored as generative for OOD,
            and ``log_joint`` enables exact marginalisation.
        train, test: data sets; points and images have ``.x`` ``(n, ...)`` float and ``.y``
            ``(n,)`` int64; a series data set (``info.kind == "series"``) gives labelled
            :class:`~genmodels.data.batches.Series` through ``batches(size)``, and ``predict``
            gets each batch without its labels. ``train`` is read for points only.
        generator: unused (every metric here is deterministic); kept for the common signature.
        max_missing: the missing-coordinate metric uses the first this many test points.

    Example::

        >>> m = classifier_metrics(model, train, test, generator=torch.Generator())
        >>> sorted(m)[:3]
        ['accuracy', 'accuracy_missing', 'accuracy_missing_x0']
    """
    was_training = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    logits, labels = [], []
    for xb, yb in _labelled_chunks(test, 8192):
        logits.append(model.predict(_to(xb, dev)).logits.cpu())
        labels.append(yb.cpu())
    logp = torch.log_softmax(torch.cat(logits), 1)
    y = torch.cat(labels)
    if logp.shape[0] != y.shape[0]:
        raise ValueError(
            f"predict gave {logp.shape[0]} rows of class probabilities for {y.shape[0]} labels"
        )
    out: dict[str, float] = {
        "accuracy": float((logp.argmax(1) == y).float().mean()),
        "nll_nats": float(-logp[torch.arange(len(y)), y].mean()),
        "ece": expected_calibration_error(logp.exp(), y),
    }
    x = getattr(test, "x", None)
    if not (isinstance(x, Tensor) and x.ndim == 2):  # OOD and missing coordinates: points only
        model.train(was_training)
        return out

    generative = hasattr(model, "log_prob")
    ood = ood_points(train.x, x)

    def score(pts: Tensor) -> Tensor:  # larger = more out-of-distribution
        if generative:
            return torch.cat([-model.log_prob(c) for c in pts.split(8192)])
        return 1 - torch.cat([model.predict(c).probs.max(1).values for c in pts.split(8192)])

    s_in, s_out = score(x), score(ood)
    labels = torch.cat([torch.zeros(len(s_in)), torch.ones(len(s_out))])
    scores = torch.nan_to_num(torch.cat([s_in, s_out]), nan=math.inf, posinf=1e30)
    out["auroc_ood"] = float(roc_auc_score(labels.numpy(), scores.double().numpy()))
    out["ood_points"] = float(len(ood))

    xm, ym = x[:max_missing], y[:max_missing]
    accs = []
    method = ""
    for j in range(x.shape[1]):
        probs, method = predict_with_missing(model, xm, j, train.x)
        acc = float((probs.argmax(1) == ym).float().mean())
        out[f"accuracy_missing_x{j}"] = acc
        accs.append(acc)
    out["accuracy_missing"] = sum(accs) / len(accs)
    out["missing_integrated"] = 1.0 if method == "integrated" else 0.0
    model.train(was_training)
    return out
