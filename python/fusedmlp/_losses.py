"""The loss registry: names, aliases, the code of each loss in the C++ enum ``fm::Loss`` and
its output activation. One table serves ``fusedmlp.ops`` and the Trainer.

The formulas live once, in ``csrc/common/loss.h`` (decks 003 and 004; label smoothing,
deck 002).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validate as v
from ._loader import _core

_CODES = {name: i for i, name in enumerate(_core.loss_names())}

ALIASES = {
    "mean_squared_error": "mse",
    "squared_error": "mse",
    "l2": "mse",
    "bce": "binary_cross_entropy",
    "binary_crossentropy": "binary_cross_entropy",
    "sigmoid_cross_entropy": "binary_cross_entropy",
    "log_loss": "binary_cross_entropy",
    "ce": "cross_entropy",
    "crossentropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "categorical_cross_entropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",
    "softmax_cross_entropy": "cross_entropy",
}

#: The output activation each loss is fused with (deck 003, "output activation functions").
OUTPUT_ACTIVATION = {
    "mse": "identity",
    "binary_cross_entropy": "sigmoid",
    "cross_entropy": "softmax",
}

#: Label-smoothing conventions: deck 002 (eps/(k-1) and 1-eps) or uniform (eps/k + (1-eps) t).
SMOOTHING = ("deck", "uniform")


def canonical(name: Any, what: str = "loss") -> str:
    """The canonical loss name for ``name`` (aliases, case and dashes folded).

    Args:
        name: a loss name or alias, e.g. ``"ce"`` or ``"categorical_crossentropy"``.
        what: the argument name used in error messages.

    Returns:
        One of ``"mse"``, ``"binary_cross_entropy"``, ``"cross_entropy"``.

    Example:
        >>> from fusedmlp import _losses
        >>> _losses.canonical("BCE")
        'binary_cross_entropy'
    """
    if not isinstance(name, str):
        raise TypeError(f"{what}: expected a loss name (str), got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in _CODES:
        raise ValueError(f"{what}: unknown loss {name!r}; expected one of {', '.join(_CODES)}")
    return key


def code(name: Any, what: str = "loss") -> int:
    """The integer code of a loss in the C++ enum ``fm::Loss``."""
    return _CODES[canonical(name, what)]


def names() -> list[str]:
    """The canonical loss names."""
    return list(_CODES)


def _on_device_of(name: str, x: Any, xp) -> Any:
    """``x`` as an array of the module ``xp`` (numpy: host; cupy: device), refusing the other
    device's arrays (mixing devices is an error)."""
    if xp is np:
        v.check_host(name, x)
        if isinstance(x, (str, bytes, bytearray, memoryview)):
            # a raw buffer has no dtype or shape of its own to check (as v.as_float_array)
            raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
        return x if isinstance(x, np.ndarray) else np.asarray(x)
    if not v.is_device_array(x):
        raise TypeError(
            f"{name}: expected a GPU array (CuPy) like the logits, got "
            f"{type(x).__name__}; mixing host and device arrays is an error"
        )
    return x if isinstance(x, xp.ndarray) else xp.asarray(x)


def check_target(key: str, target: Any, rows: int, cols: int, dtype: np.dtype, xp=np):
    """Validate and convert the targets of loss ``key`` for logits of shape (rows, cols).

    Dense targets are cast to ``dtype`` (the logits' dtype): any real array is accepted, so
    integer one-hot arrays and boolean multi-label arrays work. For a single output, (rows,)
    is accepted for (rows, 1). Cross-entropy also takes 1-d class labels (integers, or floats
    holding integers), returned as int32. ``xp`` is the array module of the logits' device
    (numpy, or cupy for GPU logits); the targets must live on the same device.

    Raises:
        ValueError: wrong shape, NaN/Inf, probabilities outside [0, 1], cross-entropy rows not
            summing to 1, labels out of range or not integers.
        TypeError: non-numeric targets.
    """
    arr = _on_device_of("target", target, xp)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"target: expected a numeric array, got dtype {arr.dtype}")
    if key == "cross_entropy" and arr.ndim == 1:
        if arr.shape != (rows,):
            raise ValueError(f"target: expected class labels of shape ({rows},), got {arr.shape}")
        if arr.dtype.kind == "f":
            if not xp.isfinite(arr).all():
                raise ValueError("target: contains NaN or Inf")
            if not xp.array_equal(arr, xp.round(arr)):
                raise ValueError(
                    "target: 1-d cross_entropy targets are class labels; got non-integer values"
                )
        bad = xp.flatnonzero((arr < 0) | (arr >= cols))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"target: label {arr[i].item()} of sample {i} is out of range [0, {cols})"
            )
        return xp.ascontiguousarray(arr, dtype=np.int32)
    if arr.ndim == 1 and cols == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape != (rows, cols):
        vector = cols == 1 or key == "cross_entropy"
        want = f"({rows}, {cols})" + (f" or ({rows},)" if vector else "")
        raise ValueError(
            f"target: expected shape {want} for logits of shape ({rows}, {cols}), got {arr.shape}"
        )
    arr = xp.ascontiguousarray(arr, dtype=dtype)
    if not xp.isfinite(arr).all():
        raise ValueError("target: contains NaN or Inf")
    if key in ("binary_cross_entropy", "cross_entropy") and ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"target: {key} expects 0/1 labels or probabilities in [0, 1]")
    if key == "cross_entropy":
        s = arr.sum(axis=1, dtype=np.float64)
        bad = xp.flatnonzero(xp.abs(s - 1.0) > 1e-3)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"target: cross_entropy expects one-hot or probability rows summing "
                f"to 1; row {i} sums to {float(s[i]):.6g}"
            )
    return arr


def check_sample_weight(sample_weight: Any, rows: int, dtype: np.dtype, xp=np):
    """Validate per-sample weights (rows,): finite, >= 0, cast to ``dtype``; None passes.
    ``xp`` is the array module of the logits' device, as in :func:`check_target`."""
    if sample_weight is None:
        return None
    w = _on_device_of("sample_weight", sample_weight, xp)
    if w.dtype.kind not in "if":
        # bool and unsigned weights are refused: a mask or a wrapped-around uint8 (-1 -> 255)
        # is not a weight anyone meant.
        raise TypeError(f"sample_weight: expected a float or integer array, got dtype {w.dtype}")
    if w.shape != (rows,):
        raise ValueError(f"sample_weight: expected shape ({rows},), got {w.shape}")
    w = xp.ascontiguousarray(w, dtype=dtype)
    if not xp.isfinite(w).all():
        raise ValueError("sample_weight: contains NaN or Inf")
    if (w < 0).any():
        raise ValueError("sample_weight: expected values >= 0")
    return w
