"""The GPU versions of the ``fusedmlp.ops`` kernels: CuPy arrays in, CuPy arrays out.

Same signatures, validation and results as :mod:`fusedmlp.ops`, which routes CuPy inputs
here; the checks themselves are ops.py's, run with :func:`as_device_array` in place of the
host converter, so both devices reject bad input with the same messages. Inputs may be any
object exposing ``__cuda_array_interface__``; they are viewed as CuPy arrays without copying
(non-contiguous ones are made contiguous). Outputs are allocated with CuPy on the current
device, and every kernel is queued on CuPy's current stream; nothing synchronizes except the
input checks (finiteness, label ranges) and the loss value returned as a float.

Beyond ops.py this module has the arena optimizer step of the GPU training loop
(:func:`optimizer_step`, with clip-by-norm computed on the device) and the device gradient
norm.

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
from . import _losses
from . import _validate as v
from . import ops as _ops
from ._loader import _core, _cuda, _cuda_import_error

from ._backend.cuda import _check_device, _cupy, to_cupy  # noqa: F401
from ._backend.cuda import asarray as as_device_array
from ._backend.cuda import in_place as _in_place
from ._backend.cuda import stream as _stream


def _squeeze_like(dp, params):
    """A 1-d ``params`` gets a 1-d gradient back (as in fusedmlp.ops)."""
    if dp is not None and params is not None and np.ndim(params) == 1:
        return dp[0]
    return dp


def _softmax(z):
    y = _cupy().empty_like(z)
    _cuda.softmax_forward(z, y, stream=_stream())
    return y


def _act(name, z, params, hinges, hyper):
    """ops.py's activation checks on a device array."""
    z = as_device_array("z", z)
    key, unit, spec = _ops._prepare_act(
        name, params, hinges, hyper, z.shape[1], z.dtype, asarray=as_device_array
    )
    return key, z, unit, spec


# --------------------------------------------------------------------------- activations


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

    Args:
        name, z, params, hinges, pieces, training, seed, step, layer, **hyper: as in
            :func:`fusedmlp.ops.activation`, with CuPy arrays.

    Returns:
        f(z) as a new CuPy array (maxout: (batch, units)), same dtype.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> activation("leaky_relu", cp.asarray([[-2.0, 3.0]]), alpha=0.1)
        array([[-0.2,  3. ]])
    """
    cp = _cupy()
    key, z, unit, spec = _act(name, z, params, hinges, hyper)
    if key == "softmax":
        _ops._no_extra(key, hyper, params, pieces=pieces)
        return _softmax(z)
    if key == "maxout":
        _ops._no_extra(key, hyper, params)
        k = _ops._pieces(pieces, z)
        y = cp.empty((z.shape[0], z.shape[1] // k), dtype=z.dtype)
        _cuda.maxout_forward(z, y, k, stream=_stream())
        return y
    if pieces is not None:
        raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")
    y = cp.empty_like(z)
    _cuda.activation_forward(
        _ops._rrelu_config(spec, training, seed, step, layer), z, y, unit, stream=_stream()
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

    Args:
        name, z, params, hinges, training, seed, step, layer, **hyper: as in
            :func:`activation`.

    Returns:
        f'(z) as a new CuPy array.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> activation_grad("relu", cp.asarray([[-1.0, 0.0, 2.0]]))
        array([[0., 0., 1.]])
    """
    key, z, unit, spec = _act(name, z, params, hinges, hyper)
    if key in acts.ROW_OPS:
        raise ValueError(
            f"name: {key!r} is row-wise and has a Jacobian, not an elementwise derivative; "
            "use fusedmlp.ops.activation_backward"
        )
    g = _cupy().empty_like(z)
    _cuda.activation_derivative(
        _ops._rrelu_config(spec, training, seed, step, layer), z, g, unit, stream=_stream()
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

    Args:
        name, z, params, hinges, pieces, training, seed, step, layer, **hyper: as in
            :func:`activation`.
        grad_output: dL/df(z), the shape of the activation's output.

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
    key, z, unit, spec = _act(name, z, params, hinges, hyper)
    if key == "softmax":
        _ops._no_extra(key, hyper, params, pieces=pieces)
        g = as_device_array("grad_output", grad_output, dtype=z.dtype)
        v.check_shape("grad_output", g, z.shape)
        dz = cp.empty_like(z)
        _cuda.softmax_backward(_softmax(z), g, dz, stream=_stream())
        return dz, None
    if key == "maxout":
        _ops._no_extra(key, hyper, params)
        k = _ops._pieces(pieces, z)
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
        _ops._rrelu_config(spec, training, seed, step, layer), z, g, dz, dp, unit, stream=_stream()
    )
    return dz, _squeeze_like(dp, params)


