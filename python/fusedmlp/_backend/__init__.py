"""The two array backends behind one interface: which module runs the kernels, which array
namespace holds the data, and how values cross between host and device.

``fusedmlp.ops``, the model and the engine are written once over a :class:`Backend`; the
backend of a call follows its arrays (:func:`of`) or the model's device (:func:`get`):

========== ================================ ===========================================
           ``cpu``                          ``cuda``
========== ================================ ===========================================
``mod``    ``fusedmlp._core``               ``fusedmlp._cuda``
``xp``     NumPy                            CuPy (imported on first use)
arrays     C-contiguous ``numpy.ndarray``   C-contiguous ``cupy.ndarray`` on the current
                                            device (views of any ``__cuda_array_interface__``
                                            or DLPack GPU tensor, without a copy)
stream     0 (ignored by ``_core``)         CuPy's current stream
========== ================================ ===========================================

Both binding modules take the same arguments in the same order, with the outputs
preallocated by the caller (``be.empty``) and ``stream=be.stream()`` last; so an op's body
is ``be.mod.<kernel>(..., stream=be.stream())`` on either device.

Members of a Backend:
    name, mod, xp                      see the table
    asarray(name, x, ndim, dtype, finite, allow_empty)
                                       x checked and converted (messages name ``name``);
                                       an array of the other device is a TypeError
    in_place(name, a, shape, dtype, finite)
                                       an array the kernels update in place: checked, never
                                       copied (shape None: any 1-d; dtype None: a float dtype)
    empty(shape, dtype), zeros(shape, dtype)
    stream()                           the stream handle the kernels are queued on
    to_device(x, dtype=None)           x as this backend's C-contiguous array (one copy at
                                       most: host <-> device, or a dtype change)
    to_host(x)                         a NumPy array (device arrays copied)
    wrap(obj, dtype=None)              an array object handed back by the binding module
                                       (NumPy; on the GPU anything exposing
                                       ``__cuda_array_interface__``) as an ``xp`` array, no copy
"""

from __future__ import annotations

import importlib
from typing import Any

from .._validate import is_device_array
from . import cpu

__all__ = ["cpu", "cuda", "get", "of", "of_any", "to_host"]


def _cuda():
    """The CUDA backend (the submodule :mod:`fusedmlp._backend.cuda`, imported on first use;
    its functions raise a clear RuntimeError when the _cuda module or CuPy is missing).

    Imported by name, not with ``from . import cuda``: importing the submodule binds the
    package attribute ``cuda`` to it, so a function of that name would be shadowed."""
    return importlib.import_module(".cuda", __name__)


def get(device: str):
    """The backend of a model's ``device`` ("cpu" or "cuda")."""
    return _cuda() if device == "cuda" else cpu


def of(x: Any):
    """The backend an array lives on: CUDA for GPU arrays (CuPy, ``__cuda_array_interface__``,
    DLPack GPU tensors), else the CPU."""
    return _cuda() if is_device_array(x) else cpu


def of_any(*xs: Any):
    """The backend of the first GPU array among ``xs`` (None entries skipped), else the CPU:
    a call's device follows its main input; mixed arrays are then rejected by ``asarray``."""
    for x in xs:
        if x is not None and is_device_array(x):
            return _cuda()
    return cpu


def to_host(x: Any):
    """A NumPy array of ``x`` from either device (device arrays copied)."""
    return of(x).to_host(x)
