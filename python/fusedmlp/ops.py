"""Thin, validated wrappers over single kernels (NumPy in, NumPy out on the CPU).

Every function checks its inputs (shape, dtype, finiteness, hyper-parameter ranges) and
raises ``ValueError``/``TypeError`` naming the argument before any C++ runs. Non-contiguous
inputs are made contiguous. float32 and float64 are supported; outputs have the input dtype.

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


def _unit_params(spec_name: str, params: Any, n: int, dtype: np.dtype, hinges: int | None):
    """Validate the learnable per-unit parameter block for a learnable activation."""
    arr = v.as_float_array("params", params, ndim=(1, 2), dtype=dtype)
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
        return np.ascontiguousarray(arr), s
    rows = len(acts.LEARNABLE[spec_name][0])
    v.check_shape("params", arr, (rows, n))
    return np.ascontiguousarray(arr), None


def _prepare(name: Any, z: Any, params: Any, hinges: int | None, hyper: dict):
    """Validate z (as "z"), then the activation and its parameters for z's units."""
    z = v.as_float_array("z", z)
    key, unit, spec = _prepare_act(name, params, hinges, hyper, z.shape[1], z.dtype)
    return key, z, unit, spec


def _prepare_act(name: Any, params: Any, hinges: int | None, hyper: dict, n: int, dtype):
    key = acts.canonical(name)
    if key in acts.ROW_OPS:
        return key, None, None
    learnable = key in acts.LEARNABLE or key == "apl"
    unit = None
    if learnable:
        if params is None:
            raise ValueError(f"params: activation {key!r} has learnable per-unit parameters; pass them")
        unit, s = _unit_params(key, params, n, dtype, hinges)
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
    X = v.as_float_array("X", X)
    W = v.as_float_array("W", W, dtype=X.dtype)
    if W.shape[0] != X.shape[1]:
        raise ValueError(f"W: expected {X.shape[1]} rows (the features of X), got shape {W.shape}")
    if b is not None:
        b = v.as_float_array("b", b, ndim=1, dtype=X.dtype)
        v.check_shape("b", b, (W.shape[1],))
    key, unit, spec = _prepare_act(activation, params, hinges, hyper, W.shape[1], X.dtype)
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
    X = v.as_float_array("X", X)
    W = v.as_float_array("W", W, dtype=X.dtype)
    if W.shape[0] != X.shape[1]:
        raise ValueError(f"W: expected {X.shape[1]} rows (the features of X), got shape {W.shape}")
    Z = v.as_float_array("Z", Z, dtype=X.dtype)
    v.check_shape("Z", Z, (X.shape[0], W.shape[1]))
    g = v.as_float_array("grad_output", grad_output, dtype=X.dtype)
    v.check_shape("grad_output", g, Z.shape)
    key, unit, spec = _prepare_act(activation, params, hinges, hyper, Z.shape[1], X.dtype)
    if key in acts.ROW_OPS:
        raise ValueError(f"activation: {key!r} is row-wise; use activation_backward on it first")
    dX, dW, db, dp = _core.dense_backward(
        _rrelu_config(spec, training, seed, step, layer), X, W, Z, g, bool(has_bias),
        bool(need_dx), unit,
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


def _feature_params(x: np.ndarray, gamma: Any, beta: Any):
    if (gamma is None) != (beta is None):
        raise ValueError("gamma, beta: pass both (affine layer) or neither (non-affine)")
    if gamma is None:
        return None, None
    n = x.shape[1]
    gamma = v.as_float_array("gamma", gamma, ndim=1, dtype=x.dtype)
    v.check_shape("gamma", gamma, (n,))
    beta = v.as_float_array("beta", beta, ndim=1, dtype=x.dtype)
    v.check_shape("beta", beta, (n,))
    return gamma, beta


def _running_stat(name: str, a: Any, n: int, dtype: np.dtype) -> np.ndarray:
    """A running statistic updated in place: a writeable C-contiguous ndarray, no copy."""
    v.check_host(name, a)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array (it is updated in place), "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    v.check_shape(name, a, (n,))
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{name}: expected a writeable C-contiguous array "
                         "(it is updated in place)")
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
    x = v.as_float_array("x", x)
    gamma, beta = _feature_params(x, gamma, beta)
    eps = v.real("eps", eps, low=0.0, low_open=True)
    n = x.shape[1]
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean, running_var: inference normalizes with the running "
                             "statistics; pass both")
        rm = v.as_float_array("running_mean", running_mean, ndim=1, dtype=x.dtype)
        v.check_shape("running_mean", rm, (n,))
        rv = v.as_float_array("running_var", running_var, ndim=1, dtype=x.dtype)
        v.check_shape("running_var", rv, (n,))
        if (rv < 0).any():
            raise ValueError("running_var: expected values >= 0")
        return _core.batchnorm_forward_infer(x, gamma, beta, rm, rv, eps), None
    momentum = v.real("momentum", momentum, low=0.0, high=1.0)
    if x.shape[0] < 2:
        raise ValueError(f"x: batch normalization in training needs a batch of at least 2 samples "
                         f"(the batch variance of one sample is undefined), got shape {x.shape}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean, running_var: pass both or neither")
    rm = rv = None
    if running_mean is not None:
        rm = _running_stat("running_mean", running_mean, n, x.dtype)
        rv = _running_stat("running_var", running_var, n, x.dtype)
        if (rv < 0).any():
            raise ValueError("running_var: expected values >= 0")
    y, mean, invstd = _core.batchnorm_forward_train(x, gamma, beta, rm, rv, momentum, eps,
                                                    bool(init_from_batch))
    return y, BatchNormSaved(mean, invstd)


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
    x = v.as_float_array("x", x)
    if x.shape[0] < 2:
        raise ValueError(f"x: batch normalization in training needs a batch of at least 2 samples, "
                         f"got shape {x.shape}")
    g = v.as_float_array("grad_output", grad_output, dtype=x.dtype)
    v.check_shape("grad_output", g, x.shape)
    n = x.shape[1]
    if gamma is not None:
        gamma = v.as_float_array("gamma", gamma, ndim=1, dtype=x.dtype)
        v.check_shape("gamma", gamma, (n,))
    if not isinstance(saved, tuple) or len(saved) != 2:
        raise TypeError("saved: expected the BatchNormSaved (mean, invstd) returned by "
                        "batchnorm_forward in training")
    mean = v.as_float_array("saved.mean", saved[0], ndim=1, dtype=x.dtype)
    v.check_shape("saved.mean", mean, (n,))
    invstd = v.as_float_array("saved.invstd", saved[1], ndim=1, dtype=x.dtype)
    v.check_shape("saved.invstd", invstd, (n,))
    if (invstd <= 0).any():
        raise ValueError("saved.invstd: expected values > 0")
    return _core.batchnorm_backward(x, g, gamma, mean, invstd)


