"""Shared test helpers: the device parametrization and the tolerance table.

One test body runs on every backend: ``device`` is "cpu" or "cuda"; the CUDA case carries
``@pytest.mark.cuda`` and is skipped (never failed) when fusedmlp cannot use a GPU.
"""

from __future__ import annotations

import zlib

import fusedmlp as fm
import numpy as np
import pytest

# max |got - want| / max(1, max |want|) by dtype: float64 computes the same formula as the
# reference up to rounding; float32 loses ~1e-7 per operation and up to ~sqrt(K) of that in
# a K-term dot product.
TOL = {np.float64: 1e-11, np.float32: 2e-5}

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.cuda),
]
# the checks that only exist on a GPU (mixed devices, a non-NumPy output array)
CUDA = [p for p in DEVICES if p.id == "cuda"]


def pytest_collection_modifyitems(config, items):
    if fm.cuda_available():
        return
    skip = pytest.mark.skip(reason=f"CUDA unavailable: {fm.cuda_unavailable_reason()}")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def to_device(a, device):
    """Move a NumPy array to ``device`` (CuPy on "cuda")."""
    if device == "cpu":
        return a
    import cupy

    return cupy.asarray(a)


def array_module(device):
    """NumPy on "cpu", CuPy on "cuda": allocations on the test's device."""
    if device == "cpu":
        return np
    import cupy

    return cupy


def kernels(device):
    """The raw kernel module of ``device``, fusedmlp._core or fusedmlp._cuda: one binding
    body, the same signatures (outputs passed in)."""
    if device == "cpu":
        return fm._core
    from fusedmlp import _cuda

    return _cuda


def to_host(a):
    if hasattr(a, "__cuda_array_interface__"):
        import cupy

        return cupy.asnumpy(a)
    return a


def assert_close(got, want, dtype, tol=None, what=""):
    got = np.asarray(to_host(got), dtype=np.float64)
    want = np.asarray(to_host(want), dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    t = TOL[np.dtype(dtype).type] if tol is None else tol
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    err = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
    assert err <= t, f"{what}: normalized error {err:.3e} > {t:.1e}"


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test's name (reproducible failures)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
