"""fusedmlp: dense neural networks trained by fused C++ and CUDA kernels.

Example:
    >>> import fusedmlp as fm
    >>> fm.cuda_available() in (True, False)
    True
"""

from __future__ import annotations

from . import (
    callbacks,
    datasets,
    diagnostics,
    distributed,
    init,
    metrics,
    ops,
    optim,
    rbf,
    regularizers,
    schedules,
)
from ._loader import _core, _cuda, _cuda_import_error
from .layers import RBF, Activation, BatchNorm, Dense, Dropout, GaussianNoise
from .model import MLP, Sequential
from .trainer import History, Trainer

# fm.callbacks lists every callback. Two are defined above it in the import layers, beside what
# they build on: DiagnosticsCallback (fusedmlp.diagnostics: the Trainer's training curves) and
# RBFScheme (fusedmlp.rbf: the RBF solvers). The package, at the top of the layers, attaches
# them, so no module imports upward (tests/test_imports.py).
callbacks.DiagnosticsCallback = diagnostics.DiagnosticsCallback
callbacks.RBFScheme = rbf.RBFScheme
# Trainer(distributed=True) is a DistributedTrainer (fusedmlp.distributed imports no optional
# package itself: mpi4py is imported when a rank starts).
Trainer._distributed_class = distributed.DistributedTrainer

__version__ = "0.1.0"


def cuda_available() -> bool:
    """Whether the CUDA backend can run: ``_cuda`` was built and a device is present.

    Returns:
        True when ``device="cuda"`` can be used.

    Example:
        >>> import fusedmlp as fm
        >>> isinstance(fm.cuda_available(), bool)
        True
    """
    if _cuda is None:
        return False
    try:
        return bool(_cuda.device_count() > 0)
    except Exception:  # no driver, or the driver refuses: the GPU path cannot run
        return False


def cuda_unavailable_reason() -> str | None:
    """Why ``cuda_available()`` is False, in words (None when it is True)."""
    if _cuda is None:
        return f"fusedmlp was built without its CUDA module ({_cuda_import_error})"
    try:
        n = _cuda.device_count()
    except Exception as exc:
        return f"the CUDA driver is not usable: {exc}"
    return None if n > 0 else "no CUDA device is present"


def set_num_threads(n_threads: int) -> None:
    """Set the CPU threads of the kernels: one OpenMP pool runs the elementwise loops and the
    blocks of each large GEMM (OpenBLAS itself stays single-threaded, so two thread pools never
    compete for the cores).

    Args:
        n_threads: number of threads, >= 1.

    Example:
        >>> import fusedmlp as fm
        >>> fm.set_num_threads(1); fm.get_num_threads()
        1
    """
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads: expected an integer >= 1, got {n_threads!r}")
    _core.set_num_threads(n_threads)


def get_num_threads() -> int:
    """The number of CPU threads the kernels use."""
    return int(_core.get_num_threads())


def set_allow_tf32(on: bool) -> None:
    """Allow TF32 tensor-core math in the CUDA backend's float32 GEMMs (~8x the float32 rate,
    ~1e-3 relative error per product). Off by default: float32 GEMMs are then exact to float32
    rounding, as on the CPU. For half-width operands see ``precision=`` of the models.

    Raises:
        RuntimeError: fusedmlp was built without its CUDA module.
    """
    from . import ops

    ops.set_allow_tf32(on)


# Modules built on scikit-learn are imported on first use (PEP 562), so `import fusedmlp`
# imports none of the optional packages (tests/test_imports.py checks it).
_LAZY_MODULES = ("sklearn", "preprocessing")


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MLP",
    "Activation",
    "BatchNorm",
    "Dense",
    "Dropout",
    "GaussianNoise",
    "History",
    "RBF",
    "Sequential",
    "Trainer",
    "callbacks",
    "datasets",
    "diagnostics",
    "init",
    "metrics",
    "optim",
    "preprocessing",
    "regularizers",
    "schedules",
    "__version__",
    "cuda_available",
    "cuda_unavailable_reason",
    "get_num_threads",
    "ops",
    "set_allow_tf32",
    "set_num_threads",
]
