"""ONNX export of a model's inference graph (issue 18): ``model.to_onnx(path)`` and
``fusedmlp export CHECKPOINT out.onnx``.

The graph computes what :meth:`fusedmlp.Sequential.predict` computes, in float32:

* Dense layers become ``Gemm`` (``MatMul`` without a bias) followed by their activation.
* BatchNorm uses its running statistics (deck 001, "Inference": a per-feature affine map
  ``x * scale + shift``), folded into the Dense before it when that Dense is linear, else into
  the Dense after it, else emitted as ``Mul`` + ``Add``.
* Dropout and GaussianNoise are the identity at inference and are left out. RReLU takes its
  inference slope ``(lower + upper) / 2`` (csrc/common/activation.h).
* Every activation of csrc/common/activation.h is written with the same formula: a native ONNX
  operator where its definition is the library's (Relu, Sigmoid, Tanh, Elu, Selu, ...), plain
  arithmetic otherwise. ``expm1`` and ``log1p`` have no ONNX operator; they are built from
  forms that keep full relative precision near 0 (``tanh(u/2) (e^u + 1)`` and Goldberg's
  ``log(1+v) v / ((1+v) - 1)``), because soft exponential divides them by a small alpha.
* RBF layers (deck 003) compute ``exp(-||x - mu||^2 / (2 sigma^2))`` through the same
  expansion ``||x||^2 + ||mu||^2 - 2 x.mu`` clamped at 0 as csrc/common/rbf.h.
* Softmax and maxout are ``Softmax(axis=-1)`` and ``Reshape`` + ``ReduceMax``.

The input is ``"input"`` (batch, n_in) with a dynamic batch dimension; the output is
``"output"``, or ``"output_0"``, ``"output_1"``, ... for multi-head models. Float64 models are
exported with their parameters rounded to float32.

Example:
    >>> import fusedmlp as fm
    >>> m = fm.MLP(n_in=4, hidden=[8], n_out=3)
    >>> proto = m.to_onnx("model.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _activations as acts
from . import _backend, _losses
from . import _validate as v
from . import layers as L

#: The opset written by default (onnxruntime >= 1.12 runs it) and the oldest one supported
#: (opset 13 gives Softmax its per-axis meaning and ReduceSum its axes input).
DEFAULT_OPSET = 17
MIN_OPSET = 13

OUTPUTS = ("logits", "probabilities")

# csrc/common/activation.h, act_detail.
_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
_SQRT_2_OVER_PI = 0.79788456080286535587989211986876
_INV_SQRT2 = 0.70710678118654752440084436210485
_GELU_TANH_C = 0.044715
_LECUN_A, _LECUN_B = 1.7159, 2.0 / 3.0


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the 'onnx' package: pip install 'fusedmlp[onnx]' "
            "(or pip install onnx)"
        ) from exc
    return onnx


class _Graph:
    """Nodes and float32 initializers of the graph under construction."""

    def __init__(self, onnx, opset: int):
        self.onnx = onnx
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self._scalars: dict[bytes, str] = {}

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str = "const", dtype: Any = np.float32) -> str:
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        name = self._name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant (shared by every node that uses the same value)."""
        key = np.float32(value).tobytes()
        if key not in self._scalars:
            self._scalars[key] = self.const(np.float32(value), "scalar")
        return self._scalars[key]

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


# -- activations --------------------------------------------------------------------------
def _expm1(g: _Graph, u: str) -> str:
    # e^u - 1 = tanh(u/2) (e^u + 1): relative precision near 0, -1 and +inf in the limits.
    return g.op(
        "Mul",
        g.op("Tanh", g.op("Mul", g.scalar(0.5), u)),
        g.op("Add", g.op("Exp", u), g.scalar(1.0)),
    )


def _log1p(g: _Graph, v_: str) -> str:
    # Goldberg (1991): log1p(v) = log(u) v / (u - 1) with u = 1 + v, and v where u rounds to 1.
    u = g.op("Add", g.scalar(1.0), v_)
    exact = g.op("Div", g.op("Mul", g.op("Log", u), v_), g.op("Sub", u, g.scalar(1.0)))
    return g.op("Where", g.op("Equal", u, g.scalar(1.0)), v_, exact)


def _softplus(g: _Graph, x: str) -> str:
    # act_detail::softplus: max(x, 0) + log1p(e^{-|x|}), overflow-free.
    return g.op("Add", g.op("Relu", x), _log1p(g, g.op("Exp", g.op("Neg", g.op("Abs", x)))))


