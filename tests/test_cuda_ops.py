"""The CUDA kernels (fusedmlp._cuda_ops, CuPy in and out) against the CPU kernels
(fusedmlp.ops) on the same inputs: every activation forward/derivative/backward with the
learnable-parameter gradients, softmax, maxout, and the fused dense layer with every epilogue
path (bias fused, GELU-tanh fused, elementwise activation, bias gradient reductions over
several row chunks). Runs only where a GPU is present (the "cuda" device is skipped
otherwise, like every other test's)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEVICES, assert_close, to_device, to_host
from test_activation import HYPER, make_inputs, make_params

import fusedmlp as fm

CUDA = [p for p in DEVICES if p.id == "cuda"]
ELEMENTWISE = [n for n in fm.ops.activation_names() if n not in ("softmax", "maxout")]
SHAPES = [(1, 1), (7, 13), (3, 1001), (1000, 40)]
DTYPES = [np.float64, np.float32]


def gpu():
    from fusedmlp import _cuda_ops

    return _cuda_ops


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activation_matches_cpu(name, shape, dtype, device, rng):
    z = make_inputs(name, shape, rng).astype(dtype)
    P = make_params(name, shape[1], rng)
    P = None if P is None else P.astype(dtype)
    G = rng.normal(size=shape).astype(dtype)
    hyper = HYPER.get(name, {})
    kw = dict(training=True, seed=11, step=3, layer=2) if name == "rrelu" else {}
    zd, Pd, Gd = (
        to_device(z, device),
        None if P is None else to_device(P, device),
        to_device(G, device),
    )
    assert_close(
        gpu().activation(name, zd, Pd, **kw, **hyper),
        fm.ops.activation(name, z, P, **kw, **hyper),
        dtype,
        what="f",
    )
    assert_close(
        gpu().activation_grad(name, zd, Pd, **kw, **hyper),
        fm.ops.activation_grad(name, z, P, **kw, **hyper),
        dtype,
        what="f'",
    )
    dz, dp = gpu().activation_backward(name, zd, Gd, Pd, **kw, **hyper)
    dz_ref, dp_ref = fm.ops.activation_backward(name, z, G, P, **kw, **hyper)
    assert_close(dz, dz_ref, dtype, what="dz")
    if dp_ref is None:
        assert dp is None
    else:  # a sum over the batch: float32 rounding grows with the number of terms
        assert_close(dp, dp_ref, dtype, tol=None if dtype == np.float64 else 1e-4, what="dparams")


@pytest.mark.parametrize("device", CUDA)
def test_parameter_gradient_reduction_is_deterministic(device, rng):
    z = rng.normal(size=(4099, 37)).astype(np.float32)
    P = make_params("srelu", 37, rng).astype(np.float32)
    G = rng.normal(size=z.shape).astype(np.float32)
    zd, Pd, Gd = (to_device(a, device) for a in (z, P, G))
    first = to_host(gpu().activation_backward("srelu", zd, Gd, Pd)[1])
    for _ in range(3):
        assert np.array_equal(to_host(gpu().activation_backward("srelu", zd, Gd, Pd)[1]), first)


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(1, 1), (5, 3), (33, 1025), (300, 10)], ids=lambda s: "x".join(map(str, s))
)
def test_softmax_and_maxout_match_cpu(shape, dtype, device, rng):
    z = rng.normal(0.0, 3.0, size=shape).astype(dtype)
    G = rng.normal(size=shape).astype(dtype)
    zd, Gd = to_device(z, device), to_device(G, device)
    assert_close(gpu().softmax(zd), fm.ops.softmax(z), dtype, what="softmax")
    assert_close(
        gpu().activation_backward("softmax", zd, Gd)[0],
        fm.ops.activation_backward("softmax", z, G)[0],
        dtype,
        what="softmax backward",
    )
    k = 3
    zk = rng.normal(size=(shape[0], shape[1] * k)).astype(dtype)
    Gk = G
    assert_close(gpu().maxout(to_device(zk, device), k), fm.ops.maxout(zk, k), dtype, what="maxout")
    assert_close(
        gpu().activation_backward("maxout", to_device(zk, device), to_device(Gk, device), pieces=k)[
            0
        ],
        fm.ops.activation_backward("maxout", zk, Gk, pieces=k)[0],
        dtype,
        what="maxout backward",
    )


DENSE_SIZES = [(1, 1, 1), (7, 13, 5), (33, 17, 8), (130, 64, 72), (1000, 20, 40)]
DENSE_ACTS = ["identity", "relu", "gelu", "gelu_tanh", "tanh", "prelu", "srelu"]


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("size", DENSE_SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", DENSE_ACTS)
def test_dense_matches_cpu(act, size, bias, dtype, device, rng):
    batch, n_in, n_out = size
    X = rng.normal(size=(batch, n_in)).astype(dtype)
    W = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype) if bias else None
    P = make_params(act, n_out, rng)
    P = None if P is None else P.astype(dtype)
    G = rng.normal(size=(batch, n_out)).astype(dtype)

    def dev(a):
        return None if a is None else to_device(a, device)

    Z, A = gpu().dense_forward(dev(X), dev(W), dev(b), act, dev(P))
    Zc, Ac = fm.ops.dense_forward(X, W, b, act, P)
    assert_close(Z, Zc, dtype, what="Z")
    assert_close(A, Ac, dtype, what="A")
    # the backward from the same Z on both devices (a float32 Z may straddle a kink otherwise)
    Zh = to_host(Z)
    out = gpu().dense_backward(dev(X), dev(W), Z, dev(G), act, dev(P), has_bias=bias)
    ref = fm.ops.dense_backward(X, W, Zh, G, act, P, has_bias=bias)
    for k in ("dX", "dW", "db", "dparams"):
        if ref[k] is None:
            assert out[k] is None, k
        else:
            tol = None if dtype == np.float64 else 1e-4
            assert_close(out[k], ref[k], dtype, tol=tol, what=k)


@pytest.mark.parametrize("device", CUDA)
def test_bad_input_raises(device):
    import cupy as cp

    z = cp.zeros((2, 3), dtype=cp.float32)
    with pytest.raises(TypeError):
        gpu().activation("relu", np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError):
        gpu().activation("relu", cp.zeros((2, 3), dtype=cp.int32))
    with pytest.raises(ValueError):
        gpu().activation("relu", cp.zeros((0, 3), dtype=cp.float32))
    with pytest.raises(ValueError):
        gpu().activation("relu", cp.full((2, 3), cp.nan, dtype=cp.float32))
    with pytest.raises(ValueError):
        gpu().dense_forward(z, cp.zeros((4, 2), dtype=cp.float32))
    with pytest.raises(TypeError):
        gpu().dense_forward(z, cp.zeros((3, 2), dtype=cp.float64))
    with pytest.raises(ValueError):
        gpu().activation("prelu", z)
