"""Optimizers: fused, one-pass C++ updates (csrc/common/optimizer.h, csrc/cpu/optimizer.cpp).

Each optimizer keeps its hyper-parameters in a dataclass (``opt.hyper``) and its state as
explicit data (``opt.state``: the step count and one flat NumPy state array per parameter),
so it can be saved, restored and compared. ``config()`` returns the C++ ``OptConfig`` the
Network's fused training step uses; ``step(params, grads)`` updates lists of NumPy arrays in
place for standalone use, one C++ call per (param, grad) pair.

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

Example:
    >>> import numpy as np, fusedmlp as fm
    >>> W = np.ones((2, 3)); gW = np.full((2, 3), 0.5)
    >>> opt = fm.optim.SGD(lr=0.1)
    >>> opt.step([W], [gW]); float(W[0, 0])
    0.95
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import _validate as v
from ._loader import _core

#: Optimizer names in the order of the C++ enum ``fm::Opt``.
OPTIMIZERS: tuple[str, ...] = tuple(_core.optimizer_names())

_DECAY_SCOPES = ("weights", "all", "none")


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


@dataclass
class Hyper:
    """Hyper-parameters shared by every optimizer (the regularization fused into the step).

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
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    l1: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    max_norm: float | None = None
    maximize: bool = False
    decay: str = "weights"

    def validate(self) -> None:
        """Check every field; raise ValueError/TypeError naming the first bad one."""
        self.lr = v.real("lr", self.lr, 0.0)
        self.weight_decay = v.real("weight_decay", self.weight_decay, 0.0)
        self.decoupled_weight_decay = _flag("decoupled_weight_decay", self.decoupled_weight_decay)
        self.l1 = v.real("l1", self.l1, 0.0)
        self.clip_norm = _optional_positive("clip_norm", self.clip_norm)
        self.clip_value = _optional_positive("clip_value", self.clip_value)
        self.max_norm = _optional_positive("max_norm", self.max_norm)
        self.maximize = _flag("maximize", self.maximize)
        if self.decay not in _DECAY_SCOPES:
            raise ValueError(f"decay: expected one of {_DECAY_SCOPES}, got {self.decay!r}")

    def fill(self, cfg: Any) -> None:
        """Write the rule-specific fields into the C++ config."""


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


