"""Data-parallel steps per second (issue 19): mnist-mlp (784-256-256-10, ReLU, Adam, float32)
at per-rank batch 128, on synthetic data, under ``mpiexec -n N``.

Usage (from the repository root; Open MPI from ``pip install 'fusedmlp[distributed]'``)::

    mpiexec -n 1 python bench/bench_distributed.py --steps 200
    mpiexec -n 2 python bench/bench_distributed.py --steps 200

Rank 0 prints one line: ranks, global steps/s, global rows/s, and the share of a step spent
in the gradient all-reduce. Each rank runs on its own cores (set OMP_NUM_THREADS so that
ranks x threads <= cores). A fixed number of steps on one global batch per step, after 10
warm-up steps; the clock is rank 0's, between two barriers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import fusedmlp as fm
    from mpi4py import MPI

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=128, help="rows per rank per step")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(rank)
    X = rng.normal(size=(args.batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=args.batch)
    model = fm.MLP(n_in=784, hidden=[256, 256], n_out=10, seed=0)
    t = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=1e-3), distributed=True)
    grads = t._engine.grads()
    for _ in range(10):
        t.train_step(X, y)
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        t.train_step(X, y)
    comm.Barrier()
    dt = time.perf_counter() - t0
    # the all-reduce alone, on the same arena (restored afterwards: the timing only)
    saved = grads.copy()
    comm.Barrier()
    t1 = time.perf_counter()
    for _ in range(args.steps):
        comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
    comm.Barrier()
    ar = time.perf_counter() - t1
    grads[:] = saved
    if rank == 0:
        print(
            f"ranks {size}: {args.steps / dt:.1f} steps/s, "
            f"{args.steps * args.batch * size / dt:.0f} rows/s, "
            f"all-reduce {1e3 * ar / args.steps:.3f} ms/step "
            f"({100 * ar / dt:.0f}% of a step), {len(grads)} params"
        )


if __name__ == "__main__":
    main()
