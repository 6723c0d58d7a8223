"""Thin, validated wrappers over single kernels, one body for both devices.

Every function checks its inputs (shape, dtype, finiteness, hyper-parameter ranges) and
raises ``ValueError``/``TypeError`` naming the argument before any C++ runs. Non-contiguous
inputs are made contiguous. float32 and float64 are supported; outputs have the input dtype.
The device follows the inputs (:func:`fusedmlp._backend.of_any`): NumPy arrays run the CPU
kernels (``fusedmlp._core``) and return NumPy arrays; CuPy arrays (anything exposing
``__cuda_array_interface__``) run the CUDA kernels (``fusedmlp._cuda``) on CuPy's current
stream and return CuPy arrays. Both modules take the same arguments (outputs allocated here
with ``be.empty``), so each op is written once; mixing host and device arrays in one call is
a TypeError naming the argument.

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
from . import _backend, _losses
from . import _validate as v
from ._loader import _core, _cuda, _cuda_import_error


def _unit_params(spec_name: str, params: Any, n: int, dtype: np.dtype, hinges: int | None, be):
    """Validate the learnable per-unit parameter block for a learnable activation (checked
    and made C-contiguous by the backend ``be`` of the call)."""
    arr = be.asarray("params", params, ndim=(1, 2), dtype=dtype)
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
    """The backend of the call, z validated (as "z"), then the activation and its parameters
    for z's units."""
    be = _backend.of_any(z, params)
    z = be.asarray("z", z)
    key, unit, spec = _prepare_act(name, params, hinges, hyper, z.shape[1], z.dtype, be)
    return be, key, z, unit, spec


