"""Metrics for the Trainer's History (deck 004: accuracy, MSE, ROC with TPR/FPR).

Each metric takes (y_true, y_pred) where y_pred is the output after the loss's output
activation (probabilities for classifiers) and returns a float.

Example:
    >>> import numpy as np
    >>> from fusedmlp.metrics import accuracy
    >>> accuracy(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    1.0
"""

from __future__ import annotations

import numpy as np


def _labels(y_true: np.ndarray) -> np.ndarray:
    return y_true.argmax(axis=1) if y_true.ndim == 2 and y_true.shape[1] > 1 else y_true.reshape(-1)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions: arg-max against labels or one-hot rows for several
    classes; threshold 0.5 for one probability column and for multi-label 0/1 targets
    (every label of a row must match)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred).reshape(len(y_pred), -1)
    multilabel = (
        y_true.ndim == 2 and y_true.shape == y_pred.shape and np.any(y_true.sum(axis=1) != 1)
    )
    if y_pred.shape[1] > 1 and not multilabel:
        return float(np.mean(y_pred.argmax(axis=1) == _labels(y_true)))
    pred = (y_pred >= 0.5).astype(np.int64)
    return float(np.mean(np.all(pred == y_true.reshape(pred.shape), axis=1)))


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over samples of the summed squared error over outputs (deck 004)."""
    d = y_pred.reshape(len(y_pred), -1) - y_true.reshape(len(y_true), -1)
    return float(np.mean(np.sum(d * d, axis=1)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y_pred.reshape(len(y_pred), -1) - y_true.reshape(len(y_true), -1))))


def roc_curve(y_true: np.ndarray, score: np.ndarray, thresholds: np.ndarray | None = None):
    """TPR and FPR at each threshold (deck 004): TPR = TP / (TP + FN), FPR = FP / (FP + TN).

    Args:
        y_true: binary labels (n,).
        score: scores for the positive class (n,).
        thresholds: decision thresholds (default: every distinct score, descending, with +inf).

    Returns:
        (fpr, tpr, thresholds).
    """
    y = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"score: expected {len(y)} scores, got {len(s)}")
    if thresholds is None:
        thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    pred = s[None, :] >= thresholds[:, None]
    tpr = (pred & y[None, :]).sum(axis=1) / pos
    fpr = (pred & ~y[None, :]).sum(axis=1) / neg
    return fpr, tpr, thresholds


def roc_auc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal). For two probability columns the second is the
    positive class; for more, the one-vs-rest average over classes."""
    y_pred = y_pred.reshape(len(y_pred), -1)
    if y_pred.shape[1] == 1:
        fpr, tpr, _ = roc_curve(_labels(y_true), y_pred[:, 0])
        return float(np.trapezoid(tpr, fpr))
    labels = _labels(y_true)
    if y_pred.shape[1] == 2:
        fpr, tpr, _ = roc_curve(labels == 1, y_pred[:, 1])
        return float(np.trapezoid(tpr, fpr))
    aucs = []
    for k in range(y_pred.shape[1]):
        if 0 < np.sum(labels == k) < len(labels):
            fpr, tpr, _ = roc_curve(labels == k, y_pred[:, k])
            aucs.append(np.trapezoid(tpr, fpr))
    return float(np.mean(aucs)) if aucs else float("nan")


METRICS = {
    "accuracy": accuracy,
    "acc": accuracy,
    "mse": mse,
    "mae": mae,
    "roc_auc": roc_auc,
    "auc": roc_auc,
}


def get(name):
    """A metric function by name, or the callable itself."""
    if callable(name):
        return name
    if name not in METRICS:
        raise ValueError(
            f"metrics: unknown metric {name!r}; expected one of {', '.join(sorted(METRICS))}"
        )
    return METRICS[name]
