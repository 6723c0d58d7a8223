"""Loads the compiled modules.

``_core`` links against ``libscipy_openblas.so`` from the scipy-openblas32 wheel. Its rpath
points at the wheel's directory beside ours in site-packages; loading the library here by
absolute path first makes the import work wherever pip put the wheel (venvs, --user, ...).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys

import scipy_openblas32

_lib = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
if os.path.exists(_lib):
    # Our OpenBLAS runs single-threaded (GEMMs are split over our OpenMP threads, cpu/blas.h):
    # tell its load-time constructor, so it does not start a pthreads pool at all. The variable
    # is restored at once, so other BLAS libraries loaded later keep the user's setting.
    _saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        ctypes.CDLL(_lib, mode=ctypes.RTLD_GLOBAL)
    finally:
        if _saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = _saved


def _from_build_dir(name: str):
    """Development aid: ``FUSEDMLP_BUILD_DIR=build/dev`` loads the extension modules from a
    CMake build directory instead of the package (so several builds can share one source
    tree). Returns None when the variable is unset or holds no such module."""
    build = os.environ.get("FUSEDMLP_BUILD_DIR")
    if not build:
        return None
    found = sorted(glob.glob(os.path.join(build, f"{name}.*.so")))
    if not found:
        return None
    full = f"{__package__}.{name}"
    spec = importlib.util.spec_from_file_location(full, found[0])
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module


_core = _from_build_dir("_core")
if _core is None:
    from . import _core  # noqa: E402

_cuda_import_error: str | None = None
_cuda = _from_build_dir("_cuda")
if _cuda is not None:
    pass
elif importlib.util.find_spec(f"{__package__}._cuda") is None:
    _cuda = None  # the CUDA module is optional: built only where nvcc and cuBLAS were found
    _cuda_import_error = "_cuda was not built: no nvcc/cuBLAS at build time or FUSEDMLP_CUDA=OFF"
else:  # pragma: no cover - depends on the build
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError as exc:
        _cuda = None
        _cuda_import_error = f"_cuda failed to import: {exc}"

__all__ = ["_core", "_cuda", "_cuda_import_error"]
