"""Bit-identical results whatever the arrays' addresses (issue 14).

The CPU loops have a vectorized body and scalar peel/remainder iterations, and which elements
each path handles moves with the address. Both paths must round the same way (the sources are
built with -ffp-contract=off, row sums use fixed lanes), so a step on a copy of the arrays at
another alignment gives the same bits. Every array here is copied into a larger buffer at each
element offset within a 64-byte line and the results are compared with ``assert_array_equal``.
"""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from reference.activation_cases import make_inputs, make_params
from reference.optimizer_cases import CASES, SHAPES, grads_at, problem

DTYPES = [np.float32, np.float64]
LINE = 64  # bytes: the widest vector (AVX-512) and a cache line


def shifted(a: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting ``offset`` elements past a 64-byte boundary."""
    a = np.ascontiguousarray(a)
    if a.size == 0:
        return a.copy()
    per_line = LINE // a.itemsize
    buf = np.empty(a.size + 2 * per_line, a.dtype)
    start = (-buf.ctypes.data % LINE) // a.itemsize + offset
    out = buf[start : start + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % LINE == offset * a.itemsize
    return out


def offsets(dtype) -> range:
    return range(LINE // np.dtype(dtype).itemsize)


def assert_same(got, want, what: str) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(g, w, err_msg=f"{what}: output {i}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_optimizer_steps_do_not_depend_on_alignment(case, dtype):
    _, cls, kw, _ = case
    # wide rows too, so that every loop has a vectorized body and a remainder
    shapes = [*SHAPES, (9, 37), (301,)]
    theta, curv, noise = problem(shapes, dtype, np.random.default_rng(3))
    grads = [grads_at(theta, curv, noise[t], dtype) for t in range(3)]

    def run(offset: int | None):
        opt = cls(**kw)
        params = [p.copy() if offset is None else shifted(p, offset) for p in theta]
        for t, g in enumerate(grads):
            g = [x if offset is None else shifted(x, (offset + 3) % len(offsets(dtype))) for x in g]
            opt.step(params, g)
            if t == 0 and offset is not None and opt.state.buffers is not None:
                # the state too, at yet another alignment
                opt.state.buffers = [
                    shifted(b, (offset + 5) % len(offsets(dtype))) for b in opt.state.buffers
                ]
        return params + (opt.state.buffers or [])

    want = run(None)
    for off in offsets(dtype):
        assert_same(run(off), want, f"offset {off}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_do_not_depend_on_alignment(dtype):
    rng = np.random.default_rng(4)
    rows, cols = 5, 45
    for name in fm.ops.activation_names():
        if name == "maxout":
            kw = {"pieces": 3}
        else:
            kw = {}
        z = make_inputs(name, (rows, cols), rng).astype(dtype)
        dy = rng.normal(size=(rows, cols // 3 if name == "maxout" else cols)).astype(dtype)
        params = make_params(name, cols, rng)
        params = None if params is None else params.astype(dtype)

        def run(z, dy, params, name=name, kw=kw):
            y = fm.ops.activation(name, z, params, **kw)
            dz, dp = fm.ops.activation_backward(name, z, dy, params, **kw)
            return [y, dz] + ([] if dp is None else [dp])

        want = run(z, dy, params)
        for off in offsets(dtype):
            p = None if params is None else shifted(params, off)
            assert_same(run(shifted(z, off), shifted(dy, (off + 1) % 8), p), want, f"{name} @{off}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy", "cross_entropy"])
def test_losses_do_not_depend_on_alignment(loss, dtype):
    rng = np.random.default_rng(5)
    rows, cols = 13, 21
    z = rng.normal(0.0, 3.0, (rows, cols)).astype(dtype)
    target = rng.uniform(0.0, 1.0, (rows, cols)).astype(dtype)
    if loss == "cross_entropy":
        target /= target.sum(axis=1, keepdims=True)
    w = rng.uniform(0.5, 2.0, rows).astype(dtype)

    def run(z, target, w):
        value, grad = fm.ops.loss(loss, z, target, w, label_smoothing=0.0 if loss == "mse" else 0.1)
        return [np.array(value), grad, fm.ops.loss_output(loss, z)]

    want = run(z, target, w)
    for off in offsets(dtype):
        got = run(shifted(z, off), shifted(target, (off + 2) % 8), shifted(w, (off + 5) % 8))
        assert_same(got, want, f"offset {off}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_dropout_rbf_do_not_depend_on_alignment(dtype):
    rng = np.random.default_rng(6)
    rows, cols, k = 11, 71, 19
    x = rng.normal(1.0, 2.0, (rows, cols)).astype(dtype)
    dy = rng.normal(size=(rows, cols)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, cols).astype(dtype)
    beta = rng.normal(size=cols).astype(dtype)
    centers = rng.normal(size=(k, cols)).astype(dtype)
    widths = rng.uniform(2.0, 5.0, k).astype(dtype)
    g_phi = rng.normal(size=(rows, k)).astype(dtype)

    def run(x, dy, gamma, beta, centers, widths, g_phi):
        rm, rv = np.zeros(cols, dtype), np.ones(cols, dtype)
        y, saved = fm.ops.batchnorm_forward(x, gamma, beta, rm, rv, training=True)
        dx, dgamma, dbeta = fm.ops.batchnorm_backward(x, dy, gamma, saved)
        yi, _ = fm.ops.batchnorm_forward(x, gamma, beta, rm, rv, training=False)
        d2, phi = fm.ops.rbf(x, centers, widths)
        grads = fm.ops.rbf_backward(x, centers, widths, d2, phi, g_phi)
        rbf_grads = [grads[key] for key in sorted(grads)]
        drop = fm.ops.dropout(x, 0.3, seed=7, step=2, layer=1)
        noise = fm.ops.gaussian_noise(x, 0.5, seed=7, step=2, layer=1)
        return [y, dx, dgamma, dbeta, rm, rv, yi, phi, d2, *rbf_grads, drop, noise]

    want = run(x, dy, gamma, beta, centers, widths, g_phi)
    for off in offsets(dtype):
        s = [
            shifted(a, (off + i) % len(offsets(dtype)))
            for i, a in enumerate((x, dy, gamma, beta, centers, widths, g_phi))
        ]
        assert_same(run(*s), want, f"offset {off}")
