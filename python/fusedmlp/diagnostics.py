"""Diagnostics: babysitting the learning process (deck 000, "how to train a NN").

Everything here is measured on the network's own fused forward and backward passes (the C++
Network), never on a Python re-implementation:

* :func:`activation_table` -- per-layer mean and standard deviation of the activations over
  a batch: the tables of deck 000 ("input layer had mean 0.000927 and std 0.998388 /
  hidden layer 1 had mean ...") and of deck 002's initialization experiments.
* :func:`diagnose` -- per layer: activation mean/std, dead units, the mean/std of the
  gradient of the loss w.r.t. the layer's output, the gradient RMS relative to the next and
  to the last layer (vanishing / exploding gradients, decks 000/001; a
  :class:`DiagnosticsWarning` names the layer), weight and weight-gradient norms, and the
  update/weight ratio ``||dW|| / ||W||`` of one optimizer step (the usual rule of thumb is
  about 1e-3: much smaller, the learning rate is too low; much larger, too high).
* :class:`DiagnosticsCallback` -- records :func:`diagnose` on a probe batch every few
  epochs into the Trainer's History (keys like ``"act_std/dense_0"``).
* :func:`gradient_check` -- compares the fused backward with central differences in
  float64 and reports the worst relative error per parameter tensor.

None of these functions changes the model: parameters, gradients, optimizer state, batch-norm
running statistics and the RNG/optimizer step counters are restored afterwards.

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> model = fm.MLP(n_in=8, hidden=[16, 16], n_out=2, seed=0)
    >>> report = fm.diagnostics.diagnose(model, X, y, loss="cross_entropy")
    >>> [row.name for row in report.layers]
    ['dense_0', 'dense_1', 'dense_2']
    >>> fm.diagnostics.gradient_check(model, X[:8], y[:8]).passed
    True
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validate as v
from . import layers as L
from .callbacks import Callback
from .model import Sequential
from .trainer import Trainer

__all__ = [
    "ActivationTable",
    "Diagnostics",
    "DiagnosticsCallback",
    "DiagnosticsWarning",
    "GradientCheckReport",
    "LayerDiagnostics",
    "TensorCheck",
    "activation_table",
    "diagnose",
    "gradient_check",
]


class DiagnosticsWarning(UserWarning):
    """Vanishing or exploding gradients found by :func:`diagnose` (filterable category)."""


# -- layers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LayerInfo:
    index: int
    name: str
    kind: str
    activation: str | None
    elementwise: bool  # the output is an elementwise activation (dead units are defined)


def _layer_infos(model: Sequential) -> list[_LayerInfo]:
    """One entry per C++ layer, in the Network's global order (trunk, then the heads)."""
    out = []
    for i, lay in enumerate(model._all_layers()):
        if isinstance(lay, L.Dense):
            kind, act = "dense", lay.activation
        elif isinstance(lay, L.BatchNorm):
            kind, act = "batchnorm", None
        elif isinstance(lay, L.Dropout):
            kind, act = "dropout", None
        elif isinstance(lay, L.GaussianNoise):
            kind, act = "noise", None
        elif isinstance(lay, L.Activation):
            kind = lay.name if lay.name in ("softmax", "maxout") else "activation"
            act = lay.name
        else:  # a layer spec type this module does not know yet
            kind, act = type(lay).__name__.lower(), None
        out.append(_LayerInfo(i, f"{kind}_{i}", kind, act, kind in ("dense", "activation")))
    return out


def _split(target: Any) -> tuple[Sequential, Trainer | None]:
    model = target.model if isinstance(target, Trainer) else target
    if isinstance(model, Sequential) and model.device != "cpu":
        raise ValueError(
            "model: diagnostics run on CPU models (they read every layer's tensors on the "
            "host); pass model.to('cpu')"
        )
    if isinstance(target, Trainer):
        return target.model, target
    if isinstance(target, Sequential):
        return target, None
    raise TypeError(
        "model: expected a fusedmlp model (Sequential/MLP) or a Trainer, "
        f"got {type(target).__name__}"
    )


def _clone(model: Sequential, dtype: Any, unfreeze: bool = False) -> Sequential:
    """A copy of ``model`` in ``dtype``: same architecture, parameters, batch-norm running
    statistics, seed, RNG step (so dropout/noise/RReLU draw the same masks) and frozen
    layers (``unfreeze``: every layer trainable, so frozen layers' gradients are computed
    instead of held at 0)."""
    cfg = dict(model.config())
    cfg["dtype"] = np.dtype(dtype).name
    clone = Sequential.from_config(cfg)
    src, dst = model._engine, clone._engine
    dst.params()[:] = src.params()
    dst.buffers()[:] = src.buffers()
    counters = src.counters()
    dst.set_counters(rng_step=counters["rng_step"], bn_updates=counters["bn_updates"])
    dst.set_frozen_layers([] if unfreeze else src.frozen_layers())
    return clone


