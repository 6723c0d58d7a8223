"""The CUDA backend: ``fusedmlp._cuda`` over CuPy arrays (see :mod:`fusedmlp._backend`).

Inputs may be CuPy arrays, any object exposing ``__cuda_array_interface__`` or a DLPack GPU
tensor (PyTorch, JAX): all are viewed as CuPy arrays without a copy (non-contiguous ones are
made contiguous). Outputs are allocated with CuPy on the current device, and every kernel is
queued on CuPy's current stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate as v
from .._loader import _cuda, _cuda_import_error

name = "cuda"
mod = _cuda


def _cupy():
    """The cupy module, or a clear error when CuPy or the _cuda extension is missing."""
    if _cuda is None:
        raise RuntimeError(f"fusedmlp's CUDA backend is not available: {_cuda_import_error}")
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "GPU arrays need CuPy: pip install cupy-cuda13x (or cupy-cuda12x)"
        ) from exc
    return cupy


def __getattr__(attr: str):
    # ``cuda.xp``: CuPy, imported on first use (``import fusedmlp`` imports no optional package)
    if attr == "xp":
        return _cupy()
    raise AttributeError(attr)


def stream() -> int:
    """The handle of CuPy's current stream (every kernel of a call is queued on it)."""
    return int(_cupy().cuda.get_current_stream().ptr)


def to_cupy(x: Any):
    """A CuPy view of a GPU array, without a copy: CuPy arrays as they are, other
    ``__cuda_array_interface__`` exporters through ``cupy.asarray``, DLPack GPU tensors
    (PyTorch, JAX) through ``cupy.from_dlpack``."""
    cp = _cupy()
    if isinstance(x, cp.ndarray):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cp.asarray(x)
    return cp.from_dlpack(x)


def _check_device(name: str, arr) -> None:
    current = _cupy().cuda.Device().id
    if arr.device.id != current:
        raise ValueError(
            f"{name}: the array is on device {arr.device.id} but the current device is {current}; "
            "mixing devices is an error"
        )


def asarray(
    name: str,
    x: Any,
    ndim: int | tuple[int, ...] | None = 2,
    dtype=None,
    finite: bool = True,
    allow_empty: bool = False,
):
    """``x`` as a C-contiguous float32/float64 CuPy array on the current device, checked: the
    device twin of ``fusedmlp._validate.as_float_array`` (same arguments and messages).

    Raises:
        TypeError: a host (NumPy) array, a non-float dtype, or the wrong dtype.
        ValueError: wrong dimensions, empty, non-finite, or on another device.
    """
    cp = _cupy()
    if not v.is_device_array(x):
        raise TypeError(
            f"{name}: expected a GPU array (CuPy), got {type(x).__name__}; mixing host and device "
            "arrays is an error (move it with cupy.asarray, or pass NumPy arrays for the CPU)"
        )
    arr = to_cupy(x)
    v.check_float_layout(name, arr, ndim, dtype, allow_empty)
    _check_device(name, arr)
    if finite and arr.size and not bool(cp.isfinite(arr).all()):
        raise ValueError(f"{name}: contains NaN or Inf")
    return cp.ascontiguousarray(arr)


def in_place(name: str, a: Any, shape: tuple[int, ...] | None, dtype, finite: bool = True):
    """An array the kernels update in place: a C-contiguous CuPy array of ``dtype`` (None:
    float32 or float64) and ``shape`` (None: any 1-d) on the current device; no conversion,
    so the caller's array is the one written."""
    cp = _cupy()
    if not isinstance(a, cp.ndarray):
        kind = "a NumPy array" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(
            f"{name}: expected a CuPy array (it is updated in place on the GPU), got {kind}; "
            "mixing host and device arrays is an error"
        )
    v.check_in_place_layout(name, a, shape, dtype)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place)")
    _check_device(name, a)
    if finite and a.size and not bool(cp.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def empty(shape, dtype):
    return _cupy().empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return _cupy().zeros(shape, dtype=dtype)


def to_device(x: Any, dtype=None):
    """``x`` on the current GPU as a C-contiguous CuPy array: device arrays without a copy
    (unless ``dtype`` or the layout asks for one), host arrays copied once."""
    cp = _cupy()
    arr = to_cupy(x) if v.is_device_array(x) else cp.asarray(np.asarray(x))
    if dtype is not None and arr.dtype != np.dtype(dtype):
        arr = arr.astype(dtype)
    return cp.ascontiguousarray(arr)


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of a device array (NumPy arrays pass through)."""
    if v.is_device_array(x):
        return _cupy().asnumpy(to_cupy(x))
    return np.asarray(x)


def wrap(obj: Any, dtype=None):
    """A CuPy view (no copy) of an array object the binding module handed back: anything
    exposing ``__cuda_array_interface__``; the view keeps ``obj`` (and what owns the memory)
    alive."""
    cai = obj.__cuda_array_interface__
    if 0 in cai["shape"]:  # an empty arena (no buffers, a stateless optimizer) has no memory
        arr = _cupy().empty(cai["shape"], dtype=np.dtype(cai["typestr"]))
    else:
        arr = to_cupy(obj)
    return arr if dtype is None else arr.view(dtype)