def _isru(g: _Graph, x: str, alpha: float) -> str:
    den = g.op("Sqrt", g.op("Add", g.scalar(1.0), g.op("Mul", g.op("Mul", g.scalar(alpha), x), x)))
    return g.op("Div", x, den)


def _activation(
    g: _Graph, x: str, spec: acts.ActivationSpec, P: np.ndarray | None, units: int
) -> str:
    """The activation ``spec`` applied to ``x`` (batch, units); ``P`` (n_params, units): its
    learnable parameters."""
    name, h = spec.name, spec.hyper
    if name == "identity":
        return x
    one, zero = g.scalar(1.0), g.scalar(0.0)
    if name == "binary_step":
        return g.op("Cast", g.op("GreaterOrEqual", x, zero), to=g.onnx.TensorProto.FLOAT)
    native = {
        "sigmoid": "Sigmoid",
        "tanh": "Tanh",
        "arctan": "Atan",
        "arsinh": "Asinh",
        "softsign": "Softsign",
        "relu": "Relu",
        "sinusoid": "Sin",
    }
    if name in native:
        return g.op(native[name], x)
    if name == "isru":
        return _isru(g, x, h["alpha"])
    if name == "isrlu":
        return g.op("Where", g.op("Less", x, zero), _isru(g, x, h["alpha"]), x)
    if name == "sqnl":
        q = g.op("Div", g.op("Mul", x, x), g.scalar(4.0))
        low = g.op(
            "Where", g.op("GreaterOrEqual", x, g.scalar(-2.0)), g.op("Add", x, q), g.scalar(-1.0)
        )
        mid = g.op("Where", g.op("GreaterOrEqual", x, zero), g.op("Sub", x, q), low)
        return g.op("Where", g.op("Greater", x, g.scalar(2.0)), one, mid)
    if name == "brelu":  # even units ReLU(x), odd units min(x, 0)
        odd = g.const(np.arange(units) % 2 == 1, "brelu_odd", np.bool_)
        return g.op("Where", odd, g.op("Min", x, zero), g.op("Relu", x))
    if name == "leaky_relu":
        return g.op("LeakyRelu", x, alpha=float(np.float32(h["alpha"])))
    if name == "rrelu":  # the inference slope, rounded as the float kernel rounds it
        slope = (np.float32(h["lower"]) + np.float32(h["upper"])) * np.float32(0.5)
        return g.op("LeakyRelu", x, alpha=float(slope))
    if name == "prelu":
        return g.op("PRelu", x, g.const(P[0], "prelu_alpha"))
    if name == "elu":
        return g.op("Elu", x, alpha=float(np.float32(h["alpha"])))
    if name == "selu":
        return g.op(
            "Selu", x, alpha=float(np.float32(_SELU_ALPHA)), gamma=float(np.float32(_SELU_LAMBDA))
        )
    if name == "srelu":
        tl, al, tr, ar = (g.const(P[k], "srelu") for k in range(4))
        left = g.op("Add", tl, g.op("Mul", al, g.op("Sub", x, tl)))
        right = g.op("Add", tr, g.op("Mul", ar, g.op("Sub", x, tr)))
        inner = g.op("Where", g.op("GreaterOrEqual", x, tr), right, x)
        return g.op("Where", g.op("LessOrEqual", x, tl), left, inner)
    if name == "apl":  # max(0, x) + sum_s a_s max(0, b_s - x), summed in the kernel's order
        S = spec.hinges
        y = g.op("Relu", x)
        for s in range(S):
            hinge = g.op("Relu", g.op("Sub", g.const(P[S + s], "apl_b"), x))
            y = g.op("Add", y, g.op("Mul", g.const(P[s], "apl_a"), hinge))
        return y
    if name == "softplus":
        return _softplus(g, x)
    if name == "bent_identity":
        root = g.op("Sqrt", g.op("Add", g.op("Mul", x, x), one))
        return g.op("Add", g.op("Div", g.op("Sub", root, one), g.scalar(2.0)), x)
    if name == "silu":
        return g.op("Mul", x, g.op("Sigmoid", x))
    if name == "soft_exponential":
        return _soft_exponential(g, x, P[0])
    if name == "soft_clipping":
        a = g.scalar(h["alpha"])
        hi = _softplus(g, g.op("Mul", a, x))
        lo = _softplus(g, g.op("Mul", a, g.op("Sub", x, one)))
        return g.op("Div", g.op("Sub", hi, lo), a)
    if name == "sinc":  # Taylor series for |x| < 1e-2, as the kernel
        small = g.op("Less", g.op("Abs", x), g.scalar(1e-2))
        safe = g.op("Where", small, one, x)
        x2 = g.op("Mul", x, x)
        series = g.op(
            "Add",
            g.op("Sub", one, g.op("Div", x2, g.scalar(6.0))),
            g.op("Div", g.op("Mul", x2, x2), g.scalar(120.0)),
        )
        return g.op("Where", small, series, g.op("Div", g.op("Sin", safe), safe))
    if name == "gaussian":
        return g.op("Exp", g.op("Neg", g.op("Mul", x, x)))
    if name == "gelu":
        erf = g.op("Erf", g.op("Mul", x, g.scalar(_INV_SQRT2)))
        return g.op("Mul", g.op("Mul", g.scalar(0.5), x), g.op("Add", one, erf))
    if name == "gelu_tanh":
        cube = g.op("Mul", g.op("Mul", x, x), x)
        u = g.op(
            "Mul",
            g.scalar(_SQRT_2_OVER_PI),
            g.op("Add", x, g.op("Mul", g.scalar(_GELU_TANH_C), cube)),
        )
        return g.op("Mul", g.op("Mul", g.scalar(0.5), x), g.op("Add", one, g.op("Tanh", u)))
    if name == "soboleva_tanh":
        # every exponential scaled by the dominant denominator term e^m (activation.h)
        a, b, c, d = (h[k] for k in "abcd")
        m = g.op(
            "Where",
            g.op("GreaterOrEqual", x, zero),
            g.op("Mul", g.scalar(c), x),
            g.op("Mul", g.scalar(-d), x),
        )

        def term(coef: float) -> str:
            return g.op("Exp", g.op("Sub", g.op("Mul", g.scalar(coef), x), m))

        num = g.op("Sub", term(a), term(-b))
        return g.op("Div", num, g.op("Add", term(c), term(-d)))
    if name == "lecun_tanh":
        return g.op("Mul", g.scalar(_LECUN_A), g.op("Tanh", g.op("Mul", g.scalar(_LECUN_B), x)))
    raise ValueError(f"activation: {name!r} has no ONNX export")  # a new activation.h entry


