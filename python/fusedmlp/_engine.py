"""The engine: the one object that drives a model's C++ Network for training (issue 17).

Every training front (the Trainer, the scikit-learn estimators, the callbacks, the
diagnostics) configures the loss heads and the optimizer, runs the fused step, sets the
momentum and takes or restores snapshots of the Network's state through ``model._engine``,
never through the Network itself, so each of these rules is written once here.

The skip rule lives in C++ (csrc/network/backend.h): a step whose loss or gradient is not
finite leaves the parameters, the optimizer state and ``opt_step`` as they were on both
backends; nothing here repairs a counter after a skipped step.

Snapshots name the parts they hold: the arenas ``params``, ``grads``, ``buffers`` (BatchNorm
running statistics, frozen layers' parameters) and ``opt_state``, the counters ``opt_step``,
``rng_step`` and ``bn_updates``, and the flag ``record_layer_grads``.

Devices: the Network is the raw binding object on both, ``_core.Network32/64`` or
``_cuda.CudaNetwork32/64``, with one calling convention (csrc/bindings/network_common.h):
outputs preallocated, arenas handed back as views, ``stream=`` last. The engine calls it the same
way on both through the model's backend (``fusedmlp._backend``): inputs moved with
``be.to_device``, outputs allocated with ``be.empty``, views wrapped with ``be.wrap``, every call
queued on ``be.stream()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _backend
from . import regularizers as R
from ._validate import is_device_array

ARENAS = ("params", "grads", "buffers", "opt_state")
COUNTERS = ("opt_step", "rng_step", "bn_updates")
_FLAGS = ("record_layer_grads",)
DECAY_SCOPES = {"weights": 0, "all": 1, "none": 2}  # Network::set_decay_scope


def array_module(a: Any):
    """The array module of ``a``: NumPy, or CuPy for device arrays."""
    if is_device_array(a):
        from ._backend.cuda import _cupy

        return _cupy()
    return np


class Engine:
    """Drives one Network (``_core.Network32/64`` or ``_cuda.CudaNetwork32/64``)."""

    def __init__(self, net: Any, device: str, dtype: Any):
        self._net = net
        self.device = device
        self.dtype = np.dtype(dtype)
        self._be = _backend.get(device)
        # The heads' output widths, fixed at construction (outputs are preallocated per call).
        self._widths = [net.n_outputs(h) for h in range(net.n_heads)]
        self._array_type = self._be.xp.ndarray  # what the binding reads in place
        # A pass-through layer's output (dropout, noise at inference) is the forward pass's
        # input itself: layer_output() reads it, so the engine keeps that array alive.
        self._last_x = None

    # -- arrays ------------------------------------------------------------------------------
    def _x(self, X: Any) -> Any:
        """X on the Network's device. An array already there is passed as it is (a silent
        cast would hide a copy per call: the binding rejects another dtype, naming X); an array
        of the other device is copied anyway, and cast to the network's dtype then."""
        if type(X) is self._array_type and X.flags.c_contiguous:  # the per-step fast path
            return X
        native = is_device_array(X) == (self.device == "cuda")
        return self._be.to_device(X, None if native else self.dtype)

    def _ys(self, ys: Sequence[Any]) -> list:
        """Per-head targets on the device: class labels as int32, dense targets in the
        network's dtype (no copy when they already are)."""
        return [self._target(t, None) for t in ys]

    def _target(self, t: Any, dtype: Any) -> Any:
        """``t`` on the device in ``dtype`` (None: int32 for integer labels, else the network's
        dtype), not copied when it already is."""
        if type(t) is not self._array_type or not t.flags.c_contiguous:
            t = self._be.to_device(t)
        if dtype is None:
            dtype = np.int32 if t.dtype.kind in "iu" else self.dtype
        return t if t.dtype == dtype else t.astype(dtype)

    def _sw(self, sw: Any) -> Any:
        return None if sw is None else self._target(sw, self.dtype)

    def _outputs(self, rows: int) -> list:
        """One preallocated (rows, n_outputs(h)) output per head."""
        return [self._be.empty((rows, k), self.dtype) for k in self._widths]

    def _host_matrix(self, view: Any) -> np.ndarray:
        # A NumPy copy of a (rows, width) view of the Network's workspace (the next call
        # overwrites it): layer outputs and gradients leave the engine on the host.
        return np.array(self._be.to_host(self._be.wrap(view)), copy=True)

    # -- configuration -----------------------------------------------------------------------
    def set_losses(
        self,
        codes: Sequence[int],
        weights: Sequence[float],
        label_smoothing: float,
        uniform: bool,
        half_mse: bool,
    ) -> None:
        """Head h's loss (a ``_losses._CODES`` code) with its weight in the total, the label
        smoothing (``uniform``: eps/k, else the deck's eps/(k-1)) and the 1/2 MSE convention."""
        for h, (code, weight) in enumerate(zip(codes, weights, strict=True)):
            self._net.set_head_loss(h, code, weight, label_smoothing, uniform, half_mse)

    def configure(
        self,
        optimizer: Any,
        regularizers: Sequence[Any] = (),
        *,
        weight_decay: float = 0.0,
        clip_value: float | None = None,
        clip_norm: float | None = None,
        max_norm: float = 0.0,
        decay: str | None = None,
        keep_state: bool = False,
    ) -> None:
        """Write ``optimizer`` (a ``fusedmlp.optim`` optimizer) with the fused regularizers
        into the Network.

        Args:
            weight_decay: an L2 coefficient added to the optimizer's (the estimators' alpha).
            clip_value: overrides the optimizer's element-wise clip.
            clip_norm: the global gradient-norm clip; None: the optimizer's ``clip_norm``,
                or the last ``ClipNorm`` regularizer's.
            max_norm: the model's per-unit max-norm radius (0: the optimizer's).
            decay: the parameters decay applies to ("weights", "all", "none"); None: the
                optimizer's.
            keep_state: carry the optimizer state and ``opt_step`` across the change (else
                the optimizer starts afresh).
        """
        cfg = optimizer.config()
        R.configure(cfg, regularizers)
        cfg.weight_decay += weight_decay
        if clip_value is not None:
            cfg.clip_value = float(clip_value)
        if max_norm:
            cfg.max_norm = float(max_norm)
        cfg.validate()
        if clip_norm is None:
            clip_norm = getattr(optimizer.hyper, "clip_norm", None) or 0.0
            for r in regularizers:
                if isinstance(r, R.ClipNorm):
                    clip_norm = r.max_norm
        if keep_state:
            saved = self.snapshot("opt_state", "opt_step")
        self._net.set_optimizer(cfg)
        if keep_state:
            self.restore(saved)
        self._net.set_decay_scope(DECAY_SCOPES[optimizer.hyper.decay if decay is None else decay])
        self._net.set_clip_norm(float(clip_norm or 0.0))

    def set_momentum(self, momentum: float) -> None:
        """The momentum coefficient of the next steps (a schedule's cycled momentum)."""
        self._net.set_momentum(momentum)

    @property
    def record_layer_grads(self) -> bool:
        return bool(self._net.record_layer_grads)

    @record_layer_grads.setter
    def record_layer_grads(self, on: bool) -> None:
        self._net.record_layer_grads = on

    def frozen_layers(self) -> list[int]:
        """The indices of the layers whose parameters do not train."""
        return [li for li in range(self._net.n_layers) if not self._net.layer_trainable(li)]

    def set_frozen_layers(self, frozen: Sequence[int]) -> None:
        """Freeze exactly the layers ``frozen`` (every other layer trains)."""
        frozen = set(frozen)
        for li in range(self._net.n_layers):
            self._net.set_layer_trainable(li, li not in frozen)

    def param_info(self) -> list:
        """(layer, name, offset, rows, cols, trainable) of every parameter tensor."""
        return self._net.param_info()

    # -- steps -------------------------------------------------------------------------------
    def step(self, X: Any, ys: list, sw: Any, lr: float, sync: bool = True) -> Any:
        """One fused step (forward, loss, backward, regularization, update); the batch loss
        before the update, NaN when the step was skipped. ``sync=False`` (CUDA): nothing waits
        for the device; the loss is a 0-d device copy of the Network's loss slot."""
        be = self._be
        loss = self._net.train_step(
            self._x(X), self._ys(ys), self._sw(sw), lr, sync, stream=be.stream()
        )
        if sync or self.device != "cuda":  # the host step always answers with its loss
            return float(loss)
        return be.wrap(self._net.loss_slot()).copy().reshape(())

    def step_indexed(self, X: Any, ys: list, sw: Any, idx: Any, lr: float) -> float:
        """The step on rows ``idx`` (int64) of the whole training set (gathered in C++)."""
        be = self._be
        idx = be.to_device(idx, np.int64)
        return float(
            self._net.train_step_indexed(
                self._x(X), self._ys(ys), self._sw(sw), idx, lr, stream=be.stream()
            )
        )

    def reset_step_stats(self, n: int, modes: list, thresholds: list, keep: list) -> None:
        """Start counting the running metrics of ``step_indexed`` (Network::StepStats)."""
        self._net.reset_step_stats(n, modes, thresholds, keep, stream=self._be.stream())

    def step_stats(self) -> tuple:
        """(loss sum, rows, correct per head, outputs per head: views of the kept outputs or
        None) since ``reset_step_stats``."""
        loss_sum, rows, correct, outs = self._net.step_stats(stream=self._be.stream())
        return loss_sum, rows, correct, [None if o is None else self._be.wrap(o) for o in outs]

    def compute_gradients(self, X: Any, ys: list, sw: Any = None, want_dx: bool = False):
        """Forward + backward without an update: (loss, dL/dX or None, per-head losses); the
        gradients land in ``grads()``."""
        X = self._x(X)
        dX = self._be.empty(X.shape, self.dtype) if want_dx else None
        loss, per_head = self._net.compute_gradients(
            X, self._ys(ys), self._sw(sw), dX, stream=self._be.stream()
        )
        return loss, dX, per_head

    def apply_gradients(self, lr: float) -> bool:
        """The fused update alone on the gradients in ``grads()`` (after
        :meth:`compute_gradients`, maybe modified in between: the data-parallel all-reduce):
        the global-norm clip computed on that arena, the optimizer, max-norm. The skip rule
        holds: a non-finite gradient leaves the parameters, the optimizer state and its step
        as they were. Returns whether the update ran; the RNG step advances either way."""
        return bool(self._net.apply_gradients(lr, stream=self._be.stream()))

    # -- inference ---------------------------------------------------------------------------
    def forward(self, X: Any, training: bool = False) -> list:
        """Every head's output on ``X`` (one call; inference mode unless ``training``)."""
        X = self._x(X)
        outs = self._outputs(X.shape[0])
        self._net.forward(X, outs, training, stream=self._be.stream())
        self._last_x = X
        return outs

    def predict(self, X: Any, batch_size: int) -> list:
        """Every head's inference-mode output on ``X``, computed in chunks of ``batch_size``
        rows written straight into the outputs (one call)."""
        X = self._x(X)
        outs = self._outputs(X.shape[0])
        self._net.predict(X, outs, batch_size, stream=self._be.stream())
        self._last_x = None  # the last chunk's input is a view into X: not kept
        return outs

    def evaluate(self, X: Any, ys: list, sw: Any = None):
        """(loss, per-head losses) in inference mode."""
        return self._net.evaluate(self._x(X), self._ys(ys), self._sw(sw), stream=self._be.stream())

    def evaluate_chunked(self, X: Any, ys: list, sw: Any, chunk: int, keep_outputs: bool):
        """(loss, per-head losses, outputs per head or None) over ``X`` in chunks of ``chunk``
        rows, in one call."""
        X = self._x(X)
        outs = self._outputs(X.shape[0]) if keep_outputs else None
        loss, per_head = self._net.evaluate_chunked(
            X, self._ys(ys), self._sw(sw), chunk, outs, stream=self._be.stream()
        )
        return loss, per_head, outs

    def layer_output(self, layer: int) -> np.ndarray:
        """A host copy of layer ``layer``'s output in the last forward pass."""
        return self._host_matrix(self._net.layer_output(layer))

    def layer_grad(self, layer: int) -> np.ndarray:
        """A host copy of the recorded gradient w.r.t. layer ``layer``'s output."""
        return self._host_matrix(self._net.layer_grad(layer))

    # -- state -------------------------------------------------------------------------------
    def params(self):
        """The parameter arena: a view (NumPy on the CPU, CuPy on the GPU)."""
        return self._be.wrap(self._net.params())

    def grads(self):
        return self._be.wrap(self._net.grads())

    def buffers(self):
        return self._be.wrap(self._net.buffers())

    def opt_state(self):
        return self._be.wrap(self._net.opt_state())

    def counters(self) -> dict[str, int]:
        return {name: int(getattr(self._net, name)) for name in COUNTERS}

    def set_counters(self, **counters: int) -> None:
        for name, value in counters.items():
            if name not in COUNTERS:
                raise ValueError(f"counters: expected some of {COUNTERS}, got {name!r}")
            setattr(self._net, name, value)

    def snapshot(self, *parts: str) -> dict[str, Any]:
        """Copies of the named parts of the state (all arenas and counters when none is
        named), for :meth:`restore`."""
        out: dict[str, Any] = {}
        for name in parts or ARENAS + COUNTERS:
            if name in ARENAS:
                out[name] = getattr(self, name)().copy()
            elif name in COUNTERS or name in _FLAGS:
                out[name] = getattr(self._net, name)
            else:
                raise ValueError(
                    f"parts: expected some of {ARENAS + COUNTERS + _FLAGS}, got {name!r}"
                )
        return out

    def restore(self, snap: dict[str, Any]) -> None:
        """Put back what :meth:`snapshot` took (arenas copied in place)."""
        for name, value in snap.items():
            if name in ARENAS:
                getattr(self, name)()[:] = value
            else:
                setattr(self._net, name, value)

    @contextlib.contextmanager
    def preserved(self, *parts: str) -> Iterator[None]:
        """The named parts restored on leaving the block (also on an exception)."""
        snap = self.snapshot(*parts)
        try:
            yield
        finally:
            self.restore(snap)
