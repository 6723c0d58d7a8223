"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``: every
constructor parameter of scikit-learn's estimators is accepted with the same meaning and the
same default, and the fitted attributes (``coefs_``, ``intercepts_``, ``loss_``,
``loss_curve_``, ``n_iter_``, ...) have scikit-learn's shapes and meanings. The training
runs on the fused C++ Network (one call per mini-batch: forward, loss, backward, L2 penalty
and update), and the estimators add what scikit-learn's do not have:

* any activation of the library (``activation="gelu"``, ``"elu"``, ``"prelu"``, ...);
* any optimizer of ``fusedmlp.optim`` by name (``solver="rmsprop"``, ``"adamw"``, ...) and
  two full-batch second-order-style solvers over the flattened parameters, ``"lbfgs"`` and
  ``"cg"`` (conjugate gradient; decks 001/003), both through ``scipy.optimize.minimize``;
* any schedule of ``fusedmlp.schedules`` by name (``learning_rate="cosine"``, ...);
* dropout, batch normalization, weight initializers, label smoothing, gradient clipping,
  float32 or float64 computation.

Semantics matched with scikit-learn (its ``_multilayer_perceptron.py``):

* the same random-number stream: the default initialization draws each layer's weights and
  then biases from ``U(-b, b)``, ``b = sqrt(6 / (fan_in + fan_out))`` (2 instead of 6 for
  ``"logistic"``) from ``check_random_state(random_state)``; the early-stopping split and the
  per-epoch shuffles follow from the same generator in the same order. With the same
  ``random_state``, solver "sgd" follows scikit-learn's trajectory to rounding error (SGD's
  velocity form ``v <- momentum v - lr g`` is the optimizer's ``deck_variant``);
* ``loss_``: scikit-learn's definitions. Log-loss is the mean over samples of the
  cross-entropy (softmax output) or of the binary cross-entropy summed over the outputs
  (logistic output, binary and multi-label); the squared error is
  ``0.5 * mean over samples and outputs of (y - pred)^2``; the Poisson loss is the half
  deviance summed over outputs. The L2 term ``alpha / 2 * ||W||^2 / n_b`` (weights only,
  ``n_b`` the batch size, or the batch's sum of sample weights) is added to the loss and
  ``alpha * W / n_b`` to the gradient, as scikit-learn does;
* ``batch_size="auto"`` = min(200, n); ``tol`` / ``n_iter_no_change`` stopping with a
  ``ConvergenceWarning`` at ``max_iter``; ``learning_rate="invscaling"``
  (``lr_init / (t_ + 1) ** power_t`` after each epoch) and ``"adaptive"`` (lr / 5 when
  ``n_iter_no_change`` epochs do not improve, stop below 1e-6) for solver "sgd";
  ``early_stopping`` on a split stratified for binary targets, scored by accuracy or R^2,
  with the best weights restored at the end.

Differences, by design:

* Adam's epsilon sits as in ``torch.optim.Adam``: ``m^ / (sqrt(v^) + eps)``. scikit-learn
  adds ``eps`` to ``sqrt(v)`` before the bias correction; the two differ only while
  ``sqrt(v)`` is of the order of ``eps`` (1e-8).
* Multi-output squared error: the gradient of both libraries is that of the *sum* over
  outputs (scikit-learn's ``loss_`` is a mean over outputs, its gradient is not). The
  full-batch solvers minimize that consistent objective (sum over outputs plus the L2 term);
  ``loss_`` is still reported as the mean over outputs.
* The binary and categorical cross-entropies are computed from the logits (exact for any
  logit); scikit-learn clips probabilities at machine epsilon first, which changes the
  value only for saturated predictions.
* Computation runs in the input's floating dtype (float32 stays float32, float64 and integer
  input run in float64), as scikit-learn does; ``dtype="float32"`` trains in single
  precision whatever the input (about twice as fast).
* A mini-batch whose sample weights sum to zero is skipped (scikit-learn divides by zero).
* ``solver="lbfgs"`` and ``"cg"`` work on the data set with identical rows merged (their
  sample weights summed) and rows in a canonical order (without batch normalization), so a
  fit is bit-identical for shuffled rows and for integer weights in place of repeated rows.
* ``solver="lbfgs"`` and ``"cg"`` also record ``loss_curve_`` (one value per iteration) and
  ``best_loss_``. ``max_fun`` bounds the L-BFGS function evaluations; CG honours
  ``max_iter`` and ``tol`` (the gradient norm).
* A diverging loss: the fused step skips an update whose loss is not finite, so the weights
  stay finite. With ``early_stopping=True`` both libraries go on and restore the best weights;
  scikit-learn's weights turn NaN and it records NaN scores (which, NaN comparing false, also
  reset its no-improvement counter, so it runs to ``max_iter``), ours records the scores of
  its finite weights and stops after ``n_iter_no_change`` epochs without improvement. Without
  early stopping both raise ValueError; ours at the first non-finite epoch, scikit-learn's
  after ``max_iter``. A Poisson ``exp`` overflow raises at once in either case.
* ``coefs_`` / ``intercepts_`` assigned on an unfitted estimator are kept (as scikit-learn
  keeps them); a fit with ``warm_start=True`` starts from them (scikit-learn's fails with an
  AttributeError there), any other fit initializes afresh as scikit-learn's does.
* ``partial_fit`` is available for every stochastic solver on both estimators (scikit-learn's
  regressor offers it for lbfgs too, where it runs a full L-BFGS fit).

Example:
    >>> import numpy as np
    >>> from fusedmlp.sklearn import MLPClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = (X[:, 0] + X[:, 1] > 0).astype(int)
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_array, check_random_state, column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _activations, _backend, _losses
from . import _validate as v
from . import init as _init
from . import layers as L
from . import optim as _optim
from . import schedules as _schedules
from .model import Sequential

#: scikit-learn's learning-rate schedules (solver "sgd" only, as in scikit-learn).
SKLEARN_SCHEDULES = ("constant", "invscaling", "adaptive")
#: Full-batch solvers: scipy.optimize.minimize over the flattened parameters.
FULL_BATCH_SOLVERS = ("lbfgs", "cg")
#: scipy.optimize.minimize options a full-batch solver takes through ``solver_params``.
_SCIPY_OPTIONS = {"lbfgs": ("ftol", "maxcor", "maxls"), "cg": ("norm", "c1", "c2")}
#: fusedmlp optimizers that take Adam's (beta_1, beta_2, epsilon): read from the optimizers'
#: own hyper-parameter dataclasses (those with ``betas`` and ``eps``), aliases included.
_ADAM_FAMILY = tuple(
    name
    for name in [*_optim.names(), "amsgrad"]
    if {"betas", "eps"} <= {f.name for f in dataclasses.fields(_optim.get(name))}
)
#: Activations drawing random numbers in training (a full-batch objective must not).
_RANDOM_ACTIVATIONS = ("rrelu",)
#: Sparse inputs up to this size (bytes once dense) are densified once per fit.
_DENSIFY_BYTES = 1 << 28
#: Rows per forward call at inference.
_PREDICT_CHUNK = 4096


