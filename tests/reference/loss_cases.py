"""Loss case tables and inputs shared by tests/test_loss.py (both devices)."""

from __future__ import annotations

import numpy as np
import pytest

LOSSES = ["mse", "binary_cross_entropy", "cross_entropy"]
SMOOTHING = [(0.0, "deck"), (0.2, "deck"), (0.2, "uniform")]
# (loss, eps, convention): mse takes no label smoothing
LOSS_SMOOTHING = [
    pytest.param(n, e, c, id=f"{n}-{i}")
    for n in LOSSES
    for (e, c), i in zip(SMOOTHING, ("plain", "deck", "uniform"), strict=True)
    if n != "mse" or e == 0
]


def make_target(name, shape, rng):
    if name == "mse":
        return rng.normal(size=shape)
    if name == "binary_cross_entropy":  # mixed hard labels and probabilities
        hard = rng.integers(0, 2, shape)
        return np.where(rng.random(shape) < 0.5, hard, rng.random(shape)).astype(float)
    p = rng.random(shape) ** 3
    return p / p.sum(axis=1, keepdims=True)


def case(name, shape, rng, weighted):
    z = rng.normal(scale=2.0, size=shape)
    t = make_target(name, shape, rng)
    w = rng.uniform(0.0, 2.0, size=shape[0]) if weighted else None
    return z, t, w