class Optimizer:
    """Base class: validation, state, the standalone step and (de)serialization.

    Subclasses set ``name`` (the lower-case name of ``fm::Opt``) and ``hyper``.
    """

    name: ClassVar[str] = ""

    def __init__(self, hyper: Hyper):
        hyper.validate()
        self.hyper = hyper
        self.state = OptimizerState()

    # ------------------------------------------------------------------ configuration
    @property
    def lr(self) -> float:
        """The base learning rate (``hyper.lr``); assign to change it."""
        return self.hyper.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper.lr = v.real("lr", value, 0.0)

    def config(self) -> Any:
        """The C++ ``OptConfig`` of these hyper-parameters (``fusedmlp._core.OptConfig``).

        Returns:
            A fresh, validated config; the global-norm clip (``hyper.clip_norm``) is applied
            by the caller through the step's grad_scale.
        """
        h = self.hyper
        cfg = _core.OptConfig()
        cfg.opt = OPTIMIZERS.index(self.name)
        cfg.lr = h.lr
        if h.decoupled_weight_decay:
            cfg.decoupled_weight_decay = h.weight_decay
        else:
            cfg.weight_decay = h.weight_decay
        cfg.l1 = h.l1
        cfg.clip_value = h.clip_value or 0.0
        cfg.max_norm = h.max_norm or 0.0
        cfg.maximize = h.maximize
        h.fill(cfg)
        cfg.validate()
        return cfg

    def decay_mask(self, params: list[np.ndarray]) -> list[bool]:
        """Which parameters the penalties, decoupled decay and max-norm apply to."""
        if self.hyper.decay == "all":
            return [True] * len(params)
        if self.hyper.decay == "none":
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
            lr: the learning rate of this step (a schedule's value); default ``hyper.lr``.
            decay: per-parameter override of ``hyper.decay`` (True: penalties, decoupled
                decay and max-norm apply).

        Example:
            >>> import numpy as np, fusedmlp as fm
            >>> w = np.array([1.0, -2.0]); opt = fm.optim.Adam(lr=0.1)
            >>> opt.step([w], [np.array([0.5, -0.5])]); w
            array([ 0.9, -1.9])
        """
        if isinstance(params, (list, tuple)) and any(v.is_device_array(p) for p in params):
            return self._step_device(params, grads, lr, decay)
        params, grads = _check_pairs(params, grads)
        step_lr, mask = self._lr_and_mask(params, lr, decay)
        cfg = self.config()
        buffers = self._buffers(cfg, params)
        scale = 1.0
        if self.hyper.clip_norm is not None:
            from .regularizers import clip_grad_norm_scale, global_grad_norm

            scale = clip_grad_norm_scale(global_grad_norm(grads), self.hyper.clip_norm)
        t = self.state.step + 1
        for p, g, s, d in zip(params, grads, buffers, mask, strict=True):
            _core.optimizer_step(cfg, p, g, s, t, step_lr, scale, d, d and p.ndim == 2)
        self.state.step = t

    def _lr_and_mask(self, params: list, lr: float | None, decay) -> tuple[float, list[bool]]:
        """The step's learning rate and per-parameter decay flags (checked)."""
        step_lr = self.hyper.lr if lr is None else v.real("lr", lr, 0.0)
        mask = self.decay_mask(params)
        if decay is not None:
            if not isinstance(decay, (list, tuple)) or len(decay) != len(params):
                raise ValueError(f"decay: expected a list of {len(params)} booleans, got {decay!r}")
            mask = [_flag(f"decay[{i}]", d) for i, d in enumerate(decay)]
        return step_lr, mask

    def _step_device(self, params: list, grads: list, lr: float | None, decay) -> None:
        """:meth:`step` for CuPy parameters (fusedmlp._cuda_ops.optimizer_step per tensor)."""
        from . import _cuda_ops as C

        cp = C._cupy()
        if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
            raise ValueError(
                f"grads: expected a list of {len(params)} gradients (one per parameter)"
            )
        for i, p in enumerate(params):
            if not isinstance(p, cp.ndarray):
                raise TypeError(
                    f"params[{i}]: expected a CuPy array like the other parameters, got "
                    f"{type(p).__name__}; mixing host and device arrays is an error"
                )
            if p.ndim not in (1, 2) or p.size == 0:
                raise ValueError(
                    f"params[{i}]: expected a non-empty 1-d or 2-d array, got shape {p.shape}"
                )
            if not p.flags.c_contiguous:
                raise ValueError(
                    f"params[{i}]: expected a C-contiguous array (it is updated in place)"
                )
        gs = [
            C.as_device_array(f"grads[{i}]", g, ndim=(1, 2), dtype=p.dtype)
            for i, (p, g) in enumerate(zip(params, grads, strict=True))
        ]
        for i, (p, g) in enumerate(zip(params, gs, strict=True)):
            v.check_shape(f"grads[{i}]", g, p.shape)
        step_lr, mask = self._lr_and_mask(params, lr, decay)
        cfg = self.config()
        if self.state.buffers is None:
            self.state.buffers = [
                cp.zeros(_core.optimizer_param_state_size(cfg, *_rows_cols(p)), dtype=p.dtype)
                for p in params
            ]
        if len(self.state.buffers) != len(params):
            raise ValueError(
                f"params: this optimizer holds state for {len(self.state.buffers)} parameters, "
                f"got {len(params)}"
            )
        for i, (b, p) in enumerate(zip(self.state.buffers, params, strict=True)):
            n = _core.optimizer_param_state_size(cfg, *_rows_cols(p))
            if not isinstance(b, cp.ndarray) or b.size != n or b.dtype != p.dtype:
                raise ValueError(
                    f"params[{i}]: shape {p.shape} / dtype {p.dtype} on the GPU does not match the "
                    "optimizer state; call reset() for new parameters"
                )
        scale = 1.0
        if self.hyper.clip_norm is not None:  # one global norm over every tensor (one sync)
            sq = sum(float(C.grad_sq_norm(g)) for g in gs)
            scale = float(_core.clip_norm_scale(math.sqrt(sq), float(self.hyper.clip_norm)))
        t = self.state.step + 1
        for p, g, s, d in zip(params, gs, self.state.buffers, mask, strict=True):
            seg = _core.Segment(0, *_rows_cols(p), bool(d), bool(d and p.ndim == 2))
            C.optimizer_step(
                cfg, p.reshape(-1), g.reshape(-1), s, [seg], step=t, lr=step_lr, grad_scale=scale
            )
        self.state.step = t

    def _buffers(self, cfg: Any, params: list[np.ndarray]) -> list[np.ndarray]:
        sizes = [_core.optimizer_param_state_size(cfg, *_rows_cols(p)) for p in params]
        if self.state.buffers is None:
            self.state.buffers = [
                np.zeros(n, dtype=p.dtype) for n, p in zip(sizes, params, strict=True)
            ]
            return self.state.buffers
        bufs = self.state.buffers
        if len(bufs) != len(params):
            raise ValueError(
                f"params: this optimizer holds state for {len(bufs)} parameters, got {len(params)}"
            )
        for i, (b, n, p) in enumerate(zip(bufs, sizes, params, strict=True)):
            if b.size != n or b.dtype != p.dtype:
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
            "hyper": dataclasses.asdict(self.hyper),
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
        fields = {f.name for f in dataclasses.fields(self.hyper)}
        hyper = dict(state["hyper"])
        if set(hyper) != fields:
            raise ValueError(
                f"state['hyper']: expected the fields {sorted(fields)}, got {sorted(hyper)}"
            )
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        if "eps" in hyper and isinstance(hyper["eps"], list):
            hyper["eps"] = tuple(hyper["eps"])
        new_hyper = type(self.hyper)(**hyper)
        new_hyper.validate()
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
        self.hyper = new_hyper
        self.state = OptimizerState(step=step, buffers=bufs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hyper!r})"


