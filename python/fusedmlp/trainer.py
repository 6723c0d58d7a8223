"""The Trainer: the habits of Keras' ``fit`` and a hand-written PyTorch loop, on top of the
fused C++ step (one call per batch: forward, loss, backward, regularization, update).

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> model = fm.MLP(n_in=4, hidden=[16], n_out=2, seed=0)
    >>> trainer = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=1e-2))
    >>> hist = trainer.fit(X, y, epochs=5, batch_size=16, verbose=0)
    >>> len(hist.history["loss"])
    5
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _backend, _losses
from . import _validate as v
from . import callbacks as cb
from . import layers as L
from . import metrics as M
from . import optim as optim_mod
from . import regularizers as R
from . import schedules as S
from ._engine import array_module as _xp
from .model import Sequential
from .rbf import RBFScheme

CHECKPOINT_FORMAT = "fusedmlp-checkpoint"
CHECKPOINT_VERSION = 1


class _NonFiniteOutput(ValueError):
    """The model's outputs are not finite for finite inputs: its parameters diverged."""


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where :meth:`Trainer.fit` stopped on a diverging run (``trainer.diverged``).

    Attributes:
        epoch: the global epoch index (0-based, as ``History.epoch``).
        step: ``trainer.step_count`` when it was found (the step whose loss was not finite).
        batch: the batch index within the epoch, None when found at the epoch's end.
        what: "loss" (a batch loss), "parameters", "outputs" (the model's outputs on the
            training or validation inputs) or "val_loss".
        value: the non-finite value (NaN where there is no single one).
    """

    epoch: int
    step: int
    batch: int | None
    what: str
    value: float

    def __str__(self) -> str:
        where = f"batch {self.batch}" if self.batch is not None else "the end of the epoch"
        found = {
            "loss": f"the batch loss is {self.value}",
            "parameters": "the parameters contain NaN or Inf",
            "outputs": "the model's outputs contain NaN or Inf",
            "val_loss": f"the validation loss is {self.value}",
        }[self.what]
        return (
            f"fit: training diverged at epoch {self.epoch} (step {self.step}, {where}): "
            f"{found}; training stopped. Lower the learning rate, clip the gradients "
            "(fm.regularizers.ClipNorm) or use EarlyStopping(restore_best_weights=True) to "
            "keep the best weights."
        )


class History:
    """Per-epoch training and validation loss and metrics (``history.history[key]``)."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for k, val in logs.items():
            self.history.setdefault(k, []).append(float(val))

    def plot(self, keys: Sequence[str] | None = None, ax=None, path: str | None = None):
        """Learning curves with matplotlib (an optional dependency): one line per key
        (default: every loss key), epochs on x. Saves to ``path`` when given.

        Returns:
            the matplotlib Axes.
        """
        try:
            import matplotlib

            if ax is None and path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from exc
        keys = list(keys) if keys is not None else [k for k in self.history if k.endswith("loss")]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        for k in keys:
            if k not in self.history:
                raise ValueError(f"keys: {k!r} is not in the history ({', '.join(self.history)})")
            ax.plot(np.arange(1, len(self.history[k]) + 1), self.history[k], label=k)
        ax.set_xlabel("epoch")
        ax.legend()
        if path is not None:
            ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        return ax


