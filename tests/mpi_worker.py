"""Run under ``mpiexec -n 2`` by tests/test_distributed.py (not a test module itself).

``python mpi_worker.py trajectory OPT CLIP``: 2 ranks with per-rank batch b against one
process with batch 2b (float64); rank 0 prints ``RESULT {json}``.
``python mpi_worker.py bad_data``: rank 1's X holds a NaN; every rank must raise.
``python mpi_worker.py bad_step``: rank 1's batch fails inside a step (wrong y dtype there).
``python mpi_worker.py bad_callback``: a callback raises on rank 1 in the middle of an epoch.
``python mpi_worker.py mismatch``: rank 1 builds a wider model; every rank must raise.
"""

from __future__ import annotations

import json
import sys

import fusedmlp as fm
import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
N_ROWS, B, EPOCHS = 50, 4, 3  # 50 rows, global batch 8: the last global batch has 2 rows


def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_ROWS, 5))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(np.int64) + (X[:, 2] > 0)
    return X, y


def model(hidden=(8, 6)):
    return fm.MLP(n_in=5, hidden=list(hidden), n_out=3, activation="tanh", seed=3, dtype="float64")


def optimizer(name: str, clip: float | None):
    if name == "sgd":
        return fm.optim.SGD(lr=0.1, momentum=0.9, clip_norm=clip)
    return fm.optim.Adam(lr=0.01, clip_norm=clip)


def trajectory(opt: str, clip: str) -> None:
    clip_norm = None if clip == "none" else float(clip)
    X, y = data()
    dt = fm.Trainer(
        model(), loss="cross_entropy", optimizer=optimizer(opt, clip_norm), distributed=True
    )
    hist = dt.fit(X, y, epochs=EPOCHS, batch_size=B, verbose=0).history
    params = np.array(dt.model.parameters)
    same = comm.allgather(params)
    if rank == 0:
        ref = fm.Trainer(model(), loss="cross_entropy", optimizer=optimizer(opt, clip_norm))
        rhist = ref.fit(X, y, epochs=EPOCHS, batch_size=2 * B, verbose=0).history
        rparams = np.array(ref.model.parameters)
        out = {
            "param_diff": float(np.max(np.abs(params - rparams))),
            "param_scale": float(np.max(np.abs(rparams))),
            "rank_diff": float(max(np.max(np.abs(p - params)) for p in same)),
            "loss_diff": float(np.max(np.abs(np.array(hist["loss"]) - rhist["loss"]))),
            "steps": [dt.step_count, ref.step_count],
            "opt_step": [dt._engine.counters()["opt_step"], ref._engine.counters()["opt_step"]],
        }
        print("RESULT " + json.dumps(out), flush=True)


class _Fails(fm.callbacks.Callback):
    def on_batch_end(self, batch, logs=None):
        if batch == 3:
            raise RuntimeError("a callback failed")


def faulty(kind: str) -> None:
    X, y = data()
    hidden = (8, 6)
    if kind == "bad_data" and rank == 1:
        X = X.copy()
        X[3, 1] = np.nan
    if kind == "mismatch" and rank == 1:
        hidden = (9, 6)
    callbacks = [_Fails()] if kind == "bad_callback" and rank == 1 else []
    try:
        dt = fm.Trainer(model(hidden), loss="cross_entropy", callbacks=callbacks, distributed=True)
        if kind == "bad_step":
            Xb, yb = X[:4], y[:4]
            if rank == 1:
                yb = np.full(4, 7)  # a label out of range, on rank 1 only
            dt.train_step(Xb, yb)
        dt.fit(X, y, epochs=2, batch_size=B, verbose=0)
    except Exception as exc:  # every rank must get here, none may hang
        print(f"RAISED rank={rank} {type(exc).__name__}: {exc}", flush=True)
        return
    print(f"NO-ERROR rank={rank}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "trajectory":
        trajectory(sys.argv[2], sys.argv[3])
    else:
        faulty(sys.argv[1])
