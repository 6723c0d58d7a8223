"""The GPU Network behind ``device="cuda"`` models: an adapter over ``_cuda.CudaNetwork32/64``
with the method names of the CPU Network (``_core.Network32/64``), so the model, the Trainer
and the estimators drive either backend the same way.

Arrays: the arenas (``params()``, ``grads()``, ``buffers()``, ``opt_state()``) are CuPy views
of the device memory, owned by this object (no copies). Inputs may be CuPy arrays, any
``__cuda_array_interface__`` exporter, DLPack GPU tensors (PyTorch, JAX) - all used without a
copy - or NumPy arrays, copied to the device. Every call runs on CuPy's current stream.
``layer_output`` / ``layer_grad`` return host (NumPy) copies, as the CPU Network does, for the
data-dependent initializers and the RBF solvers that work on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend.cuda import _cupy, to_cupy, to_device, to_host  # noqa: F401
from ._backend.cuda import stream as _stream
from ._loader import _cuda
from ._validate import is_device_array

# Plan and configuration calls forwarded unchanged to the C++ object.
_FORWARD = {
    "n_in",
    "n_heads",
    "n_layers",
    "n_outputs",
    "param_info",
    "set_optimizer",
    "set_head_loss",
    "set_clip_norm",
    "set_layer_trainable",
    "layer_trainable",
    "set_momentum",
    "set_decay_scope",
    "opt_step",
    "rng_step",
    "bn_updates",
    "seed",
    "device",
    "use_graphs",
    "n_graphs",
    "record_layer_grads",
    "precision",
}
_SETTABLE = {"opt_step", "rng_step", "bn_updates", "use_graphs", "record_layer_grads", "precision"}


class CudaNet:
    """A ``_cuda.CudaNetwork{32,64}`` with the CPU Network's interface (see module doc)."""

    def __init__(self, n_in: int, trunk, heads, seed: int, dtype):
        if _cuda is None or not hasattr(_cuda, "CudaNetwork32"):
            raise RuntimeError("fusedmlp was built without the CUDA Network")
        self._cp = _cupy()
        self._dtype = np.dtype(dtype)
        cls = _cuda.CudaNetwork32 if self._dtype == np.float32 else _cuda.CudaNetwork64
        object.__setattr__(self, "_net", cls(n_in, trunk, heads, seed))

    # -- forwarding ---------------------------------------------------------------------
    def __getattr__(self, name: str):
        if name in _FORWARD:
            return getattr(self._net, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value) -> None:
        if name in _SETTABLE:
            setattr(self._net, name, value)
        else:
            object.__setattr__(self, name, value)

    # -- arenas -------------------------------------------------------------------------
    def _view(self, ptr_len: tuple[int, int], dtype=None):
        cp = self._cp
        ptr, n = ptr_len
        dt = self._dtype if dtype is None else np.dtype(dtype)
        if n == 0:
            return cp.zeros(0, dtype=dt)
        mem = cp.cuda.UnownedMemory(int(ptr), int(n) * dt.itemsize, self, self._net.device)
        return cp.ndarray((int(n),), dtype=dt, memptr=cp.cuda.MemoryPointer(mem, 0))

    def params(self):
        return self._view(self._net.params())

    def grads(self):
        return self._view(self._net.grads())

    def buffers(self):
        return self._view(self._net.buffers())

    def opt_state(self):
        return self._view(self._net.opt_state())

    def loss_slot(self):
        """The last step's total loss as a one-element float64 device view (overwritten by
        the next step: copy it to keep it)."""
        return self._view((self._net.loss_slot(), 1), np.float64)

    # -- data ---------------------------------------------------------------------------
    def _x(self, X):
        # As the CPU Network: a device array must already have the network's dtype (a silent
        # cast would hide a copy per call); host arrays are copied anyway, and cast then.
        if is_device_array(X):
            X = to_cupy(X)
            if X.dtype != self._dtype:
                raise TypeError(
                    f"X: expected dtype {self._dtype} (the network's dtype), got {X.dtype}"
                )
        return to_device(X, self._dtype)

    def _ys(self, ys):
        out = []
        for t in ys:
            t = to_device(t)
            out.append(
                t.astype(np.int32, copy=False)
                if t.dtype.kind in "iu"
                else t.astype(self._dtype, copy=False)
            )
        return out

    def _sw(self, sw):
        return None if sw is None else to_device(sw, self._dtype)

    def forward(self, X, training: bool = False):
        cp = self._cp
        X = self._x(X)
        outs = [
            cp.empty((X.shape[0], self._net.n_outputs(h)), self._dtype)
            for h in range(self._net.n_heads)
        ]
        self._net.forward(X, outs, training, _stream())
        # Pass-through layers (dropout, noise at inference) output their input: keep it alive
        # for layer_output().
        self._last_x = X
        return outs

    def train_step(self, X, ys, sw, lr: float, sync: bool = True):
        return self._net.train_step(self._x(X), self._ys(ys), self._sw(sw), lr, sync, _stream())

    def compute_gradients(self, X, ys, sw=None, want_dx: bool = False):
        X = self._x(X)
        dX = self._cp.empty_like(X) if want_dx else None
        loss, per_head = self._net.compute_gradients(X, self._ys(ys), self._sw(sw), dX, _stream())
        return loss, dX, per_head

    def apply_gradients(self, lr: float) -> None:
        self._net.apply_gradients(lr, _stream())

    def evaluate(self, X, ys, sw=None):
        return self._net.evaluate(self._x(X), self._ys(ys), self._sw(sw), _stream())

    def _host_matrix(self, ptr_rows_cols) -> np.ndarray:
        ptr, rows, cols = ptr_rows_cols
        view = self._view((ptr, rows * cols)).reshape(rows, cols)
        return self._cp.asnumpy(view)

    def layer_output(self, layer: int) -> np.ndarray:
        return self._host_matrix(self._net.layer_output(layer))

    def layer_grad(self, layer: int) -> np.ndarray:
        return self._host_matrix(self._net.layer_grad(layer))
