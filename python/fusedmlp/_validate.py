"""Input checks shared by every public entry point.

Each check raises ``TypeError`` or ``ValueError`` with a message naming the argument and
what was expected, before any C++ runs.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# DLPack device types of GPU memory (dlpack.h: kDLCUDA, kDLCUDAHost excluded, kDLCUDAManaged).
_DLPACK_CUDA = (2, 13)


def is_dlpack_gpu(x: Any) -> bool:
    """True for DLPack-exporting GPU tensors (PyTorch, JAX, ...) without
    ``__cuda_array_interface__``."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack_device__"):
        return False
    try:
        return int(x.__dlpack_device__()[0]) in _DLPACK_CUDA
    except Exception:  # a broken exporter is not a GPU array we can use
        return False


def is_device_array(x: Any) -> bool:
    """True for arrays living on a GPU: CuPy, anything with ``__cuda_array_interface__``, or
    a DLPack tensor on a CUDA device (PyTorch, JAX)."""
    return hasattr(x, "__cuda_array_interface__") or is_dlpack_gpu(x)


def check_host(name: str, x: Any) -> None:
    if is_device_array(x):
        raise TypeError(
            f"{name}: got a GPU array, but this entry point runs on the CPU; pass a NumPy "
            "array (cupy.asnumpy) or use device='cuda'"
        )


def as_float_array(
    name: str,
    x: Any,
    ndim: int | tuple[int, ...] | None = 2,
    dtype: np.dtype | None = None,
    finite: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """``x`` as a C-contiguous float32/float64 NumPy array, checked.

    Args:
        name: argument name used in error messages.
        x: array-like input. Lists are converted (to float64); NumPy arrays must already
            have a floating dtype of float32 or float64.
        ndim: required number of dimensions (or a tuple of allowed ones, or None).
        dtype: when given, the required dtype.
        finite: reject NaN and Inf.
        allow_empty: accept arrays with a zero-length dimension.
    """
    check_host(name, x)
    if isinstance(x, (str, bytes, bytearray, memoryview)):
        # np.isscalar is True for these and NumPy would parse "1.5" or reinterpret raw bytes:
        # a raw buffer has no dtype or shape of its own to check.
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    if isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, (list, tuple)) or (isinstance(x, numbers.Real) and not isinstance(x, bool)):
        try:
            arr = np.asarray(x, dtype=np.float64 if dtype is None else dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__}") from exc
    elif hasattr(x, "__array__") or hasattr(x, "__dlpack__"):
        # pandas/polars DataFrames, PyTorch CPU tensors, ...: NumPy's protocols hand over the
        # memory without a copy where the layout allows (a float32 C-contiguous tensor stays a
        # view); a DLPack-only exporter goes through np.from_dlpack.
        try:
            arr = np.asarray(x) if hasattr(x, "__array__") else np.from_dlpack(x)
        except (TypeError, ValueError, RuntimeError, BufferError) as exc:
            raise TypeError(
                f"{name}: cannot read {type(x).__name__} as a NumPy array ({exc})"
            ) from exc
    else:
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    check_float_layout(name, arr, ndim, dtype, allow_empty)
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return np.ascontiguousarray(arr)


def check_float_layout(
    name: str, arr: Any, ndim: Any = 2, dtype: Any = None, allow_empty: bool = False
) -> None:
    """The dtype, dimension and emptiness checks of a float array on either device (NumPy or
    CuPy: anything with dtype, ndim, shape and size); the arguments of :func:`as_float_array`."""
    if arr.dtype not in FLOAT_DTYPES:
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


def check_in_place_layout(name: str, a: Any, shape: tuple[int, ...] | None, dtype: Any) -> None:
    """An array the kernels update in place, on either device: ``dtype`` (None: float32 or
    float64), ``shape`` (None: any 1-d)."""
    if dtype is None and a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if shape is None and a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {a.shape}")
    if shape is not None:
        check_shape(name, a, shape)


def check_same_dtype(**arrays: np.ndarray) -> None:
    items = [(k, v) for k, v in arrays.items() if v is not None]
    if not items:
        return
    first_name, first = items[0]
    for k, v in items[1:]:
        if v.dtype != first.dtype:
            raise TypeError(
                f"{k}: expected dtype {first.dtype} (the dtype of {first_name}), got {v.dtype}"
            )


def check_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")


def real(
    name: str,
    v: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within [low, high] (ends open where asked)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    try:
        v = float(v)
    except OverflowError:  # an int beyond the float range
        raise ValueError(
            f"{name}: expected a finite number, got an integer of {v.bit_length()} bits"
        ) from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name}: expected {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name}: expected {'<' if high_open else '<='} {high}, got {v}")
    return v


# Widest layer or input: the BLAS interfaces (OpenBLAS LP64, cuBLAS) take int dimensions. Wide
# layers that fit this bound but not the memory raise MemoryError naming the layer when built.
MAX_WIDTH = 2**31 - 1


def width(name: str, v: Any) -> int:
    """A layer or input width: an integer in [1, MAX_WIDTH]."""
    return integer(name, v, low=1, high=MAX_WIDTH)


def flag(name: str, v: Any) -> bool:
    """A boolean: True or False (NumPy's bool_ too); 0/1, None and strings are refused, so a
    misplaced argument is caught instead of read by its truth value."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(v).__name__}")
    return bool(v)


def philox_key(seed: Any, step: Any, layer: Any) -> tuple[int, int, int]:
    """The Philox key of the random kernels: seed, step < 2**64; layer < 2**32."""
    return (
        integer("seed", seed, low=0, high=2**64 - 1),
        integer("step", step, low=0, high=2**64 - 1),
        integer("layer", layer, low=0, high=2**32 - 1),
    )


def integer(name: str, v: Any, low: int | None = None, high: int | None = None) -> int:
    """An integer within [low, high]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")
    v = int(v)
    if low is not None and v < low:
        raise ValueError(f"{name}: expected >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name}: expected <= {high}, got {v}")
    return v
