"""float64 NumPy references for every activation, written from the deck formulas
(decks 000, 003, 004; the misprints corrected in csrc/common/activation.h are corrected
here the same way, from the original papers) independently of the C++ code.

Each entry: f(x, j, P, **hyper) and df(x, j, P, **hyper), where j is the unit (column)
index broadcast against x and P the (n_params, units) learnable block (or None).
Learnable parameter gradients are in ``dparam``: returns a list of d f / d theta_k arrays.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, overflow-free


def _softplus(x):
    return np.logaddexp(0.0, x)


def _where(c, a, b):
    return np.where(c, a, b)


def _sinc(x):
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, np.sin(safe) / safe)


def _dsinc(x):
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 0.0, np.cos(safe) / safe - np.sin(safe) / safe**2)


def _sob(x, a, b, c, d):
    return (np.exp(a * x) - np.exp(-b * x)) / (np.exp(c * x) + np.exp(-d * x))


def _dsob(x, a, b, c, d):
    num = np.exp(a * x) - np.exp(-b * x)
    den = np.exp(c * x) + np.exp(-d * x)
    dnum = a * np.exp(a * x) + b * np.exp(-b * x)
    dden = c * np.exp(c * x) - d * np.exp(-d * x)
    return (dnum * den - num * dden) / den**2


def _srelu(x, P, j):
    tl, al, tr, ar = (P[k][j] for k in range(4))
    return np.where(x <= tl, tl + al * (x - tl), np.where(x >= tr, tr + ar * (x - tr), x))


def _dsrelu(x, P, j):
    tl, al, tr, ar = (P[k][j] for k in range(4))
    return np.where(x <= tl, al, np.where(x >= tr, ar, 1.0))


def _apl(x, P, j):
    s = P.shape[0] // 2
    y = np.maximum(0.0, x)
    for k in range(s):
        y = y + P[k][j] * np.maximum(0.0, -x + P[s + k][j])
    return y


def _dapl(x, P, j):
    s = P.shape[0] // 2
    d = (x > 0).astype(float)
    for k in range(s):
        d = d - P[k][j] * (-x + P[s + k][j] > 0)
    return d


def _softexp(x, a):
    with np.errstate(all="ignore"):
        pos = (np.exp(a * x) - 1.0) / np.where(a == 0, 1.0, a) + a
        neg = -np.log(1.0 - a * (x + a)) / np.where(a == 0, 1.0, a)
    return np.where(a > 0, pos, np.where(a < 0, neg, x))


def _dsoftexp(x, a):
    with np.errstate(all="ignore"):
        return np.where(a > 0, np.exp(a * x), np.where(a < 0, 1.0 / (1.0 - a * (a + x)), 1.0))


# name -> (f, df); signature (x, j, P, hp) with hp the hyper-parameter dict.
REF = {
    "identity": (lambda x, j, P, h: x, lambda x, j, P, h: np.ones_like(x)),
    "binary_step": (lambda x, j, P, h: (x >= 0).astype(float), lambda x, j, P, h: np.zeros_like(x)),
    "sigmoid": (
        lambda x, j, P, h: 1 / (1 + np.exp(-x)),
        lambda x, j, P, h: _sig(x) * (1 - _sig(x)),
    ),
    "tanh": (lambda x, j, P, h: np.tanh(x), lambda x, j, P, h: 1 - np.tanh(x) ** 2),
    "arctan": (lambda x, j, P, h: np.arctan(x), lambda x, j, P, h: 1 / (x**2 + 1)),
    "arsinh": (
        lambda x, j, P, h: np.log(x + np.sqrt(x**2 + 1)),
        lambda x, j, P, h: 1 / np.sqrt(x**2 + 1),
    ),
    "softsign": (lambda x, j, P, h: x / (1 + abs(x)), lambda x, j, P, h: 1 / (1 + abs(x)) ** 2),
    "isru": (
        lambda x, j, P, h: x / np.sqrt(1 + h["alpha"] * x**2),
        lambda x, j, P, h: (1 / np.sqrt(1 + h["alpha"] * x**2)) ** 3,
    ),
    "isrlu": (
        lambda x, j, P, h: _where(x < 0, x / np.sqrt(1 + h["alpha"] * x**2), x),
        lambda x, j, P, h: _where(x < 0, (1 / np.sqrt(1 + h["alpha"] * x**2)) ** 3, 1.0),
    ),
    "sqnl": (
        lambda x, j, P, h: np.select(
            [x > 2, x >= 0, x >= -2], [1.0, x - x**2 / 4, x + x**2 / 4], -1.0
        ),
        lambda x, j, P, h: np.select([x > 2, x >= 0, x >= -2], [0.0, 1 - x / 2, 1 + x / 2], 0.0),
    ),
    "relu": (lambda x, j, P, h: np.maximum(x, 0), lambda x, j, P, h: (x > 0).astype(float)),
    "brelu": (
        lambda x, j, P, h: _where(j % 2 == 0, np.maximum(x, 0), -np.maximum(-x, 0)),
        lambda x, j, P, h: _where(j % 2 == 0, (x > 0).astype(float), (x < 0).astype(float)),
    ),
    "leaky_relu": (
        lambda x, j, P, h: _where(x > 0, x, h["alpha"] * x),
        lambda x, j, P, h: _where(x > 0, 1.0, h["alpha"]),
    ),
    "prelu": (
        lambda x, j, P, h: _where(x > 0, x, P[0][j] * x),
        lambda x, j, P, h: _where(x > 0, 1.0, P[0][j]),
    ),
    "rrelu": (  # inference form: slope (lower + upper) / 2
        lambda x, j, P, h: _where(x > 0, x, 0.5 * (h["lower"] + h["upper"]) * x),
        lambda x, j, P, h: _where(x > 0, 1.0, 0.5 * (h["lower"] + h["upper"])),
    ),
    "elu": (
        lambda x, j, P, h: _where(x > 0, x, h["alpha"] * (np.exp(np.minimum(x, 0)) - 1)),
        lambda x, j, P, h: _where(x > 0, 1.0, h["alpha"] * np.exp(np.minimum(x, 0))),
    ),
    "selu": (
        lambda x, j, P, h: (
            SELU_LAMBDA * _where(x > 0, x, SELU_ALPHA * (np.exp(np.minimum(x, 0)) - 1))
        ),
        lambda x, j, P, h: SELU_LAMBDA * _where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0))),
    ),
    "srelu": (lambda x, j, P, h: _srelu(x, P, j), lambda x, j, P, h: _dsrelu(x, P, j)),
    "apl": (lambda x, j, P, h: _apl(x, P, j), lambda x, j, P, h: _dapl(x, P, j)),
    "softplus": (lambda x, j, P, h: _softplus(x), lambda x, j, P, h: _sig(x)),
    "bent_identity": (
        lambda x, j, P, h: (np.sqrt(x**2 + 1) - 1) / 2 + x,
        lambda x, j, P, h: x / (2 * np.sqrt(x**2 + 1)) + 1,
    ),
    "silu": (
        lambda x, j, P, h: x * _sig(x),
        lambda x, j, P, h: x * _sig(x) + _sig(x) * (1 - x * _sig(x)),
    ),
    "soft_exponential": (
        lambda x, j, P, h: _softexp(x, P[0][j]),
        lambda x, j, P, h: _dsoftexp(x, P[0][j]),
    ),
    "soft_clipping": (
        lambda x, j, P, h: (
            (_softplus(h["alpha"] * x) - _softplus(h["alpha"] * (x - 1))) / h["alpha"]
        ),
        # Wikipedia/deck 000 form with the deck's misprint sinh(a x / 2) -> sinh(a / 2).
        lambda x, j, P, h: (
            0.5
            * np.sinh(h["alpha"] / 2)
            / np.cosh(h["alpha"] * x / 2)
            / np.cosh(h["alpha"] * (x - 1) / 2)
        ),
    ),
    "sinusoid": (lambda x, j, P, h: np.sin(x), lambda x, j, P, h: np.cos(x)),
    "sinc": (lambda x, j, P, h: _sinc(x), lambda x, j, P, h: _dsinc(x)),
    "gaussian": (lambda x, j, P, h: np.exp(-(x**2)), lambda x, j, P, h: -2 * x * np.exp(-(x**2))),
    "gelu": (
        lambda x, j, P, h: 0.5 * x * (1 + erf(x / math.sqrt(2))),
        lambda x, j, P, h: (
            0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "gelu_tanh": (
        lambda x, j, P, h: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        None,  # derivative by central differences of the reference value
    ),
    "soboleva_tanh": (
        lambda x, j, P, h: _sob(x, h["a"], h["b"], h["c"], h["d"]),
        lambda x, j, P, h: _dsob(x, h["a"], h["b"], h["c"], h["d"]),
    ),
    "lecun_tanh": (
        lambda x, j, P, h: 1.7159 * np.tanh(2 * x / 3),
        lambda x, j, P, h: 1.7159 * 2 / 3 * (1 - np.tanh(2 * x / 3) ** 2),
    ),
}


# Default hyper-parameters (decks 000/003 and the papers they cite).
DEFAULTS = {
    "leaky_relu": {"alpha": 0.01},
    "isru": {"alpha": 1.0},
    "isrlu": {"alpha": 1.0},
    "elu": {"alpha": 1.0},
    "soft_clipping": {"alpha": 1.0},
    "rrelu": {"lower": 1 / 8, "upper": 1 / 3},
    "soboleva_tanh": {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0},
}


def forward(name, x, P=None, **hp):
    j = np.arange(x.shape[1])[None, :]
    hp = {**DEFAULTS.get(name, {}), **hp}
    return REF[name][0](x, j, P, hp)


def derivative(name, x, P=None, **hp):
    j = np.arange(x.shape[1])[None, :]
    hp = {**DEFAULTS.get(name, {}), **hp}
    df = REF[name][1]
    if df is None:
        return central_difference(lambda t: forward(name, t, P, **hp), x)
    return df(x, j, P, hp)


def central_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def param_grad(name, x, g, P, h=1e-6, **hp):
    """d(sum g * f)/dP by central differences on each parameter (float64)."""
    out = np.zeros_like(P)
    for k in range(P.shape[0]):
        for j in range(P.shape[1]):
            Pp = P.copy()
            Pm = P.copy()
            Pp[k, j] += h
            Pm[k, j] -= h
            out[k, j] = np.sum(g * (forward(name, x, Pp, **hp) - forward(name, x, Pm, **hp))) / (
                2 * h
            )
    return out


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(z, g):
    """Explicit Jacobian y_i (delta_ij - y_j) applied to g, row by row (deck 003)."""
    y = softmax(z)
    out = np.empty_like(z)
    for r in range(z.shape[0]):
        J = np.diag(y[r]) - np.outer(y[r], y[r])
        out[r] = J.T @ g[r]
    return out


def maxout(z, k):
    return z.reshape(z.shape[0], -1, k).max(axis=2)


def dense_forward(X, W, b, name="identity", P=None, **hp):
    Z = X @ W + (0 if b is None else b)
    return Z, forward(name, Z, P, **hp)
