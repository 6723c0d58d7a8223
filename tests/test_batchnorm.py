"""Batch normalization kernels against the float64 reference (tests/reference/batchnorm.py),
the references and the kernels against central differences, the running statistics over
several steps, the training/inference switch, aliasing and determinism, and bad input. The
kernel checks run on every device (conftest.DEVICES)."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import (
    CUDA,
    DEVICES,
    TOL,
    array_module,
    assert_close,
    kernels,
    to_device,
    to_host,
)
from reference import batchnorm as ref
from reference.batchnorm_cases import make_affine, make_batch
from reference.finite_differences import central_difference_grads

DTYPES = [np.float64, np.float32]
# (2, 1) the smallest training batch; 130 columns span three 64-column blocks; 300 x 130
# crosses the OpenMP threshold; 4099 x 37 spans many GPU row chunks (Chan merge), 70 x 1500
# many GPU column tiles.
SHAPES = [(2, 1), (3, 7), (17, 33), (5, 130), (300, 130), (4099, 37), (70, 1500)]
EPS = 1e-5


def test_reference_backward_matches_central_differences(rng):
    x = make_batch((6, 4), rng)
    gamma, beta = make_affine(4, rng)
    G = rng.normal(size=x.shape)
    f = lambda x_, g_, b_: float(np.sum(G * ref.forward_train(x_, g_, b_, EPS)[0]))  # noqa: E731
    fd = central_difference_grads(f, [x, gamma, beta])
    an = ref.backward(x, G, gamma, EPS)
    for a, b in zip(an, fd, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_kernel_backward_matches_central_differences(affine, rng):
    x = make_batch((5, 3), rng)
    gamma, beta = make_affine(3, rng) if affine else (None, None)
    G = rng.normal(size=x.shape)

    def f(x_, *gb):
        g_, b_ = gb if affine else (None, None)
        return float(np.sum(G * fm.ops.batchnorm_forward(x_, g_, b_, None, None, eps=EPS)[0]))

    arrays = [x, gamma, beta] if affine else [x]
    fd = central_difference_grads(f, arrays)
    _, saved = fm.ops.batchnorm_forward(x, gamma, beta, None, None, eps=EPS)
    dx, dg, db = fm.ops.batchnorm_backward(x, G, gamma, saved)
    np.testing.assert_allclose(dx, fd[0], rtol=1e-6, atol=1e-7)
    if affine:
        np.testing.assert_allclose(dg, fd[1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(db, fd[2], rtol=1e-6, atol=1e-7)
    else:
        assert dg is None and db is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("init_from_batch", [False, True], ids=["ema", "deck001_MA1"])
def test_training_forward_and_backward_match_reference(
    init_from_batch, affine, shape, dtype, device, rng
):
    x = make_batch(shape, rng).astype(dtype)
    gamma, beta = (a.astype(dtype) for a in make_affine(shape[1], rng)) if affine else (None, None)
    rm0 = rng.normal(size=shape[1]).astype(dtype)
    rv0 = rng.uniform(0.5, 2.0, size=shape[1]).astype(dtype)
    G = rng.normal(size=shape).astype(dtype)

    def dev(a):
        return None if a is None else to_device(a, device)

    # the running statistics are updated in place on the device: keep the device arrays
    rm, rv = dev(rm0.copy()), dev(rv0.copy())
    kw = dict(momentum=0.3, eps=EPS, init_from_batch=init_from_batch)
    y, saved = fm.ops.batchnorm_forward(dev(x), dev(gamma), dev(beta), rm, rv, **kw)
    x64 = x.astype(np.float64)
    g64 = None if gamma is None else gamma.astype(np.float64)
    b64 = None if beta is None else beta.astype(np.float64)
    y_ref, mu, var = ref.forward_train(x64, g64, b64, EPS)
    assert type(y) is type(dev(x)) and type(saved.mean) is type(dev(x)) and y.dtype == dtype
    assert_close(y, y_ref, dtype, what="y")
    assert_close(saved.mean, mu, dtype, what="batch mean")
    assert_close(saved.invstd, 1 / np.sqrt(var + EPS), dtype, what="batch invstd")
    rm_ref, rv_ref = ref.running_update(
        rm0.astype(np.float64), rv0.astype(np.float64), mu, var, shape[0], 0.3, init_from_batch
    )
    assert_close(rm, rm_ref, dtype, what="running mean")
    assert_close(rv, rv_ref, dtype, what="running var")
    dx, dg, db = fm.ops.batchnorm_backward(dev(x), dev(G), dev(gamma), saved)
    dx_ref, dg_ref, db_ref = ref.backward(x64, G.astype(np.float64), g64, EPS)
    dx_tol = None
    if device == "cuda":
        # dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)) cancels terms of size
        # |gamma invstd dy| (to 0 exactly for a batch of 2): the GPU's differently ordered
        # sums round relative to that size
        k = np.abs(1.0 if g64 is None else g64) / np.sqrt(var + EPS)
        dx_tol = TOL[dtype] * max(1.0, float(np.max(k)) * float(np.max(np.abs(G))))
    assert_close(dx, dx_ref, dtype, tol=dx_tol, what="dx")
    if affine:
        assert_close(dg, dg_ref, dtype, what="dgamma")
        assert_close(db, db_ref, dtype, what="dbeta")
    else:
        assert dg is None and db is None
    # inference with the updated running statistics (one row at a time is fine too)
    y_inf, none = fm.ops.batchnorm_forward(
        dev(x), dev(gamma), dev(beta), rm, rv, training=False, eps=EPS
    )
    assert none is None
    want = ref.forward_infer(x64, g64, b64, rm_ref, rv_ref, EPS)
    assert_close(y_inf, want, dtype, what="inference")
    y1, _ = fm.ops.batchnorm_forward(dev(x[:1]), dev(gamma), dev(beta), rm, rv, training=False)
    assert_close(y1, want[:1], dtype, what="inference, one row")


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_and_aliasing_safe(device, rng):
    xp = array_module(device)
    x = to_device(make_batch((5000, 70), rng).astype(np.float32), device)
    gamma, beta = (to_device(a.astype(np.float32), device) for a in make_affine(70, rng))
    G = to_device(rng.normal(size=(5000, 70)).astype(np.float32), device)
    runs = []
    for _ in range(3):
        rm, rv = xp.zeros(70, xp.float32), xp.ones(70, xp.float32)
        y, saved = fm.ops.batchnorm_forward(x, gamma, beta, rm, rv)
        runs.append(
            [to_host(a) for a in (y, rm, rv, *fm.ops.batchnorm_backward(x, G, gamma, saved))]
        )
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    # the kernels allow y = x and dx = dy (the Network runs them in place)
    k = kernels(device)
    xc, mean, invstd = x.copy(), xp.empty(70, xp.float32), xp.empty(70, xp.float32)
    k.batchnorm_forward_train(xc, xc, gamma, beta, mean, invstd, None, None, 0.1, 1e-5, False)
    np.testing.assert_array_equal(to_host(xc), runs[0][0])
    Gc = G.copy()
    k.batchnorm_backward(x, Gc, gamma, mean, invstd, Gc)
    np.testing.assert_array_equal(to_host(Gc), runs[0][3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init_from_batch", [False, True], ids=["zero_one_start", "deck001_MA1"])
def test_running_statistics_over_several_steps(init_from_batch, dtype, rng):
    n = 9
    rm = np.zeros(n, dtype=dtype)
    rv = np.ones(n, dtype=dtype)
    rm_ref, rv_ref = np.zeros(n), np.ones(n)
    gamma, beta = (a.astype(dtype) for a in make_affine(n, rng))
    for step in range(6):
        x = (make_batch((16 + step, n), rng) + 3.0).astype(dtype)
        first = init_from_batch and step == 0
        fm.ops.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.25, init_from_batch=first)
        _, mu, var = ref.forward_train(x.astype(np.float64), None, None, EPS)
        rm_ref, rv_ref = ref.running_update(rm_ref, rv_ref, mu, var, x.shape[0], 0.25, first)
        assert_close(rm, rm_ref, dtype, what=f"running mean, step {step}")
        assert_close(rv, rv_ref, dtype, what=f"running var, step {step}")
    if init_from_batch:
        # deck 001: MA(1) is the first batch's statistics, then the EMA takes over
        x = make_batch((8, n), rng).astype(dtype)
        rm1, rv1 = np.zeros(n, dtype=dtype), np.ones(n, dtype=dtype)
        fm.ops.batchnorm_forward(x, gamma, beta, rm1, rv1, init_from_batch=True)
        assert_close(rm1, x.astype(np.float64).mean(axis=0), dtype)
        assert_close(rv1, x.astype(np.float64).var(axis=0, ddof=1), dtype)


def test_momentum_bounds_and_unbiased_variance():
    x = np.array([[1.0, 0.0], [3.0, 4.0], [5.0, 2.0]])
    rm, rv = np.zeros(2), np.ones(2)
    fm.ops.batchnorm_forward(x, None, None, rm, rv, momentum=1.0)  # keeps only the batch
    np.testing.assert_allclose(rm, [3.0, 2.0])
    np.testing.assert_allclose(rv, [4.0, 4.0])  # unbiased: sum of squares / (m - 1)
    fm.ops.batchnorm_forward(x + 10, None, None, rm, rv, momentum=0.0)  # frozen
    np.testing.assert_allclose(rm, [3.0, 2.0])
    np.testing.assert_allclose(rv, [4.0, 4.0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_training_inference_switch(dtype, device, rng):
    n = 70
    gamma, beta = (a.astype(dtype) for a in make_affine(n, rng))
    rm, rv = np.zeros(n, dtype=dtype), np.ones(n, dtype=dtype)
    for _ in range(4):
        fm.ops.batchnorm_forward(make_batch((32, n), rng).astype(dtype), gamma, beta, rm, rv)
    x = make_batch((11, n), rng).astype(dtype)
    rm_before, rv_before = rm.copy(), rv.copy()
    on_device = [to_device(a, device) for a in (x, gamma, beta, rm, rv)]  # mixing is an error
    y_inf, saved = fm.ops.batchnorm_forward(*on_device, training=False)
    assert saved is None
    np.testing.assert_array_equal(rm, rm_before)  # inference leaves the statistics alone
    np.testing.assert_array_equal(rv, rv_before)
    want = ref.forward_infer(*(a.astype(np.float64) for a in (x, gamma, beta, rm, rv)), EPS)
    assert_close(y_inf, want, dtype, what="inference")
    y_train, _ = fm.ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), training=True)
    assert np.abs(np.asarray(y_train, dtype=np.float64) - want).max() > 1e-2  # batch stats differ
    # one sample at inference is fine, and each row is normalized on its own
    y1, _ = fm.ops.batchnorm_forward(x[:1], gamma, beta, rm, rv, training=False)
    assert_close(y1, want[:1], dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_on_each_device(device):
    def dev(a):
        return to_device(np.asarray(a, dtype=np.float64), device)

    x = dev(np.ones((3, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        fm.ops.batchnorm_forward(
            dev(np.ones((1, 2))), None, None, dev(np.zeros(2)), dev(np.ones(2))
        )
    with pytest.raises(ValueError, match="running_var: expected values >= 0"):
        fm.ops.batchnorm_forward(x, None, None, dev(np.zeros(2)), dev(-np.ones(2)))
    with pytest.raises(ValueError, match="momentum"):
        fm.ops.batchnorm_forward(x, None, None, dev(np.zeros(2)), dev(np.ones(2)), momentum=1.5)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        fm.ops.batchnorm_forward(dev(np.full((3, 2), np.nan)), None, None, None, None)
    _, saved = fm.ops.batchnorm_forward(x, None, None, None, None)
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(3, 2\)"):
        fm.ops.batchnorm_backward(x, dev(np.ones((3, 3))), None, saved)
    with pytest.raises(ValueError, match="at least 2 rows"):  # the C++ check
        kernels(device).batchnorm_forward_train(
            dev(np.ones((1, 2))),
            dev(np.ones((1, 2))),
            None,
            None,
            dev(np.ones(2)),
            dev(np.ones(2)),
            None,
            None,
            0.1,
            1e-5,
            False,
        )


@pytest.mark.parametrize("device", CUDA)
def test_mixed_devices_are_refused(device):
    x = to_device(np.ones((3, 2)), device)
    with pytest.raises(TypeError, match="gamma: expected a GPU array"):
        fm.ops.batchnorm_forward(x, np.ones(2), np.zeros(2), None, None)
    with pytest.raises(TypeError, match="running_mean: expected a CuPy array"):
        fm.ops.batchnorm_forward(x, None, None, np.zeros(2), np.ones(2))


def test_constant_feature_gives_beta_not_nan():
    x = np.column_stack([np.full(5, 7.0), np.arange(5.0)])
    y, saved = fm.ops.batchnorm_forward(x, np.array([2.0, 1.0]), np.array([0.5, 0.0]), None, None)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:, 0], 0.5)
    dx, dg, db = fm.ops.batchnorm_backward(x, np.ones_like(x), np.array([2.0, 1.0]), saved)
    assert np.isfinite(dx).all() and np.isfinite(dg).all()


def test_thread_count_does_not_change_results(rng):
    x = make_batch((400, 200), rng).astype(np.float32)
    gamma, beta = (a.astype(np.float32) for a in make_affine(200, rng))
    G = rng.normal(size=x.shape).astype(np.float32)
    n = fm.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            fm.set_num_threads(t)
            rm, rv = np.zeros(200, np.float32), np.ones(200, np.float32)
            y, saved = fm.ops.batchnorm_forward(x, gamma, beta, rm, rv)
            outs.append((y, rm, rv, *fm.ops.batchnorm_backward(x, G, gamma, saved)))
    finally:
        fm.set_num_threads(n)
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


class TestBadInput:
    def test_batch_of_one_in_training(self):
        with pytest.raises(
            ValueError, match="x: batch normalization in training needs a batch of at least 2"
        ):
            fm.ops.batchnorm_forward(np.ones((1, 3)), None, None, np.zeros(3), np.ones(3))
        with pytest.raises(ValueError, match="at least 2"):
            fm.ops.batchnorm_backward(
                np.ones((1, 3)), np.ones((1, 3)), None, (np.zeros(3), np.ones(3))
            )

    def test_batch_of_one_checked_in_cpp(self):
        with pytest.raises(ValueError, match="at least 2 rows"):
            x = np.ones((1, 3))
            fm._core.batchnorm_forward_train(
                x,
                np.empty_like(x),
                None,
                None,
                np.empty(3),
                np.empty(3),
                None,
                None,
                0.1,
                1e-5,
                False,
            )

    def test_x_shape_dtype_and_values(self):
        with pytest.raises(ValueError, match="x: expected a 2-d array"):
            fm.ops.batchnorm_forward(np.ones(4), None, None, None, None)
        with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
            fm.ops.batchnorm_forward(np.ones((3, 2), dtype=np.int32), None, None, None, None)
        with pytest.raises(ValueError, match="x: contains NaN or Inf"):
            fm.ops.batchnorm_forward(np.array([[1.0], [np.nan]]), None, None, None, None)

    def test_gamma_beta(self):
        x = np.ones((3, 2))
        with pytest.raises(ValueError, match="gamma, beta: pass both"):
            fm.ops.batchnorm_forward(x, np.ones(2), None, None, None)
        with pytest.raises(ValueError, match=r"gamma: expected shape \(2,\)"):
            fm.ops.batchnorm_forward(x, np.ones(3), np.zeros(3), None, None)
        with pytest.raises(TypeError, match="beta: expected dtype float64"):
            fm.ops.batchnorm_forward(x, np.ones(2), np.zeros(2, np.float32), None, None)

    def test_running_statistics(self):
        x = np.ones((3, 2))
        with pytest.raises(TypeError, match="running_mean: expected a NumPy array"):
            fm.ops.batchnorm_forward(x, None, None, [0.0, 0.0], np.ones(2))
        with pytest.raises(TypeError, match="running_var: expected dtype float64"):
            fm.ops.batchnorm_forward(x, None, None, np.zeros(2), np.ones(2, np.float32))
        with pytest.raises(ValueError, match=r"running_mean: expected shape \(2,\)"):
            fm.ops.batchnorm_forward(x, None, None, np.zeros(3), np.ones(2))
        frozen = np.zeros(2)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="running_mean: expected a writeable"):
            fm.ops.batchnorm_forward(x, None, None, frozen, np.ones(2))
        with pytest.raises(ValueError, match="running_mean, running_var: pass both"):
            fm.ops.batchnorm_forward(x, None, None, np.zeros(2), None)
        with pytest.raises(ValueError, match="running_var: expected values >= 0"):
            fm.ops.batchnorm_forward(x, None, None, np.zeros(2), -np.ones(2))
        with pytest.raises(ValueError, match="running_var: contains NaN"):
            fm.ops.batchnorm_forward(x, None, None, np.zeros(2), np.array([1.0, np.nan]))
        with pytest.raises(ValueError, match="inference normalizes with the running statistics"):
            fm.ops.batchnorm_forward(x, None, None, None, None, training=False)
        with pytest.raises(ValueError, match="running_var: expected values >= 0"):
            fm.ops.batchnorm_forward(x, None, None, np.zeros(2), -np.ones(2), training=False)

    @pytest.mark.parametrize(
        "kw,arg",
        [
            ({"momentum": 1.5}, "momentum"),
            ({"momentum": -0.1}, "momentum"),
            ({"eps": 0.0}, "eps"),
            ({"eps": float("nan")}, "eps"),
            ({"momentum": "0.1"}, "momentum"),
        ],
    )
    def test_hyper_parameters(self, kw, arg):
        with pytest.raises((ValueError, TypeError), match=arg):
            fm.ops.batchnorm_forward(np.ones((3, 2)), None, None, np.zeros(2), np.ones(2), **kw)

    def test_backward_arguments(self):
        x = np.random.default_rng(0).normal(size=(4, 3))
        _, saved = fm.ops.batchnorm_forward(x, None, None, None, None)
        with pytest.raises(ValueError, match=r"grad_output: expected shape \(4, 3\)"):
            fm.ops.batchnorm_backward(x, np.ones((4, 2)), None, saved)
        with pytest.raises(TypeError, match="saved: expected the BatchNormSaved"):
            fm.ops.batchnorm_backward(x, np.ones((4, 3)), None, None)
        with pytest.raises(ValueError, match=r"saved.invstd: expected shape \(3,\)"):
            fm.ops.batchnorm_backward(x, np.ones((4, 3)), None, (saved.mean, np.ones(2)))
        with pytest.raises(ValueError, match="saved.invstd: expected values > 0"):
            fm.ops.batchnorm_backward(x, np.ones((4, 3)), None, (saved.mean, np.zeros(3)))
        with pytest.raises(ValueError, match=r"gamma: expected shape \(3,\)"):
            fm.ops.batchnorm_backward(x, np.ones((4, 3)), np.ones(4), saved)
