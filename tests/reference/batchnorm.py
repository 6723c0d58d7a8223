"""float64 NumPy references for batch normalization, written from deck 000's Algorithm 1
(Ioffe & Szegedy), deck 001's moving averages and the paper's step-by-step chain rule
(section 3), independently of the closed form used by the C++ backward.
"""

from __future__ import annotations

import numpy as np


def forward_train(x, gamma, beta, eps):
    """Returns (y, mean, biased variance)."""
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    xhat = (x - mu) / np.sqrt(var + eps)
    g = 1.0 if gamma is None else gamma
    b = 0.0 if beta is None else beta
    return g * xhat + b, mu, var


def running_update(rm, rv, mu, var, m, momentum, init_from_batch):
    """Deck 001 EMA with delta = momentum; the unbiased variance var * m / (m - 1) is recorded."""
    uvar = var * m / (m - 1)
    if init_from_batch:
        return mu.copy(), uvar
    return (1 - momentum) * rm + momentum * mu, (1 - momentum) * rv + momentum * uvar


def forward_infer(x, gamma, beta, rm, rv, eps):
    g = 1.0 if gamma is None else gamma
    b = 0.0 if beta is None else beta
    return g * (x - rm) / np.sqrt(rv + eps) + b


def backward(x, dy, gamma, eps):
    """The paper's chain rule, one intermediate at a time. Returns (dx, dgamma, dbeta)."""
    m = x.shape[0]
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    g = np.ones(x.shape[1]) if gamma is None else gamma
    dxhat = dy * g
    dvar = np.sum(dxhat * (x - mu), axis=0) * -0.5 * std**-3
    dmu = np.sum(-dxhat / std, axis=0) + dvar * np.sum(-2.0 * (x - mu), axis=0) / m
    dx = dxhat / std + dvar * 2.0 * (x - mu) / m + dmu / m
    return dx, np.sum(dy * xhat, axis=0), np.sum(dy, axis=0)