def _host_array(a: Any) -> np.ndarray:
    """A NumPy copy of an arena view (CuPy on a CUDA model)."""
    if v.is_device_array(a):
        return _backend.to_host(a)
    return np.array(a, copy=True)


def _c_array(a: Any, dtype: Any) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype`` whose descriptor is NumPy's canonical one.

    Arrays that went through pickling (joblib's memory maps in GridSearchCV, scikit-learn's
    read-only memmap checks) carry an equal but distinct dtype object ('=' byte order), which
    the extension's exact-dtype check rejects; a view with the canonical dtype copies nothing.
    """
    if isinstance(a, np.ndarray) and a.dtype is dtype and a.flags.c_contiguous:
        return a
    dtype = np.dtype(np.dtype(dtype).name)
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.dtype is dtype else a.view(dtype)


def _canonical_rows(
    X: np.ndarray, y: np.ndarray, sw: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full-batch data set in a canonical form: identical (x, y) rows merged into one row
    that carries their summed sample weight, rows of weight 0 dropped, rows in byte order.

    Without batch normalization the full-batch objective sum_i w_i l_i / sum_i w_i depends only
    on this multiset, but the value and gradient computed from it do not: their sums round
    differently with the row order and with a row of weight 2 in place of two copies. CG and
    L-BFGS amplify such last-bit differences by orders of magnitude over their iterations
    (measured: a 1-ulp perturbation of the gradient moves a CG fit's predictions by 7e-10).
    From the canonical form, shuffled, repeated and weighted versions of one data set hand the
    solver bit-identical values and gradients. -0.0 is written as +0.0 so that equal rows have
    equal bytes. Returns X, y (float64) and the weights (float64), in the canonical order."""
    X = X + X.dtype.type(0)  # -0.0 -> +0.0; also a private copy
    n = X.shape[0]
    keys = np.concatenate([X.view(np.uint8).reshape(n, -1), y.view(np.uint8).reshape(n, -1)], 1)
    keys = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    weights = np.bincount(inverse, weights=None if sw is None else sw.astype(np.float64))
    keep = weights > 0
    rows = first[keep]
    return np.ascontiguousarray(X[rows]), np.ascontiguousarray(y[rows]), weights[keep]


def _solver_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def solvers() -> list[str]:
    """The accepted ``solver`` names: scikit-learn's, "cg", and every ``fusedmlp.optim`` name.

    Returns:
        A sorted list of names.

    Example:
        >>> from fusedmlp.sklearn import solvers
        >>> {"sgd", "adam", "lbfgs", "cg", "rmsprop"} <= set(solvers())
        True
    """
    return sorted(set(_optim.names()) | {"amsgrad", *FULL_BATCH_SOLVERS})


@dataclasses.dataclass
class _Config:
    """The validated, normalized hyper-parameters of one fit."""

    hidden: list[int]
    activation: str
    activation_params: dict
    solver: str
    stochastic: bool
    schedule: str  # one of SKLEARN_SCHEDULES or a fusedmlp.schedules name
    batchnorm: Any
    dropout: float
    init: str | None
    dtype: np.dtype | None


