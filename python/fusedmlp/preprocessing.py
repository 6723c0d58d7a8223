"""Input normalization (decks 001 and 003): min-max scaling, z-score standardization and ZCA
whitening, each with fit / transform / inverse_transform (scikit-learn compatible).

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> X = np.array([[0.0, 10.0], [2.0, 30.0]])
    >>> fm.preprocessing.StandardScaler().fit_transform(X)
    array([[-1., -1.],
           [ 1.,  1.]])
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class MinMaxScaler(TransformerMixin, BaseEstimator):
    """x' = a + (x - min) (b - a) / (max - min) per feature (deck 003), constant features map
    to a.

    Args:
        feature_range: (a, b), a < b.
    """

    def __init__(self, feature_range=(0.0, 1.0)):
        self.feature_range = feature_range

    def fit(self, X, y=None):
        a, b = self.feature_range
        if not a < b:
            raise ValueError(f"feature_range: expected a < b, got {self.feature_range}")
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self.data_min_ = X.min(axis=0)
        self.data_max_ = X.max(axis=0)
        rng = self.data_max_ - self.data_min_
        self.scale_ = (b - a) / np.where(rng == 0, 1.0, rng)
        self.min_ = a - self.data_min_ * self.scale_
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return X * self.scale_ + self.min_

    def inverse_transform(self, X):
        check_is_fitted(self)
        X = np.asarray(X, dtype=float)
        return (X - self.min_) / self.scale_


class StandardScaler(TransformerMixin, BaseEstimator):
    """z-score: x' = (x - mean) / (std + eps) per feature (deck 001 / 003).

    Args:
        eps: added to the standard deviation so constant features do not divide by 0.
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = eps

    def fit(self, X, y=None):
        if not self.eps >= 0:
            raise ValueError(f"eps: expected >= 0, got {self.eps}")
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + self.eps
        self.scale_ = np.where(self.scale_ == 0, 1.0, self.scale_)
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return (X - self.mean_) / self.scale_

    def inverse_transform(self, X):
        check_is_fitted(self)
        return np.asarray(X, dtype=float) * self.scale_ + self.mean_


class ZCAWhitening(TransformerMixin, BaseEstimator):
    """ZCA whitening (deck 003): x' = (x - mean) U diag(1 / sqrt(s + eps)) U^T with
    Sigma = U diag(s) U^T the covariance; the whitened data have (nearly) identity
    covariance and stay as close as possible to the original (the "zero-phase" rotation back).

    Args:
        eps: regularization added to the eigenvalues (small eps amplifies noise).
    """

    def __init__(self, eps: float = 1e-5):
        self.eps = eps

    def fit(self, X, y=None):
        if not self.eps > 0:
            raise ValueError(f"eps: expected > 0, got {self.eps}")
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        cov = Xc.T @ Xc / (len(X) - 1)
        s, U = np.linalg.eigh(cov)
        s = np.clip(s, 0.0, None)
        self.whitening_ = (U / np.sqrt(s + self.eps)) @ U.T
        self.dewhitening_ = (U * np.sqrt(s + self.eps)) @ U.T
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return (X - self.mean_) @ self.whitening_

    def inverse_transform(self, X):
        check_is_fitted(self)
        return np.asarray(X, dtype=float) @ self.dewhitening_ + self.mean_
