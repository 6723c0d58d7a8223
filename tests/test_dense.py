"""Fused dense layer forward/backward against the float64 reference and finite differences, on
every device (conftest.DEVICES), with every epilogue path (bias fused or not, GELU-tanh fused,
elementwise activations with learnable parameters), and the GEMM binding of each backend."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import CUDA, DEVICES, TOL, assert_close, kernels, to_device, to_host
from reference import activation as ref

# (1000, 20, 40): the bias gradient reduced over several GPU row chunks
SIZES = [
    (1, 1, 1),
    (1, 5, 3),
    (7, 13, 5),
    (33, 17, 1),
    (3, 1001, 1003),
    (130, 64, 70),
    (1000, 20, 40),
]
ACTS = [
    "identity",
    "relu",
    "tanh",
    "sigmoid",
    "gelu",
    "gelu_tanh",
    "brelu",
    "elu",
    "prelu",
    "srelu",
]


def params_for(name, n, rng):
    if name == "prelu":
        return rng.uniform(0.05, 0.5, size=(1, n))
    if name == "srelu":
        return np.stack([np.full(n, -0.5), np.full(n, 0.1), np.full(n, 0.7), np.full(n, 1.5)])
    return None


def reference_backward(X, W, Z, G, name, P):
    dZ = G * ref.derivative(name, Z, P)
    return {"dX": dZ @ W.T, "dW": X.T @ dZ, "db": dZ.sum(axis=0)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ACTS)
def test_dense_matches_reference(act, size, bias, dtype, device, rng):
    batch, n_in, n_out = size
    X = rng.normal(size=(batch, n_in))
    W = rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
    b = rng.normal(size=n_out) if bias else None
    P = params_for(act, n_out, rng)
    G = rng.normal(size=(batch, n_out))

    def cast(a):
        return None if a is None else to_device(a.astype(dtype), device)

    Z, A = fm.ops.dense_forward(cast(X), cast(W), cast(b), act, cast(P))
    assert type(Z) is type(cast(X)) and Z.dtype == dtype and A.dtype == dtype
    # reference on the same (rounded) inputs
    X64, W64 = (a.astype(dtype).astype(np.float64) for a in (X, W))
    b64 = None if b is None else b.astype(dtype).astype(np.float64)
    P64 = None if P is None else P.astype(dtype).astype(np.float64)
    Zr, Ar = ref.dense_forward(X64, W64, b64, act, P64)
    assert_close(Z, Zr, dtype, what="Z")
    assert_close(A, Ar, dtype, what="A")
    out = fm.ops.dense_backward(cast(X), cast(W), Z, cast(G), act, cast(P), has_bias=bias)
    # derivative evaluated at the kernel's own Z (a float32 Z may sit across a kink from Zr)
    Z64 = to_host(Z).astype(np.float64)
    G64 = G.astype(dtype).astype(np.float64)
    want = reference_backward(X64, W64, Z64, G64, act, P64)
    # float32 on the GPU: its reductions are ordered differently from the CPU's, and were held
    # to 1e-4 of the CPU's results (a sum over the batch grows rounding with the term count)
    tol = 1e-4 if dtype == np.float32 and device == "cuda" else None
    if act == "gelu_tanh" and dtype == np.float64:
        tol = 1e-8  # its reference derivative is a central difference (as in test_activation)
    for k in ("dX", "dW", "db"):
        if k == "db" and not bias:
            assert out[k] is None
        else:
            assert_close(out[k], want[k], dtype, tol=tol, what=k)
    if P is None:
        assert out["dparams"] is None
    else:  # the reference is a central difference in float64 (see test_activation.py)
        dp = ref.param_grad(act, Z64, G64, P64)
        assert_close(out["dparams"], dp, dtype, tol=1e-6 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("act", ["tanh", "relu", "softplus", "prelu", "identity"])
def test_dense_backward_matches_finite_differences(act, rng):
    batch, n_in, n_out = 4, 6, 5
    X = rng.normal(size=(batch, n_in))
    W = rng.normal(size=(n_in, n_out))
    b = rng.normal(size=n_out)
    P = params_for(act, n_out, rng)
    G = rng.normal(size=(batch, n_out))

    def loss(X_, W_, b_, P_):
        return float(np.sum(G * fm.ops.dense_forward(X_, W_, b_, act, P_)[1]))

    Z, _ = fm.ops.dense_forward(X, W, b, act, P)
    out = fm.ops.dense_backward(X, W, Z, G, act, P)
    h = 1e-6
    for name, arr in (("dX", X), ("dW", W), ("db", b)) + (
        (("dparams", P),) if P is not None else ()
    ):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            args = {
                "dX": [X, W, b, P],
                "dW": [X, W, b, P],
                "db": [X, W, b, P],
                "dparams": [X, W, b, P],
            }[name]
            pos = {"dX": 0, "dW": 1, "db": 2, "dparams": 3}[name]
            plus = [a.copy() if a is not None else None for a in args]
            minus = [a.copy() if a is not None else None for a in args]
            plus[pos][idx] += h
            minus[pos][idx] -= h
            fd[idx] = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(out[name], fd, rtol=1e-5, atol=1e-6, err_msg=name)


def test_first_layer_skips_dx_and_no_bias(rng):
    X, W = rng.normal(size=(5, 3)), rng.normal(size=(3, 2))
    Z, A = fm.ops.dense_forward(X, W, None, "relu")
    np.testing.assert_allclose(Z, X @ W, rtol=1e-12)
    out = fm.ops.dense_backward(X, W, Z, np.ones_like(Z), "relu", has_bias=False, need_dx=False)
    assert out["dX"] is None and out["db"] is None
    np.testing.assert_allclose(out["dW"], X.T @ (Z > 0), rtol=1e-12)


def test_results_are_deterministic_and_bias_grad_thread_independent(rng):
    X, W, b = rng.normal(size=(512, 300)), rng.normal(size=(300, 257)), rng.normal(size=257)
    G = rng.normal(size=(512, 257)).astype(np.float32)
    args = [a.astype(np.float32) for a in (X, W, b)]
    n = fm.get_num_threads()
    Z, _ = fm.ops.dense_forward(*args, "tanh")
    outs = []
    try:
        for t in (1, 2, 2):
            fm.set_num_threads(t)
            outs.append(fm.ops.dense_backward(args[0], args[1], Z, G, "tanh"))
    finally:
        fm.set_num_threads(n)
    # the fused bias reduction is summed per column by one thread: independent of the count
    np.testing.assert_array_equal(outs[0]["db"], outs[1]["db"])
    # and everything is bit-identical for the same thread count
    for k in ("dX", "dW", "db"):
        np.testing.assert_array_equal(outs[1][k], outs[2][k])


class TestBadInput:
    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="W: expected 3 rows"):
            fm.ops.dense_forward(np.zeros((2, 3)), np.zeros((4, 2)))
        with pytest.raises(ValueError, match="b: expected shape"):
            fm.ops.dense_forward(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3))

    def test_dtype_mismatch(self):
        with pytest.raises(TypeError, match="W: expected dtype float32"):
            fm.ops.dense_forward(np.zeros((2, 3), np.float32), np.zeros((3, 2)))

    def test_nonfinite(self):
        with pytest.raises(ValueError, match="X: contains NaN or Inf"):
            fm.ops.dense_forward(np.array([[np.inf]]), np.zeros((1, 1)))

    def test_row_op_activation(self):
        with pytest.raises(ValueError, match="row-wise"):
            fm.ops.dense_forward(np.zeros((2, 3)), np.zeros((3, 2)), None, "softmax")

    def test_backward_shapes(self):
        with pytest.raises(ValueError, match="grad_output: expected shape"):
            fm.ops.dense_backward(
                np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((2, 2)), np.zeros((2, 3))
            )
        with pytest.raises(ValueError, match="Z: expected shape"):
            fm.ops.dense_backward(
                np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((2, 2))
            )

    def test_not_an_array(self):
        with pytest.raises(TypeError, match="X: expected a NumPy array"):
            fm.ops.dense_forward(object(), np.zeros((1, 1)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_binding_matches_reference(ta, tb, dtype, device, rng):
    """_core.gemm and _cuda.gemm: the same binding (outputs passed in, stream last)."""
    m, n, k = 33, 17, 65
    A = rng.normal(size=(k, m) if ta else (m, k)).astype(dtype)
    B = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    want = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    got = to_device(np.empty((m, n), dtype), device)
    kernels(device).gemm(to_device(A, device), to_device(B, device), got, ta, tb)
    assert_close(got, want, dtype, tol=TOL[dtype] * np.sqrt(k) * 10, what="gemm")


@pytest.mark.parametrize("device", CUDA)
def test_gemm_output_on_another_device_is_refused(device):
    A = to_device(np.ones((3, 4)), device)
    with pytest.raises(TypeError, match="out: expected a GPU array"):
        kernels(device).gemm(A, to_device(np.ones((4, 2)), device), np.empty((3, 2)), False, False)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,n,k", [(300, 37, 129), (45, 517, 100), (1, 2000, 600), (33, 17, 5)])
def test_threaded_gemm_blocks_match_reference(ta, tb, m, n, k, rng):
    """The step's GEMM: above ~1 MFLOP it is split into row or column blocks over the OpenMP
    threads (one single-threaded OpenBLAS call per block). Every block layout, both dtypes,
    1 and 2 threads, against float64 NumPy."""
    A = rng.normal(size=(k, m) if ta else (m, k))
    B = rng.normal(size=(n, k) if tb else (k, n))
    want = (A.T if ta else A) @ (B.T if tb else B)
    before = fm.get_num_threads()
    try:
        for nt in (1, 2):
            fm.set_num_threads(nt)
            for dtype in (np.float64, np.float32):
                got = np.empty(want.shape, dtype)
                fm._core.gemm(A.astype(dtype), B.astype(dtype), got, ta, tb)
                assert_close(
                    got, want, dtype, tol=TOL[dtype] * np.sqrt(k) * 10, what=f"gemm {nt} threads"
                )
    finally:
        fm.set_num_threads(before)