def _rows_cols(p: np.ndarray) -> tuple[int, int]:
    return (1, p.shape[0]) if p.ndim == 1 else (p.shape[0], p.shape[1])


def _check_pairs(params: Any, grads: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"params: expected a list of NumPy arrays, got {type(params).__name__}")
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads: expected a list of arrays, got {type(grads).__name__}")
    if len(params) != len(grads):
        raise ValueError(
            f"grads: expected {len(params)} gradients (one per parameter), got {len(grads)}"
        )
    if not params:
        raise ValueError("params: expected at least one parameter")
    out_p, out_g = [], []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        name = f"params[{i}]"
        v.check_host(name, p)
        if not isinstance(p, np.ndarray):
            raise TypeError(
                f"{name}: expected a NumPy array (updated in place), got {type(p).__name__}"
            )
        if p.dtype not in v.FLOAT_DTYPES:
            raise TypeError(f"{name}: expected dtype float32 or float64, got {p.dtype}")
        if p.ndim not in (1, 2) or p.size == 0:
            raise ValueError(f"{name}: expected a non-empty 1-d or 2-d array, got shape {p.shape}")
        if not p.flags.c_contiguous:
            raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place)")
        if not p.flags.writeable:
            raise ValueError(f"{name}: expected a writeable array")
        g = v.as_float_array(f"grads[{i}]", g, ndim=(1, 2), dtype=p.dtype)
        v.check_shape(f"grads[{i}]", g, p.shape)
        if np.shares_memory(p, g):
            raise ValueError(f"grads[{i}]: shares memory with {name}")
        out_p.append(p)
        out_g.append(g)
    return out_p, out_g


