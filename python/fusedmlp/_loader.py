"""Loads the compiled modules.

``_core`` links against ``libscipy_openblas.so`` from the scipy-openblas32 wheel. Its rpath
points at the wheel's directory beside ours in site-packages; loading the library here by
absolute path first makes the import work wherever pip put the wheel (venvs, --user, ...).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import scipy_openblas32

_lib = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
if os.path.exists(_lib):
    ctypes.CDLL(_lib, mode=ctypes.RTLD_GLOBAL)

from . import _core  # noqa: E402

_cuda_import_error: str | None = None
if importlib.util.find_spec(f"{__package__}._cuda") is None:
    _cuda = None  # the CUDA module is optional: built only where nvcc and cuBLAS were found
    _cuda_import_error = "_cuda was not built: no nvcc/cuBLAS at build time or FUSEDMLP_CUDA=OFF"
else:  # pragma: no cover - depends on the build
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError as exc:
        _cuda = None
        _cuda_import_error = f"_cuda failed to import: {exc}"

__all__ = ["_core", "_cuda", "_cuda_import_error"]
