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

from typing import Any

import numpy as np

from . import _activations as acts
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