# ---------------------------------------------------------------------- the optimizers
@dataclass
class SGDHyper(Hyper):
    """SGD: ``momentum`` mu in [0, 1), ``dampening`` in [0, 1], ``nesterov``, and
    ``deck_variant`` (velocity convention of decks 001-003 instead of torch's buffer)."""

    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    deck_variant: bool = False

    def validate(self) -> None:
        super().validate()
        self.momentum = v.real("momentum", self.momentum, 0.0, 1.0, high_open=True)
        self.dampening = v.real("dampening", self.dampening, 0.0, 1.0)
        self.nesterov = _flag("nesterov", self.nesterov)
        self.deck_variant = _flag("deck_variant", self.deck_variant)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0")

    def fill(self, cfg: Any) -> None:
        cfg.momentum, cfg.dampening = self.momentum, self.dampening
        cfg.nesterov, cfg.deck_variant = self.nesterov, self.deck_variant


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
        dampening: torch's dampening of the gradient in the buffer.
        deck_variant: use the velocity convention of decks 001-003.
        **common: weight_decay, decoupled_weight_decay, l1, clip_norm, clip_value, max_norm,
            maximize, decay (see ``Hyper``).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.SGD(lr=0.1, momentum=0.9, nesterov=True).hyper.nesterov
        True
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        *,
        dampening: float = 0.0,
        deck_variant: bool = False,
        **common: Any,
    ):
        super().__init__(
            SGDHyper(
                lr=lr,
                momentum=momentum,
                nesterov=nesterov,
                dampening=dampening,
                deck_variant=deck_variant,
                **common,
            )
        )


@dataclass
class AdaGradHyper(Hyper):
    """AdaGrad: ``eps`` (> 0, outside the root), ``lr_decay``, ``initial_accumulator_value``."""

    lr: float = 1e-2
    eps: float = 1e-10
    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0

    def validate(self) -> None:
        super().validate()
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)
        self.lr_decay = v.real("lr_decay", self.lr_decay, 0.0)
        self.initial_accumulator_value = v.real(
            "initial_accumulator_value", self.initial_accumulator_value, 0.0
        )

    def fill(self, cfg: Any) -> None:
        cfg.eps, cfg.lr_decay = self.eps, self.lr_decay
        cfg.initial_accumulator_value = self.initial_accumulator_value


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
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaGrad(lr=0.05).lr
        0.05
    """

    name = "adagrad"

    def __init__(
        self,
        lr: float = 1e-2,
        eps: float = 1e-10,
        *,
        lr_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        **common: Any,
    ):
        super().__init__(
            AdaGradHyper(
                lr=lr,
                eps=eps,
                lr_decay=lr_decay,
                initial_accumulator_value=initial_accumulator_value,
                **common,
            )
        )


@dataclass
class RMSPropHyper(Hyper):
    """RMSProp: decay ``rho`` in [0, 1) (torch's alpha), ``eps``, ``momentum``, ``centered``,
    ``deck_variant`` (eps inside the root, deck 002 Alg. 8.5)."""

    lr: float = 1e-2
    rho: float = 0.9
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    deck_variant: bool = False

    def validate(self) -> None:
        super().validate()
        self.rho = v.real("rho", self.rho, 0.0, 1.0, high_open=True)
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)
        self.momentum = v.real("momentum", self.momentum, 0.0, 1.0, high_open=True)
        self.centered = _flag("centered", self.centered)
        self.deck_variant = _flag("deck_variant", self.deck_variant)

    def fill(self, cfg: Any) -> None:
        cfg.rho, cfg.eps, cfg.momentum = self.rho, self.eps, self.momentum
        cfg.centered, cfg.deck_variant = self.centered, self.deck_variant


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
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.RMSProp(centered=True, momentum=0.9).hyper.rho
        0.9
    """

    name = "rmsprop"

    def __init__(
        self,
        lr: float = 1e-2,
        rho: float = 0.9,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        deck_variant: bool = False,
        **common: Any,
    ):
        super().__init__(
            RMSPropHyper(
                lr=lr,
                rho=rho,
                eps=eps,
                momentum=momentum,
                centered=centered,
                deck_variant=deck_variant,
                **common,
            )
        )


@dataclass
class AdaDeltaHyper(Hyper):
    """AdaDelta: ``rho`` in [0, 1], ``eps`` (> 0)."""

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6

    def validate(self) -> None:
        super().validate()
        self.rho = v.real("rho", self.rho, 0.0, 1.0)
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)

    def fill(self, cfg: Any) -> None:
        cfg.rho, cfg.eps = self.rho, self.eps


