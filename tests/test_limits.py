"""Sizes and values at the edge (issue 14, item 5 "Sizes and values"): widths beyond what the
BLAS interfaces can index, networks larger than the memory, an eps that rounds to zero in the
parameters' dtype, and BatchNorm over finite inputs whose variance overflows float32."""

from __future__ import annotations

import math
import os
import sys

import fusedmlp as fm
import numpy as np
import pytest


@pytest.mark.parametrize("width", [2**31, 2**62, 2**64])
def test_width_beyond_int32_is_a_value_error_naming_the_argument(width):
    with pytest.raises(ValueError, match=r"hidden\[0\]: expected <= 2147483647"):
        fm.MLP(4, [width], 2)
    with pytest.raises(ValueError, match="units: expected <= 2147483647"):
        fm.Dense(width)
    with pytest.raises(ValueError, match="n_in: expected <= 2147483647"):
        fm.MLP(width, [4], 2)


@pytest.mark.parametrize("bad", [0, -3])
def test_width_must_be_positive(bad):
    with pytest.raises(ValueError, match=r"hidden\[0\]: expected >= 1"):
        fm.MLP(4, [bad], 2)


@pytest.mark.parametrize("bad", [4.0, "8", None])
def test_width_must_be_an_integer(bad):
    with pytest.raises(TypeError, match=r"hidden\[0\]: expected an integer"):
        fm.MLP(4, [bad], 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sizes against sysconf's memory")
def test_network_larger_than_memory_is_a_memory_error_naming_the_layer():
    # 10^6 x 10^6 float32 weights are 4 TB (8 TB with their gradients): refused before any
    # allocation, with the layer named.
    with pytest.raises(MemoryError, match=r"layer 1 \(Dense 1000000x1000000\): .* 8\.0 TB"):
        fm.MLP(4, [10**6, 10**6], 2, dtype="float32")
    with pytest.raises(MemoryError, match=r"layer 0 \(Dense 1000000x1000000\)"):
        fm.Sequential([fm.Dense(10**6), fm.Dense(1)], n_in=10**6)
    # Every layer fits on its own (0.4 of the memory with its gradient), the sum does not: the
    # layer that crosses the limit (the third) is named.
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    w = int(math.sqrt(0.4 * memory / 16))
    with pytest.raises(MemoryError, match=rf"layer 2 \(Dense {w}x{w}\)"):
        fm.MLP(w, [w] * 4, 2, dtype="float64")


@pytest.mark.parametrize("opt", [fm.optim.Adam, fm.optim.RMSProp, fm.optim.AdaGrad])
@pytest.mark.parametrize("eps", [1e-50, 1e-40])  # rounds to 0 / to a subnormal in float32
def test_eps_that_float32_cannot_hold_is_rejected(opt, eps):
    model = fm.MLP(4, [8], 2, dtype="float32")
    with pytest.raises(ValueError, match=r"eps: .* in float32 .* expected eps >= 1\.17549e-38"):
        fm.Trainer(model, optimizer=opt(eps=eps))
    w, g = np.ones(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"eps: .* float32"):
        opt(eps=eps).step([w], [g])
    np.testing.assert_array_equal(w, 1.0)
    # float64 holds these values: accepted, and training stays finite.
    model64 = fm.MLP(4, [8], 2, dtype="float64", seed=0)
    t = fm.Trainer(model64, optimizer=opt(eps=eps), metrics=())
    X = np.random.default_rng(0).normal(size=(16, 4))
    t.train_step(X, np.arange(16) % 2)
    assert all(np.isfinite(a).all() for a in model64.get_weights())


def test_batchnorm_overflowing_variance_skips_the_step():
    # Finite float32 inputs of magnitude 1e38: the batch variance (1e76) overflows. The loss is
    # finite, the running variance would become Inf: the step is skipped (NaN returned) and
    # every parameter, statistic and counter stays as it was.
    model = fm.MLP(4, [8], 2, batchnorm=True, dtype="float32", seed=0)
    t = fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-2), metrics=())
    net = model._net
    before = [w.copy() for w in model.get_weights()]
    state = net.opt_state().copy()
    X = np.full((16, 4), 1e38, np.float32)
    X[::2] *= -1
    y = np.arange(16) % 2
    assert np.isnan(t.train_step(X, y))
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(net.opt_state(), state)
    assert (net.opt_step, net.bn_updates, net.rng_step) == (0, 0, 1)
    # Training goes on from there with ordinary data.
    Xn = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert np.isfinite(t.train_step(Xn, y))
    assert (net.opt_step, net.bn_updates) == (1, 1)
    assert all(np.isfinite(w).all() for w in model.get_weights())
