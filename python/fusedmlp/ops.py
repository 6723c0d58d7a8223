"""Thin, validated wrappers over single kernels (NumPy in, NumPy out on the CPU).

Every function checks its inputs (shape, dtype, finiteness, hyper-parameter ranges) and
raises ``ValueError``/``TypeError`` naming the argument before any C++ runs. Non-contiguous
inputs are made contiguous. float32 and float64 are supported; outputs have the input dtype.
The device follows the inputs: the activation, dense, batch-norm, dropout, noise and loss
functions given CuPy arrays (anything exposing ``__cuda_array_interface__``) run the CUDA
kernels through :mod:`fusedmlp._cuda_ops` with the same checks, and return CuPy arrays;
mixing host and device arrays in one call is an error.

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> z = np.array([[-1.0, 0.0, 2.0]])
    >>> fm.ops.activation("relu", z)
    array([[0., 0., 2.]])
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _activations as acts
from . import _losses
from . import _validate as v
from ._loader import _core


def _gpu():
    """:mod:`fusedmlp._cuda_ops`, imported on first use: GPU (CuPy) inputs are routed there."""
    from . import _cuda_ops

    return _cuda_ops


def _unit_params(
    spec_name: str,
    params: Any,
    n: int,
    dtype: np.dtype,
    hinges: int | None,
    asarray=v.as_float_array,
):
    """Validate the learnable per-unit parameter block for a learnable activation.

    ``asarray`` checks and converts the array: ``v.as_float_array`` (host) or
    ``fusedmlp._cuda_ops.as_device_array`` (device); it returns C-contiguous arrays.
    """
    arr = asarray("params", params, ndim=(1, 2), dtype=dtype)
    if arr.ndim == 1:
        arr = arr[None, :]
    if spec_name == "apl":
        if arr.shape[0] % 2 or arr.shape[1] != n:
            raise ValueError(
                f"params: APL expects shape (2 * hinges, {n}) holding a_1..a_S then b_1..b_S, "
                f"got {arr.shape}"
            )
        s = arr.shape[0] // 2
        if hinges is not None and hinges != s:
            raise ValueError(f"hinges: {hinges} does not match params with {arr.shape[0]} rows")
        return arr, s
    rows = len(acts.LEARNABLE[spec_name][0])
    v.check_shape("params", arr, (rows, n))
    return arr, None


def _prepare(name: Any, z: Any, params: Any, hinges: int | None, hyper: dict):
    """Validate z (as "z"), then the activation and its parameters for z's units."""
    z = v.as_float_array("z", z)
    key, unit, spec = _prepare_act(name, params, hinges, hyper, z.shape[1], z.dtype)
    return key, z, unit, spec


def _prepare_act(
    name: Any,
    params: Any,
    hinges: int | None,
    hyper: dict,
    n: int,
    dtype,
    asarray=v.as_float_array,
    what: str = "name",
):
    """The activation ``name`` (the argument ``what`` of the caller) for n units of dtype."""
    key = acts.canonical(name, what)
    if key in acts.ROW_OPS:
        return key, None, None
    learnable = key in acts.LEARNABLE or key == "apl"
    unit = None
    if learnable:
        if params is None:
            raise ValueError(
                f"params: activation {key!r} has learnable per-unit parameters; pass them"
            )
        unit, s = _unit_params(key, params, n, dtype, hinges, asarray)
        hinges = s if key == "apl" else hinges
    elif params is not None:
        raise ValueError(f"params: activation {key!r} has no learnable parameters")
    spec = acts.make_spec(key, hinges=hinges, **hyper)
    return key, unit, spec


