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

import numpy as np

from . import _activations as acts
from . import _validate as v
from ._loader import _core

KIND = {
    "dense": 0,
    "batchnorm": 1,
    "dropout": 2,
    "noise": 3,
    "activation": 4,
    "softmax": 5,
    "maxout": 6,
    "rbf": 7,
}


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
        self.units = v.width("units", self.units)
        hp = dict(self.activation_params)
        hinges = hp.pop("hinges", None)
        self._act = acts.make_spec(self.activation, hinges=hinges, **hp)
        self.activation = self._act.name
        if self.max_norm is not None:
            v.real("max_norm", self.max_norm, 0.0, low_open=True)
        v.real("bias_init", self.bias_init)
        v.flag("use_bias", self.use_bias)

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
        v.flag("affine", self.affine)
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
        key = acts.canonical(self.name, "name")
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


RBF_INITS = ("kmeans++", "random_samples", "uniform")
RBF_WIDTHS = ("spacing", "dmax")


@dataclass
class RBF(Layer):
    """Radial basis function layer (deck 003): one Gaussian feature per centre,
    ``phi_k(x) = exp(-||x - mu_k||^2 / (2 sigma_k^2))``, with learnable centres mu_k and
    widths sigma_k. Followed by ``fm.Dense(n_out)`` it is deck 003's RBF network
    ``y = g(w^T phi(x))`` (the Dense bias is the deck's constant feature 1).

    The centres and widths are placed from data (deck 003: "randomly and uniformly, by vector
    quantization (K-means++, ...)") by :meth:`fusedmlp.Sequential.init_rbf`, which the
    Trainer calls on the training inputs before the first step. Until then the layer holds a
    data-free placeholder (centres N(0, 1), sigma = 1). The Network stores ``log sigma``
    (``get_weights`` lists the centres (n_centers, n_in), then ``log sigma`` (n_centers,)), so
    the widths stay > 0 under any optimizer step.

    Args:
        n_centers: number of centres K (the layer's output width).
        init: centre placement from data: "kmeans++" (scikit-learn's ``KMeans`` with k-means++
            seeding, Arthur & Vassilvitskii 2007, then Lloyd iterations), "random_samples"
            (K distinct training rows) or "uniform" (uniform in the data's bounding box).
        width: "spacing" (sigma_k = mean distance from mu_k to its ``neighbors`` nearest other
            centres: the p-nearest-neighbour rule of Moody & Darken 1989, p = 2), "dmax" (one
            sigma = d_max / sqrt(2K), d_max the largest distance between centres: Haykin,
            *Neural Networks*, section 5.13) or a number (that sigma for every centre).
        neighbors: p of the "spacing" rule, >= 1.
        n_init: k-means runs with different seeds (the best inertia is kept), >= 1.
        trainable: False freezes the centres and widths (the optimizer skips them).

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> X = np.linspace(-1, 1, 50)[:, None]
        >>> model = fm.Sequential([fm.RBF(5), fm.Dense(1)], n_in=1)
        >>> model.init_rbf(X)
        >>> [w.shape for w in model.get_weights()]
        [(5, 1), (5,), (5, 1), (1,)]
    """

    n_centers: int
    init: str = "kmeans++"
    width: Any = "spacing"
    neighbors: int = 2
    n_init: int = 1
    trainable: bool = True
    kind = "rbf"

    def __post_init__(self):
        self.n_centers = v.width("n_centers", self.n_centers)
        if not isinstance(self.init, str) or self.init.lower() not in RBF_INITS:
            raise ValueError(f"init: expected one of {', '.join(RBF_INITS)}, got {self.init!r}")
        self.init = self.init.lower()
        if isinstance(self.width, str):
            if self.width.lower() not in RBF_WIDTHS:
                raise ValueError(
                    f"width: expected one of {', '.join(RBF_WIDTHS)} or a number > 0, "
                    f"got {self.width!r}"
                )
            self.width = self.width.lower()
        else:
            self.width = v.real("width", self.width, 0.0, low_open=True)
        self.neighbors = v.integer("neighbors", self.neighbors, low=1)
        self.n_init = v.integer("n_init", self.n_init, low=1)
        if not isinstance(self.trainable, bool):
            raise TypeError(f"trainable: expected a bool, got {type(self.trainable).__name__}")

    def spec(self):
        s = _core.LayerSpec()
        s.kind = KIND["rbf"]
        s.units = self.n_centers
        return s

    def fit_centers(self, X: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Place the centres and widths on data (deck 003's first learning step).

        Args:
            X: the layer's inputs (n, n_in), n >= n_centers for "kmeans++" and
                "random_samples".
            seed: seeds k-means++ / the sampling (deterministic for a seed).

        Returns:
            ``(centers, widths)``: float64 arrays (n_centers, n_in) and (n_centers,), widths > 0.

        Example:
            >>> import numpy as np, fusedmlp as fm
            >>> C, s = fm.RBF(3, init="random_samples").fit_centers(np.eye(4), seed=0)
            >>> C.shape, bool((s > 0).all())
            ((3, 4), True)
        """
        X = np.asarray(v.as_float_array("X", X), dtype=np.float64)
        n, K = X.shape[0], self.n_centers
        rng = np.random.default_rng(seed)
        if self.init in ("kmeans++", "random_samples") and n < K:
            raise ValueError(f"X: init={self.init!r} needs at least n_centers={K} rows, got {n}")
        if self.init == "kmeans++":
            import warnings

            from sklearn.cluster import KMeans
            from sklearn.exceptions import ConvergenceWarning

            km = KMeans(
                n_clusters=K,
                init="k-means++",
                n_init=self.n_init,
                random_state=int(rng.integers(2**31 - 1)),
            )
            with warnings.catch_warnings():
                # fewer distinct points than K: duplicated centres, handled by the width floor
                warnings.simplefilter("ignore", ConvergenceWarning)
                centers = km.fit(X).cluster_centers_
        elif self.init == "random_samples":
            centers = X[np.sort(rng.choice(n, size=K, replace=False))].copy()
        else:
            centers = rng.uniform(X.min(axis=0), X.max(axis=0), size=(K, X.shape[1]))
        return centers, _rbf_widths(self, centers, X)


def _rbf_widths(layer: RBF, centers: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The width rule of ``layer.width`` (see :class:`RBF`), floored at 1e-3 times the data's
    spread so duplicated centres do not get sigma = 0."""
    K = centers.shape[0]
    spread = float(np.sqrt(np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=1))))
    floor = 1e-3 * spread if spread > 0 else 1e-3
    if not isinstance(layer.width, str):
        return np.full(K, float(layer.width))
    if K == 1:
        # no other centre to measure spacing against: the RMS distance of the data to it
        rms = float(np.sqrt(np.mean(np.sum((X - centers[0]) ** 2, axis=1))))
        return np.full(1, max(rms, floor))
    diff = centers[:, None, :] - centers[None, :, :]
    dist = np.sqrt(np.sum(diff * diff, axis=2))
    if layer.width == "dmax":
        sigma = np.full(K, dist.max() / np.sqrt(2.0 * K))
    else:
        np.fill_diagonal(dist, np.inf)
        p = min(layer.neighbors, K - 1)
        sigma = np.sort(dist, axis=1)[:, :p].mean(axis=1)
    return np.maximum(sigma, floor)


LAYER_TYPES = {c.__name__: c for c in (Dense, BatchNorm, Dropout, GaussianNoise, Activation, RBF)}


def from_dict(d: dict) -> Layer:
    """Rebuild a layer from :meth:`Layer.to_dict` (checkpoints)."""
    d = dict(d)
    cls = LAYER_TYPES.get(d.pop("type", None))
    if cls is None:
        raise ValueError(f"layer: unknown layer type in {d!r}")
    return cls(**d)
