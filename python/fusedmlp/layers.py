"""Layer specifications. A model is a list of these; ``fusedmlp.model`` compiles them into one
C++ Network (no Python runs per layer during training).

Example:
    >>> import fusedmlp as fm
    >>> layers = [fm.Dense(64, activation="relu"), fm.BatchNorm(), fm.Dropout(0.2), fm.Dense(10)]
"""

from __future__ import annotations

import abc

from dataclasses import dataclass, field
from typing import Any

from . import _activations as acts
from . import _validate as v
from ._loader import _core

KIND = {"dense": 0, "batchnorm": 1, "dropout": 2, "noise": 3, "activation": 4, "softmax": 5, "maxout": 6}


class Layer(abc.ABC):
    """Base class of the layer specs."""

    kind: str = ""

    @abc.abstractmethod
    def spec(self) -> Any:
        """The C++ ``LayerSpec`` of this layer."""

    def to_dict(self) -> dict:
        d = {k: val for k, val in self.__dict__.items() if not k.startswith("_")}
        return {"type": type(self).__name__, **d}


def _act_fields(s, spec: acts.ActivationSpec) -> None:
    s.act = acts._CODES[spec.name]
    for k, val in spec.hyper.items():
        setattr(s, k, val)
    s.hinges = spec.hinges


@dataclass
class Dense(Layer):
    """Fully connected layer ``f(x W + b)`` with the activation fused in.

    Args:
        units: output width.
        activation: any elementwise activation name (see ``fusedmlp.ops.activation_names``).
        init: weight initializer name (see ``fusedmlp.init``).
        use_bias: learn a bias.
        bias_init: initial bias value (a small positive value keeps ReLU units alive, deck 000).
        max_norm: constrain each unit's incoming weight vector to this L2 norm (None: off).
        activation_params: hyper-parameters of the activation (e.g. ``{"alpha": 0.1}``);
            ``hinges`` for APL.
    """

    units: int
    activation: str = "identity"
    init: str = "glorot_uniform"
    use_bias: bool = True
    bias_init: float = 0.0
    max_norm: float | None = None
    activation_params: dict = field(default_factory=dict)
    kind = "dense"

    def __post_init__(self):
        self.units = v.integer("units", self.units, low=1)
        hp = dict(self.activation_params)
        hinges = hp.pop("hinges", None)
        self._act = acts.make_spec(self.activation, hinges=hinges, **hp)
        self.activation = self._act.name
        if self.max_norm is not None:
            v.real("max_norm", self.max_norm, 0.0, low_open=True)
        v.real("bias_init", self.bias_init)

    def spec(self):
        s = _core.LayerSpec()
        s.kind = KIND["dense"]
        s.units = self.units
        s.use_bias = bool(self.use_bias)
        s.max_norm = self.max_norm is not None
        _act_fields(s, self._act)
        return s


@dataclass
class BatchNorm(Layer):
    """Batch normalization over the batch axis (decks 000/001/002).

    Args:
        momentum: running statistics r <- (1 - momentum) r + momentum * batch statistic
            (PyTorch's convention; deck 001's MA weight delta is ``1 - momentum``).
        eps: added to the variance.
        affine: learn gamma and beta.
        init: "zeros_ones" (running mean 0, variance 1, as PyTorch and Keras: the default,
            so results match those libraries) or "first_batch" (deck 001: MA(1) = first batch).
    """

    momentum: float = 0.1
    eps: float = 1e-5
    affine: bool = True
    init: str = "zeros_ones"
    kind = "batchnorm"

    def __post_init__(self):
        v.real("momentum", self.momentum, 0.0, 1.0)
        v.real("eps", self.eps, 0.0, low_open=True)
        if self.init not in ("zeros_ones", "first_batch"):
            raise ValueError(f"init: expected 'zeros_ones' or 'first_batch', got {self.init!r}")

    def spec(self):
        s = _core.LayerSpec()
        s.kind = KIND["batchnorm"]
        s.momentum, s.eps, s.affine = float(self.momentum), float(self.eps), bool(self.affine)
        s.init_from_batch = self.init == "first_batch"
        return s


@dataclass
class Dropout(Layer):
    """Inverted dropout with drop rate ``rate`` (keep 1 - rate, scaled by 1/(1 - rate)).

    Masks come from Philox keyed by (seed, step, layer): reproducible and identical for any
    thread count. Identity at inference."""

    rate: float
    kind = "dropout"

    def __post_init__(self):
        v.real("rate", self.rate, 0.0, 1.0, high_open=True)

    def spec(self):
        s = _core.LayerSpec()
        s.kind = KIND["dropout"]
        s.rate = float(self.rate)
        return s


@dataclass
class GaussianNoise(Layer):
    """Additive N(0, std^2) noise in training only (deck 002's noise injection)."""

    std: float
    kind = "noise"

    def __post_init__(self):
        v.real("std", self.std, 0.0)

    def spec(self):
        s = _core.LayerSpec()
        s.kind = KIND["noise"]
        s.rate = float(self.std)
        return s


@dataclass
class Activation(Layer):
    """A stand-alone activation (elementwise, or the row ops "softmax" and "maxout").

    Args:
        name: activation name.
        pieces: maxout group size k.
        params: hyper-parameters of the activation (``hinges`` for APL).
    """

    name: str
    pieces: int | None = None
    params: dict = field(default_factory=dict)
    kind = "activation"

    def __post_init__(self):
        key = acts.canonical(self.name)
        self.name = key
        if key == "maxout":
            if self.pieces is None:
                raise ValueError("pieces: maxout needs the group size k")
            self.pieces = v.integer("pieces", self.pieces, low=1)
            self._act = None
        elif key == "softmax":
            self._act = None
        else:
            if self.pieces is not None:
                raise ValueError(f"pieces: only maxout takes pieces, not {key!r}")
            hp = dict(self.params)
            hinges = hp.pop("hinges", None)
            self._act = acts.make_spec(key, hinges=hinges, **hp)

    def spec(self):
        s = _core.LayerSpec()
        if self.name == "softmax":
            s.kind = KIND["softmax"]
        elif self.name == "maxout":
            s.kind = KIND["maxout"]
            s.units = self.pieces
        else:
            s.kind = KIND["activation"]
            _act_fields(s, self._act)
        return s


LAYER_TYPES = {c.__name__: c for c in (Dense, BatchNorm, Dropout, GaussianNoise, Activation)}


def from_dict(d: dict) -> Layer:
    """Rebuild a layer from :meth:`Layer.to_dict` (checkpoints)."""
    d = dict(d)
    cls = LAYER_TYPES.get(d.pop("type", None))
    if cls is None:
        raise ValueError(f"layer: unknown layer type in {d!r}")
    return cls(**d)
