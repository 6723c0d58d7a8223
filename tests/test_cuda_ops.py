"""The CUDA kernels (fusedmlp.ops on CuPy arrays: the same bodies as on NumPy, over
fusedmlp._cuda) against the CPU kernels (fusedmlp.ops on NumPy) and the float64 references
(tests/reference/) on the same inputs: every activation forward/derivative/backward with the
learnable-parameter gradients, softmax, maxout, the fused dense layer with every epilogue path
(bias fused, GELU-tanh fused, elementwise activation, bias gradient reductions over several row
chunks), batch normalization (training with the running statistics, inference, backward; many
row chunks), dropout masks bit for bit against the CPU and the NumPy Philox, Gaussian noise, the
fused losses (dense and integer targets, label smoothing, sample weights, block-per-row widths),
every optimizer rule's 120-step trajectory over a segmented arena (vector and scalar paths,
gaps untouched, the CPU's state layout), the fused regularization, clip-by-norm computed on the
device, the device gradient norm, run-to-run determinism, and bad input. Runs only where a GPU
is present (the "cuda" device is skipped otherwise, like every other test's)."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import DEVICES, TOL, assert_close, to_device, to_host
from fusedmlp._loader import _core
from reference import batchnorm as bn_ref
from reference import batchnorm_cases as bn_cases
from reference import dropout as drop_ref
from reference import loss as loss_ref
from reference import loss_cases
from reference import optimizer as opt_ref
from reference import optimizer_cases as opt_cases
from reference.activation_cases import HYPER, make_inputs, make_params

CUDA = [p for p in DEVICES if p.id == "cuda"]
ELEMENTWISE = [n for n in fm.ops.activation_names() if n not in ("softmax", "maxout")]
SHAPES = [(1, 1), (7, 13), (3, 1001), (1000, 40)]
DTYPES = [np.float64, np.float32]


def gpu():
    """The ops of CuPy arrays: fusedmlp.ops itself (the device follows the arrays)."""
    return fm.ops


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
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(1, 1, 1), (7, 5, 3), (300, 40, 129)], ids=str)
def test_rbf_matches_cpu(size, dtype, device, rng):
    """The RBF layer's kernels on CuPy arrays (the same fm.ops body as on NumPy, the CUDA
    backend's kernels) against the CPU's, which tests/test_rbf.py checks against float64."""
    batch, n_in, K = size
    X = rng.normal(size=(batch, n_in)).astype(dtype)
    C = rng.normal(size=(K, n_in)).astype(dtype)
    s = rng.uniform(0.5, 2.0, size=K).astype(dtype)
    G = rng.normal(size=(batch, K)).astype(dtype)
    Xd, Cd, sd, Gd = (to_device(a, device) for a in (X, C, s, G))
    D, Phi = gpu().rbf(Xd, Cd, sd)
    assert isinstance(D, cupy().ndarray) and isinstance(Phi, cupy().ndarray)
    Dc, Phic = fm.ops.rbf(X, C, s)
    tol = None if dtype == np.float64 else 1e-4
    assert_close(D, Dc, dtype, tol=tol, what="D")
    assert_close(Phi, Phic, dtype, tol=tol, what="Phi")
    # the backward from the same forward values on both devices
    out = gpu().rbf_backward(Xd, Cd, sd, to_device(Dc, device), to_device(Phic, device), Gd)
    ref = fm.ops.rbf_backward(X, C, s, Dc, Phic, G)
    for k in ("dX", "dcenters", "dwidths"):
        assert_close(out[k], ref[k], dtype, tol=tol, what=k)
    np.testing.assert_array_equal(to_host(Gd), G)  # grad_output is not overwritten
    part = gpu().rbf_backward(
        Xd, Cd, sd, to_device(Dc, device), to_device(Phic, device), Gd, need_params=False
    )
    assert part["dcenters"] is None and part["dwidths"] is None
    assert_close(part["dX"], ref["dX"], dtype, tol=tol, what="dX alone")


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_cpu(ta, tb, dtype, device, rng):
    """_cuda.gemm and _core.gemm: the same binding (outputs passed in, stream last)."""
    from fusedmlp import _cuda

    m, n, k = 33, 17, 65
    A = rng.normal(size=(k, m) if ta else (m, k)).astype(dtype)
    B = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    want = np.empty((m, n), dtype)
    _core.gemm(A, B, want, ta, tb)
    got = cupy().empty((m, n), dtype)
    _cuda.gemm(to_device(A, device), to_device(B, device), got, ta, tb)
    assert_close(got, want, dtype, tol=TOL[dtype] * np.sqrt(k) * 10, what="gemm")
    with pytest.raises(TypeError, match="out: expected a GPU array"):
        _cuda.gemm(to_device(A, device), to_device(B, device), want, ta, tb)


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


def cupy():
    import cupy as cp

    return cp


def dev(a, device="cuda"):
    return None if a is None else to_device(a, device)


# ---------------------------------------------------------------------- batch normalization
# (2, 1) the smallest training batch; 4099 x 37 spans many row chunks (Chan merge); 70 x 1500
# many column tiles.
BN_SHAPES = [(2, 1), (3, 7), (17, 33), (300, 130), (4099, 37), (70, 1500)]
BN_EPS = 1e-5


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("init_from_batch", [False, True], ids=["ema", "deck001_MA1"])
def test_batchnorm_matches_cpu_and_reference(init_from_batch, affine, shape, dtype, device, rng):
    cp = cupy()
    x = bn_cases.make_batch(shape, rng).astype(dtype)
    gamma, beta = (
        (a.astype(dtype) for a in bn_cases.make_affine(shape[1], rng)) if affine else (None, None)
    )
    rm0 = rng.normal(size=shape[1]).astype(dtype)
    rv0 = rng.uniform(0.5, 2.0, size=shape[1]).astype(dtype)
    G = rng.normal(size=shape).astype(dtype)
    kw = dict(momentum=0.3, eps=BN_EPS, init_from_batch=init_from_batch)
    rm_c, rv_c = rm0.copy(), rv0.copy()
    y_c, saved_c = fm.ops.batchnorm_forward(x, gamma, beta, rm_c, rv_c, **kw)
    rm_d, rv_d = cp.asarray(rm0), cp.asarray(rv0)
    y_d, saved_d = fm.ops.batchnorm_forward(dev(x), dev(gamma), dev(beta), rm_d, rv_d, **kw)
    assert isinstance(y_d, cp.ndarray) and y_d.dtype == dtype
    assert isinstance(saved_d.mean, cp.ndarray)

    x64 = x.astype(np.float64)
    g64 = None if gamma is None else gamma.astype(np.float64)
    b64 = None if beta is None else beta.astype(np.float64)
    y_ref, mu, var = bn_ref.forward_train(x64, g64, b64, BN_EPS)
    rm_ref, rv_ref = bn_ref.running_update(
        rm0.astype(np.float64), rv0.astype(np.float64), mu, var, shape[0], 0.3, init_from_batch
    )
    for got, cpu, want, what in (
        (y_d, y_c, y_ref, "y"),
        (saved_d.mean, saved_c.mean, mu, "batch mean"),
        (saved_d.invstd, saved_c.invstd, 1 / np.sqrt(var + BN_EPS), "batch invstd"),
        (rm_d, rm_c, rm_ref, "running mean"),
        (rv_d, rv_c, rv_ref, "running var"),
    ):
        assert_close(got, want, dtype, what=what + " vs reference")
        assert_close(got, cpu, dtype, what=what + " vs CPU")

    dx_d, dg_d, db_d = fm.ops.batchnorm_backward(dev(x), dev(G), dev(gamma), saved_d)
    dx_c, dg_c, db_c = fm.ops.batchnorm_backward(x, G, gamma, saved_c)
    dx_ref, dg_ref, db_ref = bn_ref.backward(x64, G.astype(np.float64), g64, BN_EPS)
    # dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)) cancels terms of size
    # |gamma invstd dy| (to 0 exactly for a batch of 2): rounding is relative to that size
    k = np.abs(1.0 if g64 is None else g64) / np.sqrt(var + BN_EPS)
    dx_tol = TOL[dtype] * max(1.0, float(np.max(k)) * float(np.max(np.abs(G))))
    assert_close(dx_d, dx_ref, dtype, tol=dx_tol, what="dx vs reference")
    assert_close(dx_d, dx_c, dtype, tol=dx_tol, what="dx vs CPU")
    if affine:
        for got, cpu, want, what in ((dg_d, dg_c, dg_ref, "dgamma"), (db_d, db_c, db_ref, "dbeta")):
            assert_close(got, want, dtype, what=what + " vs reference")
            assert_close(got, cpu, dtype, what=what + " vs CPU")
    else:
        assert dg_d is None and db_d is None

    # inference with the updated running statistics (one row at a time is fine too)
    y_inf, none = fm.ops.batchnorm_forward(
        dev(x), dev(gamma), dev(beta), rm_d, rv_d, training=False, eps=BN_EPS
    )
    assert none is None
    want = bn_ref.forward_infer(x64, g64, b64, rm_ref, rv_ref, BN_EPS)
    assert_close(y_inf, want, dtype, what="inference")
    y1, _ = fm.ops.batchnorm_forward(
        dev(x[:1]), dev(gamma), dev(beta), rm_d, rv_d, training=False, eps=BN_EPS
    )
    assert_close(y1, want[:1], dtype, what="inference, one row")


@pytest.mark.parametrize("device", CUDA)
def test_batchnorm_is_deterministic_and_aliasing_safe(device, rng):
    cp = cupy()
    x = cp.asarray(bn_cases.make_batch((5000, 70), rng).astype(np.float32))
    gamma, beta = (cp.asarray(a.astype(np.float32)) for a in bn_cases.make_affine(70, rng))
    G = cp.asarray(rng.normal(size=(5000, 70)).astype(np.float32))
    runs = []
    for _ in range(3):
        rm, rv = cp.zeros(70, cp.float32), cp.ones(70, cp.float32)
        y, saved = fm.ops.batchnorm_forward(x, gamma, beta, rm, rv)
        runs.append(
            [to_host(a) for a in (y, rm, rv, *fm.ops.batchnorm_backward(x, G, gamma, saved))]
        )
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    # the kernels allow y = x and dx = dy (the Network runs them in place)
    from fusedmlp import _cuda

    xc, mean, invstd = x.copy(), cp.empty(70, cp.float32), cp.empty(70, cp.float32)
    _cuda.batchnorm_forward_train(xc, xc, gamma, beta, mean, invstd, None, None, 0.1, 1e-5, False)
    np.testing.assert_array_equal(to_host(xc), runs[0][0])
    Gc = G.copy()
    _cuda.batchnorm_backward(x, Gc, gamma, mean, invstd, Gc)
    np.testing.assert_array_equal(to_host(Gc), runs[0][3])


@pytest.mark.parametrize("device", CUDA)
def test_batchnorm_bad_input(device):
    cp = cupy()
    x = cp.ones((3, 2))
    with pytest.raises(TypeError, match="gamma: expected a GPU array"):
        fm.ops.batchnorm_forward(x, np.ones(2), np.zeros(2), None, None)
    with pytest.raises(TypeError, match="running_mean: expected a CuPy array"):
        fm.ops.batchnorm_forward(x, None, None, np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        fm.ops.batchnorm_forward(cp.ones((1, 2)), None, None, cp.zeros(2), cp.ones(2))
    with pytest.raises(ValueError, match="running_var: expected values >= 0"):
        fm.ops.batchnorm_forward(x, None, None, cp.zeros(2), -cp.ones(2))
    with pytest.raises(ValueError, match="momentum"):
        fm.ops.batchnorm_forward(x, None, None, cp.zeros(2), cp.ones(2), momentum=1.5)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        fm.ops.batchnorm_forward(cp.full((3, 2), cp.nan), None, None, None, None)
    _, saved = fm.ops.batchnorm_forward(x, None, None, None, None)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3, 2\)"):
        fm.ops.batchnorm_backward(x, cp.ones((3, 3)), None, saved)
    with pytest.raises(ValueError, match="at least 2 rows"):  # the C++ check
        fm._cuda.batchnorm_forward_train(
            cp.ones((1, 2)),
            cp.ones((1, 2)),
            None,
            None,
            cp.ones(2),
            cp.ones(2),
            None,
            None,
            0.1,
            1e-5,
            False,
        )


# ---------------------------------------------------------------------- dropout, noise
DROP_SHAPES = [(1, 1), (3, 7), (17, 33), (300, 130), (1001,)]
DROP_KEYS = [(0, 0, 0), (12345, 7, 3), (2**40 + 5, 2**33 + 9, 2**31 + 1)]


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DROP_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("key", DROP_KEYS, ids=["k0", "k1", "k64bit"])
@pytest.mark.parametrize("aligned", [True, False], ids=["vector", "scalar"])
def test_dropout_masks_are_the_cpus_bit_for_bit(aligned, key, shape, dtype, device, rng):
    cp = cupy()
    x = rng.normal(size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)

    def on_device(a):
        if aligned:
            return cp.asarray(a)
        # a view one element into its buffer: not 16-byte aligned, the scalar path
        buf = cp.empty(a.size + 1, dtype=a.dtype)
        buf[1:] = cp.asarray(a.ravel())
        return buf[1:].reshape(a.shape)

    for rate in (0.3, 0.0, 0.9):
        y_d = to_host(fm.ops.dropout(on_device(x), rate, *key))
        y_c = fm.ops.dropout(x, rate, *key)
        assert y_d.dtype == dtype and y_d.shape == shape
        np.testing.assert_array_equal(y_d, y_c)  # same words, same keep rule, same products
        np.testing.assert_array_equal(y_d != 0, drop_ref.keep_mask(shape, rate, *key) & (x != 0))
        assert_close(y_d, drop_ref.dropout(x.astype(np.float64), rate, *key), dtype)
        dx_d = to_host(fm.ops.dropout_backward(on_device(g), rate, *key))
        np.testing.assert_array_equal(dx_d, fm.ops.dropout_backward(g, rate, *key))


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", DROP_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gaussian_noise_matches_cpu_and_reference(shape, dtype, device, rng):
    x = rng.normal(size=shape).astype(dtype)
    y_d = fm.ops.gaussian_noise(dev(x), 0.7, seed=5, step=6, layer=7)
    # the device evaluates cos(2 pi u) as cospi(2 u): equal up to the last bits of a double
    assert_close(y_d, fm.ops.gaussian_noise(x, 0.7, seed=5, step=6, layer=7), dtype, what="vs CPU")
    assert_close(y_d, drop_ref.gaussian_noise(x.astype(np.float64), 0.7, 5, 6, 7), dtype)


@pytest.mark.parametrize("device", CUDA)
def test_dropout_and_noise_identity_cases_and_bad_input(device, rng):
    cp = cupy()
    x = cp.asarray(rng.normal(size=(7, 9)))
    for f in (fm.ops.dropout, fm.ops.dropout_backward):
        y = f(x, 0.5, seed=1, training=False)
        assert y is not x and bool((y == x).all())
    assert bool((fm.ops.gaussian_noise(x, 2.0, seed=1, training=False) == x).all())
    assert bool((fm.ops.gaussian_noise(x, 0.0, seed=1) == x).all())
    with pytest.raises(ValueError, match="rate"):
        fm.ops.dropout(x, 1.0)
    with pytest.raises(ValueError, match=r"rate: expected a drop rate in \[0, 1\)"):  # C++
        fm._cuda.dropout_forward(x, cp.empty_like(x), 1.0, 0, 0, 0)
    with pytest.raises(ValueError, match="stddev"):
        fm.ops.gaussian_noise(x, -1.0)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        fm.ops.dropout(cp.asarray([cp.nan]), 0.5)
    with pytest.raises(ValueError, match="seed"):
        fm.ops.dropout(x, 0.5, seed=-1)


# ---------------------------------------------------------------------- losses
# 5 x 1500 takes the block-per-row kernel; 3000 x 3 many blocks of partial sums.
LOSS_SHAPES = [(1, 1), (1, 5), (7, 1), (17, 10), (300, 130), (5, 1500), (3000, 3)]


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,eps,conv", loss_cases.LOSS_SMOOTHING)
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_loss_matches_cpu_and_reference(weighted, name, eps, conv, shape, dtype, device, rng):
    if name == "cross_entropy" and shape[1] < 2:
        conv = "uniform"  # one class: the deck's eps/(k-1) is undefined
    z, t, w = loss_cases.case(name, shape, rng, weighted)
    z, t = z.astype(dtype), t.astype(dtype)
    w = None if w is None else w.astype(dtype)
    kw = dict(label_smoothing=eps, smoothing=conv)
    L_d, d_d = fm.ops.loss(name, dev(z), dev(t), dev(w), **kw)
    L_c, d_c = fm.ops.loss(name, z, t, w, **kw)
    assert isinstance(L_d, float) and d_d.dtype == dtype
    z64, t64 = z.astype(np.float64), t.astype(np.float64)
    w64 = None if w is None else w.astype(np.float64)
    want = loss_ref.loss(name, z64, t64, w64, eps=eps, convention=conv)
    assert_close(np.array(L_d), np.array(want), dtype, what="loss vs reference")
    assert_close(np.array(L_d), np.array(L_c), dtype, what="loss vs CPU")
    assert_close(d_d, loss_ref.grad(name, z64, t64, w64, eps=eps, convention=conv), dtype)
    assert_close(d_d, d_c, dtype, what="dlogits vs CPU")
    L_only, none = fm.ops.loss(name, dev(z), dev(t), dev(w), grad=False, **kw)
    assert none is None and L_only == L_d


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps,conv", [(0.0, "deck"), (0.2, "deck"), (0.2, "uniform")])
@pytest.mark.parametrize("cols", [2, 6, 1500])
def test_cross_entropy_labels_match_cpu_and_one_hot(cols, eps, conv, dtype, device, rng):
    cp = cupy()
    z = rng.normal(scale=2.0, size=(37, cols)).astype(dtype)
    labels = rng.integers(0, cols, size=37)
    w = rng.uniform(0.0, 2.0, size=37).astype(dtype)
    kw = dict(label_smoothing=eps, smoothing=conv)
    L_d, d_d = fm.ops.loss("ce", cp.asarray(z), cp.asarray(labels), cp.asarray(w), **kw)
    L_c, d_c = fm.ops.loss("ce", z, labels, w, **kw)
    assert_close(np.array(L_d), np.array(L_c), dtype)
    assert_close(d_d, d_c, dtype)
    onehot = loss_ref.one_hot(labels, cols).astype(dtype)
    L_h, d_h = fm.ops.loss("ce", cp.asarray(z), cp.asarray(onehot), cp.asarray(w), **kw)
    assert_close(np.array(L_d), np.array(L_h), dtype)
    assert_close(d_d, d_h, dtype)


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_extreme_logits_output_and_determinism(dtype, device, rng):
    cp = cupy()
    big = 1e4
    z = cp.asarray(np.array([[big, -big, 0.0], [-big, -big, -big]], dtype=dtype))
    L, d = fm.ops.loss("ce", z, cp.asarray([1, 0]))
    assert np.isfinite(L) and bool(cp.isfinite(d).all())
    assert L == pytest.approx((2 * big + np.log(3)) / 2, rel=1e-6)
    zb = rng.normal(scale=3.0, size=(4000, 7)).astype(dtype)
    for name in loss_cases.LOSSES:
        assert_close(
            fm.ops.loss_output(name, cp.asarray(zb)), fm.ops.loss_output(name, zb), dtype, what=name
        )
    t = rng.integers(0, 7, size=4000)
    first = fm.ops.loss("ce", cp.asarray(zb), cp.asarray(t))
    for _ in range(3):  # fixed-order reductions: the same bits every run
        again = fm.ops.loss("ce", cp.asarray(zb), cp.asarray(t))
        assert again[0] == first[0]
        assert bool((again[1] == first[1]).all())


@pytest.mark.parametrize("device", CUDA)
def test_loss_bad_input(device):
    cp = cupy()
    z = cp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"target: label 3 of sample 1 is out of range \[0, 3\)"):
        fm.ops.loss("ce", z, cp.asarray([0, 3]))
    with pytest.raises(TypeError, match="target: expected a GPU array"):
        fm.ops.loss("ce", z, np.array([0, 1]))
    with pytest.raises(TypeError, match="sample_weight: expected a GPU array"):
        fm.ops.loss("ce", z, cp.asarray([0, 1]), np.ones(2))
    with pytest.raises(ValueError, match="target: binary_cross_entropy expects"):
        fm.ops.loss("bce", z, cp.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="half: the 1/2 convention"):
        fm.ops.loss("ce", z, cp.asarray([0, 1]), half=True)
    with pytest.raises(ValueError, match="logits: contains NaN or Inf"):
        fm.ops.loss("mse", cp.full((2, 3), cp.inf), cp.zeros((2, 3)))
    with pytest.raises(ValueError, match="cross_entropy only"):  # the C++ check
        fm._cuda.loss_forward_backward(
            1, z, cp.zeros(2, cp.int32), None, None, None, 0.0, False, False
        )


# ---------------------------------------------------------------------- optimizers


def arena(shapes, decay, gap, pad):
    """Segments for the parameters (decay / max-norm per parameter as Optimizer.step does),
    with `gap` untouched elements after the first one and `pad` after the last."""
    segs, off = [], 0
    for i, (s, d) in enumerate(zip(shapes, decay, strict=True)):
        rows, cols = (1, s[0]) if len(s) == 1 else s
        segs.append(_core.Segment(off, rows, cols, decay=d, max_norm=d and len(s) == 2))
        off += rows * cols + (gap if i == 0 else 0)
    return segs, off + pad


def views(flat, segs, shapes):
    return [
        flat[s.offset : s.offset + s.rows * s.cols].reshape(sh)
        for s, sh in zip(segs, shapes, strict=True)
    ]


def run_arena(step_fn, flat0, segs, shapes, curv, noise, dtype):
    """120 steps of g = c theta + noise on an arena; step_fn(grad_arena, t) updates it and
    returns the current host arena."""
    flat = flat0.copy()
    for t in range(opt_cases.STEPS):
        g = np.zeros_like(flat)
        for gv, gp in zip(
            views(g, segs, shapes),
            opt_cases.grads_at(views(flat, segs, shapes), curv, noise[t], dtype),
            strict=True,
        ):
            gv[...] = gp
        flat = step_fn(g, t + 1)
    return flat


def check_arena_step(opt, rkw, name, shapes, dtype, rng, layout, clip_norm=None, scale_fn=None):
    """The GPU arena step against the float64 reference and against the CPU arena step."""
    cp = cupy()
    theta, curv, noise = opt_cases.problem(shapes, dtype, rng)
    if clip_norm is not None:
        noise = [[10.0 * n for n in step] for step in noise]
    decay = opt.decay_mask(theta)
    # "aligned": n a multiple of the 16-byte group, so the vector path runs inside the runs;
    # "gaps": 3 untouched elements after the first segment and n odd: the scalar path.
    gap, pad = {"aligned": (0, 0), "gaps": (3, 2)}[layout]
    segs, n = arena(shapes, decay, gap, pad)
    if layout == "aligned":
        n += (-n) % 4
    else:
        n += 1 - n % 2
    flat0 = rng.normal(size=n).astype(dtype)  # gap and pad elements must stay as they are
    for v_, th in zip(views(flat0, segs, shapes), theta, strict=True):
        v_[...] = th
    cfg = opt.config()
    lr = opt.lr
    size = _core.optimizer_state_size(cfg, n, segs)
    assert gpu().optimizer_state_size(cfg, n, segs) == size

    p_d, st_d = cp.asarray(flat0), cp.zeros(size, dtype=dtype)

    def gpu_step(g, t):
        gpu().optimizer_step(
            cfg, p_d, cp.asarray(g), st_d, segs, step=t, lr=lr, clip_norm=clip_norm
        )
        return cp.asnumpy(p_d)

    p_c, st_c = flat0.copy(), np.zeros(size, dtype=dtype)

    def cpu_step(g, t):
        scale = 1.0 if clip_norm is None else opt_ref.clip_grad_norm_scale([g], clip_norm)
        _core.optimizer_step(cfg, p_c, g, st_c, segs, t, lr, scale)
        return p_c

    got = run_arena(gpu_step, flat0, segs, shapes, curv, noise, dtype)
    cpu = run_arena(cpu_step, flat0, segs, shapes, curv, noise, dtype)
    r = opt_ref.RefOptimizer(opt.name, **rkw, **opt_cases.eps1_for(name, rkw, dtype))
    want = opt_cases.run_ref(r, theta, curv, noise, lr, decay, grad_scale_fn=scale_fn)
    tol = opt_cases.TRAJ_TOL[dtype]
    for i, (g_, c_, w_) in enumerate(
        zip(views(got, segs, shapes), views(cpu, segs, shapes), want, strict=True)
    ):
        assert_close(g_, w_, dtype, tol=tol, what=f"{name} param {i} vs reference")
        assert_close(g_, c_, dtype, tol=tol, what=f"{name} param {i} vs CPU")
    # elements outside every segment are not touched
    inside = np.zeros(n, dtype=bool)
    for s in segs:
        inside[s.offset : s.offset + s.rows * s.cols] = True
    np.testing.assert_array_equal(got[~inside], flat0[~inside])
    # the state has the CPU's layout (so it moves between the backends unchanged)
    assert_close(cp.asnumpy(st_d), st_c, dtype, tol=tol, what=f"{name} state vs CPU")
    assert max(float(np.abs(w_ - t_).max()) for w_, t_ in zip(want, theta, strict=True)) > 1e-2


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("layout", ["aligned", "gaps"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", opt_cases.CASES, ids=[c[0] for c in opt_cases.CASES])
def test_optimizer_trajectory_matches_reference_and_cpu(case, dtype, layout, device, rng):
    name, cls, kw, rkw = case
    check_arena_step(cls(**kw), rkw, name, opt_cases.SHAPES, dtype, rng, layout)


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("layout", ["aligned", "gaps"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "rmsprop", "adafactor"])
@pytest.mark.parametrize("reg", opt_cases.REG_CASES, ids=[r[0] for r in opt_cases.REG_CASES])
def test_optimizer_regularization_matches_reference(reg, opt_name, dtype, layout, device, rng):
    rname, kw, rkw = reg
    kw, rkw = dict(kw), dict(rkw)
    base = {"sgd": dict(momentum=0.9), "adam": {}, "rmsprop": {}, "adafactor": {}}[opt_name]
    lr = kw.pop("lr", 0.02)
    if opt_name == "adafactor" and "weight_decay" in rkw:  # Adafactor's decay is decoupled
        rkw["decoupled"] = rkw.pop("weight_decay")
    if opt_name == "adafactor":
        rkw["relative_step"] = False
        rkw["eps1"] = float(np.finfo(dtype).eps)
    opt = fm.optim.get(opt_name, lr=lr, **base, **kw)
    check_arena_step(
        opt, {**base, **rkw}, f"{opt_name}/{rname}", [(6, 70), (70,)], dtype, rng, layout
    )


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adafactor"])
def test_clip_norm_on_the_device_matches_reference(opt_name, device, rng):
    opt = fm.optim.get(opt_name, lr=0.02)  # Adafactor: an explicit lr, no relative step
    rkw = {"relative_step": False} if opt_name == "adafactor" else {}
    check_arena_step(
        opt,
        rkw,
        opt_name,
        [(6, 4), (4,)],
        np.float64,
        rng,
        "gaps",
        clip_norm=1.0,
        scale_fn=lambda g: opt_ref.clip_grad_norm_scale(g, 1.0),
    )


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("n", [1, 7, 4096, 4097, 70001, 5_000_000])
def test_grad_sq_norm_and_clip_scale(n, device, rng):
    for dtype in DTYPES:
        g = rng.normal(size=n).astype(dtype)
        want = float(np.sum(g.astype(np.float64) ** 2))
        got = gpu().grad_sq_norm(cupy().asarray(g))
        assert got.shape == () and got.dtype == np.float64
        assert float(got) == pytest.approx(want, rel=1e-13)
        assert float(got) == pytest.approx(float(fm.ops.grad_sq_norm(g)), rel=1e-13)
        assert float(gpu().grad_sq_norm(cupy().asarray(g))) == float(got)  # deterministic
        scale = float(gpu().clip_norm_scale(cupy().asarray(g), 0.5))
        assert scale == pytest.approx(opt_ref.clip_grad_norm_scale([g], 0.5), rel=1e-13)


@pytest.mark.parametrize("device", CUDA)
def test_optimizer_bad_input(device):
    cp = cupy()
    cfg = fm.optim.Adam(lr=0.01).config()
    p, g = cp.ones(6), cp.ones(6)
    s = cp.zeros(12)
    before = cp.asnumpy(p)
    with pytest.raises(ValueError, match="state: expected 12 elements"):
        gpu().optimizer_step(cfg, p, g, cp.zeros(6), step=1, lr=0.1)
    with pytest.raises(TypeError, match="params: expected a CuPy array"):
        gpu().optimizer_step(cfg, np.ones(6), g, s, step=1, lr=0.1)
    with pytest.raises(TypeError, match="grads: expected dtype float64"):
        gpu().optimizer_step(cfg, p, g.astype(cp.float32), s, step=1, lr=0.1)
    with pytest.raises(ValueError, match="grads: contains NaN or Inf"):
        gpu().optimizer_step(cfg, p, cp.full(6, cp.nan), s, step=1, lr=0.1)
    with pytest.raises(ValueError, match="step"):
        gpu().optimizer_step(cfg, p, g, s, step=0, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        gpu().optimizer_step(cfg, p, g, s, step=1, lr=-0.1)
    with pytest.raises(ValueError, match="clip_norm"):
        gpu().optimizer_step(cfg, p, g, s, step=1, lr=0.1, clip_norm=0.0)
    with pytest.raises(ValueError, match=r"segments\[1\]: offset"):
        gpu().optimizer_step(
            cfg, p, g, s, [_core.Segment(0, 1, 4), _core.Segment(2, 1, 2)], step=1, lr=0.1
        )
    with pytest.raises(ValueError, match="params and state: expected separate arrays"):
        fm._cuda.optimizer_step(cfg, s[:6], g, s, None, 1, 0.1)
    with pytest.raises(TypeError, match="config"):
        gpu().optimizer_step("adam", p, g, s, step=1, lr=0.1)
    np.testing.assert_array_equal(cp.asnumpy(p), before)  # every call was refused before a launch
