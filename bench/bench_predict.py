"""Inference throughput (rows/s of ``model.predict``) and training step time on the CPU.

Written for issue 14: inference runs through the batch-invariant GEMM (csrc/cpu/gemm_rows.h)
and training GEMMs are split into blocks fixed by their shape (csrc/cpu/blas.h). Run it on a
build before and after such a change (FUSEDMLP_BUILD_DIR) to see what they cost. Best of
``--repeat`` timings; the machine's load is printed beside them (numbers from a loaded
machine are indicative only).

Usage::

    FUSEDMLP_BUILD_DIR=build/dev PYTHONPATH=python:. python -m bench.bench_predict --threads 1 2

Example:
    >>> from bench import bench_predict
    >>> bench_predict.PREDICT[0][0]
    '784-256-256-10'
"""

from __future__ import annotations

import argparse
import os
import time

import fusedmlp as fm
import numpy as np

# (name, widths, activation, rows per predict call)
PREDICT = (
    ("784-256-256-10", (784, 256, 256, 10), "relu", 10_000),
    ("1024-1024-1024-10", (1024, 1024, 1024, 10), "relu", 10_000),
    ("1-128-128-128-1", (1, 128, 128, 128, 1), "tanh", 10_000),
    ("1-128-128-128-1 (1 row)", (1, 128, 128, 128, 1), "tanh", 1),
)
# (name, widths, batch) of a training step (Adam, cross-entropy)
TRAIN = (
    ("784-256-256-10 b128", (784, 256, 256, 10), 128),
    ("64-512-10 b256", (64, 512, 10), 256),
    ("1024-1024-1024-10 b512", (1024, 1024, 1024, 10), 512),
)


def _best(fn, repeat: int, min_time: float = 0.2) -> float:
    """Seconds per call: the best of `repeat` rounds of enough calls to last min_time."""
    fn()
    n = 1
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(min_time / one))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _model(widths, activation="relu"):
    return fm.MLP(
        n_in=widths[0], hidden=list(widths[1:-1]), n_out=widths[-1], activation=activation, seed=0
    )


def run(threads: int, repeat: int) -> None:
    fm.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"threads {threads}, load {os.getloadavg()[0]:.1f}")
    for name, widths, act, rows in PREDICT:
        model = _model(widths, act)
        X = rng.normal(size=(rows, widths[0])).astype(np.float32)
        t = _best(lambda m=model, x=X: m.predict(x), repeat)
        print(f"  predict {name:28s} {rows / t:12.0f} rows/s  ({t * 1e3:.3f} ms/call)")
    for name, widths, batch in TRAIN:
        model = _model(widths)
        trainer = fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-3), metrics=())
        X = rng.normal(size=(batch, widths[0])).astype(np.float32)
        y = rng.integers(0, widths[-1], size=batch).astype(np.int32)
        t = _best(lambda tr=trainer, x=X, t=y: tr.train_step(x, t), repeat)
        print(f"  train   {name:28s} {t * 1e3:12.3f} ms/step")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    for t in args.threads:
        run(t, args.repeat)


if __name__ == "__main__":
    main()
