"""Valid but extreme inputs found by the fuzz (issue 14 item 5) give their correct values,
not NaN: each case against the float64 value computed by hand."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_weight_zero_sample_adds_exactly_zero_even_when_its_loss_overflows(dtype):
    big = np.finfo(dtype).max / 4
    z = np.array([[big], [1.0]], dtype)
    t = np.array([[-big], [0.0]], dtype)  # (z - t)^2 overflows to inf in the first row
    loss, grad = fm.ops.loss("mse", z, t, sample_weight=np.array([0.0, 1.0], dtype))
    assert loss == pytest.approx(0.5)  # (1/N) sum w_i l_i = (0 + 1) / 2
    np.testing.assert_array_equal(grad, np.array([[0.0], [1.0]], dtype))  # 2 (z - t) w / N


def test_global_grad_norm_does_not_overflow_or_underflow():
    R = fm.regularizers
    assert R.global_grad_norm([np.array([3e300]), np.array([[4e300]])]) == pytest.approx(5e300)
    assert R.global_grad_norm([np.array([3e-310, 4e-310])]) == pytest.approx(5e-310)
    g = np.random.default_rng(0).standard_normal(10_000)
    assert R.global_grad_norm([g[:7], g[7:]]) == pytest.approx(np.linalg.norm(g), rel=1e-14)


def test_clip_norm_of_huge_gradients_clips_to_the_norm():
    p, g = np.zeros(2), np.array([3e300, 4e300])
    fm.optim.SGD(lr=1.0, clip_norm=1.0).step([p], [g])
    np.testing.assert_allclose(p, [-0.6, -0.8], rtol=1e-12)


@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_silu_gelu_of_an_overflowed_preactivation_take_their_limits(act):
    X = np.array([[1e30], [-1e30]], np.float32)  # X W overflows to +-inf in float32
    Z, A = fm.ops.dense_forward(X, np.full((1, 1), 1e30, np.float32), None, activation=act)
    np.testing.assert_array_equal(A.ravel(), [np.inf, 0.0])  # x Phi(x): inf, and 0 at -inf