def softmax(z: Any):
    """Row-wise, max-subtracted softmax of (batch, classes) logits on the GPU.

    Args:
        z: logits (batch, classes), a CuPy array.

    Returns:
        The probabilities, a new CuPy array.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> softmax(cp.asarray([[0.0, 0.0]]))
        array([[0.5, 0.5]])
    """
    return activation("softmax", z)


def maxout(z: Any, pieces: int):
    """Maxout over contiguous groups of ``pieces`` columns on the GPU.

    Args:
        z: (batch, units * pieces), a CuPy array.
        pieces: the group size k.

    Returns:
        (batch, units), a new CuPy array.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> maxout(cp.asarray([[1.0, 3.0, -1.0, -2.0]]), pieces=2)
        array([[ 3., -1.]])
    """
    return activation("maxout", z, pieces=pieces)


# --------------------------------------------------------------------------- dense


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

    Args:
        X, W, b, activation, params, hinges, training, seed, step, layer, **hyper: as in
            :func:`fusedmlp.ops.dense_forward`, with CuPy arrays.

    Returns:
        ``(Z, A)`` CuPy arrays (A is Z for the identity).

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> Z, A = dense_forward(cp.ones((1, 2)), cp.ones((2, 3)), cp.zeros(3), "relu")
        >>> A
        array([[2., 2., 2.]])
    """
    cp = _cupy()
    X, W = _ops._dense_inputs(X, W, as_device_array)
    if b is not None:
        b = as_device_array("b", b, ndim=1, dtype=X.dtype)
        v.check_shape("b", b, (W.shape[1],))
    key, unit, spec = _ops._prepare_act(
        activation,
        params,
        hinges,
        hyper,
        W.shape[1],
        X.dtype,
        asarray=as_device_array,
        what="activation",
    )
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; apply fusedmlp.ops.{key} to Z instead")
    Z = cp.empty((X.shape[0], W.shape[1]), dtype=X.dtype)
    A = None if key == "identity" else cp.empty_like(Z)
    _cuda.dense_forward(
        _ops._rrelu_config(spec, training, seed, step, layer), X, W, b, Z, A, unit, stream=_stream()
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

    Args:
        X, W, Z, grad_output, activation, params, has_bias, need_dx, hinges, training, seed,
            step, layer, **hyper: as in :func:`fusedmlp.ops.dense_backward`, with CuPy arrays.

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
    X, W = _ops._dense_inputs(X, W, as_device_array)
    Z = as_device_array("Z", Z, dtype=X.dtype)
    v.check_shape("Z", Z, (X.shape[0], W.shape[1]))
    g = as_device_array("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, Z.shape)
    key, unit, spec = _ops._prepare_act(
        activation,
        params,
        hinges,
        hyper,
        Z.shape[1],
        X.dtype,
        asarray=as_device_array,
        what="activation",
    )
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; use activation_backward on it first")
    batch, n_in, n_out = X.shape[0], X.shape[1], W.shape[1]
    dZ = None if key == "identity" else cp.empty_like(Z)
    dW = cp.empty((n_in, n_out), dtype=X.dtype)
    db = cp.empty((n_out,), dtype=X.dtype) if has_bias else None
    dX = cp.empty((batch, n_in), dtype=X.dtype) if need_dx else None
    dp = None if unit is None else cp.empty_like(unit)
    _cuda.dense_backward(
        _ops._rrelu_config(spec, training, seed, step, layer),
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


# --------------------------------------------------------------------------- batch norm


def _running_stat(name: str, a: Any, n: int, dtype):
    """A running statistic training updates in place: a CuPy array, no copy."""
    return _in_place(name, a, (n,), dtype)


def batchnorm_forward(
    x: Any,
    gamma: Any,
    beta: Any,
    running_mean: Any,
    running_var: Any,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    init_from_batch: bool = False,
):
    """Batch normalization on the GPU; see :func:`fusedmlp.ops.batchnorm_forward`.

    The batch statistics are reduced on the device in a fixed order (bit-identical from run
    to run); in training the running statistics (CuPy arrays) are updated in place by the
    same launch sequence, without a host synchronization.

    Args:
        x, gamma, beta, running_mean, running_var, training, momentum, eps, init_from_batch:
            as in :func:`fusedmlp.ops.batchnorm_forward`, with CuPy arrays.

    Returns:
        ``(y, saved)``: the output and, in training, a
        :class:`fusedmlp.ops.BatchNormSaved` of CuPy arrays (None at inference).

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> x = cp.asarray([[1.0], [3.0]]); rm, rv = cp.zeros(1), cp.ones(1)
        >>> y, saved = batchnorm_forward(x, cp.ones(1), cp.zeros(1), rm, rv, eps=1e-4)
        >>> rm, rv
        (array([0.2]), array([1.1]))
    """
    cp = _cupy()
    x, gamma, beta, rm, rv, momentum, eps = _ops._batchnorm_forward_args(
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        training,
        momentum,
        eps,
        as_device_array,
        _running_stat,
    )
    y = cp.empty_like(x)
    if not training:
        _cuda.batchnorm_forward_infer(x, y, gamma, beta, rm, rv, eps, stream=_stream())
        return y, None
    n = x.shape[1]
    mean, invstd = cp.empty(n, dtype=x.dtype), cp.empty(n, dtype=x.dtype)
    _cuda.batchnorm_forward_train(
        x,
        y,
        gamma,
        beta,
        mean,
        invstd,
        rm,
        rv,
        momentum,
        eps,
        bool(init_from_batch),
        stream=_stream(),
    )
    return y, _ops.BatchNormSaved(mean, invstd)


def batchnorm_backward(x: Any, grad_output: Any, gamma: Any, saved: Any):
    """Backward pass of training-mode batch normalization on the GPU.

    See :func:`fusedmlp.ops.batchnorm_backward`: one reduction pass for dbeta and dgamma
    (fixed order, no atomics), one elementwise pass for dx.

    Args:
        x, grad_output, gamma, saved: as in :func:`fusedmlp.ops.batchnorm_backward`, with
            CuPy arrays.

    Returns:
        ``(dx, dgamma, dbeta)``; dgamma and dbeta are None for the non-affine layer.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> x = cp.asarray([[1.0], [3.0]]); g = cp.ones(1)
        >>> y, saved = batchnorm_forward(x, g, cp.zeros(1), None, None)
        >>> batchnorm_backward(x, cp.ones((2, 1)), g, saved)[2]
        array([2.])
    """
    cp = _cupy()
    x, g, gamma, mean, invstd = _ops._batchnorm_backward_args(
        x, grad_output, gamma, saved, as_device_array
    )
    dx = cp.empty_like(x)
    dgamma = dbeta = None
    if gamma is not None:
        dgamma, dbeta = cp.empty_like(gamma), cp.empty_like(gamma)
    _cuda.batchnorm_backward(x, g, gamma, mean, invstd, dx, dgamma, dbeta, stream=_stream())
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------- dropout, noise


def dropout(x: Any, rate: float, seed: int = 0, step: int = 0, layer: int = 0, training=True):
    """Inverted dropout on the GPU; see :func:`fusedmlp.ops.dropout`.

    The mask is the CPU's bit for bit: the same Philox4x32-10 words of (seed, step, layer,
    element) and the same keep rule, so ``fm.ops.dropout(x_host, ...)`` and this function give
    identical arrays.

    Args:
        x, rate, seed, step, layer, training: as in :func:`fusedmlp.ops.dropout`.

    Returns:
        The output, a new CuPy array of x's shape and dtype.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> y = dropout(cp.ones((2, 4)), 0.5, seed=1)
        >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
        True
    """
    x, rate, key = _ops._dropout_args("x", x, rate, seed, step, layer, as_device_array)
    if not training:
        return x.copy()
    y = _cupy().empty_like(x)
    _cuda.dropout_forward(x, y, rate, *key, stream=_stream())
    return y


def dropout_backward(
    grad_output: Any, rate: float, seed: int = 0, step: int = 0, layer: int = 0, training=True
):
    """Backward pass of :func:`dropout` on the GPU: the same mask, regenerated from the key.

    Args:
        grad_output, rate, seed, step, layer, training: as in
            :func:`fusedmlp.ops.dropout_backward`.

    Returns:
        dL/dx, a new CuPy array.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> x = cp.ones((3, 5))
        >>> y = dropout(x, 0.3, seed=4, step=2)
        >>> bool((dropout_backward(cp.ones_like(x), 0.3, seed=4, step=2) == y).all())
        True
    """
    g, rate, key = _ops._dropout_args(
        "grad_output", grad_output, rate, seed, step, layer, as_device_array
    )
    if not training:
        return g.copy()
    dx = _cupy().empty_like(g)
    _cuda.dropout_backward(g, dx, rate, *key, stream=_stream())
    return dx


def gaussian_noise(
    x: Any, stddev: float, seed: int = 0, step: int = 0, layer: int = 0, training=True
):
    """Additive Gaussian noise on the GPU; see :func:`fusedmlp.ops.gaussian_noise`.

    The normals are the CPU's Box-Muller draws from the same Philox words; they agree to
    the last bits of a double (the device evaluates cos(2 pi u) as cospi(2 u)).

    Args:
        x, stddev, seed, step, layer, training: as in :func:`fusedmlp.ops.gaussian_noise`.

    Returns:
        The output, a new CuPy array.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> y = gaussian_noise(cp.zeros((1000, 10)), 0.5, seed=3)
        >>> bool(abs(float(y.std()) - 0.5) < 0.02)
        True
    """
    x, stddev, key = _ops._noise_args(x, stddev, seed, step, layer, as_device_array)
    if not training:
        return x.copy()
    y = _cupy().empty_like(x)
    _cuda.gaussian_noise_forward(x, y, stddev, *key, stream=_stream())
    return y


# --------------------------------------------------------------------------- losses


def loss(
    name: str,
    logits: Any,
    target: Any,
    sample_weight: Any = None,
    label_smoothing: float = 0.0,
    smoothing: str = "deck",
    half: bool = False,
    *,
    grad: bool = True,
):
    """A loss fused with its output activation on the GPU; see :func:`fusedmlp.ops.loss`.

    One warp (one block beyond 1024 outputs) per row computes the row loss and the gradient
    in one pass; the batch mean is reduced on the device in a fixed order into a float64
    scalar, which is then read back (the one synchronization, besides the input checks).

    Args:
        name, logits, target, sample_weight, label_smoothing, smoothing, half, grad: as in
            :func:`fusedmlp.ops.loss`, with CuPy arrays (targets and weights on the logits'
            device).

    Returns:
        ``(loss, dlogits)``: a float and the gradient as a CuPy array (None with
        ``grad=False``).

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> L, d = loss("ce", cp.zeros((2, 4)), cp.asarray([0, 3]))
        >>> round(L, 6)
        1.386294
    """
    cp = _cupy()
    key, z, t, w, eps = _ops._loss_args(
        name, logits, target, sample_weight, label_smoothing, smoothing, half, as_device_array, cp
    )
    d = cp.empty_like(z) if grad else None
    out = cp.empty((), dtype=cp.float64)
    _cuda.loss_forward_backward(
        _losses.code(key),
        z,
        t,
        w,
        d,
        out,
        eps,
        smoothing == "uniform",
        bool(half),
        stream=_stream(),
    )
    return float(out), d


def loss_output(name: str, logits: Any):
    """The output activation a loss is fused with, on the GPU; see
    :func:`fusedmlp.ops.loss_output`.

    Args:
        name: a loss name or alias.
        logits: (batch, outputs), a CuPy array.

    Returns:
        The predictions, a new CuPy array.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> loss_output("bce", cp.asarray([[0.0, 1000.0]]))
        array([[0.5, 1. ]])
    """
    key = _losses.canonical(name, "name")
    z = as_device_array("logits", logits)
    y = _cupy().empty_like(z)
    _cuda.loss_output(_losses.code(key), z, y, stream=_stream())
    return y


# --------------------------------------------------------------------------- optimizers


def _segments(segments: Any) -> list | None:
    if segments is None:
        return None
    if not isinstance(segments, (list, tuple)):
        raise TypeError(
            f"segments: expected a list of fusedmlp._core.Segment or None, got "
            f"{type(segments).__name__}"
        )
    for i, s in enumerate(segments):
        if not isinstance(s, _core.Segment):
            raise TypeError(
                f"segments[{i}]: expected a fusedmlp._core.Segment, got {type(s).__name__}"
            )
    return list(segments)


def _config(config: Any):
    if not isinstance(config, _core.OptConfig):
        raise TypeError(
            "config: expected a fusedmlp._core.OptConfig (from fusedmlp.optim.<Optimizer>"
            f".config()), got {type(config).__name__}"
        )
    config.validate()
    return config


def optimizer_state_size(config: Any, n: int, segments: Any = None) -> int:
    """Elements of optimizer state for an arena of ``n`` elements (the CPU's layout).

    Args:
        config: a ``fusedmlp._core.OptConfig`` (``fusedmlp.optim.<Optimizer>(...).config()``).
        n: the arena's length.
        segments: list of ``fusedmlp._core.Segment``, or None (one decaying vector).

    Returns:
        The number of elements the state array of :func:`optimizer_step` must have.

    Example:
        >>> import fusedmlp as fm                                 # doctest: +SKIP
        >>> optimizer_state_size(fm.optim.Adam().config(), 10)
        20
    """
    _cupy()
    n = v.integer("n", n, low=0)
    return int(_cuda.optimizer_state_size(_config(config), n, _segments(segments)))


def optimizer_step(
    config: Any,
    params: Any,
    grads: Any,
    state: Any,
    segments: Any = None,
    *,
    step: int,
    lr: float,
    grad_scale: float = 1.0,
    clip_norm: float | None = None,
) -> None:
    """One optimizer step over a flat device parameter arena, in place (one launch for the
    elementwise rules).

    The GPU twin of ``fusedmlp._core.optimizer_step_arena``: the same rules, segment
    semantics (decay / max-norm per segment, gaps untouched) and state layout. With
    ``clip_norm`` the global gradient norm is reduced on the device and the clipping factor
    min(1, clip_norm / (||g|| + 1e-6)) is read by the update kernel from device memory:
    nothing synchronizes.

    Args:
        config: a ``fusedmlp._core.OptConfig``.
        params: the 1-d parameter arena, a CuPy float32/float64 array (updated in place).
        grads: the gradients, the arena's shape and dtype, finite.
        state: the optimizer state, a 1-d CuPy array of ``optimizer_state_size`` elements of
            the arena's dtype, zero before the first step (updated in place).
        segments: list of ``fusedmlp._core.Segment`` (sorted, disjoint), or None.
        step: the 1-based step number t.
        lr: the learning rate of this step, > 0.
        grad_scale: a host factor multiplying the gradients first, >= 0.
        clip_norm: clip the gradients to this global L2 norm (None = off), > 0.

    Example:
        >>> import cupy as cp, fusedmlp as fm                     # doctest: +SKIP
        >>> cfg = fm.optim.SGD(lr=0.1).config()
        >>> p = cp.ones(3); g = cp.full(3, 0.5)
        >>> optimizer_step(cfg, p, g, cp.zeros(0), step=1, lr=0.1); p
        array([0.95, 0.95, 0.95])
    """
    cp = _cupy()
    config = _config(config)
    p = _in_place("params", params, None, None, finite=False)
    g = as_device_array("grads", grads, ndim=1, dtype=p.dtype, allow_empty=True)
    v.check_shape("grads", g, p.shape)
    st = _in_place("state", state, None, p.dtype, finite=False)
    step = v.integer("step", step, low=1)
    lr = v.real("lr", lr, 0.0)
    grad_scale = v.real("grad_scale", grad_scale, low=0.0)
    scale_dev = None
    if clip_norm is not None:
        clip_norm = v.real("clip_norm", clip_norm, 0.0, low_open=True)
        scale_dev = cp.empty((), dtype=cp.float64)
        _cuda.grad_sq_norm(g, None, scale_dev, clip_norm, stream=_stream())
    _cuda.optimizer_step(
        config, p, g, st, _segments(segments), step, lr, grad_scale, scale_dev, stream=_stream()
    )


def grad_sq_norm(grads: Any):
    """The squared L2 norm of a gradient array, reduced on the device without a host sync.

    Two stages (per-block partial sums in double, then one block adding them in index
    order); the partition depends only on the size, so the value is the same on every device.

    Args:
        grads: a CuPy float32/float64 array of any shape.

    Returns:
        A 0-d float64 CuPy array holding sum(grads**2).

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> float(grad_sq_norm(cp.asarray([3.0, 4.0])))
        25.0
    """
    cp = _cupy()
    g = as_device_array("grads", grads, ndim=None, allow_empty=True)
    out = cp.empty((), dtype=cp.float64)
    _cuda.grad_sq_norm(g, out, None, 0.0, stream=_stream())
    return out


def clip_norm_scale(grads: Any, max_norm: float):
    """Global-norm clipping factor min(1, max_norm / (||grads|| + 1e-6)) on the device
    (torch's ``clip_grad_norm_`` factor), without a host sync.

    Args:
        grads: a CuPy float32/float64 array of any shape (e.g. the gradient arena).
        max_norm: the norm to clip to, > 0.

    Returns:
        A 0-d float64 CuPy array holding the factor.

    Example:
        >>> import cupy as cp                                     # doctest: +SKIP
        >>> round(float(clip_norm_scale(cp.asarray([3.0, 4.0]), 1.0)), 6)
        0.2
    """
    cp = _cupy()
    g = as_device_array("grads", grads, ndim=None, allow_empty=True)
    max_norm = v.real("max_norm", max_norm, 0.0, low_open=True)
    out = cp.empty((), dtype=cp.float64)
    _cuda.grad_sq_norm(g, None, out, max_norm, stream=_stream())
    return out


def set_allow_tf32(on: bool) -> None:
    """Allow TF32 tensor-core math in float32 GEMMs (faster, ~1e-3 relative error); off by default.

    Args:
        on: True to allow TF32.

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
    "batchnorm_backward",
    "batchnorm_forward",
    "clip_norm_scale",
    "dense_backward",
    "dense_forward",
    "dropout",
    "dropout_backward",
    "gaussian_noise",
    "grad_sq_norm",
    "loss",
    "loss_output",
    "maxout",
    "optimizer_state_size",
    "optimizer_step",
    "set_allow_tf32",
    "softmax",
]
