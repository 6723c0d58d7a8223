"""Batch- and thread-invariant results (issue 14, items 1 and 5 "Thread count").

Inference runs through our own GEMM (csrc/cpu/gemm_rows.h), whose summation order per output
element depends only on that row and the weights: predict(X[rows]) equals predict(X)[rows]
bit for bit, whatever the number of rows, their positions and the thread count. OpenBLAS
(used in training) does not promise that: its sgemm rounds a row differently with the number
of rows in the call (SkylakeX kernels) and with the row's position modulo 24 in the call
(Haswell kernels, AMD Zen and AVX2 Intel; OPENBLAS_CORETYPE=Haswell selects them anywhere).
Training splits each GEMM into blocks fixed by its shape alone (csrc/cpu/blas.h), so a
training run is bit-identical at 1 and 2 threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fusedmlp as fm
import numpy as np
import pytest

from tests.reference.gemm import gemm_rows as gemm_rows_ref

ROW_COUNTS = (1, 7, 33, 64, 65, 500)
N_IN, N_OUT = 37, 3


@pytest.fixture
def threads():
    """Sets the thread count for the test and restores the previous one."""
    before = fm.get_num_threads()
    yield fm.set_num_threads
    fm.set_num_threads(before)


def _model(kind: str, dtype: str) -> fm.Sequential:
    if kind == "rbf":
        return fm.Sequential(
            [fm.Dense(40, activation="tanh"), fm.RBF(21), fm.Dense(N_OUT)],
            n_in=N_IN,
            seed=5,
            dtype=dtype,
        )
    # Widths with panel and vector tails (130, 67) and 4-row remainders in the row counts.
    return fm.MLP(
        n_in=N_IN,
        hidden=[130, 67],
        n_out=N_OUT,
        seed=5,
        dtype=dtype,
        batchnorm=kind == "bn",
        dropout=0.2 if kind == "bn" else 0.0,
    )


def _trained(kind: str, dtype: str) -> tuple[fm.Sequential, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(500, N_IN)).astype(dtype)
    y = rng.integers(0, N_OUT, size=500).astype(np.int32)
    model = _model(kind, dtype)
    if kind == "rbf":
        model.init_rbf(X)
    trainer = fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-2), metrics=())
    for i in range(5):  # moves the weights and the batch-norm running statistics
        trainer.train_step(X[i * 100 : (i + 1) * 100], y[i * 100 : (i + 1) * 100])
    return model, X


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kind", ["plain", "bn", "rbf"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_of_a_row_does_not_depend_on_its_batch(dtype, kind, n_threads, threads):
    threads(n_threads)
    model, X = _trained(kind, dtype)
    full = model.predict(X)
    rng = np.random.default_rng(3)
    for rows in ROW_COUNTS:
        idx = rng.permutation(len(X))[:rows]  # new positions as well as a new batch size
        np.testing.assert_array_equal(model.predict(X[idx]), full[idx], err_msg=f"{rows} rows")
    # Row by row, and at the other thread count.
    for i in (0, 63, 64, 499):
        np.testing.assert_array_equal(model.predict(X[i : i + 1]), full[i : i + 1])
    threads(3 - n_threads)
    np.testing.assert_array_equal(model.predict(X), full)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "m,k,n", [(1, 1, 1), (7, 33, 10), (65, 130, 67), (33, 5, 129), (130, 257, 1)]
)
def test_inference_gemm_sums_in_its_documented_order(m, k, n, dtype, bias, threads):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    A = rng.normal(size=(m, k)).astype(dtype)
    B = rng.normal(size=(k, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype) if bias else None
    want = gemm_rows_ref(A, B, b)
    for n_threads in (1, 2):
        threads(n_threads)
        Z, _ = fm.ops.dense_forward(A, B, b)  # inference: training=False
        np.testing.assert_array_equal(Z, want)


def _train_wide(dtype: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 64)).astype(dtype)
    y = rng.integers(0, 10, size=256).astype(np.int32)
    model = fm.MLP(n_in=64, hidden=[512], n_out=10, seed=3, dtype=dtype)
    trainer = fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-3), metrics=())
    for _ in range(20):
        trainer.train_step(X, y)
    return model.get_weights()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_is_bit_identical_at_1_and_2_threads(dtype, threads):
    threads(1)
    one = _train_wide(dtype)
    threads(2)
    two = _train_wide(dtype)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(os.environ.get("OPENBLAS_CORETYPE") == "Haswell", reason="already Haswell")
def test_the_same_under_openblas_haswell_kernels():
    """The tests above again with OpenBLAS's Haswell kernels, where a row's bits in a float32
    OpenBLAS GEMM move with its position modulo 24 (measured with OpenBLAS 0.3.34)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
