"""Weight initializers (decks 000-003). Each returns an (n_in, n_out) array drawn from a
NumPy generator, so a model's initial weights are deterministic for its seed.

    zeros, constant      symmetric: every unit computes the same thing and stays so
                         (deck 000 shows why this fails); offered for the experiments.
    normal, uniform      N(0, std^2), U(-a, a)
    glorot_*/xavier_*    Var = 2 / (fan_in + fan_out) (Glorot & Bengio)
    he_*/kaiming_*       Var = 2 / fan (fan_in by default, fan_out as an option) (He et al.)
    lecun_normal         Var = 1 / fan_in (LeCun et al., deck 003)
    orthogonal           Saxe et al.: a (semi-)orthogonal matrix times gain
    lsuv                 Mishkin & Matas: orthogonal, then each layer rescaled to unit output
                         variance on a data batch (see :func:`lsuv_init`, needs data)

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> W = fm.init.initialize("he_normal", 784, 256, np.random.default_rng(0))
    >>> round(float(W.std() * np.sqrt(784 / 2)), 1)
    1.0
"""

from __future__ import annotations

import math

import numpy as np

from . import _backend
from . import _validate as v

ALIASES = {
    "xavier_normal": "glorot_normal",
    "xavier_uniform": "glorot_uniform",
    "kaiming_normal": "he_normal",
    "kaiming_uniform": "he_uniform",
}
NAMES = (
    "zeros",
    "constant",
    "normal",
    "uniform",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "orthogonal",
    "lsuv",
)


def canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"init: expected a name, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in NAMES:
        raise ValueError(f"init: unknown initializer {name!r}; expected one of {', '.join(NAMES)}")
    return key


def initialize(
    name: str,
    n_in: int,
    n_out: int,
    rng: np.random.Generator,
    *,
    std: float = 0.01,
    limit: float = 0.05,
    value: float = 0.0,
    mode: str = "fan_in",
    gain: float = 1.0,
) -> np.ndarray:
    """Draw an (n_in, n_out) float64 weight matrix.

    Args:
        name: initializer name (aliases xavier_*, kaiming_* accepted).
        n_in, n_out: fan-in and fan-out of the layer.
        rng: NumPy generator.
        std: standard deviation of "normal".
        limit: half-width a of "uniform" U(-a, a).
        value: the value of "constant".
        mode: "fan_in" or "fan_out" for he_* (He et al. offer both).
        gain: multiplier for "orthogonal"/"lsuv".
    """
    key = canonical(name)
    shape = (n_in, n_out)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    fan = n_in if mode == "fan_in" else n_out
    if key == "zeros":
        return np.zeros(shape)
    if key == "constant":
        return np.full(shape, v.real("value", value))
    if key == "normal":
        return rng.normal(0.0, v.real("std", std, 0.0), size=shape)
    if key == "uniform":
        a = v.real("limit", limit, 0.0)
        return rng.uniform(-a, a, size=shape)
    if key == "glorot_normal":
        return rng.normal(0.0, math.sqrt(2.0 / (n_in + n_out)), size=shape)
    if key == "glorot_uniform":
        a = math.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-a, a, size=shape)
    if key == "he_normal":
        return rng.normal(0.0, math.sqrt(2.0 / fan), size=shape)
    if key == "he_uniform":
        a = math.sqrt(6.0 / fan)
        return rng.uniform(-a, a, size=shape)
    if key == "lecun_normal":
        return rng.normal(0.0, math.sqrt(1.0 / n_in), size=shape)
    # orthogonal, and lsuv's starting point
    a = rng.normal(size=(max(shape), min(shape)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # Haar-distributed (Mezzadri)
    if n_in < n_out:
        q = q.T
    return gain * q[:n_in, :n_out]


def lsuv_init(model, X, tol: float = 0.1, max_iter: int = 10) -> None:
    """LSUV (Mishkin & Matas): starting from orthogonal weights, rescale each dense layer in
    turn so that its output (after its fused activation) has variance 1 on the batch ``X``
    (within ``tol``); inference mode, so BN running statistics are untouched.

    Args:
        model: a built Sequential/MLP.
        X: a data batch (batch, n_in).
        tol: accepted |Var - 1|.
        max_iter: rescaling passes per layer.
    """
    if v.is_device_array(X):  # the layer statistics are read on the host
        X = _backend.to_host(X)
    X = v.as_float_array("X", X, dtype=model.dtype)
    engine = model._engine
    for li, layer in enumerate(model._all_layers()):
        if layer.kind != "dense":
            continue
        W = model._param_view(li, "W")
        for _ in range(max_iter):
            engine.forward(X, False)
            var = float(np.var(engine.layer_output(li)))
            if not np.isfinite(var) or var == 0.0 or abs(var - 1.0) < tol:
                break
            W /= float(np.sqrt(var))