def _soft_exponential(g: _Graph, x: str, alpha: np.ndarray) -> str:
    """Per-unit alpha (Godfrey & Gashler): (e^{a x} - 1)/a + a for a > 0, x for a = 0,
    -log1p(-a (x + a))/a for a < 0. Each branch uses a safe alpha on the other units (their
    values are discarded by Where)."""
    alpha = np.asarray(alpha, dtype=np.float32)
    pos, neg = alpha > 0, alpha < 0
    y = x
    if neg.any():
        an = g.const(np.where(neg, alpha, np.float32(-1.0)), "softexp_neg")
        arg = g.op("Mul", g.op("Neg", an), g.op("Add", x, an))
        branch = g.op("Div", g.op("Neg", _log1p(g, arg)), an)
        y = g.op("Where", g.const(neg, "softexp_is_neg", np.bool_), branch, y)
    if pos.any():
        ap = g.const(np.where(pos, alpha, np.float32(1.0)), "softexp_pos")
        branch = g.op("Add", g.op("Div", _expm1(g, g.op("Mul", ap, x)), ap), ap)
        y = g.op("Where", g.const(pos, "softexp_is_pos", np.bool_), branch, y)
    return y


# -- layers -------------------------------------------------------------------------------
@dataclass
class _Stage:
    """One inference step of a layer list, parameters as float64 host arrays."""

    kind: str  # "dense", "affine" (BatchNorm), "act", "softmax", "maxout", "rbf"
    units: int  # output width
    W: np.ndarray | None = None
    b: np.ndarray | None = None
    act: acts.ActivationSpec | None = None
    P: np.ndarray | None = None  # learnable activation parameters (n_params, units)
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    pieces: int = 0
    centers: np.ndarray | None = None
    log_widths: np.ndarray | None = None


