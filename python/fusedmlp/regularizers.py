"""Regularizers fused into the optimizer step (deck 002), declared as small records.

Each record says what it adds; ``configure(cfg, regs)`` writes them into the C++
``OptConfig`` the fused step reads, ``penalty(regs, weights)`` gives the term added to the
reported loss, and ``grad_scale(regs, grads)`` the global-norm clipping factor the caller
passes to the step. Penalties and max-norm apply to weights only (not biases, not batch-norm
gamma/beta) unless the segment or ``decay`` option says otherwise.

=================  ================================================  =========================
record             effect on the step                                penalty term
=================  ================================================  =========================
L2(l2)             g += l2 theta (coupled; deck 002 "weight decay")  l2/2 ||w||^2
L1(l1)             g += l1 sign(theta) (deck 002)                    l1 ||w||_1
L1L2(l1, l2)       both                                              both
WeightDecay(rate)  theta <- theta (1 - lr rate) (decoupled)          none (not a loss term)
MaxNorm(c)         each unit's incoming weights projected to ||.||<=c  none
ClipNorm(c)        all gradients scaled by min(1, c/(||g|| + 1e-6))   none
ClipValue(c)       each gradient element clipped to [-c, c]          none
=================  ================================================  =========================

Example:
    >>> import fusedmlp as fm
    >>> cfg = fm.optim.SGD(lr=0.1).config()
    >>> fm.regularizers.configure(cfg, [fm.regularizers.L2(1e-4), fm.regularizers.MaxNorm(3.0)])
    >>> cfg.weight_decay, cfg.max_norm
    (0.0001, 3.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend
from . import _validate as v
from ._loader import _core

#: torch.nn.utils.clip_grad_norm_'s guard against a zero norm.
CLIP_NORM_EPS = _core.CLIP_NORM_EPS  # one definition, csrc/common/optimizer.h


@dataclass(frozen=True)
class L2:
    """Coupled L2 penalty (l2/2) ||w||^2: adds l2 theta to the gradient.

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.L2(0.01).l2
        0.01
    """

    l2: float = 0.01

    def __post_init__(self):
        v.real("l2", self.l2, 0.0)

    def configure(self, cfg: Any) -> None:
        cfg.weight_decay += self.l2

    def penalty(self, w: np.ndarray) -> float:
        return 0.5 * self.l2 * float(np.dot(w.ravel(), w.ravel()))


@dataclass(frozen=True)
class L1:
    """L1 penalty l1 ||w||_1: adds l1 sign(theta) to the gradient (sparse weights).

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.L1(1e-3).l1
        0.001
    """

    l1: float = 0.01

    def __post_init__(self):
        v.real("l1", self.l1, 0.0)

    def configure(self, cfg: Any) -> None:
        cfg.l1 += self.l1

    def penalty(self, w: np.ndarray) -> float:
        return self.l1 * float(np.abs(w).sum())


@dataclass(frozen=True)
class L1L2:
    """L1 and L2 penalties together (elastic net).

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.L1L2(l1=1e-4, l2=1e-3).l2
        0.001
    """

    l1: float = 0.01
    l2: float = 0.01

    def __post_init__(self):
        v.real("l1", self.l1, 0.0)
        v.real("l2", self.l2, 0.0)

    def configure(self, cfg: Any) -> None:
        cfg.l1 += self.l1
        cfg.weight_decay += self.l2

    def penalty(self, w: np.ndarray) -> float:
        return L1(self.l1).penalty(w) + L2(self.l2).penalty(w)


@dataclass(frozen=True)
class WeightDecay:
    """Decoupled weight decay: theta <- theta (1 - lr rate) before the update (AdamW's).

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.WeightDecay(0.01).rate
        0.01
    """

    rate: float = 0.01

    def __post_init__(self):
        v.real("rate", self.rate, 0.0)

    def configure(self, cfg: Any) -> None:
        cfg.decoupled_weight_decay += self.rate


@dataclass(frozen=True)
class MaxNorm:
    """Max-norm constraint (Srivastava et al. 2014): after each update, every column of a
    weight matrix (the incoming weights of one unit) with L2 norm above ``max_value`` is
    rescaled to norm ``max_value``.

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.MaxNorm(4.0).max_value
        4.0
    """

    max_value: float = 3.0

    def __post_init__(self):
        v.real("max_value", self.max_value, 0.0, low_open=True)

    def configure(self, cfg: Any) -> None:
        cfg.max_norm = self.max_value


@dataclass(frozen=True)
class ClipNorm:
    """Gradient clipping by global norm (deck 002, "cliffs and exploding gradients").

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.ClipNorm(1.0).max_norm
        1.0
    """

    max_norm: float = 1.0

    def __post_init__(self):
        v.real("max_norm", self.max_norm, 0.0, low_open=True)

    def configure(self, cfg: Any) -> None:
        """Nothing to write: the norm is global, see ``grad_scale``."""


@dataclass(frozen=True)
class ClipValue:
    """Gradient clipping by value: each element to [-value, value].

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.ClipValue(0.5).value
        0.5
    """

    value: float = 1.0

    def __post_init__(self):
        v.real("value", self.value, 0.0, low_open=True)

    def configure(self, cfg: Any) -> None:
        cfg.clip_value = self.value


REGULARIZERS = (L2, L1, L1L2, WeightDecay, MaxNorm, ClipNorm, ClipValue)


def _check(regs: Any) -> list:
    if regs is None:
        return []
    if not isinstance(regs, (list, tuple)):
        regs = [regs]
    for i, r in enumerate(regs):
        if not isinstance(r, REGULARIZERS):
            raise TypeError(
                f"regularizers[{i}]: expected one of "
                f"{[c.__name__ for c in REGULARIZERS]}, got {type(r).__name__}"
            )
    return list(regs)


def configure(cfg: Any, regs: Any) -> None:
    """Write the regularizers into a C++ ``OptConfig`` (adding to what is there).

    Args:
        cfg: ``fusedmlp._core.OptConfig`` (for example ``optimizer.config()``).
        regs: a regularizer or a list of them (None: nothing).
    """
    for r in _check(regs):
        r.configure(cfg)
    cfg.validate()


def penalty(regs: Any, weights: list) -> float:
    """The penalty term (sum over weight arrays) the L1/L2 records add to the loss.

    Args:
        regs: a regularizer or a list of them.
        weights: the arrays the penalties apply to (weights, not biases).

    Returns:
        The penalty, a float.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.regularizers.penalty([fm.regularizers.L2(2.0)], [np.array([[1.0, 2.0]])])
        5.0
    """
    total = 0.0
    for r in _check(regs):
        if hasattr(r, "penalty"):
            total += sum(r.penalty(np.asarray(w, dtype=np.float64)) for w in weights)
    return total


def global_grad_norm(grads: list) -> float:
    """The L2 norm of all gradients together, in double in a fixed order (deterministic for
    any thread count) and without overflow: each tensor's norm by Blue's scaled sums
    (csrc/common/norm.h), the norms combined scaled by the largest, so gradients of ~1e300
    give their true norm instead of inf.

    Example:
        >>> import numpy as np, fusedmlp as fm
        >>> fm.regularizers.global_grad_norm([np.array([3.0]), np.array([[4.0]])])
        5.0
    """
    be = _backend.of_any(*grads)
    checked = [
        be.asarray(f"grads[{i}]", g, ndim=None, allow_empty=True) for i, g in enumerate(grads)
    ]
    if be.name == "cuda":
        # The device reduces squared norms only (csrc/cuda/optimizer.h): one sync per tensor.
        from . import ops

        return math.sqrt(sum(float(ops.grad_sq_norm(g)) for g in checked))
    norms = [_core.grad_norm(g) for g in checked]
    top = max(norms, default=0.0)
    if top == 0.0 or math.isinf(top):
        return top
    return top * math.sqrt(sum((x / top) ** 2 for x in norms))


def clip_grad_norm_scale(total_norm: float, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (total_norm + 1e-6)).

    Example:
        >>> import fusedmlp as fm
        >>> fm.regularizers.clip_grad_norm_scale(0.5, 1.0)
        1.0
    """
    total_norm = v.real("total_norm", total_norm, 0.0)
    max_norm = v.real("max_norm", max_norm, 0.0, low_open=True)
    return _core.clip_norm_scale(total_norm, max_norm)


def grad_scale(regs: Any, grads: list) -> float:
    """The grad_scale to pass to the optimizer step: the ClipNorm factor (1.0 without one;
    the smallest max_norm wins when several are given)."""
    clips = [r.max_norm for r in _check(regs) if isinstance(r, ClipNorm)]
    if not clips:
        return 1.0
    return clip_grad_norm_scale(global_grad_norm(grads), min(clips))


__all__ = [
    "L1",
    "L1L2",
    "L2",
    "ClipNorm",
    "ClipValue",
    "MaxNorm",
    "WeightDecay",
    "clip_grad_norm_scale",
    "configure",
    "global_grad_norm",
    "grad_scale",
    "penalty",
]
