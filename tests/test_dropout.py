"""Dropout and Gaussian noise: exact agreement with an independent NumPy Philox4x32-10
(tests/reference/dropout.py), keep-rate and moment statistics within binomial/normal bounds,
reproducibility and key separation, identity at inference, finite differences, bad input. The
kernel checks run on every device (conftest.DEVICES), and the device's masks are the CPU's bit
for bit."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import DEVICES, array_module, assert_close, kernels, to_device, to_host
from reference import dropout as ref
from reference.finite_differences import central_difference_grad

DTYPES = [np.float64, np.float32]
# (1, 1) and (3, 7) leave partial Philox blocks; 300 x 130 crosses the OpenMP threshold;
# (1001,) a 1-d array with a partial vector at the end.
SHAPES = [(1, 1), (3, 7), (17, 33), (300, 130), (1001,)]
KEYS = [(0, 0, 0), (12345, 7, 3), (2**40 + 5, 2**33 + 9, 2**31 + 1)]
SIGMAS = 6.0  # statistical bounds: a false failure has probability ~1e-9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("key", KEYS, ids=["k0", "k1", "k64bit"])
@pytest.mark.parametrize("aligned", [True, False], ids=["vector", "scalar"])
def test_dropout_matches_philox_reference(aligned, key, shape, dtype, device, rng):
    x = rng.normal(size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    xp = array_module(device)

    def on_device(a):
        if aligned:
            return to_device(a, device)
        # a view one element into its buffer: not 16-byte aligned, the scalar path
        buf = xp.empty(a.size + 1, dtype=a.dtype)
        buf[1:] = to_device(a.ravel(), device)
        return buf[1:].reshape(a.shape)

    for rate in (0.3, 0.0, 0.9):
        y = to_host(fm.ops.dropout(on_device(x), rate, *key))
        want = ref.dropout(x.astype(np.float64), rate, *key)
        assert y.dtype == dtype and y.shape == shape
        np.testing.assert_array_equal(y != 0, ref.keep_mask(shape, rate, *key) & (x != 0))
        assert_close(y, want, dtype, what="dropout forward")
        # the CPU's bits: same words, same keep rule, same products
        np.testing.assert_array_equal(y, fm.ops.dropout(x, rate, *key))
        dx = to_host(fm.ops.dropout_backward(on_device(g), rate, *key))
        want = ref.dropout(g.astype(np.float64), rate, *key)
        assert_close(dx, want, dtype, what="dropout backward")
        np.testing.assert_array_equal(dx, fm.ops.dropout_backward(g, rate, *key))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_rate_within_binomial_bounds(rate):
    n = 400 * 500
    kept = np.count_nonzero(fm.ops.dropout(np.ones((400, 500)), rate, seed=11, step=3, layer=1))
    p = 1.0 - rate
    assert abs(kept / n - p) <= SIGMAS * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_expectation_is_preserved(rate):
    x = np.full((300, 400), 2.5)
    y = fm.ops.dropout(x, rate, seed=5, step=1, layer=2)
    # y = x / (1 - rate) w.p. 1 - rate: mean x, variance x^2 rate / (1 - rate)
    assert set(np.unique(y)) <= {0.0, 2.5 / (1 - rate)}
    sd = 2.5 * np.sqrt(rate / (1 - rate) / x.size)
    assert abs(y.mean() - 2.5) <= SIGMAS * sd


def test_equal_keys_reproduce_and_different_keys_differ():
    x = np.ones((64, 65))
    base = dict(seed=1, step=4, layer=2)
    y = fm.ops.dropout(x, 0.5, **base)
    np.testing.assert_array_equal(y, fm.ops.dropout(x, 0.5, **base))
    for change in ({"seed": 2}, {"step": 5}, {"layer": 3}, {"step": 4 + 2**32}):
        other = fm.ops.dropout(x, 0.5, **{**base, **change})
        agree = np.mean((other != 0) == (y != 0))
        # independent masks agree on half the elements; 6 sigma over 4160 elements
        assert abs(agree - 0.5) < SIGMAS * 0.5 / np.sqrt(x.size), change


def test_masks_do_not_depend_on_dtype_or_threads():
    x = np.ones((300, 300))
    kw = dict(seed=9, step=4, layer=3)
    y64 = fm.ops.dropout(x, 0.37, **kw)
    y32 = fm.ops.dropout(x.astype(np.float32), 0.37, **kw)
    np.testing.assert_array_equal(y32 != 0, y64 != 0)
    n = fm.get_num_threads()
    try:
        fm.set_num_threads(1)
        y1 = fm.ops.dropout(x, 0.37, **kw)
        z1 = fm.ops.gaussian_noise(x, 1.0, **kw)
        fm.set_num_threads(2)
        y2 = fm.ops.dropout(x, 0.37, **kw)
        z2 = fm.ops.gaussian_noise(x, 1.0, **kw)
    finally:
        fm.set_num_threads(n)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(z1, z2)


def test_mask_depends_on_the_flat_index_only():
    # a (rows, cols) array and its flattening see the same draw (the Network's buffers)
    x = np.arange(1.0, 36.0).reshape(5, 7)
    np.testing.assert_array_equal(
        fm.ops.dropout(x, 0.4, seed=3).ravel(), fm.ops.dropout(x.ravel(), 0.4, seed=3)
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_at_inference_and_rate_zero(dtype, device, rng):
    x = rng.normal(size=(7, 9)).astype(dtype)
    xd = to_device(x, device)
    for f in (fm.ops.dropout, fm.ops.dropout_backward):
        y = f(xd, 0.5, seed=1, training=False)
        np.testing.assert_array_equal(to_host(y), x)
        assert y is not xd
        np.testing.assert_array_equal(to_host(f(xd, 0.0, seed=1)), x)
    y = fm.ops.gaussian_noise(xd, 2.0, seed=1, training=False)
    np.testing.assert_array_equal(to_host(y), x)
    np.testing.assert_array_equal(to_host(fm.ops.gaussian_noise(xd, 0.0, seed=1)), x)


def test_dropout_backward_matches_finite_differences(rng):
    x = rng.normal(size=(4, 6))
    G = rng.normal(size=x.shape)
    kw = dict(seed=8, step=2, layer=1)
    fd = central_difference_grad(lambda t: float(np.sum(G * fm.ops.dropout(t, 0.4, **kw))), x)
    np.testing.assert_allclose(fm.ops.dropout_backward(G, 0.4, **kw), fd, rtol=1e-6, atol=1e-8)


def test_gaussian_noise_backward_is_identity_by_finite_differences(rng):
    x = rng.normal(size=(3, 5))
    G = rng.normal(size=x.shape)
    fd = central_difference_grad(
        lambda t: float(np.sum(G * fm.ops.gaussian_noise(t, 0.8, seed=2))), x
    )
    np.testing.assert_allclose(fd, G, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gaussian_noise_matches_philox_reference(shape, dtype, device, rng):
    x = rng.normal(size=shape).astype(dtype)
    y = fm.ops.gaussian_noise(to_device(x, device), 0.7, seed=5, step=6, layer=7)
    assert_close(y, ref.gaussian_noise(x.astype(np.float64), 0.7, 5, 6, 7), dtype)
    # the GPU evaluates cos(2 pi u) as cospi(2 u): the CPU's values up to the last bits
    cpu = fm.ops.gaussian_noise(x, 0.7, seed=5, step=6, layer=7)
    assert_close(y, cpu, dtype, what="vs the CPU")


def test_gaussian_noise_moments_and_keys():
    n = 500 * 400
    z = fm.ops.gaussian_noise(np.zeros((500, 400)), 1.5, seed=21, step=1, layer=4)
    assert abs(z.mean()) <= SIGMAS * 1.5 / np.sqrt(n)
    # var of the sample variance of N(0, s^2): 2 s^4 / n
    assert abs(z.var() - 1.5**2) <= SIGMAS * np.sqrt(2 / n) * 1.5**2
    again = fm.ops.gaussian_noise(np.zeros((500, 400)), 1.5, seed=21, step=1, layer=4)
    np.testing.assert_array_equal(z, again)
    other = fm.ops.gaussian_noise(np.zeros((500, 400)), 1.5, seed=21, step=2, layer=4)
    assert abs(np.corrcoef(z.ravel(), other.ravel())[0, 1]) < SIGMAS / np.sqrt(n)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_on_each_device(device):
    x = to_device(np.random.default_rng(0).normal(size=(7, 9)), device)
    with pytest.raises(ValueError, match="rate"):
        fm.ops.dropout(x, 1.0)
    with pytest.raises(ValueError, match=r"rate: expected a drop rate in \[0, 1\)"):  # C++
        kernels(device).dropout_forward(x, array_module(device).empty_like(x), 1.0, 0, 0, 0)
    with pytest.raises(ValueError, match="stddev"):
        fm.ops.gaussian_noise(x, -1.0)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        fm.ops.dropout(to_device(np.array([np.nan]), device), 0.5)
    with pytest.raises(ValueError, match="seed"):
        fm.ops.dropout(x, 0.5, seed=-1)


class TestBadInput:
    @pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
    def test_rate_outside_unit_interval(self, rate):
        with pytest.raises(ValueError, match="rate"):
            fm.ops.dropout(np.ones((2, 2)), rate)
        with pytest.raises(ValueError, match="rate"):
            fm.ops.dropout_backward(np.ones((2, 2)), rate)

    def test_rate_checked_in_cpp(self):
        with pytest.raises(ValueError, match=r"rate: expected a drop rate in \[0, 1\)"):
            fm._core.dropout_forward(np.ones(3), np.empty(3), 1.0, 0, 0, 0)

    def test_rate_type(self):
        with pytest.raises(TypeError, match="rate: expected a real number"):
            fm.ops.dropout(np.ones((2, 2)), "0.5")

    @pytest.mark.parametrize(
        "kw,arg",
        [
            ({"seed": -1}, "seed"),
            ({"step": 2**64}, "step"),
            ({"layer": 2**32}, "layer"),
            ({"seed": 1.5}, "seed"),
        ],
    )
    def test_key_range(self, kw, arg):
        with pytest.raises((ValueError, TypeError), match=arg):
            fm.ops.dropout(np.ones((2, 2)), 0.5, **kw)
        with pytest.raises((ValueError, TypeError), match=arg):
            fm.ops.gaussian_noise(np.ones((2, 2)), 0.5, **kw)

    def test_inputs(self):
        with pytest.raises(ValueError, match="x: contains NaN or Inf"):
            fm.ops.dropout(np.array([[np.nan]]), 0.5)
        with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
            fm.ops.dropout(np.ones((2, 2), dtype=np.int64), 0.5)
        with pytest.raises(ValueError, match="grad_output: expected a non-empty array"):
            fm.ops.dropout_backward(np.ones((0, 2)), 0.5)
        with pytest.raises(ValueError, match="x: contains NaN or Inf"):
            fm.ops.gaussian_noise(np.array([np.inf]), 0.5)

    @pytest.mark.parametrize("stddev", [-1.0, float("nan")])
    def test_stddev(self, stddev):
        with pytest.raises(ValueError, match="stddev"):
            fm.ops.gaussian_noise(np.ones((2, 2)), stddev)