def _stages(model: Any, layers: list[L.Layer], first: int, width: int) -> tuple[list, int]:
    """The stages of ``layers`` (global layer indices from ``first``), input width ``width``,
    with BatchNorm folded into a neighbouring Dense where one is adjacent."""

    def param(li: int, name: str) -> np.ndarray | None:
        if (li, name) not in model._index:
            return None
        return np.array(_backend.to_host(model._param_view(li, name)), dtype=np.float64)

    stages: list[_Stage] = []
    for li, layer in enumerate(layers, start=first):
        if isinstance(layer, (L.Dropout, L.GaussianNoise)):
            continue  # the identity at inference
        if isinstance(layer, L.Dense):
            width = layer.units
            stages.append(
                _Stage(
                    "dense",
                    width,
                    W=param(li, "W"),
                    b=param(li, "b"),
                    act=layer._act,
                    P=param(li, "act_params"),
                )
            )
        elif isinstance(layer, L.BatchNorm):
            # csrc/cpu/batchnorm.cpp, batchnorm_forward_infer: (x - mean) * scale + shift
            gamma, beta = param(li, "gamma"), param(li, "beta")
            mean, var = param(li, "running_mean"), param(li, "running_var")
            scale = (1.0 if gamma is None else gamma) / np.sqrt(var + np.float64(layer.eps))
            shift = (0.0 if beta is None else beta) - mean * scale
            stages.append(_Stage("affine", width, scale=scale, shift=shift))
        elif isinstance(layer, L.RBF):
            width = layer.n_centers
            stages.append(
                _Stage(
                    "rbf", width, centers=param(li, "centers"), log_widths=param(li, "log_widths")
                )
            )
        elif isinstance(layer, L.Activation) and layer.name == "softmax":
            stages.append(_Stage("softmax", width))
        elif isinstance(layer, L.Activation) and layer.name == "maxout":
            width //= layer.pieces
            stages.append(_Stage("maxout", width, pieces=layer.pieces))
        elif isinstance(layer, L.Activation):
            stages.append(_Stage("act", width, act=layer._act, P=param(li, "act_params")))
        else:
            raise TypeError(f"layers[{li}]: {type(layer).__name__} has no ONNX export")
    return _fold_batchnorm(stages), width


def _fold_batchnorm(stages: list[_Stage]) -> list[_Stage]:
    """BatchNorm's affine map merged into the Dense before it (when that Dense is linear:
    W' = W diag(scale), b' = b scale + shift) or else into the Dense after it
    (W' = diag(scale) W, b' = shift W + b)."""
    backward: list[_Stage] = []
    for st in stages:
        prev = backward[-1] if backward else None
        if st.kind == "affine" and prev is not None and prev.kind == "dense":
            if prev.act.name == "identity":
                prev.W = prev.W * st.scale
                prev.b = (0.0 if prev.b is None else prev.b) * st.scale + st.shift
                continue
        backward.append(st)
    out: list[_Stage] = []
    for st in backward:
        if st.kind == "dense" and out and out[-1].kind == "affine":
            bn = out.pop()
            st.b = bn.shift @ st.W + (0.0 if st.b is None else st.b)
            st.W = bn.scale[:, None] * st.W
        out.append(st)
    return out


def _emit(g: _Graph, x: str, st: _Stage) -> str:
    f32 = np.float32
    if st.kind == "dense":
        W = g.const(st.W.astype(f32), "W")
        if st.b is None:
            y = g.op("MatMul", x, W)
        else:
            y = g.op("Gemm", x, W, g.const(st.b.astype(f32), "b"))
        return _activation(g, y, st.act, st.P, st.units)
    if st.kind == "affine":
        y = g.op("Mul", x, g.const(st.scale.astype(f32), "bn_scale"))
        return g.op("Add", y, g.const(st.shift.astype(f32), "bn_shift"))
    if st.kind == "act":
        return _activation(g, x, st.act, st.P, st.units)
    if st.kind == "softmax":
        return g.op("Softmax", x, axis=-1)
    if st.kind == "maxout":  # unit u = max over the contiguous group z[u k .. u k + k - 1]
        grouped = g.op("Reshape", x, g.const([0, st.units, st.pieces], "shape", np.int64))
        return _reduce(g, "ReduceMax", grouped, 2)
    if st.kind == "rbf":  # csrc/common/rbf.h: D = ||x||^2 + ||mu||^2 - 2 x.mu, clamped at 0
        C = st.centers
        sigma = np.exp(st.log_widths)
        coef = 1.0 / (2.0 * sigma * sigma)
        x_sq = _reduce(g, "ReduceSum", g.op("Mul", x, x), 1, keepdims=1)
        dot = g.op("MatMul", x, g.const(C.T.astype(f32), "rbf_centers_t"))
        d = g.op(
            "Sub",
            g.op("Add", x_sq, g.const(np.sum(C * C, axis=1).astype(f32), "rbf_mu_sq")),
            g.op("Mul", g.scalar(2.0), dot),
        )
        d = g.op("Max", d, g.scalar(0.0))
        return g.op("Exp", g.op("Mul", g.const((-coef).astype(f32), "rbf_neg_coef"), d))
    raise AssertionError(st.kind)