def _loss_trainer(model: Sequential, trainer: Trainer | None, loss: Any) -> Trainer:
    """A Trainer around ``model`` whose head losses are ``trainer``'s (when given) or
    ``loss``; it configures the C++ heads and converts targets like ``Trainer.fit``."""
    if trainer is not None:
        return Trainer(
            model,
            loss=trainer.losses,
            loss_weights=trainer.loss_weights,
            label_smoothing=trainer.label_smoothing,
            smoothing=trainer.smoothing,
            half_mse=trainer.half_mse,
            metrics=(),
        )
    return Trainer(model, loss=loss, metrics=())


def _preserved(engine, step: bool = False):
    """Restores the state a diagnostic pass touches: the gradient arena, batch-norm running
    statistics and update count, the layer-gradient recording flag and, for a probe
    optimizer step (``step``), the parameters, optimizer state and step counters."""
    parts = ("grads", "buffers", "bn_updates", "record_layer_grads")
    if step:
        parts += ("params", "opt_state", "opt_step", "rng_step")
    return engine.preserved(*parts)


def _param_slices(net) -> dict[tuple[int, str], tuple[int, int, int, bool]]:
    return {(li, name): (off, rows, cols, tr) for li, name, off, rows, cols, tr in net.param_info()}


def _label(name: str, kind: str, activation: str | None) -> str:
    if kind in ("dense", "activation") and activation not in (None, "identity"):
        return f"{name} ({activation})"
    return name


def _moments(a: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std())


# -- activation table ---------------------------------------------------------------------