def _serialized(method):
    """Runs a Trainer method under the Trainer's lock: two threads stepping one Trainer take
    turns, so the schedule, the step counter and the learning rate each step reads stay
    consistent (the C++ Network serializes its own calls, see bindings/network_common.h)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return run


class Trainer:
    """Trains a model with a loss, an optimizer, an optional schedule, regularizers,
    callbacks and metrics.

    Args:
        model: a :class:`fusedmlp.Sequential` / :class:`fusedmlp.MLP`.
        loss: "mse", "binary_cross_entropy" or "cross_entropy" (aliases accepted); a list
            with one loss per head for multi-head models.
        optimizer: a ``fusedmlp.optim`` optimizer (default Adam(lr=1e-3)) or its name.
        schedule: a ``fusedmlp.schedules`` schedule (per step or per epoch) or None.
        regularizers: ``fusedmlp.regularizers`` objects (L1, L2, L1L2, MaxNorm, ClipNorm,
            ClipValue), fused into the update.
        callbacks: ``fusedmlp.callbacks`` objects.
        metrics: metric names or callables evaluated per epoch ("accuracy", "mse", "roc_auc");
            in ``fit`` the training values are running averages over the epoch's steps.
        loss_weights: weight of each head's loss in the total (deck 002 multi-task).
        label_smoothing: epsilon for the classification losses; ``smoothing`` "deck"
            (eps/(k-1) and 1-eps, deck 002) or "uniform" (eps/k, the common libraries').
        half_mse: the 1/2 (y - t)^2 convention (deck 004's backprop example).
        adversarial_eps: FGSM adversarial training (deck 002), the same as
            ``callbacks=[fm.callbacks.Adversarial(adversarial_eps)]``: each batch is trained
            together with x + eps * sign(grad_x L) (equal weights).
        rbf_scheme, rbf_solve, rbf_output_epochs: the learning scheme of a model with
            :class:`fusedmlp.RBF` layers (deck 003), the same as
            ``callbacks=[fm.callbacks.RBFScheme(rbf_scheme, rbf_solve, rbf_output_epochs)]``
            (see :mod:`fusedmlp.rbf`). A model with RBF layers trains end-to-end by default,
            its centres first placed on the training inputs.
        distributed: train data-parallel across the ranks of ``mpiexec -n N`` (MPI, or NCCL
            for CUDA models): the trainer is a :class:`fusedmlp.distributed.DistributedTrainer`.

    Example (an RBF network, deck 003):
        >>> import numpy as np, fusedmlp as fm
        >>> X = np.linspace(-3, 3, 200)[:, None]; y = np.sin(X)
        >>> model = fm.Sequential([fm.RBF(12), fm.Dense(1)], n_in=1, dtype="float64")
        >>> t = fm.Trainer(model, loss="mse", metrics=(), rbf_scheme="2-step", rbf_solve="lstsq")
        >>> bool(t.fit(X, y, verbose=0).history["loss"][-1] < 1e-3)
        True
    """

    # Trainer(..., distributed=True) constructs this class: fusedmlp.distributed's
    # DistributedTrainer, registered by the package (fusedmlp/__init__.py), which sits above
    # both modules in the import layers (mpi4py itself is imported when a rank starts).
    _distributed_class: type | None = None

    def __new__(cls, *args: Any, distributed: bool = False, **kwargs: Any):
        if v.flag("distributed", distributed) and cls is Trainer:
            return super().__new__(Trainer._distributed_class)
        return super().__new__(cls)

    def __init__(
        self,
        model: Sequential,
        loss: str | Sequence[str] = "cross_entropy",
        optimizer: Any = None,
        schedule: Any = None,
        regularizers: Sequence[Any] | None = None,
        callbacks: Sequence[cb.Callback] | None = None,
        metrics: Sequence[Any] = ("accuracy",),
        loss_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        smoothing: str = "deck",
        half_mse: bool = False,
        adversarial_eps: float | None = None,
        rbf_scheme: str | None = None,
        rbf_solve: str = "gradient",
        rbf_output_epochs: int | None = None,
        distributed: bool = False,
    ):
        if distributed and not hasattr(self, "comm"):
            raise ValueError("distributed: True needs a fusedmlp.distributed.DistributedTrainer")
        if not isinstance(model, Sequential):
            raise TypeError(
                f"model: expected a fusedmlp model (Sequential/MLP), got {type(model).__name__}"
            )
        self.model = model
        n_heads = len(model.heads)
        if isinstance(loss, str):
            losses = [loss] * n_heads
        elif isinstance(loss, (list, tuple)):
            losses = list(loss)
        else:
            raise TypeError(
                "loss: expected a loss name (str) or a list of names, one per head, "
                f"got {type(loss).__name__}"
            )
        if len(losses) != n_heads:
            raise ValueError(
                f"loss: expected {n_heads} loss name(s), one per head, got {len(losses)}"
            )
        self.losses = [_losses.canonical(name) for name in losses]
        weights = [1.0] * n_heads if loss_weights is None else list(loss_weights)
        if len(weights) != n_heads:
            raise ValueError(f"loss_weights: expected {n_heads} weight(s), got {len(weights)}")
        self.loss_weights = [v.real("loss_weights", w, 0.0) for w in weights]
        self.label_smoothing = v.real("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        if smoothing not in _losses.SMOOTHING:
            raise ValueError(f"smoothing: expected one of {_losses.SMOOTHING}, got {smoothing!r}")
        self.smoothing = smoothing
        self.half_mse = bool(half_mse)
        self._engine = model._engine
        self._engine.set_losses(
            [_losses._CODES[name] for name in self.losses],
            self.loss_weights,
            self.label_smoothing,
            smoothing == "uniform",
            self.half_mse,
        )
        if optimizer is None:
            optimizer = optim_mod.Adam(lr=1e-3)
        elif isinstance(optimizer, str):
            try:
                optimizer = optim_mod.get(optimizer)
            except ValueError as exc:
                raise ValueError(str(exc).replace("name:", "optimizer:", 1)) from None
        elif not isinstance(optimizer, optim_mod.Optimizer):
            raise TypeError(
                "optimizer: expected a fusedmlp.optim optimizer (e.g. fm.optim.Adam(lr=1e-3)) "
                f"or its name, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if schedule is not None and not isinstance(schedule, S.Schedule):
            raise TypeError(
                "schedule: expected a fusedmlp.schedules schedule (e.g. "
                f"fm.schedules.Cosine(lr=1e-2, T=10)) or None, got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.regularizers = R._check(regularizers)
        self.callbacks = _sequence("callbacks", callbacks, "fusedmlp.callbacks.Callback objects")
        for c in self.callbacks:
            if not isinstance(c, cb.Callback):
                raise TypeError(
                    "callbacks: expected fusedmlp.callbacks.Callback objects, "
                    f"got {type(c).__name__}"
                )
        metrics = _sequence("metrics", metrics, "metric names or callables")
        for m in metrics:
            if not isinstance(m, str) and not callable(m):
                raise TypeError(
                    f"metrics: expected metric names or callables, got {type(m).__name__}"
                )
        self.metrics = {
            (m if isinstance(m, str) else getattr(m, "__name__", "metric")): M.get(m)
            for m in metrics
        }
        # The argument aliases install their callbacks after the user's (the order of the
        # hooks within an epoch); a model with RBF layers always gets a scheme (end-to-end).
        # The RBF scheme comes first: its step 1 precedes an adversarial batch's gradient.
        self._installed: list[cb.Callback] = []
        if not any(isinstance(c, RBFScheme) for c in self.callbacks):
            self._installed.append(RBFScheme(rbf_scheme, rbf_solve, rbf_output_epochs))
        elif (rbf_scheme, rbf_solve, rbf_output_epochs) != (None, "gradient", None):
            raise ValueError(
                "rbf_scheme: the callbacks already hold an fm.callbacks.RBFScheme; "
                "give the scheme there only"
            )
        if adversarial_eps is not None:
            self._installed.append(cb.Adversarial(adversarial_eps))
        for c in self._callbacks():
            c._attach(self)
        self._installed = [
            c for c in self._installed if not (isinstance(c, RBFScheme) and c.stage is None)
        ]
        # The global position of the run: every epoch-dependent choice (the shuffle order,
        # per-epoch schedules, the RBF step 3) is a function of these and of the saved state,
        # so one fit(4), fit(2) twice, and fit(2) + save + load + fit(2) are the same run.
        self.step_count = 0
        self.epoch = 0
        self._lock = threading.RLock()
        self.lr_scale = 1.0
        self.stop_training = False
        self.diverged: Divergence | None = None
        self.history = History()
        self._configure_optimizer()
        if self.schedule is not None and self.schedule.get_momentum() is not None:
            self._engine.set_momentum(self.schedule.get_momentum())  # fails early if it can't

    def _callbacks(self) -> list[cb.Callback]:
        """The user's callbacks, then those the argument aliases installed."""
        return self.callbacks + self._installed

    @property
    def adversarial_eps(self) -> float | None:
        """The FGSM perturbation size of the Adversarial callback (None: no FGSM training)."""
        for c in self._callbacks():
            if isinstance(c, cb.Adversarial):
                return c.eps
        return None

    @property
    def _rbf(self) -> RBFScheme | None:
        """The RBF learning scheme in effect (None: the model has no RBF layer)."""
        for c in self._callbacks():
            if isinstance(c, RBFScheme) and c.stage is not None:
                return c
        return None

    @property
    def _plain_steps(self) -> bool:
        """No callback needs to see each batch: the fused fast paths apply."""
        return all(c._plain_steps for c in self._callbacks())

    # -- optimizer wiring ------------------------------------------------------------------
    def _configure_optimizer(self) -> None:
        """The optimizer and the regularizers, from a fresh optimizer state."""
        self._engine.configure(self.optimizer, self.regularizers, max_norm=self.model.max_norm)

    def base_lr(self) -> float:
        """The learning rate before ReduceLROnPlateau/LearningRateScheduler scaling."""
        if self.schedule is None:
            return float(self.optimizer.lr)
        return float(self.schedule.get_lr())

    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return self.base_lr() * self.lr_scale

    # -- data ------------------------------------------------------------------------------
    def _targets(self, y: Any, n: int, check: bool = True) -> list[np.ndarray]:
        # Targets are validated on the host (GPU targets are copied back once: they are small
        # next to X); a CUDA model gets them on the device in fit (once) or per call.
        if v.is_device_array(y):
            y = _host(y)
        elif isinstance(y, (list, tuple)) and any(v.is_device_array(t) for t in y):
            y = [_host(t) for t in y]
        if len(self.losses) == 1 and type(y) is np.ndarray and y.flags.c_contiguous:
            # Fast path for the training loop: arrays already in the kernel's layout.
            if y.dtype == np.int32 and y.ndim == 1 and self.losses[0] == "cross_entropy":
                if y.shape[0] == n:
                    return [y]  # the label range is checked by the C++ loss (a ValueError)
            elif y.dtype == self.model.dtype and y.shape == (n, self.model.n_outputs(0)):
                # one vectorized sum finds NaN/Inf; only a non-finite sum pays for the full scan
                # (and classification targets outside [0, 1] take the slow path's error)
                in_range = self.losses[0] == "mse" or (y.min() >= 0 and y.max() <= 1)
                if not check or (np.isfinite(y.sum()) and in_range):
                    return [y]
        ys = [y] if len(self.losses) == 1 else list(y)
        if len(ys) != len(self.losses):
            raise ValueError(
                f"y: expected a list of {len(self.losses)} target arrays, one per head"
            )
        out = []
        for h, (name, t) in enumerate(zip(self.losses, ys, strict=True)):
            what = "y" if len(ys) == 1 else f"y[{h}]"
            k = self.model.n_outputs(h)
            t = np.asarray(t)
            if t.dtype.kind not in "biuf":  # complex, object, strings: no silent cast
                raise TypeError(
                    f"{what}: expected real numbers (a float, integer or bool array), "
                    f"got dtype {t.dtype}"
                )
            if t.shape[:1] != (n,):
                raise ValueError(f"{what}: expected {n} rows (the rows of X), got shape {t.shape}")
            if name == "cross_entropy" and t.ndim == 1:
                if not np.issubdtype(t.dtype, np.integer):
                    if not np.issubdtype(t.dtype, np.floating) or not np.all(np.mod(t, 1) == 0):
                        raise ValueError(
                            f"{what}: expected integer class labels 0..{k - 1} "
                            f"(or one-hot/probability rows of width {k})"
                        )
                if check and (t.min() < 0 or t.max() >= k):
                    raise ValueError(
                        f"{what}: labels must be in [0, {k - 1}], got range [{t.min()}, {t.max()}]"
                    )
                out.append(t.astype(np.int32))
                continue
            t = t.reshape(n, -1) if t.ndim == 1 else t
            if t.ndim != 2 or t.shape[1] != k:
                raise ValueError(f"{what}: expected shape ({n}, {k}) for {name}, got {t.shape}")
            if not np.issubdtype(t.dtype, np.number) or t.dtype == np.bool_:
                t = t.astype(np.float64)
            t = np.ascontiguousarray(t, dtype=self.model.dtype)
            if check and not np.isfinite(t).all():
                raise ValueError(f"{what}: contains NaN or Inf")
            if check and name != "mse" and ((t < 0) | (t > 1)).any():
                raise ValueError(
                    f"{what}: {name} targets are probabilities, expected values in [0, 1]"
                )
            out.append(t)
        return out

    def _sample_weight(self, sw: Any, n: int) -> np.ndarray | None:
        if sw is None:
            return None
        sw = v.as_float_array("sample_weight", sw, ndim=1).astype(self.model.dtype, copy=False)
        if sw.shape != (n,):
            raise ValueError(f"sample_weight: expected shape ({n},), got {sw.shape}")
        if np.any(sw < 0):
            raise ValueError("sample_weight: expected non-negative weights")
        return sw

    # -- training --------------------------------------------------------------------------
    @_serialized
    def train_step(self, X: Any, y: Any, sample_weight: Any = None, *, sync: bool = True) -> Any:
        """One fused training step on a batch; returns the batch loss (before the update).

        ``sync=False`` (CUDA models): nothing waits for the GPU; the loss comes back as a 0-d
        CuPy float64 array (NaN when the step was skipped for a non-finite loss, in which
        case the inputs are not examined). CPU models always return a float.

        Raises:
            ValueError: bad shapes, NaN/Inf in X or y, labels out of range.
        """
        fast = self._device_batch(X, y, sample_weight)
        if fast is not None:
            # CUDA fast path, no host synchronization besides the loss: NaN/Inf or bad labels
            # make the loss non-finite, the device then skips the update, and the inputs are
            # examined only in that case (a clear ValueError; parameters, optimizer state and
            # every counter as before). BatchNorm's running statistics would take a NaN input
            # in before the loss: with BatchNorm, X is checked first (one device reduction;
            # not with sync=False, which examines nothing).
            engine = self._engine
            if sync and self._has_bn and not bool(_xp(fast[0]).isfinite(fast[0]).all()):
                raise ValueError("X: contains NaN or Inf")
            if not sync:
                return self._step(fast[0], fast[1], None, False)
            counters = engine.snapshot("rng_step", "bn_updates")
            self._cycle_momentum()
            loss = engine.step(fast[0], fast[1], None, self.current_lr())
            if not math.isfinite(loss):
                # The device skipped the update (the C++ skip rule). Bad inputs are reported
                # as the checked path reports them, which never steps: the counters the step
                # advanced go back, as if it had not run.
                try:
                    self._explain_non_finite(fast[0], fast[1])
                except ValueError:
                    engine.restore(counters)
                    raise
            self._after_step()
            return loss
        X = self._fast_x(X)
        ys = self._targets(y, len(X))
        sw = self._sample_weight(sample_weight, len(X))
        return self._step(X, ys, sw, sync)

    def _device_batch(self, X: Any, y: Any, sample_weight: Any):
        """(X, [y]) when a CUDA model gets a batch already in the kernels' layout on the
        device (CuPy, the model's dtype, C-contiguous; int32 labels or a (n, k) target array),
        else None (the general, checked path)."""
        if (
            self.model.device != "cuda"
            or sample_weight is not None
            or len(self.losses) != 1
            or not self._plain_steps
            or not type(X).__module__.startswith("cupy")
            or not type(y).__module__.startswith("cupy")
        ):
            return None
        n = X.shape[0] if X.ndim == 2 else 0
        if not (
            n > 0
            and X.dtype == self.model.dtype
            and X.shape[1] == self.model.n_in
            and X.flags.c_contiguous
            and y.flags.c_contiguous
        ):
            return None
        labels = y.dtype == np.int32 and y.shape == (n,) and self.losses[0] == "cross_entropy"
        dense = y.dtype == self.model.dtype and y.shape == (n, self.model.n_outputs(0))
        return (X, [y]) if labels or dense else None

    def _explain_non_finite(self, X: Any, ys: list) -> None:
        """After a non-finite loss on the CUDA fast path: the input at fault, as the checked
        path would have reported it (nothing when the data is fine: the loss diverged)."""
        xp = _xp(X)
        if not bool(xp.isfinite(X).all()):
            raise ValueError("X: contains NaN or Inf (the step was skipped)")
        y = ys[0]
        if y.dtype == np.int32:
            k = self.model.n_outputs(0)
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= k:
                raise ValueError(
                    f"y: labels must be in [0, {k - 1}], got range [{lo}, {hi}] "
                    "(the step was skipped)"
                )
        elif not bool(xp.isfinite(y).all()):
            raise ValueError("y: contains NaN or Inf (the step was skipped)")

    def _fast_x(self, X: Any) -> np.ndarray:
        if (
            self.model.device == "cpu"
            and isinstance(X, np.ndarray)
            and X.dtype == self.model.dtype
            and X.ndim == 2
            and X.flags.c_contiguous
        ):
            if X.shape[1] != self.model.n_in:
                raise ValueError(f"X: expected {self.model.n_in} features, got {X.shape[1]}")
            if X.shape[0] == 0:
                raise ValueError("X: expected a non-empty array")
            # One vectorized sum finds NaN/Inf; only a non-finite sum pays for the full scan
            # (a sum that overflows on finite, huge values is no error: no warning).
            with np.errstate(over="ignore", invalid="ignore"):
                suspect = not np.isfinite(X.sum())
            if suspect and not np.isfinite(X).all():
                raise ValueError("X: contains NaN or Inf")
            return X
        return self.model.check_X(X)

    @_serialized
    def _step(
        self, X: np.ndarray, ys: list[np.ndarray], sw: np.ndarray | None, sync: bool = True
    ) -> Any:
        for c in self._callbacks():  # RBF step 1 before train_step, adversarial batches
            batch = c._batch(X, ys, sw)
            if batch is not None:
                X, ys, sw = batch
        self._cycle_momentum()
        # sync=False on CUDA: the loss stays on the device (a copy of the loss slot, no sync)
        loss = self._engine.step(X, ys, sw, self.current_lr(), sync)
        self._after_step()
        return loss

    def _cycle_momentum(self) -> None:
        if self.schedule is not None:
            momentum = self.schedule.get_momentum()
            if momentum is not None:
                self._engine.set_momentum(momentum)

    def _after_step(self) -> None:
        self.step_count += 1
        if self.schedule is not None:
            self.schedule.step()

    @property
    def _has_bn(self) -> bool:
        return any(isinstance(lay, L.BatchNorm) for lay in self.model._all_layers())

    def _fit_arguments(
        self,
        X,
        y,
        epochs,
        batch_size,
        validation_split,
        validation_data,
        shuffle,
        verbose,
        sample_weight,
        initial_epoch,
        default_batch,
    ):
        """fit's checked arguments, shared with the distributed trainer: (X, targets, sample
        weights, validation set or None, first epoch, last epoch + 1, batch size, shuffle).
        ``default_batch(n)`` is the batch size when ``batch_size`` is None."""
        X = self.model.check_X(X)
        n = len(X)
        ys = self._targets(y, n)
        sw = self._sample_weight(sample_weight, n)
        if initial_epoch is None:
            start = self.epoch
            stop = start + v.integer("epochs", epochs, low=1)
        else:
            start = v.integer("initial_epoch", initial_epoch, low=0)
            stop = v.integer("epochs", epochs)
            if stop <= start:
                raise ValueError(
                    f"epochs: with initial_epoch={start}, epochs is the index of the last "
                    f"epoch + 1 (Keras) and must be > {start}, got {stop}"
                )
        shuffle = v.flag("shuffle", shuffle)
        bs = default_batch(n) if batch_size is None else v.integer("batch_size", batch_size, low=1)
        vs = v.real("validation_split", validation_split, 0.0, 1.0, high_open=True)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose!r}")
        val = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data: expected a tuple (X_val, y_val)")
            Xv = self.model.check_X(validation_data[0], "validation_data[0]")
            val = (Xv, self._targets(validation_data[1], len(Xv)))
        elif vs > 0:
            n_val = int(round(n * vs))
            if n_val < 1 or n_val >= n:
                raise ValueError(
                    f"validation_split: {vs} leaves no training or no validation rows for n={n}"
                )
            val = (X[n - n_val :], [t[n - n_val :] for t in ys])
            X, ys, n = X[: n - n_val], [t[: n - n_val] for t in ys], n - n_val
            sw = None if sw is None else sw[:n]
        return X, ys, sw, val, start, stop, bs, shuffle

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
        """Train for ``epochs`` passes over the data, continuing the trainer's run.

        The trainer keeps a global position (``trainer.epoch``, ``trainer.step_count``; the
        optimizer, schedule and dropout counters; all saved by :meth:`save`), and every
        epoch-dependent choice is a function of it: epoch ``e`` is shuffled by a generator
        seeded with ``(model seed, e)``. So on the CPU one ``fit(epochs=4)``, two
        ``fit(epochs=2)`` calls, and ``fit(epochs=2)`` + ``save`` + ``Trainer.load`` +
        ``fit(epochs=2)`` give bit-identical weights and history.

        Training metrics are running values, as Keras reports them: ``loss`` and
        each metric of the history average over the epoch's batches the outputs that each
        fused step's own forward pass computed (training mode: dropout on, batch statistics;
        the parameters before that step's update), so ``fit`` never runs a second pass over
        the training set. The step counts the accuracy of labels (arg-max) and of one-column
        0/1 targets (threshold) itself and keeps the outputs for the other metrics, on either
        device. Adversarial training (a callback that sees each batch) computes the training
        metrics at the epoch's end with one inference pass. Validation values are always
        computed at the epoch's end with the final parameters (one inference pass).

        Divergence (Keras' TerminateOnNaN, built in): when a batch loss is NaN or Inf, or at an
        epoch's end the parameters, the model's outputs or the validation loss are not finite,
        training stops at once (with metrics configured, the outputs are examined on the
        epoch's last batch on the CPU, on the training set on CUDA). The fused step skips the
        update of a batch whose loss is not finite, but earlier updates may already have made
        the parameters huge or non-finite; they are left as they are, except that callbacks'
        ``on_train_end`` still runs, so
        ``EarlyStopping(restore_best_weights=True)`` puts the best weights back (a non-finite
        monitored value never counts as an improvement). The diverged epoch enters the history
        with NaN for every logged value except ``lr`` (the batch loss itself, NaN or Inf, as
        ``loss`` when a batch diverged), callbacks see it in ``on_epoch_end`` (ModelCheckpoint
        skips it), the schedule does not count it, ``fit`` issues a ``RuntimeWarning`` naming
        the epoch and step, and ``trainer.diverged`` (a :class:`Divergence`; None after a
        healthy ``fit``) says where it happened.

        Args:
            X, y: inputs (n, n_in) and targets (labels (n,) or arrays (n, k); a list per head).
            epochs: the number of epochs to run (>= 1), after the ``trainer.epoch`` epochs
                already done. With ``initial_epoch`` (Keras): the index of the last epoch + 1,
                so ``fit(epochs=4, initial_epoch=2)`` runs epochs 2 and 3.
            batch_size: mini-batch size; None or >= n is full-batch gradient descent, 1 is
                single-sample SGD (deck 002).
            validation_split: fraction in [0, 1) of the data (the last rows, as Keras) held
                out for validation.
            validation_data: (X_val, y_val) instead of a split.
            shuffle: reshuffle the training rows each epoch (deterministic for the model seed
                and the epoch index).
            verbose: 0 silent, 1 progress bar (tqdm), 2 one line per epoch.
            sample_weight: per-row loss weights (n,).
            initial_epoch: the global index of the first epoch to run (Keras; >= 0). It sets
                ``trainer.epoch``: the shuffle order, the history's and the callbacks' epoch
                numbers follow it. The optimizer, schedule and dropout positions are the
                trainer's own (as Keras keeps ``optimizer.iterations``), so resuming a loaded
                checkpoint with ``initial_epoch=trainer.epoch`` is the exact continuation.
                None: continue from ``trainer.epoch``.

        Returns:
            the :class:`History` (also ``trainer.history``).
        """
        X, ys, sw, val, start, stop, bs, shuffle = self._fit_arguments(
            X,
            y,
            epochs,
            batch_size,
            validation_split,
            validation_data,
            shuffle,
            verbose,
            sample_weight,
            initial_epoch,
            default_batch=lambda n: n,
        )
        n = len(X)
        bs = min(bs, n)
        self.epoch = start
        self.diverged = None
        # 2-step RBF scheme with the closed-form solve: the training is done
        if any([c._fit_begin(X, ys, sw, stop - start) for c in self._callbacks()]):
            return self._closed_form_epoch(X, ys, sw, val, verbose)
        # The batches' sources: on a CUDA model the data goes to the device once per fit (X is
        # already there: check_X) and batches are gathered there; host copies of the targets
        # stay for the metrics.
        be = _backend.get(self.model.device)
        ys_host = ys
        # Plain steps: each step gathers its rows from the whole training set inside the C++
        # step (on either device) and counts the running metrics from its own outputs (no
        # second pass over the data). Callbacks that see each batch (adversarial training) keep
        # the Python batches and an end-of-epoch pass.
        indexed = self._plain_steps
        plan = None
        if indexed or self.model.device == "cuda":  # the arrays in the kernels' layout, once
            X = be.to_device(X)
            ys = [be.to_device(t) for t in ys]
            sw = None if sw is None else be.to_device(sw)
        if indexed:
            plan = self._running_plan(ys_host)
        self.stop_training = False
        callbacks = self._callbacks()
        for c in callbacks:
            c.trainer = self
            c.on_train_begin()
        bar = _progress(verbose, stop - start)
        for epoch in range(start, stop):
            for c in callbacks:  # the RBF scheme's step 3 may begin here
                c.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            host_order = None
            if shuffle:
                # Seeded by the global epoch index, not by the position within this call.
                host_order = np.random.default_rng([self.model.seed, epoch]).permutation(n)
            elif indexed:
                host_order = np.arange(n, dtype=np.int64)
            order = None if host_order is None else be.to_device(host_order)
            total, seen = 0.0, 0
            if indexed:
                self._engine.reset_step_stats(n, *plan)
            for b, s in enumerate(range(0, n, bs)):
                if indexed:
                    loss = self._step_indexed(X, ys, sw, order[s : s + bs])
                    seen += min(bs, n - s)
                elif order is None:
                    xb, yb, wb = (
                        X[s : s + bs],
                        [t[s : s + bs] for t in ys],
                        None if sw is None else sw[s : s + bs],
                    )
                else:
                    idx = order[s : s + bs]
                    xb, yb, wb = X[idx], [t[idx] for t in ys], None if sw is None else sw[idx]
                if not indexed:
                    loss = self._step(_xp(xb).ascontiguousarray(xb), yb, wb)
                    total += loss * len(xb)
                    seen += len(xb)
                for c in callbacks:
                    c.on_batch_end(b, {"loss": loss})
                if not math.isfinite(loss):
                    self.diverged = Divergence(epoch, self.step_count, b, "loss", loss)
                    break
                if self.stop_training:
                    break
            self.epoch = epoch + 1
            running = None
            if indexed:
                stats = self._engine.step_stats()
                total, seen = stats[0], max(stats[1], 1)
                if self.diverged is None:
                    probe = order[max(seen - bs, 0) : seen]  # the epoch's last batch
                    running = self._running_metrics(
                        X, ys_host, plan, stats, host_order[:seen], probe
                    )
            logs = {"loss": total / max(seen, 1), "lr": self.current_lr()}  # the lr this epoch used
            if self.diverged is None:
                logs = self._epoch_logs(epoch, logs, X, ys_host, val, running)
            if self.diverged is not None:
                logs = self._diverged_logs(logs, val)
            self.history.append(epoch, logs)
            if self.schedule is not None and self.diverged is None:
                # ReduceOnPlateau monitors val_loss (else loss)
                self.schedule.epoch_end(logs.get("val_loss", logs["loss"]))
            for c in callbacks:
                c.on_epoch_end(epoch, logs)
            _report(bar, verbose, epoch, stop, logs, time.perf_counter() - t0, seen)
            if self.stop_training or self.diverged is not None:
                break
        if bar is not None:
            bar.close()
        for c in callbacks:
            c.on_train_end()
        if self.diverged is not None:
            warnings.warn(str(self.diverged), RuntimeWarning, stacklevel=2)
        return self.history

    def _epoch_logs(
        self,
        epoch: int,
        logs: dict,
        X: Any,
        ys: list[np.ndarray],
        val: tuple | None,
        running: Any = None,
    ) -> dict:
        """The epoch's metrics and validation values; sets ``self.diverged`` (and returns the
        logs so far) when the parameters, the outputs or the validation loss are not finite.
        ``running``: a function returning the training metrics of the epoch's steps (CPU),
        else they come from a pass over (X, ys) at the epoch's end."""
        params = self.model.parameters
        if not bool(_xp(params).isfinite(params).all()):
            self.diverged = Divergence(epoch, self.step_count, None, "parameters", math.nan)
            return logs
        try:
            if running is not None:
                if self.metrics:
                    logs.update(running())
            elif self.metrics:
                logs.update(self._metric_values(X, ys, prefix=""))
            if val is not None:
                logs.update(self._evaluate(val[0], val[1], None, prefix="val_"))
        except _NonFiniteOutput:
            self.diverged = Divergence(epoch, self.step_count, None, "outputs", math.nan)
            return logs
        if val is not None and not math.isfinite(logs["val_loss"]):
            self.diverged = Divergence(epoch, self.step_count, None, "val_loss", logs["val_loss"])
        return logs

    def _step_indexed(
        self, X: np.ndarray, ys: list[np.ndarray], sw: np.ndarray | None, idx: np.ndarray
    ) -> float:
        """fit's CPU step on rows ``idx`` of the training set (gathered by the C++ step)."""
        self._cycle_momentum()
        loss = self._engine.step_indexed(X, ys, sw, idx, self.current_lr())
        self._after_step()
        return loss

    def _running_plan(self, ys: list[np.ndarray]) -> tuple[list[int], list[float], list[bool]]:
        """How the C++ step counts each head's running accuracy (Network::StepStats: 0 not
        counted, 1 arg-max against int32 labels, 2 one output column against 0/1 targets at a
        threshold), and whether it keeps the head's outputs for the other metrics (and for an
        accuracy it cannot count: one-hot or multi-label targets)."""
        modes, thresholds, keep = [], [], []
        wants_accuracy = any(fn is M.accuracy for fn in self.metrics.values())
        others = any(fn is not M.accuracy for fn in self.metrics.values())
        for h, (name, t) in enumerate(zip(self.losses, ys, strict=True)):
            k = self.model.n_outputs(h)
            mode, thr = 0, 0.0
            if wants_accuracy and t.dtype == np.int32 and t.ndim == 1 and k >= 2:
                mode = 1
            elif wants_accuracy and t.ndim == 2 and k == 1 and name != "cross_entropy":
                # metrics.accuracy thresholds the prediction at 0.5: the sigmoid of a logit is
                # >= 0.5 exactly when the logit is >= 0; mse predicts the output itself
                mode, thr = 2, 0.0 if name == "binary_cross_entropy" else 0.5
            modes.append(mode)
            thresholds.append(thr)
            keep.append(others or (wants_accuracy and mode == 0))
        return modes, thresholds, keep

    def _running_metrics(
        self,
        X: np.ndarray,
        ys: list[np.ndarray],
        plan: tuple,
        stats: tuple,
        rows: np.ndarray,
        probe: np.ndarray,
    ):
        """The function returning the epoch's training metrics from the C++ step statistics:
        running values over the epoch's steps (each batch's outputs before its update, in
        training mode), as Keras reports them. ``rows``: the training rows the steps saw;
        ``probe``: rows whose outputs under the final parameters are checked for NaN/Inf (the
        divergence check of the epoch's end, on one batch instead of the whole set)."""
        from . import ops

        modes = plan[0]
        _, n_rows, correct, outputs = stats
        whole = len(rows) == len(X)
        xp = _xp(X)

        def metrics() -> dict:
            self.predict(xp.take(X, probe, axis=0))  # _NonFiniteOutput on diverged parameters
            out = {}
            for name, fn in self.metrics.items():
                vals = []
                for h, loss in enumerate(self.losses):
                    if fn is M.accuracy and modes[h]:
                        vals.append(correct[h] / max(n_rows, 1))
                        continue
                    t, o = ys[h], _backend.to_host(outputs[h])
                    if not whole:
                        t, o = t[rows], o[rows]
                    vals.append(fn(t, ops.loss_output(loss, o)))
                out[name] = float(np.mean(vals))
            return out

        return metrics

    def _diverged_logs(self, logs: dict, val: tuple | None) -> dict:
        """The history entry of a diverged epoch: every key of a healthy epoch, NaN except the
        lr (and the batch loss that diverged), so the history's lists stay aligned and no
        callback takes the epoch for an improvement."""
        d = self.diverged
        out = {"loss": d.value if d.what == "loss" else math.nan, "lr": logs["lr"]}
        out.update(dict.fromkeys(self.metrics, math.nan))
        if val is not None:
            out.update(dict.fromkeys(["val_loss", *("val_" + k for k in self.metrics)], math.nan))
        return out

    def _closed_form_epoch(
        self,
        X: np.ndarray,
        ys: list[np.ndarray],
        sw: np.ndarray | None,
        val: tuple | None,
        verbose: int,
    ) -> History:
        """The history entry of a fit whose training was a closed-form solve (no gradient step)."""
        t0 = time.perf_counter()
        callbacks = self._callbacks()
        for c in callbacks:
            c.trainer = self
            c.on_train_begin()
            c.on_epoch_begin(self.epoch)
        logs = self._evaluate(X, ys, sw, prefix="")
        if val is not None:
            logs.update(self._evaluate(val[0], val[1], None, prefix="val_"))
        epoch = self.epoch
        self.epoch += 1
        self.history.append(epoch, logs)
        for c in callbacks:
            c.on_epoch_end(epoch, logs)
            c.on_train_end()
        _report(None, 2 if verbose else 0, epoch, epoch + 1, logs, time.perf_counter() - t0)
        return self.history

    # -- evaluation ------------------------------------------------------------------------
    def _metric_values(self, X: np.ndarray, ys: list[np.ndarray], prefix: str) -> dict:
        if not self.metrics:
            return {}
        preds = self.predict(X)
        preds = [_host(p) for p in (preds if isinstance(preds, list) else [preds])]
        out = {}
        for name, fn in self.metrics.items():
            vals = [fn(t, p) for t, p in zip(ys, preds, strict=True)]
            out[prefix + name] = float(np.mean(vals))
        return out

    def evaluate(self, X: Any, y: Any, sample_weight: Any = None, prefix: str = "") -> dict:
        """Loss (inference mode) and metrics on (X, y).

        Returns:
            ``{"loss": ..., "<metric>": ...}`` (keys prefixed by ``prefix``).
        """
        X = self.model.check_X(X)
        return self._evaluate(
            X, self._targets(y, len(X)), self._sample_weight(sample_weight, len(X)), prefix
        )

    def _evaluate(
        self, X: np.ndarray, ys: list[np.ndarray], sw: np.ndarray | None, prefix: str
    ) -> dict:
        if self.model.device == "cpu":
            # One call: the loss and the outputs of one inference pass in chunks of 8192 rows;
            # the metrics come from those outputs (no second pass).
            X, ys = np.ascontiguousarray(X), [np.ascontiguousarray(t) for t in ys]
            sw = None if sw is None else np.ascontiguousarray(sw)
            loss, _, outs = self._engine.evaluate_chunked(X, ys, sw, 8192, bool(self.metrics))
            out = {prefix + "loss": loss}
            if self.metrics:
                preds = self._outputs_to_predictions(outs)
                for name, fn in self.metrics.items():
                    vals = [fn(t, p) for t, p in zip(ys, preds, strict=True)]
                    out[prefix + name] = float(np.mean(vals))
            return out
        total = 0.0
        bs = 8192
        for s in range(0, len(X), bs):
            loss, _ = self._engine.evaluate(
                _xp(X).ascontiguousarray(X[s : s + bs]),
                [t[s : s + bs] for t in ys],
                None if sw is None else sw[s : s + bs],
            )
            total += loss * len(X[s : s + bs])
        out = {prefix + "loss": total / len(X)}
        out.update(self._metric_values(X, ys, prefix))
        return out

    def predict(self, X: Any) -> np.ndarray | list[np.ndarray]:
        """The model's output passed through each loss's output activation: softmax
        probabilities for cross_entropy, sigmoid for binary_cross_entropy, identity for mse.

        Raises:
            ValueError: bad X, or the outputs are not finite (diverged parameters).
        """
        out = self.model.predict(X)
        res = self._outputs_to_predictions(out if isinstance(out, list) else [out])
        return res[0] if len(res) == 1 else res

    def _outputs_to_predictions(self, outs: list) -> list:
        """Each head's outputs through its loss's output activation; _NonFiniteOutput when an
        output is NaN or Inf."""
        from . import ops

        for h, o in enumerate(outs):
            if not bool(_xp(o).isfinite(o).all()):
                where = "" if len(outs) == 1 else f" of head {h}"
                raise _NonFiniteOutput(
                    f"X: the model's outputs{where} contain NaN or Inf for finite inputs: the "
                    "parameters have diverged (see Trainer.fit on divergence)"
                )
        return [ops.loss_output(name, o) for name, o in zip(self.losses, outs, strict=True)]

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically: the bytes go to a temp file in the same directory,
        are flushed and fsynced, and ``os.replace`` puts it in place (then the directory is
        fsynced), so a process killed at any moment leaves either the previous checkpoint or
        the new one, both loadable. Temp files that killed saves of the same path left behind
        (their process is gone) are removed first.

        Format: an uncompressed ``.npz`` with a JSON ``header`` (architecture, loss, optimizer
        and schedule state, the optimizer/RNG/BatchNorm counters, the global epoch and step,
        the history) and the arrays ``params``, ``buffers`` (BN running statistics) and
        ``opt_state``.

        Raises:
            ValueError: the parameters, buffers or optimizer state contain NaN or Inf (a
                diverged run: :meth:`load` would refuse the file, so the previous checkpoint
                at ``path`` is kept).
        """
        path = os.fspath(path)
        engine = self._engine
        arrays = {
            "params": _host(engine.params()),
            "buffers": _host(engine.buffers()),
            "opt_state": _host(engine.opt_state()),
        }
        for name, a in arrays.items():
            if not np.isfinite(a).all():
                raise ValueError(
                    f"{name}: contains NaN or Inf (the run diverged); the checkpoint {path!r} "
                    "was not written"
                )
        header = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.model.config(),
            "losses": self.losses,
            "loss_weights": self.loss_weights,
            "label_smoothing": self.label_smoothing,
            "smoothing": self.smoothing,
            "half_mse": self.half_mse,
            "adversarial_eps": self.adversarial_eps,
            "metrics": [m for m in self.metrics if m in M.METRICS],
            "optimizer": {**self.optimizer.state_dict(), "state": None, "step": 0},
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "regularizers": [
                {"type": type(r).__name__, **dataclasses.asdict(r)} for r in self.regularizers
            ],
            "step_count": self.step_count,
            "epoch": self.epoch,
            "lr_scale": self.lr_scale,
            **engine.counters(),
            "rbf": None if self._rbf is None else self._rbf.state_dict(),
            "frozen_layers": engine.frozen_layers(),
            "history": {"history": self.history.history, "epoch": self.history.epoch},
        }
        directory = os.path.dirname(os.path.abspath(path))
        base = os.path.basename(path)
        _remove_stale_temp_files(directory, base)
        # The pid in the name tells a later save whether the writer is still alive.
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.{os.getpid()}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                    **arrays,
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> Trainer:
        """Rebuild a Trainer from :meth:`save`'s file; training resumes on the same trajectory.
        ``device`` ("cpu" / "cuda") overrides the device the model was saved from.

        Nothing is unpickled: the header is JSON and the arrays are raw numbers whose npy
        headers are checked (dtype, shape, size) against the model the header describes
        before any array is read, so a crafted file cannot run code or make ``load``
        allocate more than its own size.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a fusedmlp checkpoint, is truncated or damaged
                (bit flips fail the zip's CRC-32), or holds invalid state (NaN/Inf arrays,
                negative counters, a non-finite ``lr_scale``); the message names ``path``.
        """
        path = os.fspath(path)
        # A checkpoint is untrusted input: whatever a damaged or crafted file makes the zip
        # reader or the constructors raise (BadZipFile, NotImplementedError for an unknown zip
        # version, KeyError/TypeError for a missing or mistyped header field, ...) is reported
        # as one ValueError naming the file. MemoryError is left as it is.
        try:
            zf = zipfile.ZipFile(path)
        except (FileNotFoundError, MemoryError):
            raise
        except Exception as exc:
            raise ValueError(
                f"path: {path!r} is not a readable fusedmlp checkpoint ({exc})"
            ) from exc
        with zf:
            try:
                return cls._load_from_zip(zf, path, device)
            except MemoryError:
                raise
            except _CheckpointError as exc:
                raise ValueError(f"path: {path!r} {exc}") from exc.__cause__
            except (KeyError, TypeError) as exc:
                raise ValueError(
                    f"path: {path!r} is a damaged fusedmlp checkpoint (bad or missing {exc})"
                ) from exc
            except Exception as exc:
                raise ValueError(
                    f"path: {path!r} is a damaged fusedmlp checkpoint ({exc})"
                ) from exc

    @classmethod
    def _load_from_zip(cls, zf: zipfile.ZipFile, path: str, device: str | None) -> Trainer:
        infos = _checkpoint_members(zf, os.path.getsize(path))
        raw = _read_npy(zf, infos["header"], np.dtype(np.uint8), None, _HEADER_LIMIT)
        try:
            header = json.loads(raw.tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise _CheckpointError(f"has an unreadable header ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
            raise _CheckpointError("is not a fusedmlp checkpoint (foreign header)")
        if header.get("version") != CHECKPOINT_VERSION:
            raise _CheckpointError(
                f"has checkpoint version {header.get('version')!r}, which is not supported "
                f"(this fusedmlp reads version {CHECKPOINT_VERSION})"
            )
        counters = _checked_counters(header)
        model = Sequential.from_config(header["model"], device=device)
        t = cls(
            model,
            loss=header["losses"],
            optimizer=optim_mod.from_state_dict(header["optimizer"]),
            schedule=None if header["schedule"] is None else S.from_state_dict(header["schedule"]),
            regularizers=[_regularizer(d) for d in header["regularizers"]],
            metrics=header["metrics"],
            loss_weights=header["loss_weights"],
            label_smoothing=header["label_smoothing"],
            smoothing=header["smoothing"],
            half_mse=header["half_mse"],
            adversarial_eps=header["adversarial_eps"],
            **RBFScheme.init_args(header.get("rbf")),
        )
        engine = model._engine
        for name, dst in (
            ("params", engine.params()),
            ("buffers", engine.buffers()),
            ("opt_state", engine.opt_state()),
        ):
            src = _read_npy(zf, infos[name], model.dtype, tuple(dst.shape), None)
            if not np.isfinite(src).all():
                raise _CheckpointError(f"holds invalid state: {name} contains NaN or Inf")
            model._assign(dst, src)
        engine.set_counters(
            opt_step=counters["opt_step"],
            rng_step=counters["rng_step"],
            bn_updates=counters["bn_updates"],
        )
        engine.set_frozen_layers(header.get("frozen_layers", []))
        if t._rbf is not None:
            t._rbf.load_state_dict(header.get("rbf"))
        t.step_count, t.epoch = counters["step_count"], counters["epoch"]
        t.lr_scale = counters["lr_scale"]
        t.history.history = {
            str(k): [float(x) for x in val] for k, val in header["history"]["history"].items()
        }
        t.history.epoch = [int(e) for e in header["history"]["epoch"]]
        return t


# Checkpoint reading limits. The JSON header holds the configuration and the history (a few
# numbers per epoch): 64 MiB is far beyond any real one and bounds what a crafted file costs.
_HEADER_LIMIT = 64 << 20
_MEMBERS = ("header", "params", "buffers", "opt_state")


class _CheckpointError(Exception):
    """A checkpoint problem; ``Trainer.load`` reports it as a ValueError naming the path."""


def _checkpoint_members(zf: zipfile.ZipFile, file_size: int) -> dict[str, zipfile.ZipInfo]:
    """The zip entries of a checkpoint, checked before anything is read: exactly the four
    members, each stored uncompressed (as ``np.savez`` writes them) so that its declared size
    is bytes actually present in the file, which bounds every later allocation (a zip bomb
    declares small compressed members that inflate to gigabytes)."""
    infos = zf.infolist()
    names = [i.filename for i in infos]
    expected = sorted(m + ".npy" for m in _MEMBERS)
    if "header.npy" not in names or sorted(names) != expected:
        raise _CheckpointError(
            f"is not a fusedmlp checkpoint (members {sorted(names)}, expected {expected})"
        )
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _CheckpointError(
                f"is not a fusedmlp checkpoint: member {info.filename!r} is compressed "
                f"(declares {info.file_size} bytes in {info.compress_size}); Trainer.save "
                "stores its arrays uncompressed"
            )
        total += info.file_size
    if total > file_size:
        raise _CheckpointError(
            f"is truncated or damaged: its members declare {total} bytes, the file has {file_size}"
        )
    return {m: zf.getinfo(m + ".npy") for m in _MEMBERS}


def _read_npy(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    dtype: np.dtype,
    shape: tuple[int, ...] | None,
    limit: int | None,
) -> np.ndarray:
    """A 1-d array member read without pickle: its npy header (dtype, order, shape) is
    checked against what the model needs (``shape``; None: any 1-d length up to ``limit``
    bytes) and against the member's size before the data is read. The zip's CRC-32 is
    verified as the last byte is read (bit flips)."""
    name = info.filename[: -len(".npy")]
    with zf.open(info) as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f)
            elif major in (2, 3):
                got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {major}")
        except (ValueError, SyntaxError, TypeError) as exc:
            raise _CheckpointError(f"has a damaged {name} array header ({exc})") from exc
        if got_dtype != dtype or fortran or len(got_shape) != 1:
            raise _CheckpointError(
                f"has a {name} array of dtype {got_dtype}, shape {got_shape}"
                f"{' (Fortran order)' if fortran else ''}; expected a 1-d {dtype} array"
            )
        if shape is not None and got_shape != shape:
            raise _CheckpointError(
                f"does not match its architecture: {name} has shape {got_shape}, the model "
                f"needs {shape}"
            )
        nbytes = got_shape[0] * dtype.itemsize
        if limit is not None and nbytes > limit:
            raise _CheckpointError(f"has a {name} of {nbytes} bytes (at most {limit} expected)")
        if f.tell() + nbytes != info.file_size:
            raise _CheckpointError(
                f"is damaged: {name} declares {nbytes} data bytes, the member holds "
                f"{info.file_size - f.tell()}"
            )
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):
            raise _CheckpointError(f"is truncated: {name} is shorter than it declares")
    return np.frombuffer(data, dtype=dtype).copy()


def _checked_counters(header: dict) -> dict:
    """The header's counters, validated: a negative step or a NaN scale would make the resumed
    run silently wrong (a bias correction at a step before the first, a NaN learning rate)."""
    out = {}
    try:
        for key in ("step_count", "epoch", "opt_step", "rng_step", "bn_updates"):
            out[key] = v.integer(key, header[key], low=0)
        out["lr_scale"] = v.real("lr_scale", header["lr_scale"], 0.0)
    except (TypeError, ValueError) as exc:
        raise _CheckpointError(f"holds invalid state: {exc}") from exc
    return out


def _remove_stale_temp_files(directory: str, base: str) -> None:
    """Delete the temp files of earlier saves of ``base`` whose process is gone (a killed
    save). A temp file of a live process (a save in progress, in this process or another)
    is left alone. Best effort: a file that cannot be removed does not stop the save."""
    if os.name != "posix":  # no portable liveness test for the pid in the name
        return
    prefix = f".{base}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        # exactly .<base>.<pid>.<random>.tmp (mkstemp's random part has no dot): the temp
        # files of a sibling such as "<base>.7" have more parts and are not ours
        parts = name[len(prefix) : -len(".tmp")].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or not a pid we can test)
    return True


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX: the directory entry is data of the directory)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _host(x):
    """A NumPy array of a host or device array (checkpoints and metrics work on the host)."""
    if v.is_device_array(x):
        from ._backend import to_host

        return to_host(x)
    return x


def _sequence(name: str, value: Any, what: str) -> list:
    """``value`` (None, a list or a tuple) as a list; a single object or a string is a
    TypeError naming the argument (``callbacks=EarlyStopping()`` is a common slip)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name}: expected a list of {what}, got {type(value).__name__}")
    return list(value)


def _regularizer(d: dict):
    d = dict(d)
    cls = {c.__name__: c for c in R.REGULARIZERS}.get(d.pop("type", None))
    if cls is None:
        raise ValueError(f"unknown regularizer {d!r}")
    return cls(**d)


def _progress(verbose: int, epochs: int):
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, unit="epoch", file=sys.stdout, leave=True)


def _report(
    bar, verbose: int, epoch: int, total: int, logs: dict, seconds: float, samples: int = 0
) -> None:
    text = "  ".join(f"{k} {val:.4g}" for k, val in logs.items())
    if samples and seconds > 0:  # throughput of the epoch: training rows per second
        text += f"  {samples / seconds:,.0f} samples/s"
    if bar is not None:
        bar.set_postfix_str(text)
        bar.update(1)
    elif verbose:
        print(f"epoch {epoch + 1}/{total}  {text}  ({seconds:.2f} s)")
