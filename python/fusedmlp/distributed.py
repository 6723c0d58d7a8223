"""Data-parallel training across processes (issue 19): MPI through mpi4py, NCCL through CuPy.

Run a script under ``mpiexec -n N python script.py`` (or ``fusedmlp train --distributed``)
and train with ``fm.Trainer(model, ..., distributed=True)`` or
``fm.distributed.DistributedTrainer(model, ...)``. Every rank builds the same model and reads
the same data set; then:

* at the start, the ranks all-gather a hash of the model and trainer configuration (a
  mismatch raises ``ValueError`` on every rank) and rank 0 broadcasts the parameters, the
  buffers, the optimizer state and the counters;
* epoch ``e``'s global permutation is the single-process one (keyed by the model seed and
  ``e``); global batch ``k`` is its rows ``[k*N*b, (k+1)*N*b)`` and rank ``r`` takes the
  contiguous block ``r`` of it, so N ranks with per-rank batch ``b`` step exactly as one
  process with batch ``N*b`` (the losses are Keras' "sum over batch size": averaging each
  rank's gradient weighted by its rows is the gradient of the global batch);
* each step runs the Network's forward + backward (``compute_gradients``), all-reduces the
  flat gradient arena (one collective), then the fused C++ update (``apply_gradients``),
  which computes the global-norm clip on the all-reduced arena, so clipping uses the global
  norm;
* dropout (and every other random stream) is keyed by (seed, rank, step): rank ``r`` of
  ``N`` draws at the Philox step ``g*N + r`` for global step ``g`` (one rank draws the
  single-process stream);
* BatchNorm running statistics stay per rank (each rank's own batches; rank 0's are the
  ones saved), the batch statistics of a step are those of the rank's own rows;
* the epoch's loss and metrics are averaged across ranks weighted by rows (exact for the
  loss and accuracy-like metrics; a metric that is not a mean over rows, such as
  ``roc_auc``, is the row-weighted mean of the per-rank values), so EarlyStopping and
  ReduceLROnPlateau decide the same on every rank; validation rows are split ``r::N``;
* rank 0 alone writes checkpoints (``save``, ModelCheckpoint);
* an exception on one rank (bad data, a failing callback) is all-gathered at the end of the
  phase it happened in (the step, the epoch's end, the start of ``fit``): every rank raises
  ``RuntimeError`` naming the rank and its error instead of waiting in a collective.

GPU models all-reduce through NCCL (``cupy.cuda.nccl``; rank 0 creates the unique id and
broadcasts it over MPI). That path is written but has not been run on a device yet: it is
tested on the CPU through the MPI path only.

Training on several machines: list the hosts and their slots in a hostfile
(``node1 slots=8``) and run ``mpiexec -n 16 --hostfile hosts python train.py`` (Open MPI;
MPICH: ``mpiexec -n 16 -f hosts``); every host needs the same Python environment and the
data set at the same path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import warnings
from typing import Any

import numpy as np

from . import _backend
from .trainer import Divergence, History, Trainer, _progress, _report, _xp


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "distributed training needs mpi4py and an MPI library: "
            "pip install 'fusedmlp[distributed]'"
        ) from exc
    return MPI


class RankError(RuntimeError):
    """Raised on every rank when one rank failed (the message names it and its error)."""


class _NcclAllreduce:
    """Sums a device array across ranks with NCCL (not yet run on a device: see the module
    docstring). Rank 0 creates the NCCL unique id and broadcasts it over MPI."""

    def __init__(self, comm: Any):
        from cupy.cuda import nccl

        self._nccl = nccl
        uid = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        self._comm = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())

    def __call__(self, a: Any) -> None:
        import cupy

        nccl = self._nccl
        dtype = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream()
        self._comm.allReduce(
            a.data.ptr, a.data.ptr, a.size, dtype[a.dtype], nccl.NCCL_SUM, stream.ptr
        )
        stream.synchronize()


class DistributedTrainer(Trainer):
    """A :class:`fusedmlp.Trainer` whose ``fit`` trains data-parallel across the ranks of
    ``comm`` (default ``MPI.COMM_WORLD``); see the module docstring for the rules.

    Args:
        comm: an mpi4py communicator.
        Every other argument is :class:`fusedmlp.Trainer`'s.
    """

    def __init__(self, model, *args: Any, comm: Any = None, distributed: bool = True, **kw: Any):
        if not distributed:
            raise ValueError("distributed: a DistributedTrainer is always distributed (True)")
        MPI = _mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._agree(lambda: Trainer.__init__(self, model, *args, **kw), "the Trainer's arguments")
        self._check_same_config()
        self._broadcast_state()
        self._allreduce = None
        if model.device == "cuda":
            self._allreduce = self._agree(lambda: _NcclAllreduce(self.comm), "NCCL setup")

    # -- agreement -------------------------------------------------------------------------
    def _agree(self, fn, what: str):
        """fn() on every rank; when it raised on any rank, every rank raises (no rank waits
        in a collective the failed one never reaches)."""
        err, out = None, None
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - every error is passed to the other ranks
            err = exc
        msgs = self.comm.allgather(None if err is None else f"{type(err).__name__}: {err}")
        failed = [(r, m) for r, m in enumerate(msgs) if m is not None]
        if failed:
            if err is not None:
                raise err
            r, m = failed[0]
            raise RankError(f"rank {r} failed in {what}: {m}")
        return out

    def _hooks(self, callbacks: list, name: str, *args: Any) -> None:
        """The callbacks' hook ``name`` on every rank, agreed as :meth:`_agree`."""
        self._agree(lambda: [getattr(c, name)(*args) for c in callbacks], name)

    def _config_hash(self) -> str:
        net = self._engine
        cfg = {
            "dtype": str(self.model.dtype),
            "device": self.model.device,
            "params": [list(p) for p in net.param_info()],
            "n_buffers": int(len(net.buffers())),
            "layers": [repr(lay) for lay in self.model._all_layers()],
            "losses": self.losses,
            "loss_weights": self.loss_weights,
            "label_smoothing": [self.label_smoothing, self.smoothing, self.half_mse],
            "optimizer": repr(self.optimizer.hyper),
            "regularizers": [repr(r) for r in self.regularizers],
            "seed": int(self.model.seed),
        }
        return hashlib.sha256(json.dumps(cfg, default=str).encode()).hexdigest()

    def _check_same_config(self) -> None:
        hashes = self.comm.allgather(self._config_hash())
        differ = [r for r, h in enumerate(hashes) if h != hashes[0]]
        if differ:
            raise ValueError(
                f"model: the model or trainer configuration of rank(s) {differ} differs from "
                "rank 0's (every rank must build the same model, loss and optimizer)"
            )

    def _broadcast_state(self) -> None:
        """Rank 0's parameters, buffers, optimizer state and counters on every rank."""
        e = self._engine
        for arena in (e.params(), e.buffers(), e.opt_state()):
            if self.model.device == "cuda":
                host = self.comm.bcast(arena.get() if self.rank == 0 else None, root=0)
                arena[:] = _xp(arena).asarray(host)
            elif len(arena):
                self.comm.Bcast(arena, root=0)
        counters = self.comm.bcast(e.counters(), root=0)
        e.set_counters(**counters)
        self.step_count, self.epoch = self.comm.bcast((self.step_count, self.epoch), root=0)

    # -- steps -----------------------------------------------------------------------------
    def _distributed_step(self, X, ys, sw, idx) -> float:
        """One global step: this rank's rows ``idx`` (maybe none), gradients averaged by rows
        across ranks, then the fused update. Returns the global batch loss."""
        e = self._engine
        g = e.counters()["rng_step"]
        rows = len(idx)

        def local():
            self._cycle_momentum()
            if rows == 0:  # a short last batch: this rank contributes nothing
                e.grads()[:] = 0
                return 0.0
            e.set_counters(rng_step=g * self.size + self.rank)
            xb = _xp(X).ascontiguousarray(X[idx])
            yb = [t[idx] for t in ys]
            wb = None if sw is None else sw[idx]
            return float(e.compute_gradients(xb, yb, wb)[0])

        try:
            loss = self._agree_values(local, rows)
        finally:
            e.set_counters(rng_step=g)
        loss_sum, total = loss
        loss = loss_sum / total
        if math.isfinite(loss):
            grads = e.grads()
            grads *= rows / total
            if self._allreduce is not None:
                self._allreduce(grads)
            else:
                MPI = _mpi()
                self.comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
            # clip (on the global gradient), update; a non-finite global gradient with a
            # finite loss is skipped on every rank alike (they hold the same gradient)
            if not e.apply_gradients(self.current_lr()):
                loss = math.nan
        else:
            e.set_counters(rng_step=g + 1)  # a skipped step still advances the stream
        self._after_step()
        return loss

    def _agree_values(self, fn, rows: int) -> tuple[float, int]:
        """(sum over ranks of fn() * rows, sum of rows); errors as in :meth:`_agree`."""
        err, val = None, 0.0
        try:
            val = fn()
        except Exception as exc:  # noqa: BLE001
            err = exc
        parts = self.comm.allgather(
            (None if err is None else f"{type(err).__name__}: {err}", val * rows, rows)
        )
        for r, (m, _, _) in enumerate(parts):
            if m is not None:
                if err is not None:
                    raise err
                raise RankError(f"rank {r} failed in a training step: {m}")
        return sum(p[1] for p in parts), sum(p[2] for p in parts)

    def train_step(self, X: Any, y: Any, sample_weight: Any = None, *, sync: bool = True):
        """One global step on this rank's batch (X, y): gradients averaged across ranks by
        rows. Every rank must call it."""
        X = self._agree(lambda: self._fast_x(X), "train_step's X")
        ys = self._agree(lambda: self._targets(y, len(X)), "train_step's y")
        sw = self._agree(lambda: self._sample_weight(sample_weight, len(X)), "sample_weight")
        return self._distributed_step(X, ys, sw, np.arange(len(X)))

    # -- fit -------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        epochs: int = 10,
        batch_size: int | None = 32,
        validation_split: float = 0.0,
        validation_data: tuple | None = None,
        shuffle: bool = True,
        verbose: int = 1,
        sample_weight: Any = None,
        initial_epoch: int | None = None,
    ) -> History:
        """:meth:`fusedmlp.Trainer.fit` across the ranks: every rank passes the whole data
        set; ``batch_size`` is the per-rank batch (the global batch is ``size`` times it).
        ``verbose`` reports on rank 0 only."""
        args = (X, y, epochs, batch_size, validation_split, validation_data, shuffle, verbose)
        p = self._agree(
            lambda: self._fit_plan(*args, sample_weight, initial_epoch), "fit's arguments"
        )
        X, ys, sw, val, start, stop, bs, shuffle = p
        n = len(X)
        gbs = bs * self.size
        verbose = verbose if self.rank == 0 else 0
        self.epoch = start
        self.diverged = None
        self.stop_training = False
        callbacks = self._callbacks()
        for c in callbacks:
            c.trainer = self
        self._hooks(callbacks, "on_train_begin")
        bar = _progress(verbose, stop - start)
        for epoch in range(start, stop):
            self._hooks(callbacks, "on_epoch_begin", epoch)
            t0 = time.perf_counter()
            if shuffle:
                order = np.random.default_rng([self.model.seed, epoch]).permutation(n)
            else:
                order = np.arange(n, dtype=np.int64)
            total, seen = 0.0, 0
            mine: list[np.ndarray] = []
            for b, s in enumerate(range(0, n, gbs)):
                block = order[s : s + gbs]
                idx = block[self.rank * bs : (self.rank + 1) * bs]
                mine.append(idx)
                loss = self._distributed_step(X, ys, sw, idx)
                total += loss * len(block)
                seen += len(block)
                self._hooks(callbacks, "on_batch_end", b, {"loss": loss})
                if not math.isfinite(loss):
                    self.diverged = Divergence(epoch, self.step_count, b, "loss", loss)
                    break
                if self.comm.allreduce(bool(self.stop_training), op=_mpi().LOR):
                    self.stop_training = True
                    break
            self.epoch = epoch + 1
            logs = {"loss": total / max(seen, 1), "lr": self.current_lr()}
            if self.diverged is None:
                rows = np.concatenate(mine) if mine else np.zeros(0, np.int64)
                logs = self._agree(
                    functools.partial(self._global_logs, epoch, logs, X, ys, rows, val),
                    "the epoch's metrics",
                )
            if self.diverged is not None:
                logs = self._diverged_logs(logs, val)
            self.history.append(epoch, logs)
            if self.schedule is not None and self.diverged is None:
                self.schedule.epoch_end(logs.get("val_loss", logs["loss"]))
            self._hooks(callbacks, "on_epoch_end", epoch, logs)
            self.stop_training = self.comm.allreduce(bool(self.stop_training), op=_mpi().LOR)
            _report(bar, verbose, epoch, stop, logs, time.perf_counter() - t0, seen)
            if self.stop_training or self.diverged is not None:
                break
        if bar is not None:
            bar.close()
        self._hooks(callbacks, "on_train_end")
        if self.diverged is not None and self.rank == 0:
            warnings.warn(str(self.diverged), RuntimeWarning, stacklevel=2)
        return self.history

    def _fit_plan(self, *args):
        """fit's checked arguments (Trainer's rules; the batch is per rank: by default the
        rank's share of the whole set)."""
        X, ys, sw, val, start, stop, bs, shuffle = self._fit_arguments(
            *args, default_batch=lambda n: -(-n // self.size)
        )
        if self.model.device == "cuda":
            to_device = _backend.get("cuda").to_device
            ys = [to_device(t) for t in ys]
            sw = None if sw is None else to_device(sw)
        return X, ys, sw, val, start, stop, bs, shuffle

    def _global_logs(self, epoch, logs, X, ys, rows, val) -> dict:
        """The epoch's metrics on this rank's rows (and validation rows ``r::N``), averaged
        across ranks weighted by rows; the loss is already global."""
        loss, lr = logs["loss"], logs["lr"]
        xs = X[rows]
        yh = [_host(t)[_host(rows)] for t in ys]
        vpart = (
            None
            if val is None
            else (val[0][self.rank :: self.size], [t[self.rank :: self.size] for t in val[1]])
        )
        local = self._epoch_logs(epoch, {}, xs, yh, vpart) if len(rows) else {}
        diverged = self.diverged is not None
        n_val = 0 if vpart is None else len(vpart[0])
        parts = self.comm.allgather((diverged, local, len(rows), n_val))
        if any(p[0] for p in parts):
            if self.diverged is None:
                self.diverged = Divergence(epoch, self.step_count, None, "parameters", math.nan)
            return {"loss": loss, "lr": lr}
        out = {"loss": loss, "lr": lr}
        keys = sorted({k for p in parts for k in p[1]})
        for k in keys:
            w = [(p[3] if k.startswith("val_") else p[2]) for p in parts if k in p[1]]
            vals = [p[1][k] for p in parts if k in p[1]]
            out[k] = float(np.dot(w, vals) / max(sum(w), 1))
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Rank 0 writes the checkpoint (every rank holds the same state); every rank must
        call it (an error on rank 0 is raised on every rank)."""
        self._agree(
            lambda: super(DistributedTrainer, self).save(path) if self.rank == 0 else None, "save"
        )


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