class ActivationTable:
    """Per-layer mean and standard deviation of the activations (deck 000's tables).

    ``rows`` is a list of ``(layer, mean, std)``, the input first. ``str(table)`` is an
    aligned table; :meth:`deck_text` the deck's sentences.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> m = fm.MLP(n_in=5, hidden=[8, 8], n_out=2, activation="tanh", seed=0)
        >>> t = fm.diagnostics.activation_table(m, np.ones((4, 5), np.float32))
        >>> [r[0] for r in t.rows]
        ['input', 'dense_0 (tanh)', 'dense_1 (tanh)', 'dense_2']
    """

    def __init__(self, rows: list[tuple[str, float, float]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __str__(self) -> str:
        w = max(5, *(len(r[0]) for r in self.rows))
        lines = [f"{'layer':<{w}}  {'mean':>12}  {'std':>12}"]
        lines += [f"{name:<{w}}  {mean:>12.6f}  {std:>12.6f}" for name, mean, std in self.rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ActivationTable(\n{self}\n)"

    def deck_text(self) -> str:
        """The rows as deck 000 prints them: ``input layer had mean ... and std ...`` then
        ``hidden layer k had mean ... and std ...`` (k counts the layers from 1)."""
        out = []
        for k, (_, mean, std) in enumerate(self.rows):
            who = "input layer" if k == 0 else f"hidden layer {k}"
            out.append(f"{who} had mean {mean:f} and std {std:f}")
        return "\n".join(out)


def activation_table(model: Any, X: Any, training: bool = False) -> ActivationTable:
    """Mean and standard deviation of every layer's output over the batch ``X`` (all
    elements of the (batch, width) output; population std), computed from the network's
    fused forward pass.

    Args:
        model: a :class:`fusedmlp.Sequential`/``MLP`` or a :class:`fusedmlp.Trainer`.
        X: inputs (batch, n_in).
        training: False (default): inference mode, as ``predict`` (running batch-norm
            statistics, no dropout); True: training mode (batch statistics, dropout and noise
            at the model's current RNG step). Running statistics are not changed either way.

    Returns:
        an :class:`ActivationTable`; rows ``(layer, mean, std)``, the input first, then each
        layer as ``"<kind>_<index> (<activation>)"``.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> X = np.random.default_rng(0).normal(size=(256, 100)).astype(np.float32)
        >>> m = fm.Sequential([fm.Dense(100, "tanh", init="normal") for _ in range(5)], n_in=100)
        >>> print(fm.diagnostics.activation_table(m, X).deck_text())  # doctest: +SKIP
        input layer had mean 0.001800 and std 1.001311
        hidden layer 1 had mean ...
    """
    model, _ = _split(model)
    X = model.check_X(X)
    net = model._engine
    infos = _layer_infos(model)
    rows = [("input", *_moments(X))]
    with _preserved(net):
        net.forward(X, bool(training))
        for info in infos:
            label = _label(info.name, info.kind, info.activation)
            rows.append((label, *_moments(net.layer_output(info.index))))
    return ActivationTable(rows)


# -- per-layer diagnostics ----------------------------------------------------------------


@dataclass
class LayerDiagnostics:
    """Statistics of one layer over a batch (see :func:`diagnose` for the definitions).

    Attributes:
        index, name, kind, activation, width: the layer (global index, ``"<kind>_<index>"``,
            "dense"/"batchnorm"/..., its activation name or None, output width).
        act_mean, act_std: mean and population std of the layer's output.
        dead_units, dead_fraction: units whose |output| <= dead_threshold for every sample
            (elementwise-activation layers only; None elsewhere).
        grad_mean, grad_std, grad_rms: of dL/d(output) over the batch (None without targets).
        grad_ratio_next: grad_rms / grad_rms of the next layer (None for the last).
        grad_ratio_last: grad_rms / grad_rms of the network's last layer.
        weight_norm, weight_grad_norm: norms of the layer's weights and their gradient (W for
            Dense layers; all trainable tensors of other layers with parameters).
        update_ratio: ||W_after - W_before|| / ||W_before|| for one optimizer step (same
            layers, Trainer only).
    """

    index: int
    name: str
    kind: str
    activation: str | None
    width: int
    act_mean: float
    act_std: float
    dead_units: int | None = None
    dead_fraction: float | None = None
    grad_mean: float | None = None
    grad_std: float | None = None
    grad_rms: float | None = None
    grad_ratio_next: float | None = None
    grad_ratio_last: float | None = None
    weight_norm: float | None = None
    weight_grad_norm: float | None = None
    update_ratio: float | None = None


#: History/log keys written by :meth:`Diagnostics.to_logs`, with the attribute each reads.
LOG_KEYS = {
    "act_mean": "act_mean",
    "act_std": "act_std",
    "dead_fraction": "dead_fraction",
    "grad_mean": "grad_mean",
    "grad_std": "grad_std",
    "grad_ratio": "grad_ratio_last",
    "update_ratio": "update_ratio",
}


@dataclass
class Diagnostics:
    """The result of :func:`diagnose`: one :class:`LayerDiagnostics` per layer.

    Attributes:
        layers: per-layer statistics, in the Network's order.
        input_mean, input_std: of the batch X.
        batch: number of rows.
        training: whether the pass ran in training mode.
        loss: the batch loss (None without targets).
        warnings: the vanishing/exploding-gradient messages (also issued as warnings).
        epoch: set by :class:`DiagnosticsCallback` (0-based), else None.
        n_in: width of X.
    """

    layers: list[LayerDiagnostics]
    input_mean: float
    input_std: float
    batch: int
    training: bool
    loss: float | None = None
    warnings: list[str] = field(default_factory=list)
    epoch: int | None = None
    n_in: int | None = None

    def __getitem__(self, name: str | int) -> LayerDiagnostics:
        if isinstance(name, numbers.Integral):
            return self.layers[name]
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"layer: no layer named {name!r} ({', '.join(r.name for r in self.layers)})")

    def to_logs(self) -> dict[str, float]:
        """Flat ``{"<stat>/<layer>": value}`` (stats: act_mean, act_std, dead_fraction,
        grad_mean, grad_std, grad_ratio (to the last layer), update_ratio); undefined values
        are left out."""
        out = {}
        for row in self.layers:
            for key, attr in LOG_KEYS.items():
                val = getattr(row, attr)
                if val is not None:
                    out[f"{key}/{row.name}"] = float(val)
        return out

    def table(self) -> str:
        """An aligned text table, one row per layer (``-``: not defined for the layer)."""

        def f(x, fmt):
            return "-" if x is None else format(x, fmt)

        width = "" if self.n_in is None else str(self.n_in)
        rows = [("input", width, f"{self.input_mean:.4g}", f"{self.input_std:.4g}") + ("-",) * 5]
        for r in self.layers:
            label = _label(r.name, r.kind, r.activation)
            dead = "-" if r.dead_units is None else f"{r.dead_units}/{r.width}"
            rows.append(
                (
                    label,
                    str(r.width),
                    f(r.act_mean, ".4g"),
                    f(r.act_std, ".4g"),
                    dead,
                    f(r.grad_mean, ".3e"),
                    f(r.grad_std, ".3e"),
                    f(r.grad_ratio_last, ".3g"),
                    f(r.update_ratio, ".3e"),
                )
            )
        head = (
            "layer",
            "width",
            "act mean",
            "act std",
            "dead",
            "grad mean",
            "grad std",
            "grad ratio",
            "update ratio",
        )
        widths = [max(len(head[c]), *(len(row[c]) for row in rows)) for c in range(len(head))]
        fmt = "  ".join([f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:]])
        lines = [fmt.format(*head)] + [fmt.format(*row) for row in rows]
        if self.loss is not None:
            lines.append(
                f"batch {self.batch}, loss {self.loss:.6g}, "
                f"{'training' if self.training else 'inference'} mode"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _check_thresholds(dead_threshold, vanishing_threshold, exploding_threshold):
    dead = v.real("dead_threshold", dead_threshold, 0.0)
    vanish = v.real("vanishing_threshold", vanishing_threshold, 0.0, low_open=True)
    explode = v.real("exploding_threshold", exploding_threshold, 0.0, low_open=True)
    if vanish >= explode:
        raise ValueError(
            f"vanishing_threshold: expected < exploding_threshold ({explode}), got {vanish}"
        )
    return dead, vanish, explode


def diagnose(
    model: Any,
    X: Any,
    y: Any = None,
    *,
    loss: Any = "cross_entropy",
    sample_weight: Any = None,
    training: bool = True,
    dead_threshold: float = 0.0,
    vanishing_threshold: float = 1e-3,
    exploding_threshold: float = 1e3,
    update_ratio: bool = True,
    warn: bool = True,
) -> Diagnostics:
    """Per-layer statistics of one fused forward (and, with targets, backward) pass.

    Definitions (over the batch, every element of a layer's (batch, width) output):

    * activation mean / std (population std): deck 000's table.
    * dead unit: a unit whose output satisfies |a| <= ``dead_threshold`` for **every**
      sample of the batch (deck 000's dead ReLU: it passes no gradient and no longer learns).
      Reported for Dense and elementwise Activation layers; with the default threshold 0 it
      is meaningful for units that output exact zeros (relu, brelu, binary_step); a small
      positive threshold extends it to near-zero outputs (gelu, silu, ...).
    * gradient mean / std / RMS: of dL/d(output) of the layer (the back-propagated signal of
      the fused backward; the loss is the batch mean, so its scale goes as 1/batch).
    * gradient ratios: ``grad_ratio_next`` = RMS / RMS of the next layer, ``grad_ratio_last``
      = RMS / RMS of the network's last layer. A ratio to the last layer below
      ``vanishing_threshold`` or above ``exploding_threshold`` is a vanishing / exploding
      gradient (decks 000/001): a :class:`DiagnosticsWarning` names the layer.
    * weight norm / weight-gradient norm: Frobenius norms of the layer's weights W and of
      dL/dW (Dense layers: W, not the bias; other layers with parameters: all of them
      together, e.g. batch-norm gamma and beta, RBF centres and widths).
    * update ratio: ``||W_after - W_before|| / ||W_before||`` for one optimizer step on this
      batch with the Trainer's optimizer, learning rate, regularizers, clipping and
      constraints (the plain fused step: no FGSM augmentation; needs a Trainer and targets;
      0 for a frozen layer). The step runs on the real Network and is then undone:
      parameters, optimizer state, running statistics and step counters are restored. The
      usual rule of thumb (deck 000's "babysit the learning process") wants about 1e-3.

    Args:
        model: a :class:`fusedmlp.Trainer` (its loss configuration and optimizer are used)
            or a model (``Sequential``/``MLP``; ``loss`` configures the heads, and no update
            ratio is computed).
        X: inputs (batch, n_in).
        y: targets as for ``Trainer.fit`` (labels or arrays; a list per head). None: only
            activation statistics.
        loss: loss name(s) for a bare model (ignored with a Trainer).
        sample_weight: per-row loss weights (batch,).
        training: training-mode pass (batch statistics, dropout/noise at the current RNG
            step). Gradients need training mode: ``training=False`` only with ``y=None``.
        dead_threshold: |a| at or below which an output counts as zero (>= 0).
        vanishing_threshold, exploding_threshold: bounds on ``grad_ratio_last``.
        update_ratio: run the probe optimizer step (Trainer and targets only).
        warn: issue the vanishing/exploding messages as one ``warnings.warn``
            (:class:`DiagnosticsWarning`, one line per layer, the first layer first).

    Returns:
        a :class:`Diagnostics` (``print(report)`` shows the table; ``report["dense_0"]``).

    Raises:
        ValueError, TypeError: bad X, y, thresholds; ``training=False`` with targets.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
        >>> y = (X[:, 0] > 0).astype(np.int64)
        >>> m = fm.MLP(n_in=4, hidden=[8], n_out=2, seed=0)
        >>> t = fm.Trainer(m, optimizer=fm.optim.SGD(lr=0.1))
        >>> r = fm.diagnostics.diagnose(t, X, y)
        >>> r["dense_0"].update_ratio > 0
        True
    """
    model, trainer = _split(model)
    dead_thr, vanish, explode = _check_thresholds(
        dead_threshold, vanishing_threshold, exploding_threshold
    )
    X = model.check_X(X)
    n = len(X)
    infos = _layer_infos(model)
    if y is not None and not training:
        raise ValueError(
            "training: gradients come from the training-mode backward; "
            "use training=True with targets (or y=None for inference-mode statistics)"
        )
    if y is None:
        if sample_weight is not None:
            raise ValueError("sample_weight: given without targets y")
        net = model._engine
        with _preserved(net):
            net.forward(X, bool(training))
            rows = _activation_rows(net, infos, dead_thr)
        return Diagnostics(rows, *_moments(X), batch=n, training=bool(training), n_in=X.shape[1])

    # The loss configuration lives in the C++ heads: a Trainer's network has it; a bare model
    # is cloned (same dtype) so that configuring a loss never touches the caller's model.
    if trainer is None:
        work, tr = _clone(model, model.dtype), None
        tr_loss = _loss_trainer(work, None, loss)
    else:
        work, tr, tr_loss = model, trainer, trainer
    ys = tr_loss._targets(y, n)
    sw = tr_loss._sample_weight(sample_weight, n)
    net = work._engine
    slices = _param_slices(net)
    with _preserved(net, step=tr is not None and update_ratio):
        net.record_layer_grads = True
        loss_value, _, _ = net.compute_gradients(X, ys, sw, False)
        rows = _activation_rows(net, infos, dead_thr)
        grads = net.grads()
        params = net.params()
        for info, row in zip(infos, rows, strict=True):
            g = np.asarray(net.layer_grad(info.index), dtype=np.float64)
            row.grad_mean, row.grad_std = _moments(g)
            row.grad_rms = float(np.sqrt(np.mean(g * g)))
            idx = _weight_index(slices, info)
            if idx is not None:
                row.weight_norm = float(np.linalg.norm(params[idx].astype(np.float64)))
                row.weight_grad_norm = float(np.linalg.norm(grads[idx].astype(np.float64)))
        if tr is not None and update_ratio:
            before = params.astype(np.float64)
            net.step(X, ys, sw, tr.current_lr())
            after = net.params().astype(np.float64)
            for info, row in zip(infos, rows, strict=True):
                idx = _weight_index(slices, info)
                if idx is not None:
                    nw = float(np.linalg.norm(before[idx]))
                    du = float(np.linalg.norm(after[idx] - before[idx]))
                    row.update_ratio = du / nw if nw > 0 else (math.inf if du > 0 else 0.0)
    messages = _gradient_ratios(rows, vanish, explode)
    if warn:
        _warn(messages, "", stacklevel=3)
    return Diagnostics(
        rows,
        *_moments(X),
        batch=n,
        training=True,
        loss=float(loss_value),
        warnings=messages,
        n_in=X.shape[1],
    )


def _weight_index(slices, info: _LayerInfo) -> np.ndarray | None:
    """Arena positions of a layer's weights: W for a Dense layer (the classic definition:
    not the bias), every trainable tensor for other layers with parameters (batch-norm
    gamma/beta, RBF centres and widths, learnable activation parameters); None without."""
    names = ["W"] if info.kind == "dense" else None
    parts = [
        np.arange(off, off + r * c)
        for (li, name), (off, r, c, trainable) in slices.items()
        if li == info.index and trainable and (names is None or name in names)
    ]
    return np.concatenate(parts) if parts else None


def _activation_rows(net, infos: list[_LayerInfo], dead_thr: float) -> list[LayerDiagnostics]:
    rows = []
    for info in infos:
        a = net.layer_output(info.index)
        mean, std = _moments(a)
        row = LayerDiagnostics(
            info.index, info.name, info.kind, info.activation, int(a.shape[1]), mean, std
        )
        if info.elementwise:
            dead = np.max(np.abs(a), axis=0) <= dead_thr
            row.dead_units = int(dead.sum())
            row.dead_fraction = row.dead_units / a.shape[1]
        rows.append(row)
    return rows


def _warn(messages: list[str], prefix: str, stacklevel: int) -> None:
    """One warning per pass (not one per layer): the first line names the first layer."""
    if messages:
        text = "\n".join([prefix + messages[0]] + ["  " + m for m in messages[1:]])
        warnings.warn(text, DiagnosticsWarning, stacklevel=stacklevel)


def _gradient_ratios(rows: list[LayerDiagnostics], vanish: float, explode: float) -> list[str]:
    """Fill grad_ratio_next / grad_ratio_last; return the vanishing/exploding messages."""
    last = rows[-1]
    for row, nxt in zip(rows, rows[1:] + [None], strict=True):
        if nxt is not None and nxt.grad_rms > 0:
            row.grad_ratio_next = row.grad_rms / nxt.grad_rms
        if last.grad_rms > 0:
            row.grad_ratio_last = row.grad_rms / last.grad_rms
    messages = []
    for row in rows[:-1]:
        ratio = row.grad_ratio_last
        if ratio is None:
            continue
        if ratio < vanish:
            messages.append(
                f"vanishing gradient at layer {row.name!r}: the RMS of dL/d(output) is "
                f"{row.grad_rms:.3e}, {ratio:.3e} times that of the last layer {last.name!r} "
                f"(vanishing_threshold {vanish:g})"
            )
        elif ratio > explode:
            messages.append(
                f"exploding gradient at layer {row.name!r}: the RMS of dL/d(output) is "
                f"{row.grad_rms:.3e}, {ratio:.3e} times that of the last layer {last.name!r} "
                f"(exploding_threshold {explode:g})"
            )
    return messages


# -- the callback -------------------------------------------------------------------------


class DiagnosticsCallback(Callback):
    """Runs :func:`diagnose` on a fixed probe batch at the end of every ``every``-th epoch
    and records the statistics in the Trainer's History.

    Keys ``"<stat>/<layer>"`` (``act_mean``, ``act_std``, ``dead_fraction``, ``grad_mean``,
    ``grad_std``, ``grad_ratio``, ``update_ratio``; see :meth:`Diagnostics.to_logs`) are
    appended to ``trainer.history.history`` with one value per epoch, NaN on the epochs that
    are skipped, so they line up with ``history.epoch`` and ``History.plot`` draws them. The
    full reports are kept in ``self.reports`` (each with its ``epoch``). The probe pass and
    the probe optimizer step (for the update ratio) are undone, so training follows the
    same trajectory with or without this callback.

    Args:
        X_probe: probe inputs (a few hundred rows are plenty).
        y_probe: probe targets (None: activation statistics only).
        every: record every this many epochs (>= 1).
        sample_weight, training, dead_threshold, vanishing_threshold, exploding_threshold,
            update_ratio, warn: as in :func:`diagnose`.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> y = (X[:, 0] > 0).astype(np.int64)
        >>> diag = fm.diagnostics.DiagnosticsCallback(X[:32], y[:32])
        >>> t = fm.Trainer(fm.MLP(n_in=4, hidden=[8], n_out=2, seed=0), callbacks=[diag])
        >>> h = t.fit(X, y, epochs=3, batch_size=16, verbose=0)
        >>> len(h.history["act_std/dense_0"]), len(diag.reports)
        (3, 3)
    """

    def __init__(
        self,
        X_probe: Any,
        y_probe: Any = None,
        every: int = 1,
        sample_weight: Any = None,
        training: bool = True,
        dead_threshold: float = 0.0,
        vanishing_threshold: float = 1e-3,
        exploding_threshold: float = 1e3,
        update_ratio: bool = True,
        warn: bool = True,
    ):
        self.X_probe = v.as_float_array("X_probe", X_probe)
        self.y_probe = y_probe
        if y_probe is not None and not training:
            raise ValueError(
                "training: gradients need training mode; use training=True with y_probe"
            )
        if sample_weight is not None and y_probe is None:
            raise ValueError("sample_weight: given without targets y_probe")
        self.every = v.integer("every", every, low=1)
        self.sample_weight = sample_weight
        self.training = bool(training)
        self.thresholds = _check_thresholds(
            dead_threshold, vanishing_threshold, exploding_threshold
        )
        self.update_ratio = bool(update_ratio)
        self.warn = bool(warn)
        self.reports: list[Diagnostics] = []
        self._keys: list[str] = []

    def on_train_begin(self, logs=None):
        # fail before the first epoch, not after it, on a probe that does not fit the model
        X = self.trainer.model.check_X(self.X_probe, "X_probe")
        if self.y_probe is not None:
            self.trainer._targets(self.y_probe, len(X))
            self.trainer._sample_weight(self.sample_weight, len(X))

    def on_epoch_end(self, epoch, logs=None):
        logs = {}
        if (epoch + 1) % self.every == 0:
            dead, vanish, explode = self.thresholds
            report = diagnose(
                self.trainer,
                self.X_probe,
                self.y_probe,
                sample_weight=self.sample_weight,
                training=self.training,
                dead_threshold=dead,
                vanishing_threshold=vanish,
                exploding_threshold=explode,
                update_ratio=self.update_ratio,
                warn=False,
            )
            if self.warn:  # stacklevel: the user's fit() call
                _warn(report.warnings, f"epoch {epoch + 1}: ", stacklevel=4)
            report.epoch = epoch
            self.reports.append(report)
            logs = report.to_logs()
            self._keys += [k for k in logs if k not in self._keys]
        # one value per epoch in every key (NaN: skipped epoch, or undefined this time), so
        # the lists line up with history.epoch
        hist = self.trainer.history.history
        n_epochs = len(self.trainer.history.epoch)
        for k in self._keys:
            lst = hist.setdefault(k, [])
            lst.extend([math.nan] * (n_epochs - 1 - len(lst)))
            lst.append(logs.get(k, math.nan))


# -- gradient check -----------------------------------------------------------------------


@dataclass
class TensorCheck:
    """The gradient check of one parameter tensor (or of the input, ``name == "input"``).

    Attributes:
        name: ``"<layer>.<param>"`` (e.g. ``"dense_0.W"``, ``"batchnorm_1.gamma"``,
            ``"dense_2.act_params"``) or ``"input"``.
        shape: the tensor's shape; n_checked: entries compared.
        max_rel_error: max over entries of |a - n| / max(|a|, |n|, atol / rtol).
        max_abs_error: max |a - n|.
        worst_index: the entry (in ``shape``) with the largest relative error, with its
            ``analytic`` and ``numeric`` values.
        n_nonsmooth: entries where the step ``eps`` crossed a kink (the difference quotient
            changed with the step and agreed with the fused gradient at ``eps / 10``).
        passed: max_rel_error <= rtol.
    """

    name: str
    shape: tuple[int, ...]
    n_checked: int
    max_rel_error: float
    max_abs_error: float
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    n_nonsmooth: int
    passed: bool


@dataclass
class GradientCheckReport:
    """The result of :func:`gradient_check`: one :class:`TensorCheck` per tensor.

    ``report.passed`` is True when every tensor passed; ``report["dense_0.W"]`` one tensor;
    ``print(report)`` a table.
    """

    tensors: list[TensorCheck]
    loss: float
    eps: float
    rtol: float
    atol: float
    rng_step: int

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tensors)

    @property
    def max_rel_error(self) -> float:
        return max((t.max_rel_error for t in self.tensors), default=0.0)

    @property
    def failed(self) -> list[str]:
        """Names of the tensors that failed."""
        return [t.name for t in self.tensors if not t.passed]

    def __getitem__(self, name: str) -> TensorCheck:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(
            f"tensor: no tensor named {name!r} ({', '.join(t.name for t in self.tensors)})"
        )

    def table(self) -> str:
        head = ("tensor", "shape", "checked", "max rel err", "max abs err", "kinks", "")
        rows = [
            (
                t.name,
                "x".join(map(str, t.shape)),
                str(t.n_checked),
                f"{t.max_rel_error:.2e}",
                f"{t.max_abs_error:.2e}",
                str(t.n_nonsmooth),
                "ok" if t.passed else "FAILED",
            )
            for t in self.tensors
        ]
        widths = [max(len(head[c]), *(len(r[c]) for r in rows)) for c in range(len(head))]
        fmt = "  ".join([f"{{:<{widths[0]}}}"] + [f"{{:>{w}}}" for w in widths[1:]])
        lines = [fmt.format(*head)] + [fmt.format(*r) for r in rows]
        verdict = "passed" if self.passed else f"FAILED: {', '.join(self.failed)}"
        lines.append(
            f"loss {self.loss:.6g}, eps {self.eps:g}, rtol {self.rtol:g}, atol {self.atol:.2g}: "
            f"{verdict}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"GradientCheckReport(\n{self.table()}\n)"


def gradient_check(
    model: Any,
    X: Any,
    y: Any,
    *,
    loss: Any = "cross_entropy",
    sample_weight: Any = None,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float | None = None,
    max_entries: int | None = 100,
    check_input: bool = True,
    rng_step: int | None = None,
    seed: int = 0,
    retry_kinks: bool = True,
) -> GradientCheckReport:
    """Compare the fused backward with central differences, in float64.

    A float64 copy of the model is built (also for a float64 model, so the caller's model,
    running statistics and gradients are never touched): same architecture, parameters,
    seed and RNG step. Its fused backward (``compute_gradients``, training mode) gives the
    analytic gradient ``a``; for each checked entry ``theta_i`` the numeric one is
    ``n = (L(theta_i + eps) - L(theta_i - eps)) / (2 eps)`` with the same training-mode
    forward. An entry passes when ``|a - n| <= max(rtol * max(|a|, |n|), atol)``; the
    relative error reported is ``|a - n| / max(|a|, |n|, atol / rtol)``.

    Stochastic layers (Dropout, GaussianNoise, RReLU) draw their masks from Philox keyed by
    the RNG step, which ``compute_gradients`` does not advance: every evaluation uses the
    same masks, so the loss is a deterministic function of the parameters. ``rng_step``
    picks the step (default: the model's current one, i.e. the masks of its next training
    step). Batch norm runs in training mode (batch statistics), as in training. Frozen
    layers (``set_trainable(layer, False)``) are checked too: on the copy their gradient is
    computed instead of held at 0.

    At a kink (ReLU at 0, maxout ties, ...) the central difference is not the derivative.
    With ``retry_kinks`` an entry that fails is re-measured with ``eps / 10``: if that
    difference quotient agrees with the fused gradient, the entry counts as a kink crossing
    (``n_nonsmooth``) and passes; a wrong gradient still fails, since the quotient at
    ``eps / 10`` does not depend on the backward being checked.

    Args:
        model: a model or a Trainer (whose loss configuration is used: losses, loss
            weights, label smoothing, the 1/2 MSE).
        X: inputs (batch, n_in); y: targets as for ``Trainer.fit``.
        loss: loss name(s) for a bare model.
        sample_weight: per-row loss weights.
        eps: the finite-difference step (> 0).
        rtol: relative tolerance (> 0).
        atol: absolute tolerance; None: ``50 * 2**-52 * max(1, |L|) / eps``, the rounding
            error of the difference quotient with a safety factor (about 1e-8 for eps 1e-6).
        max_entries: entries checked per tensor, drawn at random (``seed``) when a tensor
            has more; None checks every entry.
        check_input: also check dL/dX (the input gradient used by adversarial training),
            reported as ``"input"``.
        rng_step: the RNG step of the stochastic layers (None: the model's).
        seed: seeds the choice of entries.
        retry_kinks: re-measure failing entries with eps / 10 (see above).

    Returns:
        a :class:`GradientCheckReport` (``.passed``, ``.failed``, per-tensor rows).

    Raises:
        ValueError, TypeError: bad arguments, or a non-finite loss.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> rng = np.random.default_rng(0)
        >>> layers = [fm.Dense(6, "elu"), fm.BatchNorm(), fm.Dropout(0.3), fm.Dense(3)]
        >>> m = fm.Sequential(layers, n_in=4)
        >>> r = fm.diagnostics.gradient_check(m, rng.normal(size=(8, 4)), rng.integers(0, 3, 8))
        >>> r.passed, r.max_rel_error < 1e-6
        (True, True)
    """
    model, trainer = _split(model)
    eps = v.real("eps", eps, 0.0, low_open=True)
    rtol = v.real("rtol", rtol, 0.0, low_open=True)
    if atol is not None:
        atol = v.real("atol", atol, 0.0, low_open=True)
    if max_entries is not None:
        max_entries = v.integer("max_entries", max_entries, low=1)
    seed = v.integer("seed", seed, low=0)
    work = _clone(model, np.float64, unfreeze=True)
    tr = _loss_trainer(work, trainer, loss)
    net = work._engine
    if rng_step is not None:
        net.set_counters(rng_step=v.integer("rng_step", rng_step, low=0))
    X = work.check_X(X)
    n = len(X)
    ys = tr._targets(y, n)
    sw = tr._sample_weight(sample_weight, n)

    def f(Xe=X):
        return net.compute_gradients(Xe, ys, sw, False)[0]

    loss0, dX, _ = net.compute_gradients(X, ys, sw, bool(check_input))
    if not math.isfinite(loss0):
        raise ValueError(f"X, y: the loss is not finite ({loss0}); the gradient cannot be checked")
    grads = net.grads().copy()
    if atol is None:
        atol = 50.0 * np.finfo(np.float64).eps * max(1.0, abs(loss0)) / eps
    rng = np.random.default_rng(seed)
    infos = {i.index: i for i in _layer_infos(work)}
    params = net.params()

    def pick(size):
        if max_entries is None or size <= max_entries:
            return np.arange(size)
        return np.sort(rng.choice(size, size=max_entries, replace=False))

    def check(name, shape, analytic, entries, vary):
        """``vary(i, delta)`` evaluates the loss with entry i moved by delta."""
        a = analytic[entries].astype(np.float64)
        num = np.array([(vary(i, eps) - vary(i, -eps)) / (2 * eps) for i in entries])
        tol = np.full(len(entries), atol)  # the absolute tolerance each entry is judged with

        def rel_error(k):
            return abs(a[k] - num[k]) / max(abs(a[k]), abs(num[k]), tol[k] / rtol)

        kinks = 0
        for k, i in enumerate(entries):
            if not retry_kinks or rel_error(k) <= rtol:
                continue
            h = eps / 10  # the quotient's rounding error grows as 1/h: so does its tolerance
            fine = (vary(i, h) - vary(i, -h)) / (2 * h)
            if abs(a[k] - fine) <= max(rtol * max(abs(a[k]), abs(fine)), 10 * atol):
                num[k], tol[k] = fine, 10 * atol
                kinks += 1
        err = np.abs(a - num)
        rel = np.array([rel_error(k) for k in range(len(entries))])
        w = int(np.argmax(rel))
        return TensorCheck(
            name,
            tuple(int(s) for s in shape),
            len(entries),
            float(rel.max()),
            float(err.max()),
            tuple(int(s) for s in np.unravel_index(entries[w], shape)),
            float(a[w]),
            float(num[w]),
            kinks,
            bool(rel.max() <= rtol),
        )

    results = []
    for li, pname, off, rows, cols, trainable in net.param_info():
        if not trainable:
            continue
        size = rows * cols
        shape = work._param_view(li, pname).shape  # the shape get_weights() gives it

        def vary(i, delta, off=off):
            old = params[off + i]
            params[off + i] = old + delta
            try:
                return f()
            finally:
                params[off + i] = old

        results.append(
            check(f"{infos[li].name}.{pname}", shape, grads[off : off + size], pick(size), vary)
        )
    if check_input:
        flat = X.reshape(-1)

        def vary_x(i, delta):
            Xe = X.copy()
            Xe.reshape(-1)[i] += delta
            return f(Xe)

        results.append(check("input", X.shape, dX.reshape(-1), pick(flat.size), vary_x))
    return GradientCheckReport(
        results, float(loss0), eps, rtol, float(atol), net.counters()["rng_step"]
    )
