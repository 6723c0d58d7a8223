"""float64 NumPy references for the fused losses, written naively from the deck formulas
(decks 003, 004; label smoothing, deck 002): the output activation is applied first and the
textbook loss of the probabilities is taken, so these are accurate only where that is stable
(moderate logits). L = (1/N) sum_i w_i l_i.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def smooth(t, eps, k, convention):
    """Deck 002: 0 -> eps/(k-1), 1 -> 1-eps; uniform: t (1-eps) + eps/k."""
    if eps == 0:
        return t
    if convention == "deck":
        return (1 - eps) * t + eps / (k - 1) * (1 - t)
    return (1 - eps) * t + eps / k


def one_hot(labels, k):
    return np.eye(k)[labels]


def per_sample(name, z, t, eps=0.0, convention="deck", half=False):
    """l_i for each sample (dense targets t of z's shape)."""
    if name == "mse":
        return (0.5 if half else 1.0) * np.sum((z - t) ** 2, axis=1)
    if name == "binary_cross_entropy":
        t = smooth(t, eps, 2, convention)
        p = sigmoid(z)
        return -np.sum(t * np.log(p) + (1 - t) * np.log(1 - p), axis=1)
    if name == "cross_entropy":
        t = smooth(t, eps, z.shape[1], convention)
        return -np.sum(t * np.log(softmax(z)), axis=1)
    raise ValueError(name)


def loss(name, z, t, w=None, **kw):
    ls = per_sample(name, z, t, **kw)
    w = np.ones(z.shape[0]) if w is None else w
    return float(np.sum(w * ls) / z.shape[0])


def grad(name, z, t, w=None, eps=0.0, convention="deck", half=False):
    """dL/dz written from the derivative of each output activation + loss pair (deck 003):
    mse 2 (z - t) (or z - t with the 1/2), sigmoid + BCE s(z) - t, softmax + CE p sum(t) - t;
    scaled by w_i / N."""
    n = z.shape[0]
    w = np.ones(n) if w is None else w
    if name == "mse":
        g = (1.0 if half else 2.0) * (z - t)
    elif name == "binary_cross_entropy":
        g = sigmoid(z) - smooth(t, eps, 2, convention)
    else:
        ts = smooth(t, eps, z.shape[1], convention)
        g = softmax(z) * ts.sum(axis=1, keepdims=True) - ts
    return g * (w / n)[:, None]


def output(name, z):
    return {"mse": lambda a: a, "binary_cross_entropy": sigmoid, "cross_entropy": softmax}[name](z)
