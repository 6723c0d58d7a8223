"""fm.datasets.make_tabular (issue 18, item 5): deterministic from its seed, the documented
column layout and class frequencies, and ``fusedmlp train --dataset tabular``."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp.cli import main


def test_make_tabular_is_deterministic_and_laid_out_as_documented():
    X, y = fm.datasets.make_tabular(n_samples=5000, seed=3)
    X2, y2 = fm.datasets.make_tabular(n_samples=5000, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert X.shape == (5000, 32) and X.dtype == np.float32 and y.dtype == np.int64
    assert not np.array_equal(X, fm.datasets.make_tabular(n_samples=5000, seed=4)[0])
    # redundant columns are (up to 5% noise) linear in the informative ones: R^2 > 0.99
    Z, R = X[:, :8].astype(np.float64), X[:, 8:16].astype(np.float64)
    A = np.c_[Z, np.ones(len(Z))]
    resid = R - A @ np.linalg.lstsq(A, R, rcond=None)[0]
    assert (1 - resid.var(axis=0) / R.var(axis=0)).min() > 0.99


def test_make_tabular_class_weights():
    _, y = fm.datasets.make_tabular(n_samples=20000, class_weights=(0.8, 0.15, 0.05))
    np.testing.assert_allclose(np.bincount(y) / len(y), [0.8, 0.15, 0.05], atol=2e-3)
    _, y = fm.datasets.make_tabular(n_samples=20000, n_classes=2, class_weights=(9, 1))
    np.testing.assert_allclose(np.bincount(y) / len(y), [0.9, 0.1], atol=2e-3)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"n_classes": 1}, "n_classes: expected >= 2"),
        ({"class_weights": (1, 2)}, "class_weights: expected 3 positive numbers"),
        ({"class_weights": (1, 0, 1)}, "class_weights: expected 3 positive numbers"),
        ({"label_noise": -1.0}, "label_noise"),
        ({"n_informative": 0}, "n_informative: expected >= 1"),
    ],
)
def test_make_tabular_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fm.datasets.make_tabular(n_samples=100, **kw)


def test_load_by_name():
    X, y = fm.datasets.load("digits")
    assert X.shape == (1797, 64) and X.max() <= 1.0
    with pytest.raises(ValueError, match="dataset: expected one of digits, tabular"):
        fm.datasets.load("mnist")


def test_cli_dataset_option(capsys):
    assert main(["train", "--data", "x.csv", "--dataset", "tabular"]) == 2
    assert "--data, --dataset: give one of the two" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--verbose", "2"]) == 0
    out = capsys.readouterr().out
    assert "samples/s" in out and "held-out accuracy" in out
