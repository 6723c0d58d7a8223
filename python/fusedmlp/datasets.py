"""Small data sets shipped with the package (no download), for the main job and examples.

``load_digits`` is the UCI optical-recognition digits set as bundled by scikit-learn
(1797 images of 8x8 pixels with values 0..16, 10 classes; BSD-licensed there).
"""

from __future__ import annotations

from importlib import resources

import numpy as np


def load_digits(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits: ``X`` (1797, 64) with pixel values 0..16, ``y`` (1797,) labels 0..9.

    Example:
        >>> from fusedmlp.datasets import load_digits
        >>> X, y = load_digits(); X.shape, y.shape
        ((1797, 64), (1797,))
    """
    with resources.files(__package__).joinpath("data/digits.npz").open("rb") as f:
        d = np.load(f)
        return d["X"].astype(dtype), d["y"].astype(np.int64)


def make_sin(n: int = 1024, noise: float = 0.1, seed: int = 0, dtype=np.float32):
    """The regression target of deck 000: y = sin(5x) + 0.5 sin(20x) + noise, x ~ U(-1, 1).

    Returns:
        ``X`` (n, 1) and ``y`` (n, 1).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 1))
    y = np.sin(5 * x) + 0.5 * np.sin(20 * x) + noise * rng.normal(size=(n, 1))
    return x.astype(dtype), y.astype(dtype)
