"""Trainer callbacks (Keras habits): hooks on_train_begin/end, on_epoch_begin/end,
on_batch_end. ``trainer.stop_training = True`` ends ``fit`` after the current epoch.

Example:
    >>> import fusedmlp as fm
    >>> cbs = [fm.callbacks.EarlyStopping(patience=5, restore_best_weights=True)]
"""

from __future__ import annotations

import math
import os

import numpy as np

from . import _validate as v
from ._engine import array_module


class Callback:
    """Base class: override the hooks you need. ``self.trainer`` is set by ``fit``."""

    trainer = None

    def on_train_begin(self, logs=None): ...

    def on_train_end(self, logs=None): ...

    def on_epoch_begin(self, epoch, logs=None): ...

    def on_epoch_end(self, epoch, logs=None): ...

    def on_batch_end(self, batch, logs=None): ...

    # The Trainer's step protocol (private): callbacks that change how the batches are trained
    # (RBF learning schemes, adversarial training) override these.
    _plain_steps = True  # False: every step goes through _batch (no fused fast path)

    def _attach(self, trainer) -> None:
        """Called by the Trainer's constructor: check the callback against the trainer."""

    def _fit_begin(self, X, ys, sw, epochs) -> bool:
        """Before ``fit``'s first epoch, with its training data; True when the training was
        solved in closed form (no epoch left to run)."""
        return False

    def _batch(self, X, ys, sw):
        """Before each step: None (train on the batch as given) or the (X, ys, sw) to train on."""
        return None


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in ("acc", "auc")) else "min"