class AdaDelta(Optimizer):
    """AdaDelta (Zeiler 2012; deck 001's D G^-1 approximation; torch.optim.Adadelta).

    r <- rho r + (1 - rho) g*g; dx = sqrt(u + eps) / sqrt(r + eps) g;
    u <- rho u + (1 - rho) dx*dx; theta <- theta - lr dx.

    Args:
        lr: scale of the update (>= 0), 1.0 as in the paper and torch.
        rho: decay rate in [0, 1].
        eps: (> 0).
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaDelta().lr
        1.0
    """

    name = "adadelta"

    def __init__(self, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, **common: Any):
        super().__init__(AdaDeltaHyper(lr=lr, rho=rho, eps=eps, **common))


@dataclass
class AdamHyper(Hyper):
    """Adam family: ``betas`` (each in [0, 1)), ``eps`` (> 0), ``amsgrad``, ``deck_variant``
    (eps inside the root, deck 002 Alg. 8.7)."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False
    deck_variant: bool = False

    def validate(self) -> None:
        super().validate()
        self.betas = _betas("betas", self.betas)
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)
        self.amsgrad = _flag("amsgrad", self.amsgrad)
        self.deck_variant = _flag("deck_variant", self.deck_variant)

    def fill(self, cfg: Any) -> None:
        cfg.beta1, cfg.beta2 = self.betas
        cfg.eps, cfg.amsgrad, cfg.deck_variant = self.eps, self.amsgrad, self.deck_variant


class Adam(Optimizer):
    """Adam with bias correction (deck 002 Alg. 8.7, deck 000; torch.optim.Adam), AMSGrad.

    m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g*g; AMSGrad: v_max <- max(v_max, v), used
    for v; theta <- theta - lr/(1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps), or with
    ``deck_variant`` / sqrt(v/(1 - b2^t) + eps) (deck 002). Defaults lr = 1e-3, betas
    (0.9, 0.999), eps = 1e-8 (the decks' and torch's).

    Args:
        lr: step size (>= 0).
        betas: (beta1, beta2), the decks' (rho_1, rho_2), each in [0, 1).
        eps: delta (> 0).
        amsgrad: AMSGrad (Reddi et al. 2018).
        weight_decay: coupled L2 (decoupled with ``decoupled_weight_decay=True``: AdamW).
        deck_variant: eps inside the square root.
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.Adam(amsgrad=True).config().amsgrad
        True
    """

    name = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        deck_variant: bool = False,
        **common: Any,
    ):
        super().__init__(
            AdamHyper(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                deck_variant=deck_variant,
                **common,
            )
        )


@dataclass
class AdamWHyper(AdamHyper):
    """AdamW: Adam's fields; ``weight_decay`` is decoupled (0.01 as torch)."""

    weight_decay: float = 1e-2
    decoupled_weight_decay: bool = True

    def validate(self) -> None:
        super().validate()
        if not self.decoupled_weight_decay:
            raise ValueError("decoupled_weight_decay: AdamW's weight decay is decoupled; use Adam")


