"""Batch-normalization inputs shared by tests/test_batchnorm.py (both devices)."""

from __future__ import annotations


def make_batch(shape, rng):
    # an offset and per-feature scales, so normalization is really exercised
    scale = rng.uniform(0.5, 3.0, size=shape[1])
    return rng.normal(size=shape) * scale + rng.normal(size=shape[1]) * 2


def make_affine(n, rng):
    return rng.uniform(0.5, 1.5, size=n), rng.normal(size=n)
