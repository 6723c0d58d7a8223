"""Models: layer specs compiled into one C++ Network.

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> model = fm.MLP(n_in=4, hidden=[8], n_out=3, activation="relu", seed=0)
    >>> model.predict(np.zeros((2, 4), np.float32)).shape
    (2, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _backend
from . import _validate as v
from . import init as initializers
from . import layers as L
from ._engine import Engine
from ._loader import _core

RELU_FAMILY = {
    "relu",
    "leaky_relu",
    "prelu",
    "rrelu",
    "brelu",
    "elu",
    "srelu",
    "apl",
    "gelu",
    "gelu_tanh",
    "silu",
}


class Sequential:
    """A stack of layers (the trunk), optionally followed by several output heads.

    Args:
        layers: layer specs (``fm.Dense``, ``fm.BatchNorm``, ``fm.Dropout``, ...).
        n_in: number of input features.
        heads: for multi-task learning (deck 002), a list of layer lists, one per output
            head, each fed by the trunk's output. None: one head, the trunk's output.
        device: "cpu" (NumPy arrays) or "cuda".
        seed: seeds the initializers and the Philox stream (dropout, noise, RReLU).
        dtype: "float32" (training type) or "float64" (gradient checks, references).
        precision: GEMM operand precision on the GPU: "float32" (exact), or mixed precision
            "bfloat16" / "float16" (aliases "bf16", "fp16"): the dense layers' matrix products
            take half-width copies of their operands on the tensor cores and accumulate in
            float32; weights, gradients, optimizer state and every elementwise op stay float32
            (master weights). float16 has no loss scaling (gradients below ~6e-8 flush to
            zero): prefer bfloat16. device="cuda" and dtype float32 only.

    Example:
        >>> import fusedmlp as fm
        >>> m = fm.Sequential([fm.Dense(16, activation="tanh"), fm.Dense(1)], n_in=3)
        >>> [w.shape for w in m.get_weights()]
        [(3, 16), (16,), (16, 1), (1,)]
    """

    def __init__(
        self,
        layers: Sequence[L.Layer],
        n_in: int,
        heads: Sequence[Sequence[L.Layer]] | None = None,
        device: str = "cpu",
        seed: int = 0,
        dtype: Any = "float32",
        precision: str = "float32",
    ):
        self.layers = list(layers)
        self.heads = [list(h) for h in heads] if heads is not None else [[]]
        for i, layer in enumerate(self.layers + [x for h in self.heads for x in h]):
            if not isinstance(layer, L.Layer):
                raise TypeError(
                    f"layers[{i}]: expected a layer spec (fm.Dense, ...), "
                    f"got {type(layer).__name__}"
                )
        if not self.heads:
            raise ValueError("heads: expected at least one head")
        self.n_in = v.width("n_in", n_in)
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if device == "cuda":
            from . import cuda_unavailable_reason

            reason = cuda_unavailable_reason()
            if reason is not None:
                raise ValueError(f"device: 'cuda' is not usable: {reason}")
        self.device = device
        self.seed = v.integer("seed", seed, low=0)
        if dtype is None:  # np.dtype(None) would silently be float64
            raise TypeError("dtype: expected float32 or float64, got None")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from exc
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        norms = {
            lay.max_norm for lay in self._all_layers() if isinstance(lay, L.Dense) and lay.max_norm
        }
        if len(norms) > 1:
            raise ValueError(
                f"max_norm: all Dense layers must share one max_norm value, got {sorted(norms)}"
            )
        self.max_norm = norms.pop() if norms else 0.0
        self.precision = _PRECISIONS.get(precision) if isinstance(precision, str) else None
        if self.precision is None:
            raise ValueError(f"precision: expected one of {sorted(_PRECISIONS)}, got {precision!r}")
        if self.precision != "float32" and (device != "cuda" or self.dtype != np.float32):
            raise ValueError(
                f"precision: {self.precision!r} mixed precision runs on the GPU with float32 "
                "master weights (device='cuda', dtype='float32')"
            )
        self._net = None
        self._build()

    # -- construction -----------------------------------------------------------------
    def _all_layers(self) -> list[L.Layer]:
        return self.layers + [x for h in self.heads for x in h]

    def _build(self) -> None:
        heads = []
        for h in self.heads:
            hs = _core.HeadSpec()
            hs.layers = [lay.spec() for lay in h]
            heads.append(hs)
        trunk = [lay.spec() for lay in self.layers]
        # The raw binding object on both devices (one calling convention: fusedmlp._engine).
        if self.device == "cuda":
            mod, prefix = _backend.get("cuda").mod, "CudaNetwork"
            if mod is None or not hasattr(mod, "CudaNetwork32"):
                raise RuntimeError("fusedmlp was built without the CUDA Network")
        else:
            mod, prefix = _core, "Network"
        cls = getattr(mod, prefix + ("32" if self.dtype == np.float32 else "64"))
        self._net = cls(self.n_in, trunk, heads, self.seed)
        self._net.precision = _PRECISION_CODES[self.precision]
        # Training fronts (Trainer, estimators, callbacks, diagnostics) drive the Network
        # through this one object (fusedmlp._engine).
        self._engine = Engine(self._net, self.device, self.dtype)
        self._index = {}
        for li, name, off, rows, cols, trainable in self._net.param_info():
            self._index[(li, name)] = (off, rows, cols, trainable)
        for li, layer in enumerate(self._all_layers()):
            if not getattr(layer, "trainable", True):
                self._net.set_layer_trainable(li, False)
        self.reset_parameters()

    def _network(self):
        return self._net

    def _param_view(self, layer: int, name: str) -> np.ndarray:
        off, rows, cols, trainable = self._index[(layer, name)]
        arena = self._engine.params() if trainable else self._engine.buffers()
        view = arena[off : off + rows * cols]
        return view.reshape(rows, cols) if name in ("W", "act_params", "centers") else view

    def _assign(self, dst, value) -> None:
        """dst[...] = value, with value moved to dst's device (NumPy -> CuPy on the GPU)."""
        dst[...] = _backend.get(self.device).to_device(value, self.dtype)

    def to(self, device: str) -> Sequential:
        """A copy of the model on ``device`` ("cpu" or "cuda"): same architecture, parameters,
        batch-norm statistics, RNG step and frozen layers (the optimizer state belongs to the
        Trainer: ``Trainer.save`` / ``Trainer.load(path, device=...)`` moves a whole run).

        Example:
            >>> import fusedmlp as fm
            >>> m = fm.MLP(n_in=3, hidden=[4], n_out=1)
            >>> m.to("cpu").device
            'cpu'
        """
        clone = Sequential.from_config(self.config(), device=device)
        src, dst = self._net, clone._net
        clone._assign(clone._engine.params(), self._engine.params())
        clone._assign(clone._engine.buffers(), self._engine.buffers())
        dst.rng_step = src.rng_step
        dst.bn_updates = src.bn_updates
        for li in range(dst.n_layers):
            dst.set_layer_trainable(li, bool(src.layer_trainable(li)))
        clone._rbf_initialized = self._rbf_initialized
        return clone

    def reset_parameters(self) -> None:
        """(Re)draw every weight from its initializer (deterministic for ``seed``)."""
        rng = np.random.default_rng(self.seed)
        self._engine.params()[:] = 0
        for li, layer in enumerate(self._all_layers()):
            if isinstance(layer, L.Dense):
                W = self._param_view(li, "W")
                name = initializers.canonical(layer.init)
                self._assign(
                    W,
                    initializers.initialize(
                        "orthogonal" if name == "lsuv" else name, W.shape[0], W.shape[1], rng
                    ),
                )
                if layer.use_bias:
                    self._param_view(li, "b")[:] = layer.bias_init
            if isinstance(layer, L.BatchNorm):
                if layer.affine:
                    self._param_view(li, "gamma")[:] = 1.0
                self._param_view(li, "running_mean")[:] = 0.0
                self._param_view(li, "running_var")[:] = 1.0
            act = getattr(layer, "_act", None)
            if act is not None and act.learnable:
                P = self._param_view(li, "act_params")
                self._assign(P, _default_act_params(act.name, P.shape, rng))
            if isinstance(layer, L.RBF):  # data-free placeholder until init_rbf
                C = self._param_view(li, "centers")
                self._assign(C, rng.normal(size=C.shape))
                self._param_view(li, "log_widths")[:] = 0.0
        self._net.bn_updates = 0
        self._rbf_initialized = not self.rbf_layers()

    # -- weights ------------------------------------------------------------------------
    def _weight_names(self) -> list[tuple[int, str]]:
        order = {
            "W": 0,
            "b": 1,
            "gamma": 2,
            "beta": 3,
            "running_mean": 4,
            "running_var": 5,
            "act_params": 6,
            "centers": 7,
            "log_widths": 8,
        }
        keys = sorted(self._index, key=lambda k: (k[0], order[k[1]]))
        return keys

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every array, layer by layer: W, b, BN gamma, beta, running_mean,
        running_var, learnable activation parameters; RBF centres (K, n_in) and log widths
        (K,) (sigma = exp of them)."""
        return [_host_copy(self._param_view(li, n)) for li, n in self._weight_names()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set every array from a list shaped like :meth:`get_weights`'s."""
        keys = self._weight_names()
        if len(weights) != len(keys):
            raise ValueError(f"weights: expected {len(keys)} arrays, got {len(weights)}")
        for i, ((li, n), w) in enumerate(zip(keys, weights, strict=True)):
            dst = self._param_view(li, n)
            arr = _host_copy(w)
            if arr.shape != dst.shape:
                raise ValueError(
                    f"weights[{i}] ({n} of layer {li}): expected shape {dst.shape}, got {arr.shape}"
                )
            if not np.isfinite(arr).all():
                raise ValueError(f"weights[{i}] ({n} of layer {li}): contains NaN or Inf")
            self._assign(dst, arr)
        self._rbf_initialized = True  # the caller's centres and widths count as placed

    # -- RBF layers and freezing --------------------------------------------------------
    def rbf_layers(self) -> list[int]:
        """Indices (in trunk-then-heads order) of the :class:`fusedmlp.RBF` layers."""
        return [i for i, lay in enumerate(self._all_layers()) if isinstance(lay, L.RBF)]

    @property
    def rbf_initialized(self) -> bool:
        """False while an RBF layer still holds its data-free placeholder (see :meth:`init_rbf`)."""
        return self._rbf_initialized

    def _layer_inputs(self, li: int, X: np.ndarray) -> np.ndarray:
        """The input of layer ``li`` in the last (inference) forward pass of ``X``."""
        n_trunk = len(self.layers)
        if li < n_trunk:
            return X if li == 0 else self._engine.layer_output(li - 1)
        start = n_trunk
        for h in self.heads:
            if li == start:  # a head's first layer reads the trunk's output
                return X if n_trunk == 0 else self._engine.layer_output(n_trunk - 1)
            if li < start + len(h):
                return self._engine.layer_output(li - 1)
            start += len(h)
        raise ValueError(f"layer: expected an index below {start}, got {li}")

    def init_rbf(self, X: Any, seed: int | None = None, max_samples: int | None = None) -> None:
        """Deck 003's first learning step: place every RBF layer's centres and widths on data
        (its ``init`` and ``width`` rules, see :class:`fusedmlp.RBF`), in layer order; a
        later RBF layer sees the inference-mode outputs of the layers before it.

        Args:
            X: training inputs (n, n_in).
            seed: seeds k-means++ / the sampling (default: the model's seed).
            max_samples: use a random subset of at most this many rows (None: all).

        Example:
            >>> import numpy as np, fusedmlp as fm
            >>> X = np.random.default_rng(0).normal(size=(100, 2))
            >>> m = fm.Sequential([fm.RBF(4), fm.Dense(1)], n_in=2)
            >>> m.init_rbf(X); m.rbf_initialized
            True
        """
        X = _host_copy(self.check_X(X))
        seed = self.seed if seed is None else v.integer("seed", seed, low=0)
        rng = np.random.default_rng([seed, 1])
        if max_samples is not None:
            max_samples = v.integer("max_samples", max_samples, low=1)
            if len(X) > max_samples:
                X = X[np.sort(rng.choice(len(X), size=max_samples, replace=False))]
        X = np.ascontiguousarray(X)
        for li in self.rbf_layers():
            inputs = X
            if li > 0:
                self._engine.forward(X, False)
                inputs = self._layer_inputs(li, X)
            layer_seed = int(rng.integers(2**31 - 1))
            centers, widths = self._all_layers()[li].fit_centers(inputs, seed=layer_seed)
            self._assign(self._param_view(li, "centers"), centers)
            self._assign(self._param_view(li, "log_widths"), np.log(widths))
        self._rbf_initialized = True

    def set_trainable(self, layer: int, trainable: bool) -> None:
        """Freeze (``trainable=False``) or unfreeze a layer's parameters: a frozen layer keeps
        its values (the fused optimizer step skips it, its gradient is held at 0); gradients
        still flow through it to the layers below.

        Args:
            layer: the layer's index in trunk-then-heads order.
            trainable: the new state.

        Example:
            >>> import fusedmlp as fm
            >>> m = fm.MLP(n_in=3, hidden=[4], n_out=1)
            >>> m.set_trainable(0, False); m.is_trainable(0)
            False
        """
        layer = v.integer("layer", layer, low=0, high=len(self._all_layers()) - 1)
        if not isinstance(trainable, bool):
            raise TypeError(f"trainable: expected a bool, got {type(trainable).__name__}")
        self._net.set_layer_trainable(layer, trainable)

    def is_trainable(self, layer: int) -> bool:
        """Whether the optimizer updates layer ``layer``'s parameters (:meth:`set_trainable`)."""
        layer = v.integer("layer", layer, low=0, high=len(self._all_layers()) - 1)
        return bool(self._net.layer_trainable(layer))

    @property
    def parameters(self) -> np.ndarray:
        """The flat parameter arena (a view: writing to it changes the model)."""
        return self._engine.params()

    @property
    def gradients(self) -> np.ndarray:
        """The flat gradient arena of the last backward pass (a view)."""
        return self._engine.grads()

    def n_outputs(self, head: int = 0) -> int:
        return int(self._net.n_outputs(head))

    # -- inference ----------------------------------------------------------------------
    def check_X(self, X: Any, name: str = "X") -> np.ndarray:
        """X checked (2-d, n_in columns, finite) in the model's dtype: a NumPy array for CPU
        models; for CUDA models a CuPy array on the current device (device arrays, PyTorch /
        JAX tensors through DLPack, are used without a copy; host arrays are copied once)."""
        if self.device == "cuda":
            if v.is_device_array(X):
                X = _backend.get("cuda").asarray(name, X)
            else:
                X = _backend.get("cuda").to_device(v.as_float_array(name, X))
            if X.shape[1] != self.n_in:
                raise ValueError(f"{name}: expected {self.n_in} features, got {X.shape[1]}")
            return X.astype(self.dtype, copy=False)
        X = v.as_float_array(name, X)
        if X.shape[1] != self.n_in:
            raise ValueError(f"{name}: expected {self.n_in} features, got {X.shape[1]}")
        return X.astype(self.dtype, copy=False)

    def predict(self, X: Any, batch_size: int = 4096) -> np.ndarray | list[np.ndarray]:
        """The network's output in inference mode (running BN statistics, no dropout):
        logits for classifiers. A list with one array per head for multi-head models."""
        on_device = v.is_device_array(X)
        X = self.check_X(X)
        batch_size = v.integer("batch_size", batch_size, low=1)
        # one call: the chunks are written straight into the outputs
        outs = self._engine.predict(X, batch_size)
        if self.device == "cuda" and not on_device:  # host in, host out
            outs = [_host_copy(o) for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def __call__(self, X):
        return self.predict(X)

    def summary(self) -> None:
        """Print the layer table: index, type, output shape, activation, parameters and
        non-trainable parameters (BatchNorm running statistics, frozen layers) per layer,
        then the totals with their size in bytes (Keras's ``model.summary()``;
        ``print(model)`` prints the same).

        Example:
            >>> import fusedmlp as fm
            >>> fm.MLP(n_in=3, hidden=[4], n_out=2).summary()  # doctest: +ELLIPSIS
            MLP: 3 inputs, 1 head(s), float32, cpu
            ...
            Total params: 26 (104 B)
            Trainable params: 26 (104 B)
            Non-trainable params: 0 (0 B)
        """
        print(self)

    def __str__(self) -> str:
        from ._summary import summary_text

        return summary_text(self)

    def __repr__(self) -> str:
        from ._summary import short_repr

        return short_repr(self)

    def to_onnx(
        self,
        path: str | os.PathLike | None = None,
        opset: int | None = None,
        output: str = "logits",
        loss: str | Sequence[str] | None = None,
    ):
        """Export the inference graph to ONNX (needs the ``onnx`` extra); see
        :func:`fusedmlp.export.to_onnx` for what each layer becomes.

        Args:
            path: the .onnx file to write (None: only return the graph).
            opset: ONNX opset, >= 13 (default 17).
            output: "logits" (as :meth:`predict`) or "probabilities" (the output activation of
                ``loss``: sigmoid for binary_cross_entropy, softmax for cross_entropy).
            loss: the training loss, or one per head (needed for "probabilities").

        Returns:
            The ``onnx.ModelProto``. Input ``"input"`` (batch, n_in), dynamic batch; output
            ``"output"``, or ``"output_0"``, ``"output_1"``, ... with several heads.

        Example:
            >>> import fusedmlp as fm
            >>> m = fm.MLP(n_in=4, hidden=[8], n_out=3)
            >>> m.to_onnx("mlp.onnx", output="probabilities", loss="ce")  # doctest: +SKIP
        """
        from . import export

        return export.to_onnx(self, path, opset=opset, output=output, loss=loss)

    def config(self) -> dict:
        """The architecture as JSON-ready data (checkpoints)."""
        return {
            "class": "Sequential",
            "layers": [lay.to_dict() for lay in self.layers],
            "heads": [[lay.to_dict() for lay in h] for h in self.heads],
            "n_in": self.n_in,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "device": self.device,
            "precision": self.precision,
        }

    @staticmethod
    def from_config(cfg: dict, device: str | None = None) -> Sequential:
        """The model of :meth:`config` (``device`` overrides the saved one: a GPU-trained
        checkpoint loads on a CPU-only machine with ``device="cpu"``)."""
        return Sequential(
            [L.from_dict(d) for d in cfg["layers"]],
            n_in=cfg["n_in"],
            heads=[[L.from_dict(d) for d in h] for h in cfg["heads"]],
            seed=cfg["seed"],
            dtype=cfg["dtype"],
            device=device or cfg.get("device", "cpu"),
            precision=cfg.get("precision", "float32")
            if (device or cfg.get("device")) == "cuda"
            else "float32",
        )


_PRECISIONS = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
_PRECISION_CODES = {"float32": 0, "bfloat16": 1, "float16": 2}  # CudaNetwork.precision


def _host_copy(x: Any) -> np.ndarray:
    """A NumPy copy of a host or device array (weights leave the model as NumPy arrays)."""
    if v.is_device_array(x):
        return _backend.to_host(x)
    return np.array(x, copy=True)


def _default_act_params(name: str, shape, rng) -> np.ndarray:
    from . import _activations as acts

    if name == "apl":  # small random hinges (Agostinelli et al. initialize a, b near 0)
        s = shape[0] // 2
        return np.concatenate(
            [rng.uniform(-0.1, 0.1, (s, shape[1])), rng.uniform(-0.5, 0.5, (s, shape[1]))]
        )
    rows, init = acts.LEARNABLE[name]
    return np.repeat(np.asarray(init, dtype=float)[:, None], shape[1], axis=1)


class MLP(Sequential):
    """A multilayer perceptron: Dense hidden layers (optionally with batch norm and dropout)
    and a linear output layer.

    Args:
        n_in, hidden, n_out: input width, hidden widths, output width.
        activation: hidden activation (any elementwise name); activation_params its
            hyper-parameters.
        batchnorm: insert BatchNorm after each hidden Dense (deck 002 puts it between the
            weights and the activation: use ``batchnorm="pre"`` for that order).
        dropout: drop rate after each hidden layer; input_dropout: on the inputs (deck 002
            suggests a lower rate there).
        init: weight initializer (default he_normal for ReLU-like, glorot_uniform otherwise).
        bias_init: initial hidden bias (a small positive value for ReLU units, deck 000).
        device, seed, dtype, precision: as in :class:`Sequential`.

    Example:
        >>> import fusedmlp as fm
        >>> m = fm.MLP(n_in=784, hidden=[256, 256], n_out=10, dropout=0.2)
    """

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        activation: str = "relu",
        batchnorm: bool | str = False,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        init: str | None = None,
        bias_init: float = 0.0,
        max_norm: float | None = None,
        activation_params: dict | None = None,
        device: str = "cpu",
        seed: int = 0,
        dtype: Any = "float32",
        precision: str = "float32",
    ):
        from . import _activations as acts

        act = acts.canonical(activation)
        if init is None:
            init = "he_normal" if act in RELU_FAMILY else "glorot_uniform"
        # bools only (as v.flag): 1.0 == True would otherwise slip through the `in` test
        if not isinstance(batchnorm, (bool, np.bool_)) and batchnorm not in ("post", "pre"):
            raise ValueError(f"batchnorm: expected False, True, 'post' or 'pre', got {batchnorm!r}")
        v.real("dropout", dropout, 0.0, 1.0, high_open=True)
        v.real("bias_init", bias_init)  # checked here too: MLP(n, [], m) has no hidden Dense
        v.real("input_dropout", input_dropout, 0.0, 1.0, high_open=True)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(
                f"hidden: expected a list of hidden widths (e.g. [64, 32]), got {hidden!r}"
            )
        hp = dict(activation_params or {})
        layers: list[L.Layer] = []
        if input_dropout > 0:
            layers.append(L.Dropout(input_dropout))
        for i, width in enumerate(hidden):
            v.width(f"hidden[{i}]", width)
            if batchnorm == "pre":
                layers += [
                    L.Dense(width, "identity", init, True, bias_init, max_norm),
                    L.BatchNorm(),
                    L.Activation(act, params=hp),
                ]
            else:
                layers.append(L.Dense(width, act, init, True, bias_init, max_norm, hp))
                if batchnorm:
                    layers.append(L.BatchNorm())
            if dropout > 0:
                layers.append(L.Dropout(dropout))
        out_init = (
            "glorot_uniform"
            if init in ("he_normal", "he_uniform", "kaiming_normal", "kaiming_uniform")
            else init
        )
        layers.append(L.Dense(v.width("n_out", n_out), "identity", out_init, True, 0.0, max_norm))
        super().__init__(
            layers, n_in=n_in, device=device, seed=seed, dtype=dtype, precision=precision
        )