class AdamW(Optimizer):
    """AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW): Adam with decoupled weight decay
    theta <- theta (1 - lr lambda) before the Adam update.

    Args:
        lr, betas, eps, amsgrad, deck_variant: as ``Adam``.
        weight_decay: lambda (>= 0), default 0.01.
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdamW(weight_decay=0.1).config().decoupled_weight_decay
        0.1
    """

    name = "adamw"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        deck_variant: bool = False,
        **common: Any,
    ):
        super().__init__(
            AdamWHyper(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                deck_variant=deck_variant,
                **common,
            )
        )


@dataclass
class NAdamHyper(Hyper):
    """NAdam: ``betas``, ``eps``, ``momentum_decay`` psi (>= 0), ``deck_variant`` (constant
    momentum mu_t = beta1)."""

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum_decay: float = 4e-3
    deck_variant: bool = False

    def validate(self) -> None:
        super().validate()
        self.betas = _betas("betas", self.betas)
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)
        self.momentum_decay = v.real("momentum_decay", self.momentum_decay, 0.0)
        self.deck_variant = _flag("deck_variant", self.deck_variant)

    def fill(self, cfg: Any) -> None:
        cfg.beta1, cfg.beta2 = self.betas
        cfg.eps, cfg.momentum_decay, cfg.deck_variant = (
            self.eps,
            self.momentum_decay,
            self.deck_variant,
        )


class NAdam(Optimizer):
    """NAdam (Dozat 2016; torch.optim.NAdam): Nesterov momentum in Adam.

    mu_t = b1 (1 - 0.5 * 0.96^(t psi)); m, v as Adam;
    theta <- theta - lr (mu_{t+1} m / (1 - prod_{i<=t+1} mu_i) + (1 - mu_t) g /
    (1 - prod_{i<=t} mu_i)) / (sqrt(v / (1 - b2^t)) + eps). ``deck_variant``: mu_t = b1.

    Args:
        lr: (>= 0), default 2e-3 (torch). betas, eps: as Adam.
        momentum_decay: psi (>= 0), 4e-3.
        deck_variant: constant momentum schedule.
        **common: see ``Hyper`` (``decoupled_weight_decay=True`` gives torch's NAdamW form).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.NAdam().lr
        0.002
    """

    name = "nadam"

    def __init__(
        self,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum_decay: float = 4e-3,
        *,
        deck_variant: bool = False,
        **common: Any,
    ):
        super().__init__(
            NAdamHyper(
                lr=lr,
                betas=betas,
                eps=eps,
                momentum_decay=momentum_decay,
                deck_variant=deck_variant,
                **common,
            )
        )


@dataclass
class AdaMaxHyper(Hyper):
    """AdaMax: ``betas``, ``eps``."""

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def validate(self) -> None:
        super().validate()
        self.betas = _betas("betas", self.betas)
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)

    def fill(self, cfg: Any) -> None:
        cfg.beta1, cfg.beta2 = self.betas
        cfg.eps = self.eps


class AdaMax(Optimizer):
    """AdaMax (Kingma & Ba 2015, Alg. 2; torch.optim.Adamax): Adam with the infinity norm.

    m <- b1 m + (1 - b1) g; u <- max(b2 u, |g| + eps); theta <- theta - lr/(1 - b1^t) m / u.

    Args:
        lr: (>= 0), default 2e-3. betas, eps: as Adam.
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaMax().hyper.betas
        (0.9, 0.999)
    """

    name = "adamax"

    def __init__(
        self,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        **common: Any,
    ):
        super().__init__(AdaMaxHyper(lr=lr, betas=betas, eps=eps, **common))