def _real(
    name: str,
    x: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {x!r} ({type(x).__name__})")
    x = float(x)
    if np.isnan(x):
        raise ValueError(f"{name}: expected a number, got nan")
    if low is not None and (x < low or (low_open and x == low)):
        raise ValueError(f"{name}: expected a value {'>' if low_open else '>='} {low}, got {x}")
    if high is not None and (x > high or (high_open and x == high)):
        raise ValueError(f"{name}: expected a value {'<' if high_open else '<='} {high}, got {x}")
    return x


def _int(name: str, x: Any, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {x!r} ({type(x).__name__})")
    if x < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {x}")
    return int(x)


def _bool(name: str, x: Any) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {x!r}")
    return bool(x)


def _dict(name: str, x: Any) -> dict:
    if x is None:
        return {}
    if not isinstance(x, dict):
        raise TypeError(
            f"{name}: expected a dict of keyword arguments or None, got {type(x).__name__}"
        )
    return dict(x)


#: What warm_start and partial_fit must find unchanged (the fitted network's structure).
_ARCH_NAMES = (
    "n_features",
    "hidden_layer_sizes",
    "n_outputs",
    "activation",
    "activation_params",
    "batchnorm",
    "dropout",
    "dtype",
)


def _arch_key(cfg: _Config, n_features: int, n_outputs: int, dtype: Any) -> tuple:
    return (
        n_features,
        tuple(cfg.hidden),
        n_outputs,
        cfg.activation,
        repr(sorted(cfg.activation_params.items())),
        cfg.batchnorm,
        cfg.dropout,
        np.dtype(dtype).name,
    )


class _BaseMLP(BaseEstimator):
    """Shared machinery of :class:`MLPClassifier` and :class:`MLPRegressor` (not public)."""

    # -- parameters ------------------------------------------------------------------------
    def _check_params(self) -> _Config:
        """Validate every constructor parameter; raise naming the first bad one."""
        h = self.hidden_layer_sizes
        if isinstance(h, numbers.Integral) and not isinstance(h, bool):
            hidden = [h]
        else:
            try:
                hidden = list(h)
            except TypeError:
                raise TypeError(
                    "hidden_layer_sizes: expected an int or a sequence of ints, got "
                    f"{type(h).__name__}"
                ) from None
        for width in hidden:
            if isinstance(width, bool) or not isinstance(width, numbers.Integral):
                raise TypeError(f"hidden_layer_sizes: expected integers, got {hidden!r}")
        if any(width <= 0 for width in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        hidden = [int(w) for w in hidden]
        act = _activations.canonical(self.activation)
        act_params = _dict("activation_params", self.activation_params)
        hinges = act_params.pop("hinges", None)
        _activations.make_spec(
            act, hinges=hinges, **act_params
        )  # rejects softmax/maxout, bad params
        if hinges is not None:
            act_params["hinges"] = hinges
        if not isinstance(self.solver, str):
            raise TypeError(f"solver: expected a name, got {type(self.solver).__name__}")
        solver = _solver_key(self.solver)
        if solver not in solvers():
            raise ValueError(f"solver: unknown solver {self.solver!r}; expected one of {solvers()}")
        _real("alpha", self.alpha, 0.0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _int("batch_size", self.batch_size, 1)
        if not isinstance(self.learning_rate, str):
            raise TypeError(
                f"learning_rate: expected a name, got {type(self.learning_rate).__name__}"
            )
        schedule = self.learning_rate.lower()
        if schedule not in SKLEARN_SCHEDULES:
            try:
                schedule = _schedules.get(schedule, **self._schedule_kwargs(schedule)).name
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"learning_rate: expected one of {SKLEARN_SCHEDULES} or a "
                    f"fusedmlp.schedules name with valid schedule_params ({exc})"
                ) from exc
        _real("learning_rate_init", self.learning_rate_init, 0.0, low_open=True)
        _real("power_t", self.power_t, 0.0)
        _int("max_iter", self.max_iter, 1)
        _bool("shuffle", self.shuffle)
        _real("tol", self.tol, 0.0)
        if not isinstance(self.verbose, (bool, np.bool_, numbers.Integral)) or self.verbose < 0:
            raise TypeError(f"verbose: expected a bool or an int >= 0, got {self.verbose!r}")
        _bool("warm_start", self.warm_start)
        _real("momentum", self.momentum, 0.0, 1.0)
        _bool("nesterovs_momentum", self.nesterovs_momentum)
        _bool("early_stopping", self.early_stopping)
        _real("validation_fraction", self.validation_fraction, 0.0, 1.0, high_open=True)
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("validation_fraction: early_stopping needs a value in (0, 1), got 0")
        _real("beta_1", self.beta_1, 0.0, 1.0, high_open=True)
        _real("beta_2", self.beta_2, 0.0, 1.0, high_open=True)
        _real("epsilon", self.epsilon, 0.0, low_open=True)
        if not (
            isinstance(self.n_iter_no_change, numbers.Real) and self.n_iter_no_change == np.inf
        ):
            _int("n_iter_no_change", self.n_iter_no_change, 1)
        _int("max_fun", self.max_fun, 1)
        _dict("solver_params", self.solver_params)
        if self.batchnorm not in (False, True, "pre", "post"):
            raise ValueError(
                f"batchnorm: expected False, True, 'post' or 'pre', got {self.batchnorm!r}"
            )
        dropout = _real("dropout", self.dropout, 0.0, 1.0, high_open=True)
        init = None if self.init is None else _init.canonical(self.init)
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.clip_norm is not None:
            _real("clip_norm", self.clip_norm, 0.0, low_open=True)
        if self.clip_value is not None:
            _real("clip_value", self.clip_value, 0.0, low_open=True)
        if self.dtype is None:
            dtype = None
        else:
            try:
                dtype = np.dtype(self.dtype)
            except TypeError:
                dtype = None
            if dtype not in (np.float32, np.float64):
                raise ValueError(
                    f"dtype: expected None, 'float32' or 'float64', got {self.dtype!r}"
                )
        stochastic = solver not in FULL_BATCH_SOLVERS
        if not stochastic and (dropout > 0 or act in _RANDOM_ACTIVATIONS):
            what = "dropout" if dropout > 0 else "activation"
            raise ValueError(
                f"{what}: the full-batch solvers ('lbfgs', 'cg') need a deterministic "
                "objective; use a stochastic solver, or no dropout / rrelu"
            )
        self._check_extra_params()
        return _Config(
            hidden=hidden,
            activation=act,
            activation_params=act_params,
            solver=solver,
            stochastic=stochastic,
            schedule=schedule,
            batchnorm=self.batchnorm,
            dropout=dropout,
            init=init,
            dtype=dtype,
        )

    def _check_extra_params(self) -> None:
        """Subclass hook for their own parameters."""

    def _schedule_kwargs(self, name: str) -> dict:
        """Keyword arguments of a fusedmlp schedule: ``schedule_params``, with the base learning
        rate filled in from ``learning_rate_init``."""
        kw = _dict("schedule_params", self.schedule_params)
        fields = {f.name for f in dataclasses.fields(type(_schedules.get(name)))}
        for key in ("lr", "max_lr"):
            if key in fields and key not in kw:
                kw[key] = self.learning_rate_init
        return kw

    # -- the network -----------------------------------------------------------------------
    def _loss_name(self) -> str:
        """The fusedmlp loss fused with the output activation."""
        return {"softmax": "cross_entropy", "logistic": "binary_cross_entropy"}.get(
            self.out_activation_, "mse"
        )

    def _build_model(self, cfg: _Config, n_features: int, dtype: np.dtype, X: Any) -> None:
        """Build ``model_`` (layers, weights) and wire its loss head."""
        bn_momentum = 0.1 if cfg.stochastic else 1.0  # full batch: running stats = the batch's
        act, hp = cfg.activation, cfg.activation_params
        dense_init = cfg.init or "glorot_uniform"
        layers: list[L.Layer] = []
        for width in cfg.hidden:
            if cfg.batchnorm == "pre":
                layers += [
                    L.Dense(width, "identity", dense_init),
                    L.BatchNorm(momentum=bn_momentum),
                    L.Activation(act, params=dict(hp)),
                ]
            else:
                layers.append(L.Dense(width, act, dense_init, activation_params=dict(hp)))
                if cfg.batchnorm:
                    layers.append(L.BatchNorm(momentum=bn_momentum))
            if cfg.dropout > 0:
                layers.append(L.Dropout(cfg.dropout))
        out_init = "glorot_uniform" if dense_init in ("he_normal", "he_uniform") else dense_init
        layers.append(L.Dense(self.n_outputs_, "identity", out_init))
        rs = self._random_state
        random_layers = cfg.dropout > 0 or act in _RANDOM_ACTIVATIONS
        # The Philox seed (dropout, rrelu) and non-default initializers draw from random_state;
        # the default configuration draws exactly what scikit-learn draws, in its order.
        seed = int(rs.randint(np.iinfo(np.int32).max)) if (random_layers or cfg.init) else 0
        model = Sequential(layers, n_in=n_features, device=self.device, seed=seed, dtype=dtype)
        dense = [i for i, lay in enumerate(model._all_layers()) if isinstance(lay, L.Dense)]
        if cfg.init is None:  # scikit-learn's Glorot-uniform scheme, weights and biases
            units = [n_features, *cfg.hidden, self.n_outputs_]
            factor = 2.0 if act == "sigmoid" else 6.0
            for li, fan_in, fan_out in zip(dense, units[:-1], units[1:], strict=True):
                bound = np.sqrt(factor / (fan_in + fan_out))
                model._param_view(li, "W")[:] = rs.uniform(-bound, bound, (fan_in, fan_out))
                model._param_view(li, "b")[:] = rs.uniform(-bound, bound, fan_out)
        elif cfg.init == "lsuv":
            sample = X[: min(X.shape[0], 1024)]
            sample = sample.toarray() if scipy.sparse.issparse(sample) else sample
            _init.lsuv_init(model, _c_array(sample, dtype=dtype))
        self.model_ = model
        self._dense = dense
        self._head = (_losses._CODES[self._loss_name()], self._label_smoothing())
        self._arch = _arch_key(cfg, n_features, self.n_outputs_, dtype)
        self._wire_head()

    def _label_smoothing(self) -> float:
        return 0.0

    def _wire_head(self) -> None:
        code, smoothing = self._head
        # Label smoothing mixes with the uniform distribution (eps/k, as PyTorch and Keras);
        # MSE uses the 1/2 convention so its gradient is scikit-learn's (pred - y).
        half = code == _losses._CODES["mse"]
        self.model_._engine.set_losses([code], [1.0], smoothing, True, half)

    def _fitted_model(self) -> Sequential:
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet")
        return model

    @property
    def coefs_(self) -> list[np.ndarray]:
        """The weight matrices, ``coefs_[i]`` of shape (units of layer i, units of layer i+1):
        views into the network's parameters (writing to them changes the model)."""
        if "model_" not in self.__dict__ and "_preset_coefs" in self.__dict__:
            return self._preset_coefs
        model = self._fitted_model()
        return [model._param_view(li, "W") for li in self._dense]

    @coefs_.setter
    def coefs_(self, value: list) -> None:
        self._assign("coefs_", "W", value)

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """The bias vectors, ``intercepts_[i]`` of shape (units of layer i+1,) (views)."""
        if "model_" not in self.__dict__ and "_preset_intercepts" in self.__dict__:
            return self._preset_intercepts
        model = self._fitted_model()
        return [model._param_view(li, "b") for li in self._dense]

    @intercepts_.setter
    def intercepts_(self, value: list) -> None:
        self._assign("intercepts_", "b", value)

    def _assign(self, what: str, name: str, value: list) -> None:
        if "model_" not in self.__dict__:
            # scikit-learn accepts coefs_/intercepts_ on an unfitted estimator (they are plain
            # attributes there). They are kept as given; fit with warm_start=True starts from
            # them (shapes checked then), any other fit initializes afresh as scikit-learn does.
            self.__dict__["_preset_" + what.rstrip("_")] = [np.array(a, copy=True) for a in value]
            return
        model = self._fitted_model()
        views = [model._param_view(li, name) for li in self._dense]
        value = list(value)
        if len(value) != len(views):
            raise ValueError(f"{what}: expected {len(views)} arrays, got {len(value)}")
        for i, (dst, src) in enumerate(zip(views, value, strict=True)):
            src = np.asarray(src)
            if src.shape != dst.shape:
                raise ValueError(f"{what}[{i}]: expected shape {dst.shape}, got {src.shape}")
            if not np.isfinite(src).all():
                raise ValueError(f"{what}[{i}]: contains NaN or Inf")
            dst[:] = src

    @staticmethod
    def _sq_weights(weights: list[np.ndarray]) -> float:
        return float(sum(np.dot(w.ravel(), w.ravel()) for w in weights))

    # -- the optimizer ---------------------------------------------------------------------
    def _make_optimizer(self, cfg: _Config) -> _optim.Optimizer:
        kw: dict[str, Any] = {"lr": self.learning_rate_init}
        if cfg.solver == "sgd":
            kw.update(
                momentum=self.momentum,
                nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
                deck_variant=True,
            )
        elif cfg.solver in _ADAM_FAMILY:
            kw.update(betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        kw.update(_dict("solver_params", self.solver_params))
        try:
            return _optim.get(cfg.solver, **kw)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"solver={self.solver!r}: {exc}") from exc

    def _configure_optimizer(self, weight_decay: float, keep_state: bool) -> None:
        """Write the optimizer with the L2 coefficient ``weight_decay`` (alpha / n_b) into the
        Network; ``keep_state`` carries the moments and step count across the change."""
        # scikit-learn's L2 penalty (alpha) is on the weights only, and the estimator's own
        # clip_norm / clip_value are the clips in effect.
        self.model_._engine.configure(
            self._optimizer,
            weight_decay=weight_decay,
            clip_value=self.clip_value,
            clip_norm=float(self.clip_norm or 0.0),
            decay="weights",
            keep_state=keep_state,
        )
        self._weight_decay = weight_decay

    # -- fit ---------------------------------------------------------------------------------
    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False):
        cfg = self._check_params()
        first_pass = "model_" not in self.__dict__ or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if cfg.batchnorm and X.shape[0] == 1:
            raise ValueError(
                "batchnorm: batch normalization needs at least 2 samples (the variance of one "
                "sample is undefined), got n_samples=1"
            )
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        if not first_pass:
            dtype = self.model_.dtype
        else:
            dtype = np.dtype((X.dtype if cfg.dtype is None else cfg.dtype).name)
        sw = self._check_sample_weight(sample_weight, X.shape[0], dtype)
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(cfg, X, y, dtype)
        else:
            arch = _arch_key(cfg, X.shape[1], y.shape[1], dtype)
            if arch != self._arch:
                diff = [n for n, a, b in zip(_ARCH_NAMES, arch, self._arch, strict=True) if a != b]
                raise ValueError(
                    f"{', '.join(diff)}: warm_start and partial_fit continue the fitted "
                    f"network, which has a different {diff[0]}; set warm_start=False "
                    "to fit a new one"
                )
            self._head = (self._head[0], self._label_smoothing())
            self._wire_head()
        if scipy.sparse.issparse(X):
            # The kernels are dense: a sparse X that fits in _DENSIFY_BYTES is densified once,
            # a larger one batch by batch.
            X = X.tocsr()
            if X.shape[0] * X.shape[1] * dtype.itemsize <= _DENSIFY_BYTES:
                X = _c_array(X.toarray(), dtype)
        else:
            X = _c_array(X, dtype=dtype)
        if cfg.stochastic:
            self._fit_stochastic(cfg, X, y, sw, incremental)
        else:
            self._fit_full_batch(cfg, X, y, sw)
        if not np.isfinite(self.model_.parameters).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _check_sample_weight(
        self, sample_weight: Any, n: int, dtype: np.dtype
    ) -> np.ndarray | None:
        if sample_weight is None:
            return None
        if isinstance(sample_weight, numbers.Number):
            sw = np.full(n, sample_weight, dtype=dtype)
        else:
            sw = check_array(
                sample_weight, ensure_2d=False, dtype=dtype, input_name="sample_weight", order="C"
            )
        if sw.ndim != 1:
            raise ValueError(f"sample_weight: expected a 1-d array, got shape {sw.shape}")
        if sw.shape[0] != n:
            raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)!")
        if not np.isfinite(sw).all():
            raise ValueError("sample_weight: contains NaN or Inf")
        if (sw < 0).any():
            raise ValueError("sample_weight: expected non-negative weights")
        if sw.sum() <= 0:
            raise ValueError("sample_weight: the weights sum to zero; nothing to fit")
        return sw

    def _initialize(self, cfg: _Config, X: Any, y: np.ndarray, dtype: np.dtype) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(cfg.hidden) + 2
        self.out_activation_ = self._out_activation()
        self._build_model(cfg, X.shape[1], dtype, X)
        presets = [(w, self.__dict__.pop(f"_preset_{w}", None)) for w in ("coefs", "intercepts")]
        for what, value in presets:
            if value is not None and self.warm_start:
                self._assign(what + "_", "W" if what == "coefs" else "b", value)
        self._best_weights = None  # early stopping's best weights (an engine snapshot)
        self._optimizer = None
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._reset_stopping_state()

    def _reset_stopping_state(self) -> None:
        if self.early_stopping and _solver_key(self.solver) not in FULL_BATCH_SOLVERS:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    # -- the per-batch step ------------------------------------------------------------------
    def _poisson_target(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None):
        """Poisson regression through the fused half-MSE head: with t' = z - (e^z - y) the
        head's gradient z - t' is the Poisson deviance's, e^z - y (log link). Returns t' and
        the half deviance (scikit-learn's ``poisson_loss``). The extra training-mode forward
        uses the same dropout masks as the step (the RNG step has not moved) and leaves the
        batch-norm running statistics as they were."""
        engine = self.model_._engine
        with engine.preserved("buffers", "bn_updates"):
            z = engine.forward(X, True)[0].astype(np.float64)
        ez = np.exp(z)
        if not np.isfinite(ez).all():
            raise ValueError(
                "Solver produced non-finite predictions (exp overflow): the input data "
                "may contain large values and need to be preprocessed."
            )
        per = (ez - y * z + scipy.special.xlogy(y, y) - y).sum(axis=1)
        data = float(np.average(per, weights=w))
        return _c_array(z - (ez - y), dtype=X.dtype), data

    def _step(
        self,
        X: np.ndarray,
        t: np.ndarray,
        y: np.ndarray | None,
        sw: np.ndarray | None,
        lr: float,
        weights: list[np.ndarray],
    ) -> float:
        """One fused step on a batch; returns scikit-learn's batch loss (before the update)."""
        engine = self.model_._engine
        nb = X.shape[0]
        if sw is None:
            total, w = float(nb), None
        else:
            total = float(sw.sum(dtype=np.float64))
            if total <= 0:
                return 0.0
            # The C++ batch loss is (1/n_b) sum_i w_i l_i; scikit-learn's is sum_i w_i l_i / sum w
            w = _c_array(sw * (nb / total), dtype=X.dtype)
        alpha = float(self.alpha)
        if alpha / total != self._weight_decay:
            self._configure_optimizer(alpha / total, keep_state=True)
        penalty = 0.5 * alpha * self._sq_weights(weights) / total if alpha else 0.0
        if self.out_activation_ == "exp":
            t, data = self._poisson_target(X, y, w)
        if self._schedule is not None and self._schedule.get_momentum() is not None:
            engine.set_momentum(self._schedule.get_momentum())
        loss = engine.step(X, [t], w, lr)
        if self.out_activation_ != "exp":
            data = loss / (self.n_outputs_ if self.out_activation_ == "identity" else 1)
        return data + penalty

    def _current_lr(self) -> float:
        return self._schedule.get_lr() if self._schedule is not None else self._learning_rate

    # -- stochastic solvers ------------------------------------------------------------------
    def _fit_stochastic(
        self, cfg: _Config, X: Any, y: np.ndarray, sw: np.ndarray | None, incremental: bool
    ) -> None:
        opt_key = (cfg.solver, cfg.schedule)
        if not incremental or self._optimizer is None or self._opt_key != opt_key:
            self._optimizer = self._make_optimizer(cfg)
            self._opt_key = opt_key
            self._learning_rate = float(self.learning_rate_init)
            self._schedule = None
            if cfg.schedule not in SKLEARN_SCHEDULES:
                self._schedule = _schedules.get(cfg.schedule, **self._schedule_kwargs(cfg.schedule))
            self._configure_optimizer(0.0, keep_state=False)
        else:  # partial_fit keeps the optimizer's state; clip_norm / clip_value may have changed
            self._configure_optimizer(self._weight_decay, keep_state=True)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.validation_scores_ is None and self.early_stopping:
            self._reset_stopping_state()
        rs = self._random_state
        early_stopping = self.early_stopping
        if early_stopping:
            stratify = y if self._is_classifier() and self.n_outputs_ == 1 else None
            arrays = (X, y) if sw is None else (X, y, sw)
            parts = train_test_split(
                *arrays, random_state=rs, test_size=self.validation_fraction, stratify=stratify
            )
            X_train, X_val, y_train, y_val = parts[:4]
            sw_train, sw_val = (parts[4], parts[5]) if sw is not None else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            y_val = self._val_targets(y_val)
            if self._best_weights is None:
                self._best_weights = self.model_._engine.snapshot("params", "buffers")
        else:
            X_train, y_train, sw_train = X, y, sw
            X_val = y_val = sw_val = None
        t_train = self._encode_targets(y_train)
        y_train = np.asarray(y_train, dtype=np.float64) if self.out_activation_ == "exp" else None
        n = X_train.shape[0]
        idx_all = np.arange(n, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going "
                    "to be clipped",
                    stacklevel=3,
                )
            batch_size = int(np.clip(self.batch_size, 1, n))
        if cfg.batchnorm and batch_size == 1:
            raise ValueError(
                "batch_size: batch normalization needs batches of at least 2 samples, got 1"
            )
        batches = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        if cfg.batchnorm and len(batches) > 1 and batches[-1].stop - batches[-1].start == 1:
            # a lone last sample has no batch variance: it joins the previous batch
            batches[-2:] = [slice(batches[-2].start, n)]
        sparse = scipy.sparse.issparse(X_train)
        dtype = self.model_.dtype
        weights = self.coefs_  # views into the parameter arena, for the L2 term
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:  # sklearn.utils.shuffle's draw, without its per-call validation
                    perm = np.arange(n)
                    rs.shuffle(perm)
                    idx_all = idx_all[perm]
                accumulated = 0.0
                for sl in batches:
                    idx = idx_all[sl] if self.shuffle else sl
                    Xb = X_train[idx]
                    Xb = _c_array(Xb.toarray() if sparse else Xb, dtype=dtype)
                    loss = self._step(
                        Xb,
                        t_train[idx],
                        None if y_train is None else y_train[idx],
                        None if sw_train is None else sw_train[idx],
                        self._current_lr(),
                        weights,
                    )
                    if self._schedule is not None:
                        self._schedule.step()
                    accumulated += loss * (sl.stop - sl.start)
                self.n_iter_ += 1
                self.loss_ = accumulated / n
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                if not np.isfinite(self.loss_) and not early_stopping:
                    # With early stopping the run goes on as scikit-learn's does (it records
                    # NaN validation scores and restores the best weights at the end); without
                    # it no finite weights are left to return, so the ValueError scikit-learn
                    # raises after max_iter comes at once.
                    raise ValueError(
                        f"Solver produced a non-finite loss ({self.loss_}) at iteration "
                        f"{self.n_iter_}. The input data may contain large values and "
                        "need to be preprocessed, or learning_rate_init is too large."
                    )
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                if self._schedule is not None:
                    self._schedule.epoch_end(self.loss_)
                elif cfg.solver == "sgd" and cfg.schedule == "invscaling":
                    self._learning_rate = (
                        float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
                    )
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = (
                            f"Validation score did not improve more than tol={self.tol:f} for "
                            f"{self.n_iter_no_change} consecutive epochs."
                        )
                    else:
                        msg = (
                            f"Training loss did not improve more than tol={self.tol:f} for "
                            f"{self.n_iter_no_change} consecutive epochs."
                        )
                    if self._trigger_stopping(cfg, msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                        "the optimization hasn't converged yet.",
                        ConvergenceWarning,
                        stacklevel=3,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if early_stopping:
            self.model_._engine.restore(self._best_weights)

    def _trigger_stopping(self, cfg: _Config, msg: str) -> bool:
        """scikit-learn's SGDOptimizer.trigger_stopping: "adaptive" divides the learning rate
        by 5 instead of stopping, until it falls to 1e-6."""
        if not (cfg.solver == "sgd" and cfg.schedule == "adaptive" and self._schedule is None):
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._learning_rate /= 5.0
        if self.verbose:
            print(f"{msg} Setting learning rate to {self._learning_rate:f}")
        return False

    def _update_no_improvement_count(self, early_stopping: bool, X_val, y_val, sw_val) -> None:
        if early_stopping:
            score = self._score_internal(X_val, y_val, sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_weights = self.model_._engine.snapshot("params", "buffers")
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # -- full-batch solvers ------------------------------------------------------------------
    def _fit_full_batch(self, cfg: _Config, X: Any, y: np.ndarray, sw: np.ndarray | None) -> None:
        """L-BFGS or conjugate gradient over the flattened parameter arena: each function call is
        one fused forward + backward over the whole data set (decks 001/003, second-order and
        conjugate-gradient methods), plus the L2 term on the weights."""
        model = self.model_
        engine = model._engine
        dtype = model.dtype
        Xd = _c_array(X.toarray() if scipy.sparse.issparse(X) else X, dtype=dtype)
        y64 = np.asarray(y, dtype=np.float64)
        if not cfg.batchnorm:
            # Batch-norm statistics are plain means over the rows: merging rows would change
            # them, so a batch-normalized network sees the data as given.
            Xd, y64, sw = _canonical_rows(Xd, y64, sw)
        n = Xd.shape[0]
        t = self._encode_targets(y64)
        total = float(n if sw is None else sw.sum(dtype=np.float64))
        w = None if sw is None else _c_array(sw * (n / total), dtype=dtype)
        alpha = float(self.alpha)
        self._optimizer = None  # a later partial_fit starts a fresh stochastic optimizer
        mask = np.zeros(engine.params().shape[0])
        for li in self._dense:
            off, rows, cols, _ = model._index[(li, "W")]
            mask[off : off + rows * cols] = 1.0
        scale = self.n_outputs_ if self.out_activation_ == "identity" else 1
        poisson = self.out_activation_ == "exp"
        last: dict[str, Any] = {}

        def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
            model._assign(engine.params(), x)
            target, data = self._poisson_target(Xd, y64, w) if poisson else (t, None)
            loss, _, _ = engine.compute_gradients(Xd, [target], w, False)
            grad = _host_array(engine.grads()).astype(np.float64)
            wx = mask * x
            penalty = 0.5 * alpha * float(np.dot(wx, x)) / total
            grad += (alpha / total) * wx
            # Poisson trains through the half-MSE head on the shifted target of _poisson_target:
            # that head's loss is not the Poisson objective, whose gradient the head returns,
            # so the solver gets the half deviance (data), the value this gradient belongs to.
            value = float(loss) if data is None else data
            last["x"], last["loss"] = x.copy(), (loss / scale if data is None else data) + penalty
            return value + penalty, grad

        def callback(intermediate_result: scipy.optimize.OptimizeResult) -> None:
            x = intermediate_result.x
            if "x" not in last or not np.array_equal(last["x"], x):
                fun(x)
            self.loss_curve_.append(last["loss"])
            if self.verbose:
                print(f"Iteration {len(self.loss_curve_)}, loss = {last['loss']:.8f}")

        x0 = _host_array(engine.params()).astype(np.float64)
        if cfg.solver == "lbfgs":
            options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol}
            method = "L-BFGS-B"
        else:
            options = {"maxiter": self.max_iter, "gtol": self.tol}
            method = "CG"
        extra = _dict("solver_params", self.solver_params)
        unknown = sorted(set(extra) - set(_SCIPY_OPTIONS[cfg.solver]))
        if unknown:
            raise ValueError(
                f"solver_params: {unknown[0]!r} is not an option of solver {cfg.solver!r}; "
                f"expected some of {_SCIPY_OPTIONS[cfg.solver]}"
            )
        options.update(extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # line-search trial points may overflow
            res = scipy.optimize.minimize(
                fun, x0, method=method, jac=True, options=options, callback=callback
            )
        fun(res.x)  # leave the parameters (and full-batch BN statistics) at the solution
        if res.status != 0:
            msg = res.message.decode("latin1") if isinstance(res.message, bytes) else res.message
            msg = str(msg).rstrip(".")
            warnings.warn(
                f"{cfg.solver} failed to converge after {res.nit} iteration(s) "
                f"(status={res.status}): {msg}.\n\nIncrease the number of iterations "
                "(max_iter) or scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.n_iter_ = min(int(res.nit), self.max_iter)
        self.loss_ = last["loss"]
        if self.loss_curve_:
            best = np.inf if self.best_loss_ is None else self.best_loss_
            self.best_loss_ = float(min(best, min(self.loss_curve_)))

    # -- inference ---------------------------------------------------------------------------
    def _logits(self, X: Any, check_input: bool = True) -> tuple[np.ndarray, np.dtype]:
        """The network's output (before the output activation) in inference mode, as float64,
        and the dtype predictions are returned in: the input's (float32 stays float32, as in
        scikit-learn), whatever dtype the network computes in."""
        if check_input:
            X = validate_data(
                self, X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32), reset=False
            )
        model = self._fitted_model()
        sparse = scipy.sparse.issparse(X)
        if sparse:
            X = X.tocsr()
        out = []
        for s in range(0, X.shape[0], _PREDICT_CHUNK):
            chunk = X[s : s + _PREDICT_CHUNK]
            chunk = _c_array(chunk.toarray() if sparse else chunk, dtype=model.dtype)
            out.append(model._engine.forward(chunk, False)[0])
        z = np.concatenate(out) if len(out) > 1 else out[0]
        return z.astype(np.float64), X.dtype

    def _output(self, z: np.ndarray) -> np.ndarray:
        """The output activation, in float64 (probabilities, Poisson means or identity)."""
        act = self.out_activation_
        if act == "softmax":
            return scipy.special.softmax(z, axis=1)
        if act == "logistic":
            return scipy.special.expit(z)
        if act == "exp":
            return np.exp(z)
        return z

    def _is_classifier(self) -> bool:
        return isinstance(self, ClassifierMixin)

    def _check_solver(self) -> bool:
        if _solver_key(self.solver) in FULL_BATCH_SOLVERS:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. "
                f"{self.solver} is not stochastic."
            )
        return True

    # -- pickling ----------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        """The estimator's state with the C++ network replaced by its architecture and arrays
        (parameters, batch-norm statistics, optimizer state and counters)."""
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            engine = model._engine
            state["_model_state"] = {
                "config": model.config(),
                "params": _host_array(engine.params()),
                "buffers": _host_array(engine.buffers()),
                "opt_state": _host_array(engine.opt_state()),
                **engine.counters(),
            }
        return state

    def __setstate__(self, state: dict) -> None:
        """Rebuild the network from :meth:`__getstate__`'s arrays (training can continue)."""
        state = dict(state)
        saved = state.pop("_model_state", None)
        super().__setstate__(state)
        if saved is None:
            return
        model = Sequential.from_config(saved["config"], device=saved["config"].get("device"))
        engine = model._engine
        model._assign(engine.params(), saved["params"])
        model._assign(engine.buffers(), saved["buffers"])
        self.model_ = model
        self._wire_head()
        if getattr(self, "_optimizer", None) is not None:
            self._configure_optimizer(self._weight_decay, keep_state=False)
            model._assign(engine.opt_state(), saved["opt_state"])
            engine.set_counters(opt_step=saved["opt_step"])
        engine.set_counters(rng_step=saved["rng_step"], bn_updates=saved["bn_updates"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


_PARAMS_DOC = """
        hidden_layer_sizes: units of each hidden layer (an int for one layer; () for none).
        activation: hidden activation: scikit-learn's "identity", "logistic", "tanh", "relu",
            or any elementwise fusedmlp activation ("gelu", "elu", "silu", "prelu", ...).
        solver: "adam", "sgd", "lbfgs" (scikit-learn's), "cg" (conjugate gradient, full
            batch), or any ``fusedmlp.optim`` name ("rmsprop", "adamw", "nadam", "adagrad",
            "adadelta", "adamax", "adabelief", "adafactor", "amsgrad").
        alpha: L2 penalty on the weights, scikit-learn's scaling (alpha/2 ||W||^2 / n_batch).
        batch_size: mini-batch size, or "auto" = min(200, n_samples).
        learning_rate: "constant", "invscaling", "adaptive" (solver "sgd" only, as in
            scikit-learn), or a ``fusedmlp.schedules`` name ("cosine", "step_decay",
            "one_cycle", "sgdr", "warmup", ...) for any stochastic solver, configured by
            ``schedule_params`` (its base lr defaults to ``learning_rate_init``).
        learning_rate_init: the initial step size.
        power_t: exponent of "invscaling".
        max_iter: epochs (stochastic solvers) or iterations (lbfgs, cg).
        shuffle: reshuffle the samples each epoch.
        random_state: seeds the initialization, the shuffles, the early-stopping split and
            the dropout stream (int, RandomState or None).
        tol: improvement needed to reset ``n_iter_no_change``; gradient tolerance of
            lbfgs/cg.
        verbose: print the loss of each iteration.
        warm_start: continue from the previous fit's weights.
        momentum, nesterovs_momentum: SGD momentum (scikit-learn's velocity form).
        early_stopping: hold out ``validation_fraction`` of the data and stop when its
            score stops improving; the best weights are restored.
        validation_fraction: held-out fraction for early stopping.
        beta_1, beta_2, epsilon: Adam-family moment decays and epsilon.
        n_iter_no_change: epochs without ``tol`` improvement before stopping.
        max_fun: maximum L-BFGS function evaluations.
        activation_params: hyper-parameters of the activation (e.g. ``{"alpha": 0.1}`` for
            leaky_relu; ``{"hinges": 2}`` for apl).
        solver_params: extra keyword arguments of the fusedmlp optimizer (e.g.
            ``{"amsgrad": True}``, ``{"weight_decay": 0.01}`` for adamw); for "lbfgs" and
            "cg", options of ``scipy.optimize.minimize`` ("ftol", "maxcor", "maxls"; "norm",
            "c1", "c2").
        schedule_params: keyword arguments of the fusedmlp schedule (e.g. ``{"T": 100}``).
        dropout: drop rate after each hidden layer (stochastic solvers).
        batchnorm: batch normalization after each hidden layer (True/"post": after the
            activation; "pre": between the weights and the activation, deck 002).
        init: weight initializer name of ``fusedmlp.init`` ("he_normal", "orthogonal",
            "lsuv", ...; biases 0); None: scikit-learn's Glorot-uniform scheme.
        device: "cpu" or "cuda".
        clip_norm: clip the gradient's global L2 norm to this value (None: off).
        clip_value: clip each gradient element to [-clip_value, clip_value] (None: off).
        dtype: None (compute in the input's floating dtype, as scikit-learn), "float32" or
            "float64".
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = (
        """Multi-layer perceptron classifier with scikit-learn's API (fused kernels).

    Softmax output and cross-entropy for multi-class targets, a logistic output and
    binary cross-entropy for binary and multi-label targets (scikit-learn's choices).

    Args:"""
        + _PARAMS_DOC
        + """        label_smoothing: epsilon of label smoothing (uniform mixing,
            t' = (1 - eps) t + eps/k; binary outputs use k = 2).

    Attributes:
        classes_: the class labels (per output for multi-label targets).
        coefs_, intercepts_: weight matrices (n_in, n_out) and bias vectors of each layer.
        loss_: the loss at the end of training (scikit-learn's definition, with the L2 term).
        loss_curve_: the loss after each iteration.
        best_loss_: the best training loss (None with early stopping).
        validation_scores_, best_validation_score_: accuracy on the held-out set per epoch,
            and the best (early stopping only, else None).
        n_iter_: iterations run; t_: training samples seen (stochastic solvers).
        n_layers_: layers including input and output; n_outputs_: output units.
        out_activation_: "softmax" or "logistic".
        n_features_in_, feature_names_in_: as every scikit-learn estimator.
        model_: the fitted ``fusedmlp.Sequential``.

    Example:
        >>> from sklearn.datasets import load_iris
        >>> from fusedmlp.sklearn import MLPClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> clf = MLPClassifier(hidden_layer_sizes=(32,), solver="lbfgs", random_state=0)
        >>> clf.fit(X, y).score(X, y) > 0.95
        True
        >>> clf.predict_proba(X[:2]).shape
        (2, 3)
    """
    )

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        activation_params=None,
        solver_params=None,
        schedule_params=None,
        dropout=0.0,
        batchnorm=False,
        init=None,
        device="cpu",
        label_smoothing=0.0,
        clip_norm=None,
        clip_value=None,
        dtype=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.activation_params = activation_params
        self.solver_params = solver_params
        self.schedule_params = schedule_params
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.init = init
        self.device = device
        self.label_smoothing = label_smoothing
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.dtype = dtype

    def _check_extra_params(self) -> None:
        _real("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)

    def _label_smoothing(self) -> float:
        return float(self.label_smoothing)

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as "
                        f"in the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _encode_targets(self, y: np.ndarray) -> np.ndarray:
        """Binarized targets for the fused head: int32 class indices (softmax) or 0/1 rows."""
        if self.out_activation_ == "softmax":
            return _c_array(np.argmax(y, axis=1), dtype=np.int32)
        return _c_array(y, dtype=self.model_.dtype)

    def _val_targets(self, y: np.ndarray) -> np.ndarray:
        return self._label_binarizer.inverse_transform(y)

    def _score_internal(self, X, y, sample_weight) -> float:
        pred = self._predict(X, check_input=False)
        return float(accuracy_score(y, pred, sample_weight=sample_weight))

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and targets y.

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.
            y: class labels (n_samples,), or a (n_samples, n_labels) indicator matrix for
                multi-label classification.
            sample_weight: per-sample weights (n_samples,) or None.

        Returns:
            self (fitted).

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPClassifier
            >>> clf = MLPClassifier(max_iter=50, random_state=0).fit(np.eye(4), [0, 1, 1, 0])
            >>> clf.classes_.tolist()
            [0, 1]
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with one epoch over the given data (stochastic solvers only).

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.
            y: class labels (n_samples,) or a multi-label indicator matrix.
            sample_weight: per-sample weights (n_samples,) or None.
            classes: every class across all calls; required on the first call (y need not
                contain all of them).

        Returns:
            self.

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPClassifier
            >>> clf = MLPClassifier(random_state=0)
            >>> clf = clf.partial_fit(np.eye(3), [0, 1, 1], classes=[0, 1, 2])
            >>> clf.predict_proba(np.eye(3)).shape
            (3, 3)
        """
        if _partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        proba = self._output(self._logits(X, check_input=check_input)[0])
        if self.n_outputs_ == 1:
            proba = proba.ravel()
        return self._label_binarizer.inverse_transform(proba)

    def predict(self, X):
        """Predict class labels.

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.

        Returns:
            labels (n_samples,), or an indicator matrix (n_samples, n_labels) for multi-label.

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPClassifier
            >>> clf = MLPClassifier(max_iter=100, random_state=0).fit(np.eye(4), [0, 1, 1, 0])
            >>> clf.predict(np.eye(4)).shape
            (4,)
        """
        check_is_fitted(self)
        return self._predict(X)

    def predict_proba(self, X):
        """Probability of each class (columns in the order of ``classes_``).

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.

        Returns:
            (n_samples, n_classes) probabilities (per-label probabilities for multi-label).

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPClassifier
            >>> clf = MLPClassifier(max_iter=100, random_state=0).fit(np.eye(4), [0, 1, 1, 0])
            >>> np.allclose(clf.predict_proba(np.eye(4)).sum(axis=1), 1.0)
            True
        """
        check_is_fitted(self)
        z, dtype = self._logits(X)
        if self.n_outputs_ == 1:  # 1 - p as expit(-z): no cancellation when p rounds to 1
            z = z.ravel()
            p = np.column_stack([scipy.special.expit(-z), scipy.special.expit(z)]).astype(dtype)
        else:
            p = self._output(z).astype(dtype)
        # A sigmoid or softmax output is never 0: underflow stops at the smallest normal number,
        # so predict_log_proba (its log) stays finite.
        return np.maximum(p, np.finfo(dtype).tiny, out=p)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba` (scikit-learn's definition). The probabilities are
        floored at the smallest normal number, so the result is always finite.

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.

        Returns:
            (n_samples, n_classes) log-probabilities.

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPClassifier
            >>> clf = MLPClassifier(max_iter=100, random_state=0).fit(np.eye(4), [0, 1, 1, 0])
            >>> bool(np.isfinite(clf.predict_log_proba(np.eye(4))).all())
            True
        """
        p = self.predict_proba(X)
        return np.log(p, out=p)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = (
        """Multi-layer perceptron regressor with scikit-learn's API (fused kernels).

    Identity output and the (half) squared error, or an exponential output and the (half)
    Poisson deviance with ``loss="poisson"``; single or multiple outputs.

    Args:
        loss: "squared_error" or "poisson" (log link; needs y >= 0)."""
        + _PARAMS_DOC
        + """
    Attributes:
        coefs_, intercepts_: weight matrices (n_in, n_out) and bias vectors of each layer.
        loss_: the loss at the end of training (scikit-learn's definition, with the L2 term).
        loss_curve_: the loss after each iteration.
        best_loss_: the best training loss (None with early stopping).
        validation_scores_, best_validation_score_: R^2 on the held-out set per epoch,
            and the best (early stopping only, else None).
        n_iter_: iterations run; t_: training samples seen (stochastic solvers).
        n_layers_: layers including input and output; n_outputs_: outputs.
        out_activation_: "identity" (or "exp" for the Poisson loss).
        n_features_in_, feature_names_in_: as every scikit-learn estimator.
        model_: the fitted ``fusedmlp.Sequential``.

    Example:
        >>> import numpy as np
        >>> from fusedmlp.sklearn import MLPRegressor
        >>> X = np.linspace(-1, 1, 200)[:, None]; y = np.sin(3 * X).ravel()
        >>> reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", solver="lbfgs",
        ...                    random_state=0).fit(X, y)
        >>> reg.score(X, y) > 0.99
        True
    """
    )

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        activation_params=None,
        solver_params=None,
        schedule_params=None,
        dropout=0.0,
        batchnorm=False,
        init=None,
        device="cpu",
        clip_norm=None,
        clip_value=None,
        dtype=None,
    ):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.activation_params = activation_params
        self.solver_params = solver_params
        self.schedule_params = schedule_params
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.init = init
        self.device = device
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.dtype = dtype

    def _check_extra_params(self) -> None:
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss: expected 'squared_error' or 'poisson', got {self.loss!r}")

    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("y: the Poisson loss needs non-negative targets (y >= 0)")
        return X, y

    def _encode_targets(self, y: np.ndarray) -> np.ndarray:
        return _c_array(y, dtype=self.model_.dtype)

    def _val_targets(self, y: np.ndarray) -> np.ndarray:
        return y

    def _score_internal(self, X, y, sample_weight) -> float:
        pred = self._predict(X, check_input=False)
        if not np.isfinite(pred).all():
            return np.nan
        return float(r2_score(y, pred.reshape(y.shape), sample_weight=sample_weight))

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and targets y.

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.
            y: targets (n_samples,) or (n_samples, n_outputs).
            sample_weight: per-sample weights (n_samples,) or None.

        Returns:
            self (fitted).

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPRegressor
            >>> reg = MLPRegressor(max_iter=20, random_state=0).fit(np.eye(3), [0.0, 1.0, 2.0])
            >>> reg.n_outputs_
            1
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with one epoch over the given data (stochastic solvers only).

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.
            y: targets (n_samples,) or (n_samples, n_outputs).
            sample_weight: per-sample weights (n_samples,) or None.

        Returns:
            self.

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPRegressor
            >>> reg = MLPRegressor(random_state=0).partial_fit(np.eye(3), [0.0, 1.0, 2.0])
            >>> reg.n_iter_, reg.t_
            (1, 3)
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        z, dtype = self._logits(X, check_input=check_input)
        pred = self._output(z).astype(dtype)
        return pred.ravel() if self.n_outputs_ == 1 else pred

    def predict(self, X):
        """Predict the targets.

        Args:
            X: (n_samples, n_features) array-like or sparse matrix.

        Returns:
            predictions (n_samples,) or (n_samples, n_outputs).

        Example:
            >>> import numpy as np
            >>> from fusedmlp.sklearn import MLPRegressor
            >>> reg = MLPRegressor(max_iter=20, random_state=0).fit(np.eye(3), [0.0, 1.0, 2.0])
            >>> reg.predict(np.eye(3)).shape
            (3,)
        """
        check_is_fitted(self)
        return self._predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.positive_only = self.loss == "poisson"
        return tags


def _partial_fit_first_call(est: MLPClassifier, classes: Any) -> bool:
    """scikit-learn's rule: ``classes`` is required on the first partial_fit call and must not
    change afterwards. Sets ``classes_`` on the first call and returns True then."""
    if getattr(est, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(est, "classes_", None) is not None:
            if not np.array_equal(est.classes_, unique_labels(classes)):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to "
                    f"partial_fit, was: {est.classes_!r}"
                )
        else:
            est.classes_ = unique_labels(classes)
            return True
    return False


__all__ = ["MLPClassifier", "MLPRegressor", "solvers"]