class EarlyStopping(Callback):
    """Stop when the monitored value stops improving (deck 002, Algorithm 7.1).

    Every epoch the monitored value is compared with the best so far; ``patience`` epochs
    without an improvement larger than ``min_delta`` stop training. ``best_step`` and
    ``best_epoch`` record where the best value was seen (the i* of Algorithm 7.1);
    ``restore_best_weights`` puts the parameters back to that point at the end.

    Args:
        monitor: a History key ("val_loss", "loss", "val_accuracy", ...).
        patience: epochs without improvement before stopping (p in Alg. 7.1).
        min_delta: minimum change that counts as an improvement.
        mode: "min", "max" or "auto" (max for accuracy/auc).
        restore_best_weights: restore the best parameters (theta* of Alg. 7.1) at the end,
            also when ``fit`` stops on a diverging loss. A NaN/Inf monitored value never
            counts as an improvement.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ):
        self.monitor = monitor
        self.patience = v.integer("patience", patience, low=0)
        self.min_delta = v.real("min_delta", min_delta, 0.0)
        self.mode = _monitor_mode(monitor, mode)
        self.restore_best_weights = bool(restore_best_weights)
        self.best = None
        self.best_epoch = None
        self.best_step = None
        self.stopped_epoch = None
        self._wait = 0
        self._best_weights = None

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_step, self.stopped_epoch = None, None, None, None
        self._wait = 0
        self._best_weights = None

    def _improved(self, value: float) -> bool:
        # A NaN/Inf value (a diverged epoch, see Trainer.fit) is never the best one.
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"monitor: {self.monitor!r} is not in the logs ({', '.join(sorted(logs))}); "
                "use validation data for val_* keys"
            )
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.best_step = value, epoch, self.trainer.step_count
            self._wait = 0
            if self.restore_best_weights:
                self._best_weights = self.trainer.model._engine.snapshot("params", "buffers")
        else:
            self._wait += 1
            if self._wait >= self.patience:
                self.stopped_epoch = epoch
                self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self._best_weights is not None:
            self.trainer.model._engine.restore(self._best_weights)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when the monitored value has not improved for
    ``patience`` epochs (deck 003: "halve on plateau" is factor 0.5).

    Args:
        monitor, mode, min_delta: as in :class:`EarlyStopping`.
        factor: in (0, 1).
        patience: epochs without improvement.
        cooldown: epochs to wait after a reduction.
        min_lr: lower bound.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.5,
        patience: int = 5,
        min_delta: float = 0.0,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ):
        self.monitor = monitor
        self.factor = v.real("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = v.integer("patience", patience, low=0)
        self.min_delta = v.real("min_delta", min_delta, 0.0)
        self.cooldown = v.integer("cooldown", cooldown, low=0)
        self.min_lr = v.real("min_lr", min_lr, 0.0)
        self.mode = _monitor_mode(monitor, mode)
        self.best = None
        self._wait = 0
        self._cool = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"monitor: {self.monitor!r} is not in the logs")
        value = float(logs[self.monitor])
        if not math.isfinite(value):  # a diverged epoch (Trainer.fit stops there)
            return
        better = self.best is None or (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if self._cool > 0:
            self._cool -= 1
        if better:
            self.best, self._wait = value, 0
            return
        self._wait += 1
        if self._wait >= self.patience and self._cool == 0:
            self.trainer.lr_scale *= self.factor
            if self.trainer.current_lr() < self.min_lr and self.trainer.base_lr() > 0:
                self.trainer.lr_scale = self.min_lr / self.trainer.base_lr()
            self._wait, self._cool = 0, self.cooldown


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch from ``fn(epoch, lr) -> lr``."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError("fn: expected a callable (epoch, lr) -> lr")
        self.fn = fn

    def on_epoch_begin(self, epoch, logs=None):
        t = self.trainer
        lr = v.real("lr", float(self.fn(epoch, t.current_lr())), 0.0)
        if t.base_lr() > 0:
            t.lr_scale = lr / t.base_lr()
        elif t.schedule is None:
            # A zero base lr (a warm-up from 0) cannot be scaled: the callback's lr becomes
            # the optimizer's, as Keras sets optimizer.learning_rate.
            t.optimizer.lr, t.lr_scale = lr, 1.0
        elif lr != 0:
            raise ValueError(
                f"lr: the schedule's lr is 0 at epoch {epoch}, so a LearningRateScheduler "
                f"cannot scale it to {lr}; use one of the two"
            )


class ModelCheckpoint(Callback):
    """Save the trainer (atomically) after each epoch, or only when the monitored value
    improves (``save_best_only``). ``path`` may contain ``{epoch}``. An epoch on which
    ``fit`` found the run diverging is never saved: the previous checkpoint stays."""

    def __init__(
        self, path: str, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto"
    ):
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _monitor_mode(monitor, mode)
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.trainer.diverged is not None:
            return
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"monitor: {self.monitor!r} is not in the logs")
            if not math.isfinite(value):
                return
            if self.best is not None and not (
                value < self.best if self.mode == "min" else value > self.best
            ):
                return
            self.best = value
        self.trainer.save(self.path.format(epoch=epoch + 1))


class Adversarial(Callback):
    """FGSM adversarial training (deck 002): each batch is trained together with
    x + eps * sign(grad_x L) (equal weights), the input gradient coming from a forward and
    backward pass on the batch before the step. ``Trainer(adversarial_eps=eps)`` installs it.

    Args:
        eps: the perturbation size (> 0).

    Example:
        >>> import fusedmlp as fm
        >>> fm.callbacks.Adversarial(0.05).eps
        0.05
    """

    _plain_steps = False

    def __init__(self, eps: float):
        self.eps = v.real("adversarial_eps", eps, 0.0, low_open=True)

    def _attach(self, trainer) -> None:
        self.trainer = trainer

    def _batch(self, X, ys, sw):
        model = self.trainer.model
        _, dX, _ = model._engine.compute_gradients(X, ys, sw, True)
        xp = array_module(dX)
        X = xp.concatenate([X, X + self.eps * xp.sign(dX)]).astype(model.dtype)
        ys = [array_module(t).concatenate([t, t]) for t in ys]
        sw = None if sw is None else array_module(sw).concatenate([sw, sw])
        return X, ys, sw


class TerminateOnNaN(Callback):
    """Stop when a batch loss is NaN or Inf, with a message naming the step. ``Trainer.fit``
    already stops there by itself (see its divergence notes); this callback keeps the message
    (``message``, printed) and works for loops that call ``on_batch_end`` themselves. The fused
    step never applies an update whose loss is not finite, but the update before it may have
    made the weights huge: EarlyStopping(restore_best_weights=True) keeps the best ones."""

    def __init__(self):
        self.message = None

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.message = (
                f"TerminateOnNaN: loss is {loss} at step {self.trainer.step_count} "
                f"(epoch {self.trainer.epoch + 1}, batch {batch}); training stopped, "
                "the update of this step was skipped"
            )
            print(self.message)
            self.trainer.stop_training = True


class OptunaPruning(Callback):
    """Report the monitored value to an Optuna trial after each epoch and stop a trial that
    the study's pruner judges hopeless (the ``optuna`` extra; Optuna is imported here, not by
    ``import fusedmlp``).

    Each epoch ``trial.report(value, step=epoch)`` records the value (a NaN of a diverged
    epoch is reported as it is; Optuna's pruners prune on it); when ``trial.should_prune()``
    says so, training stops after that epoch and ``on_train_end`` raises
    ``optuna.TrialPruned``, which the study records as a pruned trial. It raises at the end of
    training, not inside the epoch, so the callbacks listed *before* it (EarlyStopping with
    ``restore_best_weights``, ...) still finish; put it last in ``callbacks``.

    Args:
        trial: an ``optuna.trial.Trial``.
        monitor: a History key ("val_loss", "loss", "val_accuracy", ...); the study's
            direction must match it ("minimize" for losses).

    Example:
        >>> import fusedmlp as fm
        >>> def objective(trial):  # doctest: +SKIP
        ...     model = fm.MLP(n_in=64, hidden=[trial.suggest_int("width", 16, 128)], n_out=10)
        ...     cb = fm.callbacks.OptunaPruning(trial, monitor="val_loss")
        ...     trainer = fm.Trainer(model, loss="cross_entropy", callbacks=[cb])
        ...     hist = trainer.fit(X, y, epochs=20, validation_split=0.2)
        ...     return hist.history["val_loss"][-1]
    """

    def __init__(self, trial, monitor: str = "val_loss"):
        try:
            import optuna
        except ImportError as exc:
            raise ImportError(
                "OptunaPruning needs the optuna package: pip install 'fusedmlp[optuna]'"
            ) from exc
        if not isinstance(trial, optuna.trial.BaseTrial):
            raise TypeError(f"trial: expected an optuna Trial, got {type(trial).__name__}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor: expected a History key (str), got {monitor!r}")
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch = None
        self._pruned_error = optuna.TrialPruned

    def on_train_begin(self, logs=None):
        self.pruned_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"monitor: {self.monitor!r} is not in the logs ({', '.join(sorted(logs))}); "
                "use validation data for val_* keys"
            )
        self.trial.report(float(logs[self.monitor]), step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.pruned_epoch is not None:
            raise self._pruned_error(f"trial pruned at epoch {self.pruned_epoch}")