@dataclass
class AdaBeliefHyper(Hyper):
    """AdaBelief: ``betas``, ``eps`` (1e-16, the authors' default), ``amsgrad``."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-16
    amsgrad: bool = False

    def validate(self) -> None:
        super().validate()
        self.betas = _betas("betas", self.betas)
        self.eps = v.real("eps", self.eps, 0.0, low_open=True)
        self.amsgrad = _flag("amsgrad", self.amsgrad)

    def fill(self, cfg: Any) -> None:
        cfg.beta1, cfg.beta2 = self.betas
        cfg.eps, cfg.amsgrad = self.eps, self.amsgrad


class AdaBelief(Optimizer):
    """AdaBelief (Zhuang et al. 2020, Alg. 2; as adabelief-pytorch 0.2 without rectification).

    m <- b1 m + (1 - b1) g; s <- b2 s + (1 - b2)(g - m)^2 + eps (AMSGrad: running max);
    theta <- theta - lr/(1 - b1^t) m / (sqrt(s / (1 - b2^t)) + eps).

    Args:
        lr: (>= 0), 1e-3. betas: as Adam. eps: (> 0), 1e-16.
        amsgrad: keep the running maximum of s.
        **common: see ``Hyper`` (the authors' default is decoupled decay:
            ``decoupled_weight_decay=True``).

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.AdaBelief().hyper.eps
        1e-16
    """

    name = "adabelief"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        amsgrad: bool = False,
        **common: Any,
    ):
        super().__init__(AdaBeliefHyper(lr=lr, betas=betas, eps=eps, amsgrad=amsgrad, **common))


@dataclass
class AdafactorHyper(Hyper):
    """Adafactor: ``beta2_decay`` (<= 0), ``eps`` = (eps1 or None for the dtype's machine
    epsilon, eps2), ``d`` (update clipping threshold), ``relative_step``, ``scale_parameter``;
    ``weight_decay`` is decoupled."""

    lr: float = 1e-2
    beta2_decay: float = -0.8
    eps: tuple[float | None, float] = (None, 1e-3)
    d: float = 1.0
    relative_step: bool = True
    scale_parameter: bool = True
    decoupled_weight_decay: bool = True

    def validate(self) -> None:
        super().validate()
        self.beta2_decay = v.real("beta2_decay", self.beta2_decay, high=0.0)
        if not isinstance(self.eps, (tuple, list)) or len(self.eps) != 2:
            raise ValueError(f"eps: expected a pair (eps1 or None, eps2), got {self.eps!r}")
        e1 = None if self.eps[0] is None else v.real("eps[0]", self.eps[0], 0.0, low_open=True)
        self.eps = (e1, v.real("eps[1]", self.eps[1], 0.0))
        self.d = v.real("d", self.d, 0.0, low_open=True)
        self.relative_step = _flag("relative_step", self.relative_step)
        self.scale_parameter = _flag("scale_parameter", self.scale_parameter)
        if not self.decoupled_weight_decay:
            raise ValueError("decoupled_weight_decay: Adafactor's weight decay is decoupled")

    def fill(self, cfg: Any) -> None:
        cfg.beta2_decay = self.beta2_decay
        cfg.eps = 0.0 if self.eps[0] is None else self.eps[0]
        cfg.eps2 = self.eps[1]
        cfg.clip_threshold = self.d
        cfg.relative_step, cfg.scale_parameter = self.relative_step, self.scale_parameter


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
        **common: see ``Hyper``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.optim.Adafactor().hyper.relative_step, fm.optim.Adafactor(lr=0.1).hyper.relative_step
        (True, False)
    """

    name = "adafactor"

    def __init__(
        self,
        lr: float | None = None,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        relative_step: bool | None = None,
        scale_parameter: bool = True,
        **common: Any,
    ):
        if relative_step is None:
            relative_step = lr is None
        super().__init__(
            AdafactorHyper(
                lr=1e-2 if lr is None else lr,
                beta2_decay=beta2_decay,
                eps=eps,
                d=d,
                weight_decay=weight_decay,
                relative_step=relative_step,
                scale_parameter=scale_parameter,
                **common,
            )
        )


_CLASSES: dict[str, type[Optimizer]] = {
    c.name: c
    for c in (SGD, AdaGrad, RMSProp, AdaDelta, Adam, AdamW, NAdam, AdaMax, AdaBelief, Adafactor)
}
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
