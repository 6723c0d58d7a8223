"""The GPU versions of the ``fusedmlp.ops`` kernels: CuPy arrays in, CuPy arrays out.

Same signatures, validation and results as :mod:`fusedmlp.ops` (which routes CuPy inputs
here). Inputs may be any object exposing ``__cuda_array_interface__``; they are viewed as
CuPy arrays without copying (non-contiguous ones are made contiguous). Outputs are allocated
with CuPy on the current device, and every kernel is queued on CuPy's current stream; nothing
synchronizes except the finiteness checks of the inputs.

Example:
    >>> import cupy as cp, fusedmlp as fm                      # doctest: +SKIP
    >>> from fusedmlp import _cuda_ops
    >>> _cuda_ops.activation("relu", cp.asarray([[-1.0, 2.0]]))
    array([[0., 2.]])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _activations as acts
from . import _validate as v
from ._loader import _cuda, _cuda_import_error

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _cupy():
    """The cupy module and the _cuda extension, or a clear error when either is missing."""
    if _cuda is None:
        raise RuntimeError(f"fusedmlp's CUDA backend is not available: {_cuda_import_error}")
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "GPU arrays need CuPy: pip install cupy-cuda13x (or cupy-cuda12x)"
        ) from exc
    return cupy


def _stream() -> int:
    return int(_cupy().cuda.get_current_stream().ptr)


def as_device_array(
    name: str,
    x: Any,
    ndim: int | tuple[int, ...] | None = 2,
    dtype=None,
    finite: bool = True,
    allow_empty: bool = False,
):
    """``x`` as a C-contiguous float32/float64 CuPy array on the current device, checked.

    Args:
        name: argument name used in error messages.
        x: a CuPy array or any object exposing ``__cuda_array_interface__``.
        ndim: required number of dimensions (or a tuple of allowed ones, or None).
        dtype: when given, the required dtype.
        finite: reject NaN and Inf (one device reduction and a synchronization).
        allow_empty: accept arrays with a zero-length dimension.

    Raises:
        TypeError: a host (NumPy) array, a non-float dtype, or the wrong dtype.
        ValueError: wrong dimensions, empty, non-finite, or on another device.
    """
    cp = _cupy()
    if not v.is_device_array(x):
        raise TypeError(
            f"{name}: expected a GPU array (CuPy), got {type(x).__name__}; mixing host and device "
            "arrays is an error (move it with cupy.asarray, or pass NumPy arrays for the CPU)"
        )
    arr = x if isinstance(x, cp.ndarray) else cp.asarray(x)
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {arr.dtype}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-d" for d in allowed)
            raise ValueError(f"{name}: expected a {want} array, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    current = cp.cuda.Device().id
    if arr.device.id != current:
        raise ValueError(
            f"{name}: the array is on device {arr.device.id} but the current device is {current}; "
            "mixing devices is an error"
        )
    if finite and arr.size and not bool(cp.isfinite(arr).all()):
        raise ValueError(f"{name}: contains NaN or Inf")
    return cp.ascontiguousarray(arr)


def _unit_params(key: str, params: Any, n: int, dtype, hinges: int | None):
    """The learnable per-unit parameter block as a (rows, n) device array (and APL's S)."""
    arr = as_device_array("params", params, ndim=(1, 2), dtype=dtype)
    if arr.ndim == 1:
        arr = arr[None, :]
    if key == "apl":
        if arr.shape[0] % 2 or arr.shape[1] != n:
            raise ValueError(
                f"params: APL expects shape (2 * hinges, {n}) holding a_1..a_S then b_1..b_S, "
                f"got {arr.shape}"
            )
        s = arr.shape[0] // 2
        if hinges is not None and hinges != s:
            raise ValueError(f"hinges: {hinges} does not match params with {arr.shape[0]} rows")
        return _cupy().ascontiguousarray(arr), s
    rows = len(acts.LEARNABLE[key][0])
    if arr.shape != (rows, n):
        raise ValueError(f"params: expected shape {(rows, n)}, got {arr.shape}")
    return _cupy().ascontiguousarray(arr), None


def _prepare_act(name: Any, params: Any, hinges: int | None, hyper: dict, n: int, dtype):
    key = acts.canonical(name)
    if key in acts.ROW_OPS:
        return key, None, None
    unit = None
    if key in acts.LEARNABLE or key == "apl":
        if params is None:
            raise ValueError(
                f"params: activation {key!r} has learnable per-unit parameters; pass them"
            )
        unit, s = _unit_params(key, params, n, dtype, hinges)
        hinges = s if key == "apl" else hinges
    elif params is not None:
        raise ValueError(f"params: activation {key!r} has no learnable parameters")
    return key, unit, acts.make_spec(key, hinges=hinges, **hyper)


def _config(spec, training: bool, seed: int, step: int, layer: int):
    return spec.config(training=training, seed=seed, step=step, layer=layer)


def _pieces(pieces: int | None, z) -> int:
    if pieces is None:
        raise ValueError("pieces: maxout needs the group size k (pieces=k)")
    k = v.integer("pieces", pieces, low=1)
    if z.shape[1] % k:
        raise ValueError(f"pieces: z has {z.shape[1]} columns, not a multiple of pieces={k}")
    return k


def _no_extra(key: str, hyper: dict, params: Any, pieces: int | None = None) -> None:
    if hyper:
        raise ValueError(f"{sorted(hyper)[0]}: {key!r} takes no hyper-parameters")
    if params is not None:
        raise ValueError(f"params: {key!r} has no learnable parameters")
    if pieces is not None:
        raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")


def _squeeze_like(dp, params):
    """A 1-d ``params`` gets a 1-d gradient back (as in fusedmlp.ops)."""
    if dp is not None and params is not None and np.ndim(params) == 1:
        return dp[0]
    return dp


def _softmax(z):
    y = _cupy().empty_like(z)
    _cuda.softmax_forward(z, y, stream=_stream())
    return y


def activation(
    name: str,
    z: Any,
    params: Any = None,
    *,
    hinges: int | None = None,
    pieces: int | None = None,
    training: bool = False,
    seed: int = 0,
    step: int = 0,
    layer: int = 0,
    **hyper: float,
):
    """Apply an activation to a (batch, units) CuPy array; see :func:`fusedmlp.ops.activation`.

    Returns:
        f(z) as a new CuPy array (maxout: (batch, units)), same dtype.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> activation("leaky_relu", cp.asarray([[-2.0, 3.0]]), alpha=0.1)
        array([[-0.2,  3. ]])
    """
    cp = _cupy()
    z = as_device_array("z", z)
    key, unit, spec = _prepare_act(name, params, hinges, hyper, z.shape[1], z.dtype)
    if key == "softmax":
        _no_extra(key, hyper, params, pieces=pieces)
        return _softmax(z)
    if key == "maxout":
        _no_extra(key, hyper, params)
        k = _pieces(pieces, z)
        y = cp.empty((z.shape[0], z.shape[1] // k), dtype=z.dtype)
        _cuda.maxout_forward(z, y, k, stream=_stream())
        return y
    if pieces is not None:
        raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")
    y = cp.empty_like(z)
    _cuda.activation_forward(
        _config(spec, training, seed, step, layer), z, y, unit, stream=_stream()
    )
    return y


def activation_grad(
    name: str,
    z: Any,
    params: Any = None,
    *,
    hinges: int | None = None,
    training: bool = False,
    seed: int = 0,
    step: int = 0,
    layer: int = 0,
    **hyper: float,
):
    """Elementwise derivative f'(z) on the GPU; see :func:`fusedmlp.ops.activation_grad`.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> activation_grad("relu", cp.asarray([[-1.0, 0.0, 2.0]]))
        array([[0., 0., 1.]])
    """
    z = as_device_array("z", z)
    key, unit, spec = _prepare_act(name, params, hinges, hyper, z.shape[1], z.dtype)
    if key in acts.ROW_OPS:
        raise ValueError(
            f"name: {key!r} is row-wise and has a Jacobian, not an elementwise derivative; "
            "use fusedmlp.ops.activation_backward"
        )
    g = _cupy().empty_like(z)
    _cuda.activation_derivative(
        _config(spec, training, seed, step, layer), z, g, unit, stream=_stream()
    )
    return g


def activation_backward(
    name: str,
    z: Any,
    grad_output: Any,
    params: Any = None,
    *,
    hinges: int | None = None,
    pieces: int | None = None,
    training: bool = False,
    seed: int = 0,
    step: int = 0,
    layer: int = 0,
    **hyper: float,
):
    """Backward pass of an activation on the GPU; see :func:`fusedmlp.ops.activation_backward`.

    Returns:
        ``(grad_z, grad_params)``; grad_params has the shape of ``params`` for learnable
        activations (summed over the batch), else None.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> z = cp.asarray([[-2.0, 1.0]]); a = cp.asarray([[0.25, 0.25]])
        >>> activation_backward("prelu", z, cp.ones_like(z), a)
        (array([[0.25, 1.  ]]), array([[-2.,  0.]]))
    """
    cp = _cupy()
    z = as_device_array("z", z)
    key, unit, spec = _prepare_act(name, params, hinges, hyper, z.shape[1], z.dtype)
    if key == "softmax":
        _no_extra(key, hyper, params, pieces=pieces)
        g = as_device_array("grad_output", grad_output, dtype=z.dtype)
        v.check_shape("grad_output", g, z.shape)
        dz = cp.empty_like(z)
        _cuda.softmax_backward(_softmax(z), g, dz, stream=_stream())
        return dz, None
    if key == "maxout":
        _no_extra(key, hyper, params)
        k = _pieces(pieces, z)
        g = as_device_array("grad_output", grad_output, dtype=z.dtype)
        v.check_shape("grad_output", g, (z.shape[0], z.shape[1] // k))
        dz = cp.empty_like(z)
        _cuda.maxout_backward(z, g, dz, k, stream=_stream())
        return dz, None
    g = as_device_array("grad_output", grad_output, dtype=z.dtype)
    v.check_shape("grad_output", g, z.shape)
    dz = cp.empty_like(z)
    dp = None if unit is None else cp.empty_like(unit)
    _cuda.activation_backward(
        _config(spec, training, seed, step, layer), z, g, dz, dp, unit, stream=_stream()
    )
    return dz, _squeeze_like(dp, params)


def softmax(z: Any):
    """Row-wise, max-subtracted softmax of (batch, classes) logits on the GPU.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> softmax(cp.asarray([[0.0, 0.0]]))
        array([[0.5, 0.5]])
    """
    return activation("softmax", z)


def maxout(z: Any, pieces: int):
    """Maxout over contiguous groups of ``pieces`` columns on the GPU.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> maxout(cp.asarray([[1.0, 3.0, -1.0, -2.0]]), pieces=2)
        array([[ 3., -1.]])
    """
    return activation("maxout", z, pieces=pieces)


def _dense_inputs(X: Any, W: Any):
    X = as_device_array("X", X)
    W = as_device_array("W", W, dtype=X.dtype)
    if W.shape[0] != X.shape[1]:
        raise ValueError(f"W: expected {X.shape[1]} rows (the features of X), got shape {W.shape}")
    return X, W


def dense_forward(
    X: Any,
    W: Any,
    b: Any = None,
    activation: str = "identity",
    params: Any = None,
    *,
    hinges: int | None = None,
    training: bool = False,
    seed: int = 0,
    step: int = 0,
    layer: int = 0,
    **hyper: float,
):
    """Fused dense layer forward on the GPU: ``Z = X @ W + b``, ``A = f(Z)``.

    See :func:`fusedmlp.ops.dense_forward`; the GEMM runs on cuBLASLt with the bias (and for
    gelu_tanh the activation) in its epilogue.

    Returns:
        ``(Z, A)`` CuPy arrays (A is Z for the identity).

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> Z, A = dense_forward(cp.ones((1, 2)), cp.ones((2, 3)), cp.zeros(3), "relu")
        >>> A
        array([[2., 2., 2.]])
    """
    cp = _cupy()
    X, W = _dense_inputs(X, W)
    if b is not None:
        b = as_device_array("b", b, ndim=1, dtype=X.dtype)
        v.check_shape("b", b, (W.shape[1],))
    key, unit, spec = _prepare_act(activation, params, hinges, hyper, W.shape[1], X.dtype)
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; apply fusedmlp.ops.{key} to Z instead")
    Z = cp.empty((X.shape[0], W.shape[1]), dtype=X.dtype)
    A = None if key == "identity" else cp.empty_like(Z)
    _cuda.dense_forward(
        _config(spec, training, seed, step, layer), X, W, b, Z, A, unit, stream=_stream()
    )
    return Z, (Z if A is None else A)


def dense_backward(
    X: Any,
    W: Any,
    Z: Any,
    grad_output: Any,
    activation: str = "identity",
    params: Any = None,
    *,
    has_bias: bool = True,
    need_dx: bool = True,
    hinges: int | None = None,
    training: bool = False,
    seed: int = 0,
    step: int = 0,
    layer: int = 0,
    **hyper: float,
):
    """Fused dense layer backward on the GPU; see :func:`fusedmlp.ops.dense_backward`.

    Returns:
        dict with ``dX`` (or None), ``dW``, ``db`` (None without bias) and ``dparams``.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> X = cp.ones((2, 1)); W = cp.ones((1, 1))
        >>> Z, A = dense_forward(X, W, cp.zeros(1))
        >>> dense_backward(X, W, Z, cp.ones((2, 1)))["dW"]
        array([[2.]])
    """
    cp = _cupy()
    X, W = _dense_inputs(X, W)
    Z = as_device_array("Z", Z, dtype=X.dtype)
    v.check_shape("Z", Z, (X.shape[0], W.shape[1]))
    g = as_device_array("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, Z.shape)
    key, unit, spec = _prepare_act(activation, params, hinges, hyper, Z.shape[1], X.dtype)
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; use activation_backward on it first")
    batch, n_in, n_out = X.shape[0], X.shape[1], W.shape[1]
    dZ = None if key == "identity" else cp.empty_like(Z)
    dW = cp.empty((n_in, n_out), dtype=X.dtype)
    db = cp.empty((n_out,), dtype=X.dtype) if has_bias else None
    dX = cp.empty((batch, n_in), dtype=X.dtype) if need_dx else None
    dp = None if unit is None else cp.empty_like(unit)
    _cuda.dense_backward(
        _config(spec, training, seed, step, layer),
        X,
        W,
        Z,
        g,
        dZ,
        dW,
        db,
        dX,
        dp,
        unit,
        stream=_stream(),
    )
    return {"dX": dX, "dW": dW, "db": db, "dparams": _squeeze_like(dp, params)}


def set_allow_tf32(on: bool) -> None:
    """Allow TF32 tensor-core math in float32 GEMMs (faster, ~1e-3 relative error); off by default.

    Example:
        >>> set_allow_tf32(False)                                 # doctest: +SKIP
    """
    if not isinstance(on, bool):
        raise TypeError(f"on: expected a bool, got {type(on).__name__}")
    if _cuda is None:
        raise RuntimeError(f"fusedmlp's CUDA backend is not available: {_cuda_import_error}")
    _cuda.set_allow_tf32(on)


__all__ = [
    "activation",
    "activation_backward",
    "activation_grad",
    "as_device_array",
    "dense_backward",
    "dense_forward",
    "maxout",
    "set_allow_tf32",
    "softmax",
]