# --------------------------------------------------------------------------- dropout, noise


def _philox_key(seed: Any, step: Any, layer: Any) -> tuple[int, int, int]:
    return (v.integer("seed", seed, low=0, high=2**64 - 1),
            v.integer("step", step, low=0, high=2**64 - 1),
            v.integer("layer", layer, low=0, high=2**32 - 1))


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
    x = v.as_float_array("x", x, ndim=None)
    rate = v.real("rate", rate, low=0.0, high=1.0, high_open=True)
    key = _philox_key(seed, step, layer)
    if not training:
        return x.copy()
    return _core.dropout_forward(x, rate, *key)


def dropout_backward(
    grad_output: Any, rate: float, seed: int = 0, step: int = 0, layer: int = 0,
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
    g = v.as_float_array("grad_output", grad_output, ndim=None)
    rate = v.real("rate", rate, low=0.0, high=1.0, high_open=True)
    key = _philox_key(seed, step, layer)
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
    x = v.as_float_array("x", x, ndim=None)
    stddev = v.real("stddev", stddev, low=0.0)
    key = _philox_key(seed, step, layer)
    if not training:
        return x.copy()
    return _core.gaussian_noise_forward(x, stddev, *key)


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
    key = _losses.canonical(name, "name")
    z = v.as_float_array("logits", logits)
    rows, cols = z.shape
    t = _losses.check_target(key, target, rows, cols, z.dtype)
    w = _losses.check_sample_weight(sample_weight, rows, z.dtype)
    eps = v.real("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
    if smoothing not in _losses.SMOOTHING:
        raise ValueError(f"smoothing: expected one of {', '.join(_losses.SMOOTHING)}, "
                         f"got {smoothing!r}")
    if eps > 0 and key == "mse":
        raise ValueError("label_smoothing: only the classification losses take label "
                         "smoothing, not mse")
    if eps > 0 and key == "cross_entropy" and smoothing == "deck" and cols < 2:
        raise ValueError("label_smoothing: the deck's eps/(k-1) rule needs at least 2 classes")
    if half and key != "mse":
        raise ValueError(f"half: the 1/2 convention applies to mse only, not {key!r}")
    return _core.loss_forward_backward(_losses.code(key), z, t, w, bool(grad), eps,
                                       smoothing == "uniform", bool(half))


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
    key = _losses.canonical(name, "name")
    z = v.as_float_array("logits", logits)
    return _core.loss_output(_losses.code(key), z)


def loss_names() -> list[str]:
    """The canonical loss names accepted by :func:`loss` (aliases excluded)."""
    return _losses.names()
