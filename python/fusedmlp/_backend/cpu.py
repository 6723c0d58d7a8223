"""The CPU backend: ``fusedmlp._core`` over NumPy arrays (see :mod:`fusedmlp._backend`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate as v
from .._loader import _core

name = "cpu"
mod = _core
xp = np

asarray = v.as_float_array


def in_place(name: str, a: Any, shape: tuple[int, ...] | None, dtype, finite: bool = True):
    """An array the kernels update in place: a writeable C-contiguous NumPy array of ``dtype``
    (None: float32 or float64) and ``shape`` (None: any 1-d), never converted, so the
    caller's array is the one written."""
    v.check_host(name, a)
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name}: expected a NumPy array (it is updated in place), got {type(a).__name__}"
        )
    v.check_in_place_layout(name, a, shape, dtype)
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(
            f"{name}: expected a writeable C-contiguous array (it is updated in place)"
        )
    if finite and a.size and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def empty(shape, dtype) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def stream() -> int:
    return 0


def to_host(x: Any) -> np.ndarray:
    """A NumPy array of ``x``; device arrays are copied to the host."""
    if v.is_device_array(x):
        from . import cuda

        return cuda.to_host(x)
    return np.asarray(x)


def to_device(x: Any, dtype=None) -> np.ndarray:
    """``x`` as a C-contiguous NumPy array (a GPU array is copied to the host)."""
    arr = to_host(x)
    if dtype is not None and arr.dtype != np.dtype(dtype):
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def wrap(obj: Any, dtype=None) -> np.ndarray:
    """An array the binding module handed back (already a NumPy array on the CPU)."""
    return obj if dtype is None else obj.view(dtype)
