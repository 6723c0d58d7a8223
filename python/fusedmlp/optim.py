"""Optimizers: fused, one-pass C++ updates (csrc/common/optimizer.h, csrc/cpu/optimizer.cpp).

Each optimizer is the dataclass of its hyper-parameters (``dataclasses.fields(opt)``; they
are checked once, when it is built or a field is assigned, through one table of validators)
and keeps its state as explicit data (``opt.state``: the step count and one flat NumPy state
array per parameter), so it can be saved, restored and compared. ``config()`` returns the
C++ ``OptConfig`` the Network's fused training step uses; ``step(params, grads)`` updates
lists of NumPy arrays in place for standalone use, one C++ call per (param, grad) pair.

Defaults and formulas follow ``torch.optim`` exactly; where the decks differ (the momentum
convention and Nesterov's form, where eps sits in RMSProp and Adam, NAdam's momentum
schedule) ``deck_variant=True`` selects the deck's form:

==============  ==========================================  ==================================
optimizer       default (torch.optim)                       deck_variant=True
==============  ==========================================  ==================================
SGD momentum    b <- mu b + g, theta -= lr b (= deck 000)   v <- mu v - lr g, theta += v
                                                            (decks 001-003, Alg. 8.2)
SGD Nesterov    theta -= lr (g + mu b)                      theta += mu v - lr g (deck 003
                                                            Alg. 3 on the look-ahead point)
RMSProp         g / (sqrt(r) + eps) (= deck 000)            g / sqrt(r + eps) (deck 002 8.5)
Adam, AdamW     m^ / (sqrt(v^) + eps) (= deck 000)          m^ / sqrt(v^ + eps) (deck 002 8.7)
NAdam           mu_t = b1 (1 - 0.5 * 0.96^(t psi))          mu_t = b1 (Dozat's constant form)
==============  ==========================================  ==================================

With a constant learning rate both momentum conventions give the same trajectory (v = -lr b);
Nesterov's look-ahead form of deck 003, written on the look-ahead parameters as libraries
store them, is exactly torch's rule.

Regularization is fused into the step (deck 002): ``weight_decay`` adds lambda theta to the
gradient (coupled L2; decoupled for AdamW and Adafactor, or anywhere with
``decoupled_weight_decay=True``), ``l1`` adds lambda sign(theta), ``clip_norm`` rescales all
gradients by min(1, c / (||g|| + 1e-6)) (torch's ``clip_grad_norm_``), ``clip_value`` clips
each gradient element, ``max_norm`` projects each unit's incoming weights (a column of an
(n_in, n_out) matrix) onto the ball of radius c after the update. Penalties and max-norm apply
to weights (2-d arrays) only by default: ``decay="all"`` or ``"none"``, or a per-parameter
list given to ``step``, changes that.

Adding an optimizer: one entry of ``FM_OPT_LIST`` and one ``OptRule`` (its formula and traits)
in csrc/common/optimizer.h, and one dataclass here whose fields are checked by ``_CHECKS`` and
written into the config by ``_TO_CONFIG`` (the same name by default).

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> W = np.ones((2, 3)); gW = np.full((2, 3), 0.5)
    >>> opt = fm.optim.SGD(lr=0.1)
    >>> opt.step([W], [gW]); float(W[0, 0])
    0.95
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

import numpy as np

from . import _backend
from . import _validate as v
from ._loader import _core

#: Optimizer names in the order of the C++ enum ``fm::Opt``.
OPTIMIZERS: tuple[str, ...] = tuple(_core.optimizer_names())

_DECAY_SCOPES = ("weights", "all", "none")


# ---------------------------------------------------------------------- validation
# One validator per hyper-parameter name: (name, value) -> the checked value, or a
# ValueError/TypeError naming it. An optimizer whose field of that name means something else
# overrides the entry in its ``_checks``.
_Check = Callable[[str, Any], Any]


def _real(low: float | None = None, high: float | None = None, **ends: bool) -> _Check:
    return lambda name, x: v.real(name, x, low, high, **ends)


def _betas(name: str, betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {betas!r}")
    return (
        v.real(f"{name}[0]", betas[0], 0.0, 1.0, high_open=True),
        v.real(f"{name}[1]", betas[1], 0.0, 1.0, high_open=True),
    )


def _flag(name: str, x: Any) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(x).__name__}")
    return bool(x)


def _optional_positive(name: str, x: Any) -> float | None:
    return None if x is None else v.real(name, x, 0.0, low_open=True)


def _decay_scope(name: str, x: Any) -> str:
    if x not in _DECAY_SCOPES:
        raise ValueError(f"{name}: expected one of {_DECAY_SCOPES}, got {x!r}")
    return x


def _eps_pair(name: str, eps: Any) -> tuple[float | None, float]:
    """Adafactor's (eps1 or None for the dtype's machine epsilon, eps2)."""
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"{name}: expected a pair (eps1 or None, eps2), got {eps!r}")
    e1 = None if eps[0] is None else v.real(f"{name}[0]", eps[0], 0.0, low_open=True)
    return (e1, v.real(f"{name}[1]", eps[1], 0.0))


_CHECKS: dict[str, _Check] = {
    # lr = 0 freezes the parameters (as torch.optim and Keras accept it).
    "lr": _real(0.0),
    "weight_decay": _real(0.0),
    "decoupled_weight_decay": _flag,
    "l1": _real(0.0),
    "clip_norm": _optional_positive,
    "clip_value": _optional_positive,
    "max_norm": _optional_positive,
    "maximize": _flag,
    "decay": _decay_scope,
    "momentum": _real(0.0, 1.0, high_open=True),
    "dampening": _real(0.0, 1.0),
    "nesterov": _flag,
    "deck_variant": _flag,
    "eps": _real(0.0, low_open=True),
    "lr_decay": _real(0.0),
    "initial_accumulator_value": _real(0.0),
    "rho": _real(0.0, 1.0, high_open=True),
    "centered": _flag,
    "betas": _betas,
    "amsgrad": _flag,
    "momentum_decay": _real(0.0),
    "beta2_decay": _real(high=0.0),
    "d": _real(0.0, low_open=True),
    "relative_step": _flag,
    "scale_parameter": _flag,
}

# ---------------------------------------------------------------------- to the C++ config
# How a hyper-parameter reaches the C++ OptConfig: the attribute of the same name unless an
# entry here (or the optimizer's ``_to_config``) says otherwise; None: not a config field.
_Write = Callable[[Any, Any, Any], None]  # (optimizer, config, value)


def _write_weight_decay(opt: Any, cfg: Any, x: float) -> None:
    if opt.decoupled_weight_decay:
        cfg.decoupled_weight_decay = x
    else:
        cfg.weight_decay = x


def _write_betas(opt: Any, cfg: Any, x: tuple[float, float]) -> None:
    cfg.beta1, cfg.beta2 = x


def _write_eps_pair(opt: Any, cfg: Any, x: tuple[float | None, float]) -> None:
    cfg.eps = 0.0 if x[0] is None else x[0]  # 0: the machine epsilon of the parameters' dtype
    cfg.eps2 = x[1]


def _write_or_zero(attr: str) -> _Write:
    return lambda opt, cfg, x: setattr(cfg, attr, x or 0.0)  # None (off) is 0 in C++


_TO_CONFIG: dict[str, _Write | None] = {
    "weight_decay": _write_weight_decay,
    "decoupled_weight_decay": None,  # where weight_decay goes
    "clip_norm": None,  # applied by the caller through the step's grad_scale
    "decay": None,  # per-parameter flags (decay_mask)
    "clip_value": _write_or_zero("clip_value"),
    "max_norm": _write_or_zero("max_norm"),
    "betas": _write_betas,
    "d": lambda opt, cfg, x: setattr(cfg, "clip_threshold", x),
}

# The fields every optimizer has, checked first (then the optimizer's own, in field order).
_COMMON = (
    "lr",
    "weight_decay",
    "decoupled_weight_decay",
    "l1",
    "clip_norm",
    "clip_value",
    "max_norm",
    "maximize",
    "decay",
)


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass
class OptimizerState:
    """Explicit optimizer state: steps taken and one flat state array per parameter.

    Attributes:
        step: number of steps taken (the next step is ``step + 1``, 1-based as in the decks).
        buffers: one 1-d array per parameter in the C++ layout (see
            csrc/common/optimizer.h), or None before the first step.
    """

    step: int = 0
    buffers: list[np.ndarray] | None = None


@dataclass(eq=False)
class Optimizer:
    """Base class: the hyper-parameters every optimizer has, their validation, the state,
    the standalone step and (de)serialization.

    Subclasses are dataclasses: ``name`` (the lower-case name of ``fm::Opt``), their own
    fields (``weight_decay`` among them, at its place in the constructor), ``_checks`` /
    ``_to_config`` where a field differs from the tables, ``_rules`` for conditions between
    fields. Optimizers compare by identity (they carry state).

    Attributes:
        lr: learning rate (>= 0; 0 freezes the parameters, as in torch.optim and Keras), the
            base of any schedule.
        weight_decay: L2 coefficient lambda (>= 0): lambda theta added to the gradient, or
            theta <- theta (1 - lr lambda) when ``decoupled_weight_decay``.
        decoupled_weight_decay: apply ``weight_decay`` to the parameter (Loshchilov & Hutter)
            instead of the gradient.
        l1: L1 coefficient (>= 0): l1 sign(theta) added to the gradient (deck 002).
        clip_norm: clip all gradients together to this global L2 norm (None = off).
        clip_value: clip each gradient element to [-clip_value, clip_value] (None = off).
        max_norm: per-unit max-norm radius for weight matrices (None = off).
        maximize: ascend instead of descend (torch's ``maximize``).
        decay: which parameters L2/L1/decoupled decay and max-norm apply to: "weights"
            (2-d arrays), "all" or "none".
        state: the step count and state arrays (not a hyper-parameter).
    """

    name: ClassVar[str] = ""
    _checks: ClassVar[dict[str, _Check]] = {}
    _to_config: ClassVar[dict[str, _Write | None]] = {}
    _rules: ClassVar[tuple[tuple[Callable[[Any], bool], str], ...]] = ()

    lr: float = 1e-3
    _: KW_ONLY
    decoupled_weight_decay: bool = False
    l1: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    max_norm: float | None = None
    maximize: bool = False
    decay: str = "weights"

    def __post_init__(self) -> None:
        own = [f.name for f in dataclasses.fields(self) if f.name not in _COMMON]
        for name in (*_COMMON, *own):
            object.__setattr__(self, name, self._check(name, getattr(self, name)))
        for holds, message in self._rules:
            if not holds(self):
                raise ValueError(message)
        self.state = OptimizerState()

    def _check(self, name: str, value: Any) -> Any:
        return self._checks.get(name, _CHECKS[name])(name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        # After construction, an assigned hyper-parameter is checked like a constructor
        # argument (``opt.lr = 0.1`` by a callback, for example).
        if "state" in self.__dict__ and name in _field_names(type(self)):
            value = self._check(name, value)
        object.__setattr__(self, name, value)

    @property
    def hyper(self) -> Optimizer:
        """The hyper-parameters: the optimizer itself (a dataclass of them)."""
        return self

    def config(self) -> Any:
        """The C++ ``OptConfig`` of these hyper-parameters (``fusedmlp._core.OptConfig``).

        Returns:
            A fresh, validated config; the global-norm clip (``clip_norm``) is applied by the
            caller through the step's grad_scale.
        """
        cfg = _core.OptConfig()
        cfg.opt = OPTIMIZERS.index(self.name)
        for f in dataclasses.fields(self):
            table = self._to_config if f.name in self._to_config else _TO_CONFIG
            write = table.get(f.name, lambda opt, cfg, x, name=f.name: setattr(cfg, name, x))
            if write is not None:
                write(self, cfg, getattr(self, f.name))
        cfg.validate()
        return cfg

    def decay_mask(self, params: list[np.ndarray]) -> list[bool]:
        """Which parameters the penalties, decoupled decay and max-norm apply to."""
        if self.decay == "all":
            return [True] * len(params)
        if self.decay == "none":
            return [False] * len(params)
        return [p.ndim == 2 for p in params]

    # ------------------------------------------------------------------ the step
    def step(
        self, params: list, grads: list, *, lr: float | None = None, decay: list[bool] | None = None
    ) -> None:
        """One update of every parameter, in place.

        Args:
            params: list of NumPy arrays (1-d or 2-d, float32/float64, C-contiguous,
                writeable), updated in place. A weight matrix is (n_in, n_out). CuPy arrays
                (all of them on the GPU) run the CUDA kernels: one launch per parameter, the
                clip-by-norm factor reduced on the device.
            grads: list of gradients, one per parameter, same shapes and dtypes.
            lr: the learning rate of this step (a schedule's value); default ``self.lr``.
            decay: per-parameter override of ``self.decay`` (True: penalties, decoupled
                decay and max-norm apply).

        Example:
            >>> import numpy as np, fusedmlp as fm
            >>> w = np.array([1.0, -2.0]); opt = fm.optim.Adam(lr=0.1)
            >>> opt.step([w], [np.array([0.5, -0.5])]); w
            array([ 0.9, -1.9])
        """
        params, grads, be = _check_pairs(params, grads)
        step_lr, mask = self._lr_and_mask(params, lr, decay)
        cfg = self.config()
        buffers = self._buffers(cfg, params, be)
        scale = 1.0
        if self.clip_norm is not None:
            from .regularizers import clip_grad_norm_scale, global_grad_norm

            scale = clip_grad_norm_scale(global_grad_norm(grads), self.clip_norm)
        t = self.state.step + 1
        for p, g, s, d in zip(params, grads, buffers, mask, strict=True):
            # one parameter: an arena of one segment (weight matrices take the max-norm)
            seg = [_core.Segment(0, *_rows_cols(p), bool(d), bool(d and p.ndim == 2))]
            flat_p, flat_g = p.reshape(-1), g.reshape(-1)
            be.mod.optimizer_step(
                cfg, flat_p, flat_g, s, seg, t, step_lr, scale, stream=be.stream()
            )
        self.state.step = t

    def _lr_and_mask(self, params: list, lr: float | None, decay) -> tuple[float, list[bool]]:
        """The step's learning rate and per-parameter decay flags (checked)."""
        step_lr = self.lr if lr is None else v.real("lr", lr, 0.0)
        mask = self.decay_mask(params)
        if decay is not None:
            if not isinstance(decay, (list, tuple)) or len(decay) != len(params):
                raise ValueError(f"decay: expected a list of {len(params)} booleans, got {decay!r}")
            mask = [_flag(f"decay[{i}]", d) for i, d in enumerate(decay)]
        return step_lr, mask

    def _buffers(self, cfg: Any, params: list, be) -> list:
        sizes = [_core.optimizer_param_state_size(cfg, *_rows_cols(p)) for p in params]
        if self.state.buffers is None:
            self.state.buffers = [be.zeros(n, p.dtype) for n, p in zip(sizes, params, strict=True)]
            return self.state.buffers
        bufs = self.state.buffers
        if len(bufs) != len(params):
            raise ValueError(
                f"params: this optimizer holds state for {len(bufs)} parameters, got {len(params)}"
            )
        for i, (b, n, p) in enumerate(zip(bufs, sizes, params, strict=True)):
            if not isinstance(b, be.xp.ndarray) or b.size != n or b.dtype != p.dtype:
                raise ValueError(
                    f"params[{i}]: shape {p.shape} / dtype {p.dtype} does not match the optimizer "
                    f"state ({b.size} elements of {b.dtype}); call reset() for new parameters"
                )
        return bufs

    def reset(self) -> None:
        """Forget the state (step count and buffers)."""
        self.state = OptimizerState()

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """A copy of the hyper-parameters and state.

        Returns:
            ``{"optimizer": name, "hyper": {field: value}, "step": int,
            "state": [1-d arrays] or None}``; arrays are copies.
        """
        bufs = self.state.buffers
        return {
            "optimizer": self.name,
            "hyper": dataclasses.asdict(self),
            "step": self.state.step,
            "state": None if bufs is None else [b.copy() for b in bufs],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore hyper-parameters and state saved by ``state_dict`` (copies the arrays).

        Args:
            state: a dict from ``state_dict()`` of the same optimizer class.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state: expected a dict from state_dict(), got {type(state).__name__}")
        missing = {"optimizer", "hyper", "step", "state"} - set(state)
        if missing:
            raise ValueError(f"state: missing keys {sorted(missing)}")
        if state["optimizer"] != self.name:
            raise ValueError(f"state: saved by optimizer {state['optimizer']!r}, not {self.name!r}")
        fields = {f.name for f in dataclasses.fields(self)}
        hyper = dict(state["hyper"])
        if set(hyper) != fields:
            raise ValueError(
                f"state['hyper']: expected the fields {sorted(fields)}, got {sorted(hyper)}"
            )
        checked = type(self)(**hyper)  # the checks of the constructor (JSON lists for pairs)
        step = v.integer("state['step']", state["step"], 0)
        bufs = state["state"]
        if bufs is not None:
            if not isinstance(bufs, (list, tuple)):
                raise TypeError("state['state']: expected a list of arrays or None")
            bufs = [
                v.as_float_array(
                    f"state['state'][{i}]", b, ndim=1, finite=False, allow_empty=True
                ).copy()
                for i, b in enumerate(bufs)
            ]
        for name in fields:
            object.__setattr__(self, name, getattr(checked, name))
        self.state = OptimizerState(step=step, buffers=bufs)


def _rows_cols(p: np.ndarray) -> tuple[int, int]:
    return (1, p.shape[0]) if p.ndim == 1 else (p.shape[0], p.shape[1])


def _check_pairs(params: Any, grads: Any) -> tuple[list, list, Any]:
    """The parameters (updated in place) and their gradients checked, with the backend of
    the parameters' device (fusedmlp._backend: NumPy arrays the CPU, CuPy arrays the GPU)."""
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"params: expected a list of arrays, got {type(params).__name__}")
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads: expected a list of arrays, got {type(grads).__name__}")
    if len(params) != len(grads):
        raise ValueError(
            f"grads: expected {len(params)} gradients (one per parameter), got {len(grads)}"
        )
    if not params:
        raise ValueError("params: expected at least one parameter")
    be = _backend.of_any(*params)
    kind = "a NumPy array" if be.name == "cpu" else "a CuPy array like the other parameters"
    out_p, out_g = [], []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        name = f"params[{i}]"
        if not isinstance(p, be.xp.ndarray):
            raise TypeError(
                f"{name}: expected {kind} (updated in place), got {type(p).__name__}; mixing "
                "host and device arrays is an error"
            )
        if p.dtype not in v.FLOAT_DTYPES:
            raise TypeError(f"{name}: expected dtype float32 or float64, got {p.dtype}")
        if p.ndim not in (1, 2) or p.size == 0:
            raise ValueError(f"{name}: expected a non-empty 1-d or 2-d array, got shape {p.shape}")
        if not p.flags.c_contiguous:
            raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place)")
        # CuPy arrays have no read-only flag (device memory is always writeable)
        if not getattr(p.flags, "writeable", True):
            raise ValueError(f"{name}: expected a writeable array")
        g = be.asarray(f"grads[{i}]", g, ndim=(1, 2), dtype=p.dtype)
        v.check_shape(f"grads[{i}]", g, p.shape)
        if be.xp.shares_memory(p, g):
            raise ValueError(f"grads[{i}]: shares memory with {name}")
        out_p.append(p)
        out_g.append(g)
    return out_p, out_g, be


# ---------------------------------------------------------------------- the optimizers
# Each is the dataclass of its hyper-parameters: the fields before ``_: KW_ONLY`` are the
# positional constructor arguments, in order (``lr`` first, from Optimizer), then keywords.
# ``**common`` in an Args list stands for the keyword fields of Optimizer.


@dataclass(eq=False)
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and Nesterov momentum.

    torch.optim.SGD (and deck 000): b <- mu b + (1 - dampening) g (b = g at the first step),
    theta <- theta - lr b, or theta <- theta - lr (g + mu b) with ``nesterov``.
    ``deck_variant=True``: deck 002 Alg. 8.2 / deck 003 Alg. 2-3, v <- mu v - lr g,
    theta <- theta + v (Nesterov: theta <- theta + mu v - lr g, the look-ahead form on the
    look-ahead parameters). Equal to the default while lr is constant.

    Args:
        lr: learning rate epsilon (>= 0).
        momentum: mu (rho of deck 000, alpha of deck 002), in [0, 1); typically 0.9.
        nesterov: Nesterov momentum (needs momentum > 0, dampening = 0).
        dampening: torch's dampening of the gradient in the buffer, in [0, 1].
        deck_variant: use the velocity convention of decks 001-003.
        weight_decay: L2 coefficient (>= 0).
        **common: decoupled_weight_decay, l1, clip_norm, clip_value, max_norm, maximize,
            decay (see ``Optimizer``).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.SGD(lr=0.1, momentum=0.9, nesterov=True).hyper.nesterov
        True
    """

    name: ClassVar[str] = "sgd"
    _rules: ClassVar = (
        (
            lambda o: not (o.nesterov and (o.momentum == 0 or o.dampening != 0)),
            "nesterov: needs momentum > 0 and dampening = 0",
        ),
    )

    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    _: KW_ONLY
    dampening: float = 0.0
    deck_variant: bool = False
    weight_decay: float = 0.0


@dataclass(eq=False)
class AdaGrad(Optimizer):
    """AdaGrad (deck 002 Alg. 8.4, deck 000; torch.optim.Adagrad).

    r <- r + g*g; theta <- theta - lr_t g / (sqrt(r) + eps), lr_t = lr / (1 + (t-1) lr_decay).
    The decks and torch agree that eps (delta) sits outside the root; deck 002 suggests
    delta = 1e-7, torch's default is 1e-10 (used here).

    Args:
        lr: learning rate (>= 0), default 0.01 (torch).
        eps: delta (> 0).
        lr_decay: torch's 1 / (1 + (t-1) lr_decay) decay (>= 0).
        initial_accumulator_value: r_0 (>= 0).
        weight_decay, **common: see ``Optimizer``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaGrad(lr=0.05).lr
        0.05
    """

    name: ClassVar[str] = "adagrad"

    lr: float = 1e-2
    eps: float = 1e-10
    _: KW_ONLY
    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    weight_decay: float = 0.0


@dataclass(eq=False)
class RMSProp(Optimizer):
    """RMSProp (deck 000, deck 002 Alg. 8.5, deck 003; torch.optim.RMSprop).

    r <- rho r + (1 - rho) g*g; centered: gbar <- rho gbar + (1 - rho) g, r~ = r - gbar^2;
    d = sqrt(r~) + eps (torch, deck 000) or sqrt(r~ + eps) (``deck_variant``, deck 002);
    theta <- theta - lr g / d, or with momentum b <- mu b + g / d, theta <- theta - lr b.
    rho defaults to 0.9 (decks 000/003; torch's alpha defaults to 0.99).

    Args:
        lr: learning rate (>= 0), default 0.01 (torch).
        rho: decay rate in [0, 1).
        eps: delta (> 0); deck 002 suggests 1e-6 inside the root, deck 000 1e-7 outside.
        momentum: mu in [0, 1).
        centered: divide by the estimated variance instead of the second moment.
        deck_variant: eps inside the square root (deck 002).
        weight_decay, **common: see ``Optimizer``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.RMSProp(centered=True, momentum=0.9).hyper.rho
        0.9
    """

    name: ClassVar[str] = "rmsprop"

    lr: float = 1e-2
    rho: float = 0.9
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    _: KW_ONLY
    deck_variant: bool = False
    weight_decay: float = 0.0


@dataclass(eq=False)
class AdaDelta(Optimizer):
    """AdaDelta (Zeiler 2012; deck 001's D G^-1 approximation; torch.optim.Adadelta).

    r <- rho r + (1 - rho) g*g; dx = sqrt(u + eps) / sqrt(r + eps) g;
    u <- rho u + (1 - rho) dx*dx; theta <- theta - lr dx.

    Args:
        lr: scale of the update (>= 0), 1.0 as in the paper and torch.
        rho: decay rate in [0, 1] (1 included, unlike RMSProp's).
        eps: (> 0).
        weight_decay, **common: see ``Optimizer``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaDelta().lr
        1.0
    """

    name: ClassVar[str] = "adadelta"
    _checks: ClassVar = {"rho": _real(0.0, 1.0)}

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    _: KW_ONLY
    weight_decay: float = 0.0


@dataclass(eq=False)
class _AdamFamily(Optimizer):
    """The fields of Adam and AdamW (AdamW is not an Adam: its decay is always decoupled)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    _: KW_ONLY
    deck_variant: bool = False


@dataclass(eq=False)
class Adam(_AdamFamily):
    """Adam with bias correction (deck 002 Alg. 8.7, deck 000; torch.optim.Adam), AMSGrad.

    m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g*g; AMSGrad: v_max <- max(v_max, v), used
    for v; theta <- theta - lr/(1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps), or with
    ``deck_variant`` / sqrt(v/(1 - b2^t) + eps) (deck 002). Defaults lr = 1e-3, betas
    (0.9, 0.999), eps = 1e-8 (the decks' and torch's).

    Args:
        lr: step size (>= 0).
        betas: (beta1, beta2), the decks' (rho_1, rho_2), each in [0, 1).
        eps: delta (> 0).
        weight_decay: coupled L2 (decoupled with ``decoupled_weight_decay=True``: AdamW).
        amsgrad: AMSGrad (Reddi et al. 2018).
        deck_variant: eps inside the square root.
        **common: see ``Optimizer``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.Adam(amsgrad=True).config().amsgrad
        True
    """

    name: ClassVar[str] = "adam"


@dataclass(eq=False)
class AdamW(_AdamFamily):
    """AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW): Adam with decoupled weight decay
    theta <- theta (1 - lr lambda) before the Adam update.

    Args:
        lr, betas, eps, amsgrad, deck_variant: as ``Adam``.
        weight_decay: lambda (>= 0), default 0.01.
        **common: see ``Optimizer`` (``decoupled_weight_decay`` must stay True).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdamW(weight_decay=0.1).config().decoupled_weight_decay
        0.1
    """

    name: ClassVar[str] = "adamw"
    _rules: ClassVar = (
        (
            lambda o: o.decoupled_weight_decay,
            "decoupled_weight_decay: AdamW's weight decay is decoupled; use Adam",
        ),
    )

    weight_decay: float = 1e-2
    _: KW_ONLY
    decoupled_weight_decay: bool = True


@dataclass(eq=False)
class NAdam(Optimizer):
    """NAdam (Dozat 2016; torch.optim.NAdam): Nesterov momentum in Adam.

    mu_t = b1 (1 - 0.5 * 0.96^(t psi)); m, v as Adam;
    theta <- theta - lr (mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g /
    (1 - prod_{i<=t} mu_i)) / (sqrt(v / (1 - b2^t)) + eps). ``deck_variant``: mu_t = b1.

    Args:
        lr: (>= 0), default 2e-3 (torch). betas, eps: as Adam.
        momentum_decay: psi (>= 0), 4e-3.
        deck_variant: constant momentum schedule.
        weight_decay, **common: see ``Optimizer`` (``decoupled_weight_decay=True`` gives
            torch's NAdamW form).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.NAdam().lr
        0.002
    """

    name: ClassVar[str] = "nadam"

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum_decay: float = 4e-3
    _: KW_ONLY
    deck_variant: bool = False
    weight_decay: float = 0.0


@dataclass(eq=False)
class AdaMax(Optimizer):
    """AdaMax (Kingma & Ba 2015, Alg. 2; torch.optim.Adamax): Adam with the infinity norm.

    m <- b1 m + (1 - b1) g; u <- max(b2 u, |g| + eps); theta <- theta - lr/(1 - b1^t) m / u.

    Args:
        lr: (>= 0), default 2e-3. betas, eps: as Adam.
        weight_decay, **common: see ``Optimizer``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaMax().hyper.betas
        (0.9, 0.999)
    """

    name: ClassVar[str] = "adamax"

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    _: KW_ONLY
    weight_decay: float = 0.0


@dataclass(eq=False)
class AdaBelief(Optimizer):
    """AdaBelief (Zhuang et al. 2020, Alg. 2; as adabelief-pytorch 0.2 without rectification).

    m <- b1 m + (1 - b1) g; s <- b2 s + (1 - b2)(g - m)^2 + eps (AMSGrad: running max);
    theta <- theta - lr/(1 - b1^t) m / (sqrt(s / (1 - b2^t)) + eps).

    Args:
        lr: (>= 0), 1e-3. betas: as Adam. eps: (> 0), 1e-16 (the authors' default).
        amsgrad: keep the running maximum of s.
        weight_decay, **common: see ``Optimizer`` (the authors' default is decoupled decay:
            ``decoupled_weight_decay=True``).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaBelief().hyper.eps
        1e-16
    """

    name: ClassVar[str] = "adabelief"

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-16
    amsgrad: bool = False
    _: KW_ONLY
    weight_decay: float = 0.0


@dataclass(eq=False)
class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern 2018; torch.optim.Adafactor): the memory-efficient optimizer
    of deck 000, with a factored second moment for matrices (rows + cols numbers instead of
    rows * cols) and no first moment.

    Per step t: w = t^beta2_decay (the weight 1 - beta2_t of the new term, 1 at t = 1);
    matrix: R <- lerp(R, row means of g^2, w), C <- lerp(C, column means, w),
    V = R C^T / max(mean R, eps1); vector: V <- lerp(V, g^2, w);
    U = g / sqrt(max(V, eps1^2)); rho_t = min(lr, 1/sqrt t) when ``relative_step`` else lr;
    alpha = max(eps2, RMS(theta)) rho_t (``scale_parameter``); theta <- theta (1 - lr lambda)
    - alpha U / max(1, RMS(U) / d). A 2-d parameter is factored when both sides are >= 2.

    Defaults follow torch.optim.Adafactor (beta2_decay = -0.8, eps = (None, 1e-3), d = 1,
    lr = 1e-2 with rho_t = min(lr, 1/sqrt t)). When ``lr`` is given explicitly the relative
    step is off (rho_t = lr, as Shazeer & Stern / the HF implementation with an explicit lr)
    unless ``relative_step=True`` asks for torch's min(lr, 1/sqrt t).

    Args:
        lr: None (1e-2 with the relative step) or the step size (>= 0).
        beta2_decay: tau (<= 0).
        eps: (eps1, eps2): eps1 None = machine epsilon of the parameter dtype; eps2 >= 0.
        d: update clipping threshold (> 0).
        weight_decay: decoupled lambda (>= 0).
        relative_step: rho_t = min(lr, 1/sqrt t) (default: True when lr is None).
        scale_parameter: scale the step by max(eps2, RMS(theta)).
        **common: see ``Optimizer`` (``decoupled_weight_decay`` must stay True).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.Adafactor().hyper.relative_step, fm.optim.Adafactor(lr=0.1).hyper.relative_step
        (True, False)
    """

    name: ClassVar[str] = "adafactor"
    _checks: ClassVar = {"eps": _eps_pair}
    _to_config: ClassVar = {"eps": _write_eps_pair}
    _rules: ClassVar = (
        (
            lambda o: o.decoupled_weight_decay,
            "decoupled_weight_decay: Adafactor's weight decay is decoupled",
        ),
    )

    lr: float | None = None
    beta2_decay: float = -0.8
    eps: tuple[float | None, float] = (None, 1e-3)
    d: float = 1.0
    weight_decay: float = 0.0
    _: KW_ONLY
    relative_step: bool | None = None
    scale_parameter: bool = True
    decoupled_weight_decay: bool = True

    def __post_init__(self) -> None:
        if self.relative_step is None:
            self.relative_step = self.lr is None
        if self.lr is None:
            self.lr = 1e-2
        super().__post_init__()


#: The former name of the base holding the hyper-parameters every optimizer has; each
#: optimizer is now the dataclass of its own hyper-parameters.
Hyper = Optimizer


def _registry() -> dict[str, type[Optimizer]]:
    """Every optimizer class by name, in the order of ``OPTIMIZERS`` (the C++ list)."""
    found: dict[str, type[Optimizer]] = {}
    todo = [Optimizer]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.name:
            found[cls.name] = cls
    if set(found) != set(OPTIMIZERS):
        raise ImportError(
            f"fusedmlp.optim: optimizer classes {sorted(found)} do not match the C++ list "
            f"{sorted(OPTIMIZERS)} (csrc/common/optimizer.h, FM_OPT_LIST)"
        )
    return {name: found[name] for name in OPTIMIZERS}


_CLASSES: dict[str, type[Optimizer]] = _registry()
_ALIASES = {"amsgrad": ("adam", {"amsgrad": True})}


def names() -> list[str]:
    """The lower-case optimizer names ``get`` accepts (aliases excluded)."""
    return list(_CLASSES)


def get(name: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer from its lower-case name (the decks' names; the CLI uses this).

    Args:
        name: "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam", "adamax",
            "adabelief", "adafactor" (case, "-" and "_" ignored), or "amsgrad" (Adam with
            amsgrad=True).
            An Optimizer instance is returned as it is (kwargs must then be empty).
        **kwargs: constructor arguments.

    Returns:
        The optimizer.

    Example:
        >>> import fusedmlp as fm
        >>> type(fm.optim.get("Adam", lr=0.01)).__name__
        'Adam'
    """
    if isinstance(name, Optimizer):
        if kwargs:
            raise ValueError("kwargs: cannot be combined with an Optimizer instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"name: expected an optimizer name, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    if key in _CLASSES:
        return _CLASSES[key](**kwargs)
    if key in _ALIASES:
        base, extra = _ALIASES[key]
        return _CLASSES[base](**{**extra, **kwargs})
    raise ValueError(f"name: unknown optimizer {name!r}; expected one of {sorted(_CLASSES)}")


def from_state_dict(state: dict) -> Optimizer:
    """Rebuild an optimizer (hyper-parameters and state) from ``state_dict()``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.from_state_dict(fm.optim.Adam(lr=0.01).state_dict()).lr
        0.01
    """
    if not isinstance(state, dict) or state.get("optimizer") not in _CLASSES:
        raise ValueError(f"state: expected a dict with 'optimizer' one of {sorted(_CLASSES)}")
    opt = _CLASSES[state["optimizer"]]()
    opt.load_state_dict(state)
    return opt


__all__ = [
    "OPTIMIZERS",
    "AdaBelief",
    "AdaDelta",
    "AdaGrad",
    "AdaMax",
    "Adafactor",
    "Adam",
    "AdamW",
    "Hyper",
    "NAdam",
    "Optimizer",
    "OptimizerState",
    "RMSProp",
    "SGD",
    "from_state_dict",
    "get",
    "names",
]