def _reduce(g: _Graph, op: str, x: str, axis: int, keepdims: int = 0) -> str:
    # ReduceSum takes its axes as an input from opset 13, the other reductions from opset 18.
    if op == "ReduceSum" or g.opset >= 18:
        return g.op(op, x, g.const([axis], "axes", np.int64), keepdims=keepdims)
    return g.op(op, x, axes=[axis], keepdims=keepdims)


def _check_losses(loss: Any, n_heads: int, output: Any) -> list[str] | None:
    if not isinstance(output, str) or output not in OUTPUTS:
        raise ValueError(f"output: expected one of {', '.join(OUTPUTS)}, got {output!r}")
    if loss is None:
        if output == "probabilities":
            raise ValueError(
                "loss: output='probabilities' applies the loss's output activation (sigmoid for "
                "binary_cross_entropy, softmax for cross_entropy): pass the loss name(s)"
            )
        return None
    names = [loss] * n_heads if isinstance(loss, str) else loss
    if not isinstance(names, (list, tuple)):
        raise TypeError(f"loss: expected a loss name or a list of names, got {type(loss).__name__}")
    if len(names) != n_heads:
        raise ValueError(f"loss: expected {n_heads} loss name(s), one per head, got {len(names)}")
    return [_losses.canonical(n, "loss") for n in names]


def to_onnx(
    model: Any,
    path: str | os.PathLike | None = None,
    opset: int | None = None,
    output: str = "logits",
    loss: str | list[str] | None = None,
):
    """The ONNX graph of ``model``'s inference (see the module docstring), written to ``path``.

    Args:
        model: a :class:`fusedmlp.Sequential` or :class:`fusedmlp.MLP` (any device/dtype).
        path: file to write (None: only return the graph).
        opset: ONNX opset, 13 .. the installed onnx's newest (default 17).
        output: "logits" (what ``model.predict`` returns) or "probabilities" (the output
            activation of ``loss`` on each head: sigmoid for binary_cross_entropy, softmax for
            cross_entropy, nothing for mse, as ``Trainer.predict``).
        loss: the loss name, or one per head; needed for ``output="probabilities"``.

    Returns:
        The ``onnx.ModelProto`` (checked by ``onnx.checker``).

    Raises:
        ImportError: the ``onnx`` package is not installed (``pip install 'fusedmlp[onnx]'``).
        ValueError / TypeError: a bad ``opset``, ``output``, ``loss`` or ``path``.
    """
    onnx = _onnx()
    helper = onnx.helper
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path: expected a file path (str or os.PathLike), got {type(path).__name__}"
        )
    opset = DEFAULT_OPSET if opset is None else opset
    opset = v.integer("opset", opset, low=MIN_OPSET, high=onnx.defs.onnx_opset_version())
    losses = _check_losses(loss, len(model.heads), output)
    g = _Graph(onnx, opset)
    FLOAT = onnx.TensorProto.FLOAT
    stages, width = _stages(model, model.layers, 0, model.n_in)
    trunk = "input"
    for st in stages:
        trunk = _emit(g, trunk, st)
    outputs = []
    first = len(model.layers)
    for h, head in enumerate(model.heads):
        stages, w = _stages(model, head, first, width)
        first += len(head)
        y = trunk
        for st in stages:
            y = _emit(g, y, st)
        if output == "probabilities":
            out_act = _losses.OUTPUT_ACTIVATION[losses[h]]
            if out_act == "sigmoid":
                y = g.op("Sigmoid", y)
            elif out_act == "softmax":
                y = g.op("Softmax", y, axis=-1)
        name = "output" if len(model.heads) == 1 else f"output_{h}"
        g.nodes.append(helper.make_node("Identity", [y], [name]))
        outputs.append(helper.make_tensor_value_info(name, FLOAT, ["batch", w]))
    used = {name for node in g.nodes for name in node.input}
    graph = helper.make_graph(
        g.nodes,
        "fusedmlp",
        [helper.make_tensor_value_info("input", FLOAT, ["batch", model.n_in])],
        outputs,
        initializer=[t for t in g.initializers if t.name in used],
    )
    from . import __version__

    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="fusedmlp", producer_version=__version__
    )
    # the oldest IR version that carries this opset: the widest range of runtimes loads it
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    meta = {"output": output, "dtype": model.dtype.name}
    if losses is not None:
        meta["loss"] = ",".join(losses)
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        onnx.save_model(proto, os.fspath(path))
    return proto