def _rrelu_config(spec, training: bool, seed: int, step: int, layer: int):
    return spec.config(training=training, seed=seed, step=step, layer=layer)


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
) -> np.ndarray:
    """Apply an activation to ``z`` of shape (batch, units).

    Args:
        name: activation name (see ``fusedmlp.ops.activation_names()``); ``"softmax"`` and
            ``"maxout"`` are row-wise.
        z: pre-activations, (batch, units), float32 or float64.
        params: learnable per-unit parameters for prelu (1, units), soft_exponential
            (1, units), srelu (4, units: t_l, a_l, t_r, a_r) and apl (2S, units: a_s, b_s).
        hinges: APL hinge count S (inferred from ``params``).
        pieces: maxout group size k (z has units * k columns).
        training, seed, step, layer: RReLU draws its slopes from Philox keyed by these in
            training; at inference it uses (lower + upper) / 2.
        **hyper: scalar hyper-parameters (alpha for leaky_relu/isru/isrlu/elu/soft_clipping,
            lower/upper for rrelu, a/b/c/d for soboleva_tanh).

    Returns:
        f(z), same shape (maxout: (batch, units)) and dtype.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.ops.activation("leaky_relu", np.array([[-2.0, 3.0]]), alpha=0.1)
        array([[-0.2,  3. ]])
    """
    if v.is_device_array(z):
        return _gpu().activation(
            name,
            z,
            params,
            hinges=hinges,
            pieces=pieces,
            training=training,
            seed=seed,
            step=step,
            layer=layer,
            **hyper,
        )
    key, z, unit, spec = _prepare(name, z, params, hinges, hyper)
    if key == "softmax":
        _no_extra(key, hyper, params, pieces=pieces)
        return _core.softmax_forward(z)
    if key == "maxout":
        _no_extra(key, hyper, params)
        return _core.maxout_forward(z, _pieces(pieces, z))
    if pieces is not None:
        raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")
    return _core.activation_forward(_rrelu_config(spec, training, seed, step, layer), z, unit)


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
) -> np.ndarray:
    """Elementwise derivative f'(z) of an activation (same arguments as :func:`activation`).

    Softmax and maxout are not elementwise: use :func:`activation_backward` for them.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.ops.activation_grad("relu", np.array([[-1.0, 0.0, 2.0]]))
        array([[0., 0., 1.]])
    """
    if v.is_device_array(z):
        return _gpu().activation_grad(
            name,
            z,
            params,
            hinges=hinges,
            training=training,
            seed=seed,
            step=step,
            layer=layer,
            **hyper,
        )
    key, z, unit, spec = _prepare(name, z, params, hinges, hyper)
    if key in acts.ROW_OPS:
        raise ValueError(
            f"name: {key!r} is row-wise and has a Jacobian, not an elementwise derivative; "
            "use fusedmlp.ops.activation_backward"
        )
    return _core.activation_derivative(_rrelu_config(spec, training, seed, step, layer), z, unit)


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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Backward pass of an activation: the input gradient and the parameter gradient.

    Args:
        name, z, params, hinges, pieces, training, seed, step, layer, **hyper: as in
            :func:`activation`.
        grad_output: dL/df(z), the shape of the activation's output.

    Returns:
        ``(grad_z, grad_params)``: grad_z = grad_output * f'(z) (softmax: the Jacobian
        product, maxout: routed to the arg-max); grad_params has the shape of ``params``
        for learnable activations (summed over the batch), else None.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> z = np.array([[-2.0, 1.0]]); a = np.array([[0.25, 0.25]])
        >>> dz, da = fm.ops.activation_backward("prelu", z, np.ones_like(z), a)
        >>> dz, da
        (array([[0.25, 1.  ]]), array([[-2.,  0.]]))
    """
    if v.is_device_array(z):
        return _gpu().activation_backward(
            name,
            z,
            grad_output,
            params,
            hinges=hinges,
            pieces=pieces,
            training=training,
            seed=seed,
            step=step,
            layer=layer,
            **hyper,
        )
    key, z, unit, spec = _prepare(name, z, params, hinges, hyper)
    if key == "softmax":
        _no_extra(key, hyper, params, pieces=pieces)
        g = v.as_float_array("grad_output", grad_output, dtype=z.dtype)
        v.check_shape("grad_output", g, z.shape)
        return _core.softmax_backward(_core.softmax_forward(z), g), None
    if key == "maxout":
        _no_extra(key, hyper, params)
        k = _pieces(pieces, z)
        g = v.as_float_array("grad_output", grad_output, dtype=z.dtype)
        v.check_shape("grad_output", g, (z.shape[0], z.shape[1] // k))
        return _core.maxout_backward(z, g, k), None
    g = v.as_float_array("grad_output", grad_output, dtype=z.dtype)
    v.check_shape("grad_output", g, z.shape)
    dz, dp = _core.activation_backward(_rrelu_config(spec, training, seed, step, layer), z, g, unit)
    if dp is not None and params is not None and np.ndim(params) == 1:
        dp = dp[0]
    return dz, dp


def softmax(z: Any) -> np.ndarray:
    """Row-wise, max-subtracted softmax of (batch, classes) logits (deck 003).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.ops.softmax(np.array([[0.0, 0.0]]))
        array([[0.5, 0.5]])
    """
    return activation("softmax", z)


def maxout(z: Any, pieces: int) -> np.ndarray:
    """Maxout over contiguous groups of ``pieces`` columns (deck 003).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.ops.maxout(np.array([[1.0, 3.0, -1.0, -2.0]]), pieces=2)
        array([[ 3., -1.]])
    """
    return activation("maxout", z, pieces=pieces)


def activation_names() -> list[str]:
    """Every activation name accepted by :func:`activation` (aliases excluded)."""
    return acts.names()


def _pieces(pieces: int | None, z: np.ndarray) -> int:
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


def _dense_inputs(X: Any, W: Any, asarray):
    """X (batch, n_in) and W (n_in, n_out) checked by ``asarray`` (either device)."""
    X = asarray("X", X)
    W = asarray("W", W, dtype=X.dtype)
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
) -> tuple[np.ndarray, np.ndarray]:
    """Fused dense layer forward: ``Z = X @ W + b`` and ``A = f(Z)``.

    Args:
        X: inputs (batch, n_in).
        W: weights (n_in, n_out), the same orientation as scikit-learn's ``coefs_``.
        b: bias (n_out,) or None.
        activation: any elementwise activation name; params/hyper as in :func:`activation`.

    Returns:
        ``(Z, A)``: the pre-activation and the activation (A is Z for the identity).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> Z, A = fm.ops.dense_forward(np.ones((1, 2)), np.ones((2, 3)), np.zeros(3), "relu")
        >>> A
        array([[2., 2., 2.]])
    """
    if v.is_device_array(X):
        return _gpu().dense_forward(
            X,
            W,
            b,
            activation,
            params,
            hinges=hinges,
            training=training,
            seed=seed,
            step=step,
            layer=layer,
            **hyper,
        )
    X, W = _dense_inputs(X, W, v.as_float_array)
    if b is not None:
        b = v.as_float_array("b", b, ndim=1, dtype=X.dtype)
        v.check_shape("b", b, (W.shape[1],))
    key, unit, spec = _prepare_act(
        activation, params, hinges, hyper, W.shape[1], X.dtype, what="activation"
    )
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; apply fusedmlp.ops.{key} to Z instead")
    return _core.dense_forward(_rrelu_config(spec, training, seed, step, layer), X, W, b, unit)


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
) -> dict[str, np.ndarray | None]:
    """Fused dense layer backward from ``grad_output`` = dL/dA.

    Computes ``dZ = dA * f'(Z)`` (fused with ``db = sum over the batch of dZ``), then
    ``dW = X.T @ dZ`` and ``dX = dZ @ W.T`` (skipped with ``need_dx=False``, as for the
    first layer).

    Returns:
        dict with ``dX`` (or None), ``dW``, ``db`` (None without bias) and ``dparams``
        (the learnable activation parameters' gradient, or None).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> X = np.ones((2, 1)); W = np.ones((1, 1))
        >>> Z, A = fm.ops.dense_forward(X, W, np.zeros(1))
        >>> fm.ops.dense_backward(X, W, Z, np.ones((2, 1)))["dW"]
        array([[2.]])
    """
    has_bias = v.flag("has_bias", has_bias)
    need_dx = v.flag("need_dx", need_dx)
    if v.is_device_array(X):
        return _gpu().dense_backward(
            X,
            W,
            Z,
            grad_output,
            activation,
            params,
            has_bias=has_bias,
            need_dx=need_dx,
            hinges=hinges,
            training=training,
            seed=seed,
            step=step,
            layer=layer,
            **hyper,
        )
    X, W = _dense_inputs(X, W, v.as_float_array)
    Z = v.as_float_array("Z", Z, dtype=X.dtype)
    v.check_shape("Z", Z, (X.shape[0], W.shape[1]))
    g = v.as_float_array("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, Z.shape)
    key, unit, spec = _prepare_act(
        activation, params, hinges, hyper, Z.shape[1], X.dtype, what="activation"
    )
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; use activation_backward on it first")
    dX, dW, db, dp = _core.dense_backward(
        _rrelu_config(spec, training, seed, step, layer),
        X,
        W,
        Z,
        g,
        has_bias,
        need_dx,
        unit,
    )
    if dp is not None and params is not None and np.ndim(params) == 1:
        dp = dp[0]
    return {"dX": dX, "dW": dW, "db": db, "dparams": dp}


# --------------------------------------------------------------------------- batch norm


class BatchNormSaved(NamedTuple):
    """What :func:`batchnorm_backward` needs from a training forward pass.

    Attributes:
        mean: the batch mean mu_B per feature, (features,).
        invstd: 1 / sqrt(sigma_B^2 + eps) per feature, (features,).
    """

    mean: np.ndarray
    invstd: np.ndarray


def _feature_params(x: np.ndarray, gamma: Any, beta: Any, asarray=v.as_float_array):
    if (gamma is None) != (beta is None):
        raise ValueError("gamma, beta: pass both (affine layer) or neither (non-affine)")
    if gamma is None:
        return None, None
    n = x.shape[1]
    gamma = asarray("gamma", gamma, ndim=1, dtype=x.dtype)
    v.check_shape("gamma", gamma, (n,))
    beta = asarray("beta", beta, ndim=1, dtype=x.dtype)
    v.check_shape("beta", beta, (n,))
    return gamma, beta


def _running_stat(name: str, a: Any, n: int, dtype: np.dtype) -> np.ndarray:
    """A running statistic updated in place: a writeable C-contiguous ndarray, no copy."""
    v.check_host(name, a)
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name}: expected a NumPy array (it is updated in place), got {type(a).__name__}"
        )
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    v.check_shape(name, a, (n,))
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(
            f"{name}: expected a writeable C-contiguous array (it is updated in place)"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


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
) -> tuple[np.ndarray, BatchNormSaved | None]:
    """Batch normalization over the batch axis of ``x`` (batch, features) (decks 000-002).

    Training normalizes with the batch mean and biased variance,
    ``y = gamma * (x - mu_B) / sqrt(sigma_B^2 + eps) + beta``, and updates the running
    statistics in place: ``r = (1 - momentum) * r + momentum * stat``. ``momentum`` is deck
    001's delta (PyTorch's convention; Keras' momentum is 1 - delta). The running variance
    records the unbiased batch variance ``sigma_B^2 * m / (m - 1)``, as PyTorch and Keras do.
    Inference normalizes with the running statistics. Placing the layer before or after an
    activation is the caller's choice.

    The running statistics start where the caller puts them: zeros and ones (the common
    libraries' start, the default because a fresh model then predicts with the identity
    normalization and no "first batch seen" state is needed), or pass
    ``init_from_batch=True`` on the first training step to set them to that batch's
    statistics (deck 001's MA(1) = mu_B(1)).

    Args:
        x: inputs (batch, features), float32 or float64; batch >= 2 in training.
        gamma, beta: learnable scale and shift (features,), or both None (non-affine).
        running_mean, running_var: running statistics (features,) of x's dtype. In training
            they are updated in place (writeable C-contiguous NumPy arrays; both None: not
            tracked); at inference they are required.
        training: batch statistics (True) or running statistics (False).
        momentum: weight of the new batch in the running averages, in [0, 1].
        eps: added to the variance, > 0.
        init_from_batch: set (not average) the running statistics to this batch's.

    Returns:
        ``(y, saved)``: the output and, in training, a :class:`BatchNormSaved` for
        :func:`batchnorm_backward` (None at inference).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> x = np.array([[1.0], [3.0]]); rm, rv = np.zeros(1), np.ones(1)
        >>> y, saved = fm.ops.batchnorm_forward(x, np.ones(1), np.zeros(1), rm, rv, eps=0.0001)
        >>> np.round(y, 4), rm, rv
        (array([[-1.],
               [ 1.]]), array([0.2]), array([1.1]))
    """
    training = v.flag("training", training)
    init_from_batch = v.flag("init_from_batch", init_from_batch)
    if v.is_device_array(x):
        return _gpu().batchnorm_forward(
            x, gamma, beta, running_mean, running_var, training, momentum, eps, init_from_batch
        )
    x, gamma, beta, rm, rv, momentum, eps = _batchnorm_forward_args(
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        training,
        momentum,
        eps,
        v.as_float_array,
        _running_stat,
    )
    if not training:
        return _core.batchnorm_forward_infer(x, gamma, beta, rm, rv, eps), None
    y, mean, invstd = _core.batchnorm_forward_train(
        x, gamma, beta, rm, rv, momentum, eps, bool(init_from_batch)
    )
    return y, BatchNormSaved(mean, invstd)


def _batchnorm_forward_args(
    x, gamma, beta, running_mean, running_var, training, momentum, eps, asarray, running_stat
):
    """The checks of :func:`batchnorm_forward` on either device.

    ``asarray`` validates an input array (host or device); ``running_stat(name, a, n, dtype)``
    validates a running statistic that training updates in place. Returns
    ``(x, gamma, beta, running_mean, running_var, momentum, eps)``, momentum None at inference.
    """
    x = asarray("x", x)
    gamma, beta = _feature_params(x, gamma, beta, asarray)
    eps = v.real("eps", eps, low=0.0, low_open=True)
    # checked at inference too, where it is unused: a bad value is a caller's bug either way
    momentum = v.real("momentum", momentum, low=0.0, high=1.0)
    n = x.shape[1]
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError(
                "running_mean, running_var: inference normalizes with the running "
                "statistics; pass both"
            )
        rm = asarray("running_mean", running_mean, ndim=1, dtype=x.dtype)
        v.check_shape("running_mean", rm, (n,))
        rv = asarray("running_var", running_var, ndim=1, dtype=x.dtype)
        v.check_shape("running_var", rv, (n,))
        if (rv < 0).any():
            raise ValueError("running_var: expected values >= 0")
        return x, gamma, beta, rm, rv, None, eps
    if x.shape[0] < 2:
        raise ValueError(
            f"x: batch normalization in training needs a batch of at least 2 samples "
            f"(the batch variance of one sample is undefined), got shape {x.shape}"
        )
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean, running_var: pass both or neither")
    rm = rv = None
    if running_mean is not None:
        rm = running_stat("running_mean", running_mean, n, x.dtype)
        rv = running_stat("running_var", running_var, n, x.dtype)
        if (rv < 0).any():
            raise ValueError("running_var: expected values >= 0")
    return x, gamma, beta, rm, rv, momentum, eps


def batchnorm_backward(
    x: Any, grad_output: Any, gamma: Any, saved: BatchNormSaved | tuple
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Backward pass of training-mode batch normalization, in closed form.

    With ``xhat = (x - mean) * invstd`` and m the batch size:
    ``dbeta = sum dy``, ``dgamma = sum dy * xhat`` (one pass) and
    ``dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m)`` (one pass).

    Args:
        x: the training forward's input (batch, features), batch >= 2.
        grad_output: dL/dy, same shape.
        gamma: the scale (features,), or None for the non-affine layer.
        saved: the :class:`BatchNormSaved` returned by :func:`batchnorm_forward`.

    Returns:
        ``(dx, dgamma, dbeta)``; dgamma and dbeta are None for the non-affine layer.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> x = np.array([[1.0], [3.0]]); g = np.ones(1)
        >>> y, saved = fm.ops.batchnorm_forward(x, g, np.zeros(1), None, None)
        >>> dx, dg, db = fm.ops.batchnorm_backward(x, np.array([[1.0], [1.0]]), g, saved)
        >>> dx, db
        (array([[0.],
               [0.]]), array([2.]))
    """
    if v.is_device_array(x):
        return _gpu().batchnorm_backward(x, grad_output, gamma, saved)
    x, g, gamma, mean, invstd = _batchnorm_backward_args(
        x, grad_output, gamma, saved, v.as_float_array
    )
    return _core.batchnorm_backward(x, g, gamma, mean, invstd)


def _batchnorm_backward_args(x, grad_output, gamma, saved, asarray):
    """The checks of :func:`batchnorm_backward` on either device (``asarray`` validates an
    array). Returns ``(x, grad_output, gamma, mean, invstd)``."""
    x = asarray("x", x)
    if x.shape[0] < 2:
        raise ValueError(
            f"x: batch normalization in training needs a batch of at least 2 samples, "
            f"got shape {x.shape}"
        )
    g = asarray("grad_output", grad_output, dtype=x.dtype)
    v.check_shape("grad_output", g, x.shape)
    n = x.shape[1]
    if gamma is not None:
        gamma = asarray("gamma", gamma, ndim=1, dtype=x.dtype)
        v.check_shape("gamma", gamma, (n,))
    if not isinstance(saved, tuple) or len(saved) != 2:
        raise TypeError(
            "saved: expected the BatchNormSaved (mean, invstd) returned by "
            "batchnorm_forward in training"
        )
    mean = asarray("saved.mean", saved[0], ndim=1, dtype=x.dtype)
    v.check_shape("saved.mean", mean, (n,))
    invstd = asarray("saved.invstd", saved[1], ndim=1, dtype=x.dtype)
    v.check_shape("saved.invstd", invstd, (n,))
    if (invstd <= 0).any():
        raise ValueError("saved.invstd: expected values > 0")
    return x, g, gamma, mean, invstd


# --------------------------------------------------------------------------- RBF


def _rbf_inputs(X: Any, centers: Any, widths: Any):
    X = v.as_float_array("X", X)
    centers = v.as_float_array("centers", centers, dtype=X.dtype)
    if centers.shape[1] != X.shape[1]:
        raise ValueError(
            f"centers: expected {X.shape[1]} columns (the features of X), got shape {centers.shape}"
        )
    widths = v.as_float_array("widths", widths, ndim=1, dtype=X.dtype)
    v.check_shape("widths", widths, (centers.shape[0],))
    if (widths <= 0).any():
        raise ValueError("widths: expected values > 0 (the Gaussian widths sigma)")
    return X, centers, widths


def rbf(X: Any, centers: Any, widths: Any) -> tuple[np.ndarray, np.ndarray]:
    """Radial basis function features (deck 003): ``Phi[n, k] = exp(-D[n, k] / (2 sigma_k^2))``
    with ``D[n, k] = ||x_n - mu_k||^2``.

    One GEMM gives ``X @ centers.T``; the squared norms, the expansion
    ``D = ||x||^2 + ||mu||^2 - 2 x.mu`` (clamped at 0 against cancellation) and the exponential
    are one fused pass over its output. Distances are expanded, so a point far from the origin
    compared with its distance to a centre loses relative precision in ``D`` (about
    ``eps * ||x||^2``); centre or scale the inputs, as for any RBF network.

    Args:
        X: inputs (batch, n_in), float32 or float64.
        centers: the centres mu (K, n_in), the dtype of X.
        widths: the widths sigma (K,), > 0.

    Returns:
        ``(D, Phi)``: squared distances and features, both (batch, K).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> D, Phi = fm.ops.rbf(np.array([[0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 1.0]]),
        ...                     np.array([1.0, 1.0]))
        >>> D, np.round(Phi, 4)
        (array([[0., 2.]]), array([[1.    , 0.3679]]))
    """
    X, centers, widths = _rbf_inputs(X, centers, widths)
    return _core.rbf_forward(X, centers, widths)


def rbf_backward(
    X: Any,
    centers: Any,
    widths: Any,
    D: Any,
    Phi: Any,
    grad_output: Any,
    *,
    need_dx: bool = True,
    need_params: bool = True,
) -> dict[str, np.ndarray | None]:
    """Backward pass of :func:`rbf` from ``grad_output`` = dL/dPhi.

    With ``G = dL/dD = dL/dPhi * Phi * (-1 / (2 sigma^2))``:
    ``dX = 2 diag(sum_k G) X - 2 G @ centers`` and
    ``dcenters = 2 diag(sum_n G) centers - 2 G.T @ X`` (one GEMM each), and
    ``dwidths_k = sum_n dL/dPhi * Phi * D / sigma_k^3``.

    Args:
        X, centers, widths: as passed to :func:`rbf`.
        D, Phi: the forward's outputs (batch, K).
        grad_output: dL/dPhi (batch, K).
        need_dx: compute dX (False for a first layer).
        need_params: compute dcenters and dwidths (False for frozen centres).

    Returns:
        dict with ``dX``, ``dcenters`` and ``dwidths`` (None where not asked for).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> X, C, s = np.array([[1.0]]), np.array([[0.0]]), np.array([1.0])
        >>> D, Phi = fm.ops.rbf(X, C, s)
        >>> g = fm.ops.rbf_backward(X, C, s, D, Phi, np.ones((1, 1)))
        >>> float(np.round(g["dX"][0, 0], 4)), float(np.round(g["dwidths"][0], 4))
        (-0.6065, 0.6065)
    """
    need_dx = v.flag("need_dx", need_dx)
    need_params = v.flag("need_params", need_params)
    X, centers, widths = _rbf_inputs(X, centers, widths)
    shape = (X.shape[0], centers.shape[0])
    D = v.as_float_array("D", D, dtype=X.dtype)
    v.check_shape("D", D, shape)
    Phi = v.as_float_array("Phi", Phi, dtype=X.dtype)
    v.check_shape("Phi", Phi, shape)
    g = v.as_float_array("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, shape)
    dX, dC, dS = _core.rbf_backward(X, centers, widths, D, Phi, g, need_dx, need_params)
    return {"dX": dX, "dcenters": dC, "dwidths": dS}


# --------------------------------------------------------------------------- dropout, noise


_philox_key = v.philox_key


def dropout(
    x: Any, rate: float, seed: int = 0, step: int = 0, layer: int = 0, training: bool = True
) -> np.ndarray:
    """Inverted dropout (decks 000, 001, 002) of an array of any shape.

    In training each element is kept with probability ``1 - rate`` and kept elements are
    scaled by ``1 / (1 - rate)``, so the expectation is unchanged; at inference it is the
    identity. (Deck 002's p is the keep probability, ``1 - rate`` here.) Element e (flat,
    row-major index) is kept iff its Philox4x32-10 uniform, keyed by ``(seed, step, layer)``,
    is >= rate: the mask is reproducible, independent of the thread count and of the dtype,
    and the same on the GPU. Use one ``layer`` id per dropout layer (input dropout included)
    and a new ``step`` per training step.

    Args:
        x: inputs, float32 or float64.
        rate: drop probability in [0, 1).
        seed, step, layer: the Philox key (seed, step < 2**64; layer < 2**32).
        training: apply the mask (True) or the identity (False).

    Returns:
        The output, same shape and dtype as ``x`` (a new array).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> y = fm.ops.dropout(np.ones((2, 4)), 0.5, seed=1)
        >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
        True
    """
    training = v.flag("training", training)
    if v.is_device_array(x):
        return _gpu().dropout(x, rate, seed, step, layer, training)
    x, rate, key = _dropout_args("x", x, rate, seed, step, layer, v.as_float_array)
    if not training:
        return x.copy()
    return _core.dropout_forward(x, rate, *key)


def _dropout_args(name: str, x: Any, rate: Any, seed: Any, step: Any, layer: Any, asarray):
    """The checks of :func:`dropout` / :func:`dropout_backward` on either device: the array
    (any shape), the rate in [0, 1) and the Philox key."""
    x = asarray(name, x, ndim=None)
    rate = v.real("rate", rate, low=0.0, high=1.0, high_open=True)
    return x, rate, _philox_key(seed, step, layer)


def dropout_backward(
    grad_output: Any,
    rate: float,
    seed: int = 0,
    step: int = 0,
    layer: int = 0,
    training: bool = True,
) -> np.ndarray:
    """Backward pass of :func:`dropout`: the same mask and scale applied to ``grad_output``.

    The mask is regenerated from ``(seed, step, layer)``; nothing is stored by the forward.

    Args:
        grad_output: dL/dy, the shape of the forward's input.
        rate, seed, step, layer, training: exactly as passed to :func:`dropout`.

    Returns:
        dL/dx, same shape and dtype.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> x = np.ones((3, 5))
        >>> y = fm.ops.dropout(x, 0.3, seed=4, step=2)
        >>> bool((fm.ops.dropout_backward(np.ones_like(x), 0.3, seed=4, step=2) == y).all())
        True
    """
    training = v.flag("training", training)
    if v.is_device_array(grad_output):
        return _gpu().dropout_backward(grad_output, rate, seed, step, layer, training)
    g, rate, key = _dropout_args(
        "grad_output", grad_output, rate, seed, step, layer, v.as_float_array
    )
    if not training:
        return g.copy()
    return _core.dropout_backward(g, rate, *key)


def gaussian_noise(
    x: Any, stddev: float, seed: int = 0, step: int = 0, layer: int = 0, training: bool = True
) -> np.ndarray:
    """Additive Gaussian noise, in training only (deck 002, noise injection).

    ``y = x + stddev * n`` with n standard normal from the Philox stream keyed by
    ``(seed, step, layer)`` (Box-Muller on the element's words, reproducible and independent
    of the thread count). The backward pass is the identity. At inference ``y = x``.

    Args:
        x: inputs, float32 or float64, any shape.
        stddev: the noise standard deviation, >= 0.
        seed, step, layer: the Philox key.
        training: add noise (True) or the identity (False).

    Returns:
        The output, same shape and dtype as ``x`` (a new array).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> y = fm.ops.gaussian_noise(np.zeros((1000, 10)), 0.5, seed=3)
        >>> bool(abs(y.std() - 0.5) < 0.02)
        True
    """
    training = v.flag("training", training)
    if v.is_device_array(x):
        return _gpu().gaussian_noise(x, stddev, seed, step, layer, training)
    x, stddev, key = _noise_args(x, stddev, seed, step, layer, v.as_float_array)
    if not training:
        return x.copy()
    return _core.gaussian_noise_forward(x, stddev, *key)


def _noise_args(x: Any, stddev: Any, seed: Any, step: Any, layer: Any, asarray):
    """The checks of :func:`gaussian_noise` on either device."""
    x = asarray("x", x, ndim=None)
    stddev = v.real("stddev", stddev, low=0.0)
    return x, stddev, _philox_key(seed, step, layer)


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
) -> tuple[float, np.ndarray | None]:
    """A loss fused with its output activation: the loss and d loss / d logits in one pass.

    ``L = (1/N) sum_i w_i l_i`` over the N samples (Keras' "sum over batch size"; PyTorch's
    weighted mean divides by ``sum_i w_i`` instead), with per-sample l_i:

    - ``"mse"`` (identity output): ``sum_o (z_o - t_o)^2``, deck 004's multi-output MSE
      (summed over outputs, unlike PyTorch's elementwise mean); ``half=True`` gives
      ``1/2 sum_o (z_o - t_o)^2`` (deck 004's backprop example).
    - ``"binary_cross_entropy"`` (sigmoid output): ``sum_o softplus(z_o) - t_o z_o``, BCE from
      logits in log-sum-exp form, finite for any logit; 0/1 labels or probabilities, several
      labels per sample allowed (summed over outputs).
    - ``"cross_entropy"`` (softmax output): ``sum_j t_j (logsumexp(z) - z_j)``,
      max-subtracted; targets are integer labels (batch,) or one-hot/probability rows.

    Label smoothing (deck 002) with k classes (k = 2 per output for BCE): ``smoothing="deck"``
    replaces the hard targets 0 and 1 by ``eps/(k-1)`` and ``1 - eps``; ``"uniform"`` (PyTorch,
    Keras) by ``eps/k`` and ``1 - eps + eps/k``. Probability targets are mapped linearly.

    Args:
        name: "mse", "binary_cross_entropy" or "cross_entropy" (aliases: "bce", "ce",
            "categorical_crossentropy", "mean_squared_error", ...).
        logits: pre-activations of the output layer (batch, outputs), float32 or float64.
        target: dense targets (batch, outputs) (cast to the logits' dtype; (batch,) when there
            is one output), or for cross_entropy integer class labels (batch,).
        sample_weight: non-negative weights (batch,), or None.
        label_smoothing: eps in [0, 1) (classification losses).
        smoothing: "deck" or "uniform", see above.
        half: the 1/2 convention (mse only).
        grad: also compute d loss / d logits.

    Returns:
        ``(loss, dlogits)``: a float and the gradient (batch, outputs), already divided by N
        (None with ``grad=False``).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> L, d = fm.ops.loss("ce", np.zeros((2, 4)), np.array([0, 3]))
        >>> round(L, 6), d[0]
        (1.386294, array([-0.375,  0.125,  0.125,  0.125]))
    """
    grad = v.flag("grad", grad)
    half = v.flag("half", half)
    if v.is_device_array(logits):
        return _gpu().loss(
            name, logits, target, sample_weight, label_smoothing, smoothing, half, grad=grad
        )
    key, z, t, w, eps = _loss_args(
        name, logits, target, sample_weight, label_smoothing, smoothing, half, v.as_float_array, np
    )
    return _core.loss_forward_backward(
        _losses.code(key), z, t, w, grad, eps, smoothing == "uniform", half
    )


def _loss_args(name, logits, target, sample_weight, label_smoothing, smoothing, half, asarray, xp):
    """The checks of :func:`loss` on either device: ``asarray`` validates the logits and ``xp``
    (numpy or cupy) is the array module of the targets and weights. Returns
    ``(key, logits, target, sample_weight, label_smoothing)``."""
    key = _losses.canonical(name, "name")
    z = asarray("logits", logits)
    rows, cols = z.shape
    t = _losses.check_target(key, target, rows, cols, z.dtype, xp)
    w = _losses.check_sample_weight(sample_weight, rows, z.dtype, xp)
    eps = v.real("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
    if smoothing not in _losses.SMOOTHING:
        raise ValueError(
            f"smoothing: expected one of {', '.join(_losses.SMOOTHING)}, got {smoothing!r}"
        )
    if eps > 0 and key == "mse":
        raise ValueError(
            "label_smoothing: only the classification losses take label smoothing, not mse"
        )
    if eps > 0 and key == "cross_entropy" and smoothing == "deck" and cols < 2:
        raise ValueError("label_smoothing: the deck's eps/(k-1) rule needs at least 2 classes")
    if half and key != "mse":
        raise ValueError(f"half: the 1/2 convention applies to mse only, not {key!r}")
    return key, z, t, w, eps


def loss_output(name: str, logits: Any) -> np.ndarray:
    """The output activation a loss is fused with, for predictions.

    identity for mse, sigmoid for binary_cross_entropy (probabilities per output), row
    softmax for cross_entropy (class probabilities), deck 003.

    Args:
        name: a loss name or alias, as in :func:`loss`.
        logits: (batch, outputs), float32 or float64.

    Returns:
        The predictions, same shape and dtype.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.ops.loss_output("bce", np.array([[0.0, 1000.0]]))
        array([[0.5, 1. ]])
    """
    if v.is_device_array(logits):
        return _gpu().loss_output(name, logits)
    key = _losses.canonical(name, "name")
    z = v.as_float_array("logits", logits)
    return _core.loss_output(_losses.code(key), z)


def loss_names() -> list[str]:
    """The canonical loss names accepted by :func:`loss` (aliases excluded)."""
    return _losses.names()
