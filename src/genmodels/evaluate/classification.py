"""Metrics for classifiers (``predict(x) -> Categorical``): generative vs discriminative.

``classifier_metrics`` reports, on the test split:

- ``accuracy`` and ``nll_nats`` (``-mean log p(y|x)`` of the true labels, nats);
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

__all__ = ["classifier_metrics", "ood_points", "predict_with_missing"]


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


@torch.no_grad()
def classifier_metrics(
    model, train, test, *, generator: torch.Generator | None = None, max_missing: int = 2000
) -> dict[str, float]:
    """Accuracy, label NLL (nats), OOD AUROC and missing-coordinate accuracy on ``test``.

    Args:
        model: has ``predict(x) -> Categorical``; if it also has ``log_prob`` (``p(x)``) it is
            scored as generative for OOD, and ``log_joint`` enables exact marginalisation.
        train, test: data sets with ``.x`` ``(n, d)`` float and ``.y`` ``(n,)`` int64.
        generator: unused (every metric here is deterministic); kept for the common signature.
        max_missing: the missing-coordinate metric uses the first this many test points.

    Example::

        >>> m = classifier_metrics(model, train, test, generator=torch.Generator())
        >>> sorted(m)[:3]
        ['accuracy', 'accuracy_missing', 'accuracy_missing_x0']
    """
    if test.y is None:
        raise ValueError("classifier_metrics needs labelled data (test.y is None)")
    was_training = model.training
    model.eval()
    x, y = test.x, test.y
    logits = torch.cat([model.predict(c).logits for c in x.split(8192)])
    logp = torch.log_softmax(logits, 1)
    out: dict[str, float] = {
        "accuracy": float((logp.argmax(1) == y).float().mean()),
        "nll_nats": float(-logp[torch.arange(len(y)), y].mean()),
    }

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
