"""Small data sets shipped with the package (no download), for the main job and examples.

``load_digits`` is the UCI optical-recognition digits set as bundled by scikit-learn
(1797 images of 8x8 pixels with values 0..16, 10 classes; BSD-licensed there).
``make_tabular`` generates a larger, realistic tabular classification set from a seed (no
download, nothing shipped): 200,000 rows by default, for runs of a few seconds.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from . import _validate as v


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


#: Data sets the command line's ``--dataset`` can name.
DATASETS = ("digits", "tabular")


def make_tabular(
    n_samples: int = 200_000,
    n_informative: int = 8,
    n_redundant: int = 8,
    n_noise: int = 16,
    n_classes: int = 3,
    class_weights=None,
    label_noise: float = 0.05,
    seed: int = 0,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic tabular classification set with the traits of real tables, generated from
    ``seed`` (the same arguments give the same arrays on every machine: NumPy's PCG64).

    Generation, in this order from ``np.random.default_rng(seed)``:

    1. *Informative* features: ``Z = G M``, G standard normal (n, k) and M a random (k, k)
       mixing matrix, so the informative columns are correlated.
    2. *Class boundaries*, nonlinear: a fixed random one-hidden-layer teacher network gives
       each class a score, ``S = tanh(Z W1 + b1) W2`` (64 tanh units); the label is
       ``argmax_c(S_c + o_c + tau g_c)`` with Gumbel noise g (``tau`` = ``label_noise`` times
       the spread of S; 0 gives a noiseless rule) and offsets o_c fitted (50 multiplicative
       damped updates on the drawn noise) so the class frequencies match ``class_weights``.
    3. *Redundant* features: random linear combinations of the informative ones plus 5%
       Gaussian noise (collinear columns, as derived quantities in real tables).
    4. *Noise* features: half standard normal, half Student-t with 3 degrees of freedom
       (heavy tails, outliers), unrelated to the label.
    5. Every column is then put on its own scale and offset (scale ``10**U(-1, 2)``, offset
       ``N(0, 10)``), as raw measurements are: standardize before training.

    Columns come as [informative | redundant | noise].

    Args:
        n_samples: rows (>= n_classes).
        n_informative, n_redundant, n_noise: numbers of each kind of feature (n_informative
            >= 1, the others >= 0).
        n_classes: classes (>= 2).
        class_weights: relative class frequencies (n_classes positive numbers, normalized
            here); None: balanced. E.g. ``(0.9, 0.1)`` for a 9:1 imbalance with 2 classes.
        label_noise: Gumbel temperature relative to the score spread, >= 0.
        seed: the generator's seed.
        dtype: floating dtype of X.

    Returns:
        ``X`` (n_samples, n_informative + n_redundant + n_noise) and ``y`` (n_samples,)
        int64 labels 0..n_classes-1.

    Example:
        >>> from fusedmlp.datasets import make_tabular
        >>> X, y = make_tabular(n_samples=1000, class_weights=(0.6, 0.3, 0.1))
        >>> X.shape, sorted(set(y.tolist()))
        ((1000, 32), [0, 1, 2])
    """
    n_classes = v.integer("n_classes", n_classes, low=2)
    n = v.integer("n_samples", n_samples, low=n_classes)
    k = v.integer("n_informative", n_informative, low=1)
    r = v.integer("n_redundant", n_redundant, low=0)
    m = v.integer("n_noise", n_noise, low=0)
    tau = v.real("label_noise", label_noise, 0.0)
    seed = v.integer("seed", seed, low=0)
    if np.dtype(dtype) not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {np.dtype(dtype)}")
    if class_weights is None:
        target = np.full(n_classes, 1.0 / n_classes)
    else:
        target = np.asarray(class_weights, dtype=np.float64)
        if target.shape != (n_classes,) or not np.all(np.isfinite(target)) or np.any(target <= 0):
            raise ValueError(
                f"class_weights: expected {n_classes} positive numbers, got {class_weights!r}"
            )
        target = target / target.sum()
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, k)) @ rng.standard_normal((k, k)) / np.sqrt(k)
    hidden = 64
    W1 = rng.standard_normal((k, hidden)) * (2.0 / np.sqrt(k))
    b1 = rng.standard_normal(hidden)
    W2 = rng.standard_normal((hidden, n_classes)) / np.sqrt(hidden)
    S = np.tanh(Z @ W1 + b1) @ W2
    S = S - S.mean(axis=0)
    noisy = S + tau * S.std() * rng.gumbel(size=S.shape)
    offsets = np.zeros(n_classes)
    for _ in range(50):  # damped multiplicative fit of the class frequencies (log-space offsets)
        freq = np.bincount(np.argmax(noisy + offsets, axis=1), minlength=n_classes) / n
        offsets += 0.5 * np.log(target / np.maximum(freq, 0.5 / n))
    y = np.argmax(noisy + offsets, axis=1).astype(np.int64)
    cols = [Z]
    if r:
        R = Z @ rng.standard_normal((k, r))
        cols.append(R + 0.05 * R.std(axis=0) * rng.standard_normal((n, r)))
    if m:
        half = m // 2
        cols.append(rng.standard_normal((n, half)))
        cols.append(rng.standard_t(3, size=(n, m - half)))
    X = np.concatenate(cols, axis=1)
    d = X.shape[1]
    X = X * 10.0 ** rng.uniform(-1.0, 2.0, d) + rng.normal(0.0, 10.0, d)
    return X.astype(dtype), y


def load(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A data set of :data:`DATASETS` by name, as the command line's ``--dataset`` loads it:
    "digits" (pixels scaled to [0, 1]) or "tabular" (:func:`make_tabular` with ``seed``)."""
    if name == "digits":
        X, y = load_digits()
        return X / 16.0, y
    if name == "tabular":
        return make_tabular(seed=seed)
    raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