def _prepare_act(
    name: Any,
    params: Any,
    hinges: int | None,
    hyper: dict,
    n: int,
    dtype,
    be,
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
        unit, s = _unit_params(key, params, n, dtype, hinges, be)
        hinges = s if key == "apl" else hinges
    elif params is not None:
        raise ValueError(f"params: activation {key!r} has no learnable parameters")
    spec = acts.make_spec(key, hinges=hinges, **hyper)
    return key, unit, spec


def _rrelu_config(spec, training: bool, seed: int, step: int, layer: int):
    return spec.config(training=training, seed=seed, step=step, layer=layer)


def _squeeze_like(dp, params):
    """A 1-d ``params`` gets a 1-d gradient back."""
    if dp is not None and params is not None and np.ndim(params) == 1:
        return dp[0]
    return dp


def _softmax(be, z):
    y = be.empty(z.shape, z.dtype)
    be.mod.softmax_forward(z, y, stream=be.stream())
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
    be, key, z, unit, spec = _prepare(name, z, params, hinges, hyper)
    if key == "softmax":
        _no_extra(key, hyper, params, pieces=pieces)
        return _softmax(be, z)
    if key == "maxout":
        _no_extra(key, hyper, params)
        k = _pieces(pieces, z)
        y = be.empty((z.shape[0], z.shape[1] // k), z.dtype)
        be.mod.maxout_forward(z, y, k, stream=be.stream())
        return y
    if pieces is not None:
        raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")
    y = be.empty(z.shape, z.dtype)
    config = _rrelu_config(spec, training, seed, step, layer)
    be.mod.activation_forward(config, z, y, unit, stream=be.stream())
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
) -> np.ndarray:
    """Elementwise derivative f'(z) of an activation (same arguments as :func:`activation`).

    Softmax and maxout are not elementwise: use :func:`activation_backward` for them.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.ops.activation_grad("relu", np.array([[-1.0, 0.0, 2.0]]))
        array([[0., 0., 1.]])
    """
    be, key, z, unit, spec = _prepare(name, z, params, hinges, hyper)
    if key in acts.ROW_OPS:
        raise ValueError(
            f"name: {key!r} is row-wise and has a Jacobian, not an elementwise derivative; "
            "use fusedmlp.ops.activation_backward"
        )
    g = be.empty(z.shape, z.dtype)
    config = _rrelu_config(spec, training, seed, step, layer)
    be.mod.activation_derivative(config, z, g, unit, stream=be.stream())
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
    be, key, z, unit, spec = _prepare(name, z, params, hinges, hyper)
    row_op = key in acts.ROW_OPS
    if row_op:
        _no_extra(key, hyper, params, pieces=pieces if key == "softmax" else None)
    elif pieces is not None:
        raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")
    k = _pieces(pieces, z) if key == "maxout" else 1
    g = be.asarray("grad_output", grad_output, dtype=z.dtype)
    v.check_shape("grad_output", g, (z.shape[0], z.shape[1] // k))
    dz = be.empty(z.shape, z.dtype)
    if key == "softmax":
        be.mod.softmax_backward(_softmax(be, z), g, dz, stream=be.stream())
        return dz, None
    if key == "maxout":
        be.mod.maxout_backward(z, g, dz, k, stream=be.stream())
        return dz, None
    dp = None if unit is None else be.empty(unit.shape, unit.dtype)
    config = _rrelu_config(spec, training, seed, step, layer)
    be.mod.activation_backward(config, z, g, dz, dp, unit, stream=be.stream())
    return dz, _squeeze_like(dp, params)


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


def _dense_inputs(X: Any, W: Any, be):
    """X (batch, n_in) and W (n_in, n_out) checked by the backend ``be``."""
    X = be.asarray("X", X)
    W = be.asarray("W", W, dtype=X.dtype)
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
    be = _backend.of_any(X, W, b, params)
    X, W = _dense_inputs(X, W, be)
    if b is not None:
        b = be.asarray("b", b, ndim=1, dtype=X.dtype)
        v.check_shape("b", b, (W.shape[1],))
    key, unit, spec = _prepare_act(
        activation, params, hinges, hyper, W.shape[1], X.dtype, be, what="activation"
    )
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; apply fusedmlp.ops.{key} to Z instead")
    Z = be.empty((X.shape[0], W.shape[1]), X.dtype)
    A = None if key == "identity" else be.empty(Z.shape, X.dtype)
    config = _rrelu_config(spec, training, seed, step, layer)
    be.mod.dense_forward(config, X, W, b, Z, A, unit, stream=be.stream())
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
    be = _backend.of_any(X, W, Z, grad_output, params)
    X, W = _dense_inputs(X, W, be)
    Z = be.asarray("Z", Z, dtype=X.dtype)
    v.check_shape("Z", Z, (X.shape[0], W.shape[1]))
    g = be.asarray("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, Z.shape)
    key, unit, spec = _prepare_act(
        activation, params, hinges, hyper, Z.shape[1], X.dtype, be, what="activation"
    )
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; use activation_backward on it first")
    batch, n_in, n_out = X.shape[0], X.shape[1], W.shape[1]
    dZ = be.empty(Z.shape, X.dtype)
    dW = be.empty((n_in, n_out), X.dtype)
    db = be.empty((n_out,), X.dtype) if has_bias else None
    dX = be.empty((batch, n_in), X.dtype) if need_dx else None
    dp = None if unit is None else be.empty(unit.shape, unit.dtype)
    config = _rrelu_config(spec, training, seed, step, layer)
    be.mod.dense_backward(config, X, W, Z, g, dZ, dW, db, dX, dp, unit, stream=be.stream())
    return {"dX": dX, "dW": dW, "db": db, "dparams": _squeeze_like(dp, params)}


# --------------------------------------------------------------------------- batch norm


class BatchNormSaved(NamedTuple):
    """What :func:`batchnorm_backward` needs from a training forward pass.

    Attributes:
        mean: the batch mean mu_B per feature, (features,).
        invstd: 1 / sqrt(sigma_B^2 + eps) per feature, (features,).
    """

    mean: np.ndarray
    invstd: np.ndarray


def _feature_params(x: Any, gamma: Any, beta: Any, be):
    if (gamma is None) != (beta is None):
        raise ValueError("gamma, beta: pass both (affine layer) or neither (non-affine)")
    if gamma is None:
        return None, None
    n = x.shape[1]
    gamma = be.asarray("gamma", gamma, ndim=1, dtype=x.dtype)
    v.check_shape("gamma", gamma, (n,))
    beta = be.asarray("beta", beta, ndim=1, dtype=x.dtype)
    v.check_shape("beta", beta, (n,))
    return gamma, beta


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
    be = _backend.of_any(x, gamma, beta, running_mean, running_var)
    x, gamma, beta, rm, rv, momentum, eps = _batchnorm_forward_args(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, be
    )
    y = be.empty(x.shape, x.dtype)
    if not training:
        be.mod.batchnorm_forward_infer(x, y, gamma, beta, rm, rv, eps, stream=be.stream())
        return y, None
    mean, invstd = be.empty((x.shape[1],), x.dtype), be.empty((x.shape[1],), x.dtype)
    be.mod.batchnorm_forward_train(
        x, y, gamma, beta, mean, invstd, rm, rv, momentum, eps, init_from_batch, stream=be.stream()
    )
    return y, BatchNormSaved(mean, invstd)


def _batchnorm_forward_args(x, gamma, beta, running_mean, running_var, training, momentum, eps, be):
    """The checks of :func:`batchnorm_forward`: the inputs validated by the backend ``be``,
    the running statistics training updates in place by ``be.in_place``. Returns
    ``(x, gamma, beta, running_mean, running_var, momentum, eps)``, momentum None at inference.
    """
    x = be.asarray("x", x)
    gamma, beta = _feature_params(x, gamma, beta, be)
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
        rm = be.asarray("running_mean", running_mean, ndim=1, dtype=x.dtype)
        v.check_shape("running_mean", rm, (n,))
        rv = be.asarray("running_var", running_var, ndim=1, dtype=x.dtype)
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
        rm = be.in_place("running_mean", running_mean, (n,), x.dtype)
        rv = be.in_place("running_var", running_var, (n,), x.dtype)
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
    be = _backend.of_any(x, grad_output, gamma)
    x, g, gamma, mean, invstd = _batchnorm_backward_args(x, grad_output, gamma, saved, be)
    dx = be.empty(x.shape, x.dtype)
    dgamma = dbeta = None
    if gamma is not None:
        dgamma, dbeta = be.empty(gamma.shape, x.dtype), be.empty(gamma.shape, x.dtype)
    be.mod.batchnorm_backward(x, g, gamma, mean, invstd, dx, dgamma, dbeta, stream=be.stream())
    return dx, dgamma, dbeta


def _batchnorm_backward_args(x, grad_output, gamma, saved, be):
    """The checks of :func:`batchnorm_backward` (arrays validated by the backend ``be``).
    Returns ``(x, grad_output, gamma, mean, invstd)``."""
    x = be.asarray("x", x)
    if x.shape[0] < 2:
        raise ValueError(
            f"x: batch normalization in training needs a batch of at least 2 samples, "
            f"got shape {x.shape}"
        )
    g = be.asarray("grad_output", grad_output, dtype=x.dtype)
    v.check_shape("grad_output", g, x.shape)
    n = x.shape[1]
    if gamma is not None:
        gamma = be.asarray("gamma", gamma, ndim=1, dtype=x.dtype)
        v.check_shape("gamma", gamma, (n,))
    if not isinstance(saved, tuple) or len(saved) != 2:
        raise TypeError(
            "saved: expected the BatchNormSaved (mean, invstd) returned by "
            "batchnorm_forward in training"
        )
    mean = be.asarray("saved.mean", saved[0], ndim=1, dtype=x.dtype)
    v.check_shape("saved.mean", mean, (n,))
    invstd = be.asarray("saved.invstd", saved[1], ndim=1, dtype=x.dtype)
    v.check_shape("saved.invstd", invstd, (n,))
    if (invstd <= 0).any():
        raise ValueError("saved.invstd: expected values > 0")
    return x, g, gamma, mean, invstd


# --------------------------------------------------------------------------- RBF


def _rbf_inputs(X: Any, centers: Any, widths: Any, be):
    X = be.asarray("X", X)
    centers = be.asarray("centers", centers, dtype=X.dtype)
    if centers.shape[1] != X.shape[1]:
        raise ValueError(
            f"centers: expected {X.shape[1]} columns (the features of X), got shape {centers.shape}"
        )
    widths = be.asarray("widths", widths, ndim=1, dtype=X.dtype)
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
    be = _backend.of_any(X, centers, widths)
    X, centers, widths = _rbf_inputs(X, centers, widths, be)
    shape = (X.shape[0], centers.shape[0])
    D, Phi = be.empty(shape, X.dtype), be.empty(shape, X.dtype)
    be.mod.rbf_forward(X, centers, widths, D, Phi, stream=be.stream())
    return D, Phi


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
    be = _backend.of_any(X, centers, widths, D, Phi, grad_output)
    X, centers, widths = _rbf_inputs(X, centers, widths, be)
    shape = (X.shape[0], centers.shape[0])
    D = be.asarray("D", D, dtype=X.dtype)
    v.check_shape("D", D, shape)
    Phi = be.asarray("Phi", Phi, dtype=X.dtype)
    v.check_shape("Phi", Phi, shape)
    g = be.asarray("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, shape)
    dX = be.empty(X.shape, X.dtype) if need_dx else None
    dC = be.empty(centers.shape, X.dtype) if need_params else None
    dS = be.empty(widths.shape, X.dtype) if need_params else None
    be.mod.rbf_backward(X, centers, widths, D, Phi, g, dX, dC, dS, stream=be.stream())
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
    be = _backend.of_any(x)
    return _keyed(
        be, "dropout_forward", _dropout_args("x", x, rate, seed, step, layer, be), training
    )


def _dropout_args(name: str, x: Any, rate: Any, seed: Any, step: Any, layer: Any, be):
    """The checks of :func:`dropout` / :func:`dropout_backward`: the array (any shape), the
    rate in [0, 1) and the Philox key."""
    x = be.asarray(name, x, ndim=None)
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
    be = _backend.of_any(grad_output)
    checked = _dropout_args("grad_output", grad_output, rate, seed, step, layer, be)
    return _keyed(be, "dropout_backward", checked, training)


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
    be = _backend.of_any(x)
    checked = _noise_args(x, stddev, seed, step, layer, be)
    return _keyed(be, "gaussian_noise_forward", checked, training)


def _noise_args(x: Any, stddev: Any, seed: Any, step: Any, layer: Any, be):
    """The checks of :func:`gaussian_noise`."""
    x = be.asarray("x", x, ndim=None)
    stddev = v.real("stddev", stddev, low=0.0)
    return x, stddev, _philox_key(seed, step, layer)


def _keyed(be, kernel: str, checked: tuple, training: bool):
    """The Philox-keyed elementwise ops (dropout, its backward, noise) on their checked
    ``(x, value, key)``: a copy at inference, else ``kernel`` into a new array."""
    x, value, key = checked
    if not training:
        return x.copy()
    y = be.empty(x.shape, x.dtype)
    getattr(be.mod, kernel)(x, y, value, *key, stream=be.stream())
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
    be = _backend.of_any(logits, target, sample_weight)
    key, z, t, w, eps = _loss_args(
        name, logits, target, sample_weight, label_smoothing, smoothing, half, be
    )
    d = be.empty(z.shape, z.dtype) if grad else None
    out = be.empty((), np.float64)
    uniform = smoothing == "uniform"
    be.mod.loss_forward_backward(
        _losses.code(key), z, t, w, d, out, eps, uniform, half, stream=be.stream()
    )
    return float(out), d


def _loss_args(name, logits, target, sample_weight, label_smoothing, smoothing, half, be):
    """The checks of :func:`loss`: the logits validated by the backend ``be``, the targets
    and weights in its array module. Returns
    ``(key, logits, target, sample_weight, label_smoothing)``."""
    xp = be.xp
    key = _losses.canonical(name, "name")
    z = be.asarray("logits", logits)
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
    be = _backend.of_any(logits)
    key = _losses.canonical(name, "name")
    z = be.asarray("logits", logits)
    y = be.empty(z.shape, z.dtype)
    be.mod.loss_output(_losses.code(key), z, y, stream=be.stream())
    return y


def loss_names() -> list[str]:
    """The canonical loss names accepted by :func:`loss` (aliases excluded)."""
    return _losses.names()


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
    """Elements of optimizer state for an arena of ``n`` elements (both devices' layout).

    Args:
        config: a ``fusedmlp._core.OptConfig`` (``fusedmlp.optim.<Optimizer>(...).config()``).
        n: the arena's length.
        segments: list of ``fusedmlp._core.Segment``, or None (one decaying vector).

    Returns:
        The number of elements the state array of :func:`optimizer_step` must have.

    Example:
        >>> import fusedmlp as fm
        >>> fm.ops.optimizer_state_size(fm.optim.Adam().config(), 10)
        20
    """
    n = v.integer("n", n, low=0)
    return int(_core.optimizer_state_size(_config(config), n, _segments(segments)))


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
    """One optimizer step over a flat parameter arena, in place (one pass / one launch for the
    elementwise rules), on the arena's device.

    Segment semantics: decay / max-norm per segment, gaps untouched. With ``clip_norm`` the
    global gradient norm is reduced on the arena's device into a float64 scalar there, and
    the clipping factor min(1, clip_norm / (||g|| + 1e-6)) is read by the update from it: on
    the GPU nothing synchronizes.

    Args:
        config: a ``fusedmlp._core.OptConfig``.
        params: the 1-d parameter arena, a float32/float64 NumPy or CuPy array (updated in
            place).
        grads: the gradients, the arena's shape and dtype, finite.
        state: the optimizer state, a 1-d array of ``optimizer_state_size`` elements of
            the arena's dtype, zero before the first step (updated in place).
        segments: list of ``fusedmlp._core.Segment`` (sorted, disjoint), or None.
        step: the 1-based step number t.
        lr: the learning rate of this step, > 0.
        grad_scale: a host factor multiplying the gradients first, >= 0.
        clip_norm: clip the gradients to this global L2 norm (None = off), > 0.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> cfg = fm.optim.SGD(lr=0.1).config()
        >>> p = np.ones(3); g = np.full(3, 0.5)
        >>> fm.ops.optimizer_step(cfg, p, g, np.zeros(0), step=1, lr=0.1); p
        array([0.95, 0.95, 0.95])
    """
    be = _backend.of_any(params, grads, state)
    config = _config(config)
    p = be.in_place("params", params, None, None, finite=False)
    g = be.asarray("grads", grads, ndim=1, dtype=p.dtype, allow_empty=True)
    v.check_shape("grads", g, p.shape)
    st = be.in_place("state", state, None, p.dtype, finite=False)
    step = v.integer("step", step, low=1)
    lr = v.real("lr", lr, 0.0)
    grad_scale = v.real("grad_scale", grad_scale, low=0.0)
    scale_dev = None
    if clip_norm is not None:
        clip_norm = v.real("clip_norm", clip_norm, 0.0, low_open=True)
        scale_dev = be.empty((), np.float64)
        be.mod.grad_sq_norm(g, None, scale_dev, clip_norm, stream=be.stream())
    segments = _segments(segments)
    be.mod.optimizer_step(
        config, p, g, st, segments, step, lr, grad_scale, scale_dev, stream=be.stream()
    )


def grad_sq_norm(grads: Any):
    """The squared L2 norm of a gradient array, reduced on its device (without a host sync on
    the GPU).

    Blocked partial sums in double added in index order; the partition depends only on the
    size, so the value is the same from run to run (and on every GPU).

    Args:
        grads: a float32/float64 array of any shape (NumPy or CuPy).

    Returns:
        A 0-d float64 array of the grads' device holding sum(grads**2).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> float(fm.ops.grad_sq_norm(np.array([3.0, 4.0])))
        25.0
    """
    be = _backend.of_any(grads)
    g = be.asarray("grads", grads, ndim=None, allow_empty=True)
    out = be.empty((), np.float64)
    be.mod.grad_sq_norm(g, out, None, 0.0, stream=be.stream())
    return out


def clip_norm_scale(grads: Any, max_norm: float):
    """Global-norm clipping factor min(1, max_norm / (||grads|| + 1e-6)) (torch's
    ``clip_grad_norm_`` factor) on the grads' device, without a host sync on the GPU.

    Args:
        grads: a float32/float64 array of any shape (e.g. the gradient arena).
        max_norm: the norm to clip to, > 0.

    Returns:
        A 0-d float64 array of the grads' device holding the factor.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> round(float(fm.ops.clip_norm_scale(np.array([3.0, 4.0]), 1.0)), 6)
        0.2
    """
    be = _backend.of_any(grads)
    g = be.asarray("grads", grads, ndim=None, allow_empty=True)
    max_norm = v.real("max_norm", max_norm, 0.0, low_open=True)
    out = be.empty((), np.float64)
    be.mod.grad_sq_norm(g, None, out, max_norm, stream=be.stream())
    return out


def set_allow_tf32(on: bool) -> None:
    """Allow TF32 tensor-core math in float32 GEMMs (faster, ~1e-3 relative error); off by default.

    Args:
        on: True to allow TF32.

    Raises:
        RuntimeError: fusedmlp was built without its CUDA module.

    Example:
        >>> fm.ops.set_allow_tf32(False)                          # doctest: +SKIP
    """
    if not isinstance(on, bool):
        raise TypeError(f"on: expected a bool, got {type(on).__name__}")
    if _cuda is None:
        raise RuntimeError(f"fusedmlp's CUDA backend is not available: {_cuda_import_error}")
    _cuda.set_allow_tf32(on)
