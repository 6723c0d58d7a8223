"""The op bindings of both extension modules (csrc/bindings/ops.h, issue 17 item 1): one
binding body instantiated over host memory (_core) and device memory (_cuda), so both modules
export the same ops with the same signatures; outputs are always preallocated by the caller
and checked by name (shape, dtype, writeable, contiguous). Runs on the CPU; the _cuda
comparison needs only the module to import (no device)."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp._loader import _core, _cuda

# What the modules add besides the shared ops: the configuration classes (built by the Python
# layer for both modules), the host thread controls and norm, the Networks, the device queries.
CORE_ONLY = {
    "ActConfig",
    "OptConfig",
    "Segment",
    "HeadSpec",
    "LayerSpec",
    "Network32",
    "Network64",
    "get_blas_threads",
    "get_num_threads",
    "set_num_threads",
    "native_build",
    "grad_norm",
}
CUDA_ONLY = {
    "CudaNetwork32",
    "CudaNetwork64",
    "DeviceView",
    "device_count",
    "unavailable_reason",
    "get_allow_tf32",
    "set_allow_tf32",
    "relu_mask_bytes",
}
OPS = {
    "activation_forward",
    "activation_derivative",
    "activation_backward",
    "softmax_forward",
    "softmax_backward",
    "maxout_forward",
    "maxout_backward",
    "dense_forward",
    "dense_backward",
    "gemm",
    "batchnorm_forward_train",
    "batchnorm_forward_infer",
    "batchnorm_backward",
    "dropout_forward",
    "dropout_backward",
    "gaussian_noise_forward",
    "rbf_forward",
    "rbf_backward",
    "loss_forward_backward",
    "loss_output",
    "optimizer_step",
    "grad_sq_norm",
}


def public(mod) -> set[str]:
    return {n for n in dir(mod) if not n.startswith("_")}


def test_core_exports_the_ops():
    assert OPS <= public(_core)


@pytest.mark.skipif(_cuda is None, reason="fusedmlp._cuda was not built")
def test_both_modules_export_the_same_ops():
    core, cuda = public(_core) - CORE_ONLY, public(_cuda) - CUDA_ONLY
    assert core == cuda, (sorted(core - cuda), sorted(cuda - core))
    for name in sorted(core):
        a, b = getattr(_core, name), getattr(_cuda, name)
        if callable(a):  # the pybind11 docstring starts with the full signature
            assert a.__doc__ == b.__doc__, name
        else:
            assert a == b, name


def test_every_op_takes_a_stream_last():
    for name in sorted(OPS):
        signature = getattr(_core, name).__doc__.splitlines()[0]
        assert signature.endswith("stream: object = None) -> None"), signature


def relu():
    return fm._activations.make_spec("relu").config(training=False, seed=0, step=0, layer=0)


def test_outputs_are_written_in_place():
    z = np.array([[-1.0, 2.0], [3.0, -4.0]])
    out = np.full_like(z, np.nan)
    assert _core.activation_forward(relu(), z, out) is None
    np.testing.assert_array_equal(out, np.maximum(z, 0.0))
    A, B = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    C = np.empty((2, 4))
    _core.gemm(A, B, C)
    np.testing.assert_array_equal(C, A @ B)
    loss = np.empty(())
    _core.loss_forward_backward(
        2, np.zeros((2, 4)), np.array([0, 3], np.int32), None, None, loss, 0.0, False, False
    )
    assert float(loss) == pytest.approx(np.log(4.0), rel=1e-15)


@pytest.mark.parametrize(
    "out,error,match",
    [
        (np.empty((2, 3)), ValueError, r"out: expected shape \(2, 2\), got \(2, 3\)"),
        (np.empty((2, 2), np.float32), TypeError, "out: expected dtype float64 .*got float32"),
        (np.empty((2, 2), np.int64), TypeError, "out: expected dtype float32 or float64"),
        (np.empty((2, 4))[:, ::2], ValueError, "out: expected a C-contiguous array"),
        ([[0.0, 0.0], [0.0, 0.0]], TypeError, "out: expected a NumPy array, got list"),
    ],
)
def test_bad_output_is_named(out, error, match):
    z = np.ones((2, 2))
    with pytest.raises(error, match=match):
        _core.activation_forward(relu(), z, out)


def test_read_only_output_is_refused():
    z = np.ones((2, 2))
    out = np.empty_like(z)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writeable output array"):
        _core.activation_forward(relu(), z, out)
    dx = np.empty_like(z)
    dx.flags.writeable = False
    with pytest.raises(ValueError, match="grad_x: expected a writeable output array"):
        _core.batchnorm_backward(z, z, None, np.zeros(2), np.ones(2), dx)
    with pytest.raises(ValueError, match="loss: expected a float64 array with one element"):
        _core.loss_forward_backward(0, z, z, None, None, np.empty(2), 0.0, False, False)


def test_optional_outputs_are_checked_by_name():
    X, W = np.ones((3, 2)), np.ones((2, 4))
    Z, dW = np.ones((3, 4)), np.empty((2, 4))
    with pytest.raises(ValueError, match=r"db: expected shape \(4,\), got \(3,\)"):
        _core.dense_backward(relu(), X, W, Z, Z, np.empty_like(Z), dW, np.empty(3))
    with pytest.raises(ValueError, match="dZ: a work array is required"):
        _core.dense_backward(relu(), X, W, Z, Z, None, dW)
    D = np.empty((3, 1))
    with pytest.raises(ValueError, match=r"grad_centers: expected shape \(1, 2\)"):
        _core.rbf_backward(X, np.zeros((1, 2)), np.ones(1), D, D, D, None, np.empty((2, 1)))


def test_stream_is_accepted_and_ignored_on_the_host():
    x = np.ones((2, 3))
    y = np.empty_like(x)
    _core.dropout_forward(x, y, 0.5, 1, 2, 3, stream=12345)
    np.testing.assert_array_equal(y, fm.ops.dropout(x, 0.5, seed=1, step=2, layer=3))
