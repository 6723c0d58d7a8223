"""Learning-rate schedules (decks 000, 002, 003) as explicit state: each schedule is a
dataclass holding its hyper-parameters and its position (``steps`` optimizer steps and
``epochs`` epochs done), so it can be saved, restored and compared.

Use: ``lr = sched.get_lr()`` before an optimizer step, ``sched.step()`` after it,
``sched.epoch_end(metric)`` after each epoch (the metric feeds ReduceOnPlateau).
``lr_at(step, epoch)`` is the closed form at any position (epochs may be fractional, e.g.
``epoch + batch / n_batches`` for SGDR). Every schedule with a time variable takes
``per="epoch"`` or ``per="step"``: the counter its formula runs on.

Example:
    >>> import fusedmlp as fm
    >>> s = fm.schedules.MultiStep(lr=0.1)          # x0.1 at epochs 30, 60, 90
    >>> [round(s.lr_at(0, e), 6) for e in (0, 29, 30, 60, 95)]
    [0.1, 0.1, 0.01, 0.001, 0.0001]
"""

from __future__ import annotations

import abc
import bisect
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import _validate as v

_PER = ("epoch", "step")


def _per(per: Any) -> str:
    if per not in _PER:
        raise ValueError(f"per: expected 'epoch' or 'step', got {per!r}")
    return per


@dataclass
class Schedule(abc.ABC):
    """Base: the position counters and the step/epoch protocol.

    Attributes:
        steps: optimizer steps taken (``step()`` calls).
        epochs: epochs completed (``epoch_end()`` calls).
    """

    name: ClassVar[str] = ""
    steps: int = field(default=0, init=False)
    epochs: float = field(default=0, init=False)

    def _t(self, step: float, epoch: float) -> float:
        """The time variable of the formula (``per``), after checking both counters."""
        step, epoch = _position(step, epoch)
        return step if getattr(self, "per", "epoch") == "step" else epoch

    @abc.abstractmethod
    def lr_at(self, step: float, epoch: float = 0) -> float:
        """The learning rate after ``step`` optimizer steps and ``epoch`` epochs."""

    def get_lr(self) -> float:
        """The learning rate for the next optimizer step."""
        return self.lr_at(self.steps, self.epochs)

    def get_momentum(self) -> float | None:
        """The momentum (or Adam's beta1) for the next step, or None when the schedule leaves it."""
        return None

    def step(self) -> None:
        """Record one optimizer step."""
        self.steps += 1

    def epoch_end(self, metric: float | None = None) -> None:
        """Record the end of an epoch (``metric``: the monitored value, for ReduceOnPlateau)."""
        self.epochs += 1

    def state_dict(self) -> dict:
        """``{"schedule": name, field: value, ...}`` (nested schedules as their state dicts)."""
        out: dict[str, Any] = {"schedule": self.name}
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            out[f.name] = val.state_dict() if isinstance(val, Schedule) else val
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore hyper-parameters and position from ``state_dict()``."""
        if not isinstance(state, dict) or state.get("schedule") != self.name:
            raise ValueError(f"state: expected a state_dict of schedule {self.name!r}")
        names = {f.name for f in dataclasses.fields(self)}
        given = set(state) - {"schedule"}
        if given != names:
            raise ValueError(f"state: expected the fields {sorted(names)}, got {sorted(given)}")
        for k in names:
            val = state[k]
            if isinstance(val, dict) and "schedule" in val:
                val = from_state_dict(val)
            elif isinstance(val, list):
                val = tuple(val)
            object.__setattr__(self, k, val)
        self.__post_init__()

    def __post_init__(self) -> None:
        self.steps = v.integer("steps", self.steps, 0)
        self.epochs = v.real("epochs", self.epochs, 0.0)


def _position(step: Any, epoch: Any) -> tuple[float, float]:
    """``lr_at``'s position: finite counts >= 0 (epochs may be fractional, and so may steps
    of a schedule evaluated between optimizer steps)."""
    return v.real("step", step, 0.0), v.real("epoch", epoch, 0.0)


def _lr(name: str, x: Any) -> float:
    # 0 is a learning rate (a frozen phase, a warm-up from zero), as in torch and Keras.
    return v.real(name, x, 0.0)


@dataclass
class Constant(Schedule):
    """lr at every step.

    Example:
        >>> import fusedmlp as fm
        >>> fm.schedules.Constant(0.1).lr_at(1000, 10)
        0.1
    """

    name: ClassVar[str] = "constant"
    lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        _position(step, epoch)
        return self.lr


@dataclass
class StepDecay(Schedule):
    """lr * gamma^floor(t / step_size) (deck 003 "halve on a fixed schedule": gamma = 0.5).

    Example:
        >>> import fusedmlp as fm
        >>> fm.schedules.StepDecay(1.0, step_size=10, gamma=0.5).lr_at(0, 25)
        0.25
    """

    name: ClassVar[str] = "step_decay"
    lr: float = 1e-3
    step_size: int = 30
    gamma: float = 0.1
    per: str = "epoch"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.step_size = v.integer("step_size", self.step_size, 1)
        self.gamma = v.real("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        return self.lr * self.gamma ** math.floor(self._t(step, epoch) / self.step_size)


@dataclass
class MultiStep(Schedule):
    """lr * gamma^(number of milestones <= t); default x0.1 at epochs 30, 60, 90 (deck 000,
    the ResNet schedule).

    Example:
        >>> import fusedmlp as fm
        >>> fm.schedules.MultiStep(1.0, milestones=(2, 4), gamma=0.5).lr_at(0, 4)
        0.25
    """

    name: ClassVar[str] = "multi_step"
    lr: float = 1e-3
    milestones: tuple[int, ...] = (30, 60, 90)
    gamma: float = 0.1
    per: str = "epoch"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        if not isinstance(self.milestones, (tuple, list)):
            raise TypeError(f"milestones: expected a sequence of integers, got {self.milestones!r}")
        ms = tuple(v.integer(f"milestones[{i}]", m, 1) for i, m in enumerate(self.milestones))
        if list(ms) != sorted(set(ms)):
            raise ValueError(f"milestones: expected strictly increasing integers, got {ms}")
        self.milestones = ms
        self.gamma = v.real("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, self._t(step, epoch))


@dataclass
class Exponential(Schedule):
    """lr * gamma^t.

    Example:
        >>> import fusedmlp as fm
        >>> fm.schedules.Exponential(1.0, gamma=0.5).lr_at(0, 3)
        0.125
    """

    name: ClassVar[str] = "exponential"
    lr: float = 1e-3
    gamma: float = 0.95
    per: str = "epoch"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.gamma = v.real("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        return self.lr * self.gamma ** self._t(step, epoch)


@dataclass
class LinearDecay(Schedule):
    """Deck 002: eps_k = (1 - a) eps_0 + a eps_tau with a = min(1, k / tau), constant after
    tau. ``lr_end`` defaults to 1% of lr (the deck's advice).

    Example:
        >>> import fusedmlp as fm
        >>> s = fm.schedules.LinearDecay(1.0, tau=100)
        >>> s.lr_at(50), s.lr_at(100), s.lr_at(500)
        (0.505, 0.01, 0.01)
    """

    name: ClassVar[str] = "linear_decay"
    lr: float = 1e-3
    tau: int = 1000
    lr_end: float | None = None
    per: str = "step"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.tau = v.integer("tau", self.tau, 1)
        self.lr_end = 0.01 * self.lr if self.lr_end is None else _lr("lr_end", self.lr_end)
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        a = min(1.0, self._t(step, epoch) / self.tau)
        return (1.0 - a) * self.lr + a * self.lr_end


@dataclass
class Cosine(Schedule):
    """Deck 000: lr_t = lr_min + (lr - lr_min)/2 (1 + cos(t pi / T)); lr_t = lr_min after T.
    With lr_min = 0 this is the deck's 1/2 alpha_0 (1 + cos(t pi / T)).

    Example:
        >>> import fusedmlp as fm
        >>> fm.schedules.Cosine(1.0, T=10).lr_at(0, 5)
        0.5
    """

    name: ClassVar[str] = "cosine"
    lr: float = 1e-3
    T: float = 100
    lr_min: float = 0.0
    per: str = "epoch"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.T = v.real("T", self.T, 0.0, low_open=True)
        self.lr_min = v.real("lr_min", self.lr_min, 0.0, self.lr)
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        t = min(self._t(step, epoch), self.T)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1.0 + math.cos(math.pi * t / self.T))


@dataclass
class Warmup(Schedule):
    """Linear warmup (Goyal et al. 2017): the lr of ``after`` (Constant(lr) when None) times
    start_factor + (1 - start_factor) min(1, t / warmup). The wrapped schedule runs on its own
    counters unshifted, as in Goyal et al. (step decay at epochs 30, 60, 80 from epoch 0).

    Example:
        >>> import fusedmlp as fm
        >>> s = fm.schedules.Warmup(lr=1.0, warmup=10, start_factor=0.0)
        >>> s.lr_at(5), s.lr_at(10), s.lr_at(50)
        (0.5, 1.0, 1.0)
    """

    name: ClassVar[str] = "warmup"
    lr: float = 1e-3
    warmup: int = 1000
    start_factor: float = 0.1
    after: Schedule | None = None
    per: str = "step"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.warmup = v.integer("warmup", self.warmup, 1)
        self.start_factor = v.real("start_factor", self.start_factor, 0.0, 1.0)
        if self.after is not None and (
            not isinstance(self.after, Schedule) or isinstance(self.after, ReduceOnPlateau)
        ):
            raise TypeError(f"after: expected a closed-form Schedule or None, got {self.after!r}")
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        base = self.lr if self.after is None else self.after.lr_at(step, epoch)
        frac = min(1.0, self._t(step, epoch) / self.warmup)
        return base * (self.start_factor + (1.0 - self.start_factor) * frac)


@dataclass
class OneCycle(Schedule):
    """The 1-cycle policy (Smith 2018; deck 003), as torch.optim.lr_scheduler.OneCycleLR:
    from max_lr/div_factor up to max_lr over the first pct_start of ``total`` steps, then down
    to max_lr/(div_factor final_div_factor); cosine or linear annealing; ``three_phase``:
    up, back down to the initial lr, then down to the minimum. Constant after ``total``.
    ``cycle_momentum=True`` also cycles the momentum (SGD/RMSProp momentum, Adam-family beta1)
    inversely between ``max_momentum`` and ``base_momentum``, as torch does by default (off by
    default here, so a schedule never changes an optimizer's momentum silently). The Trainer
    applies it before each step. With NAdam the momentum-schedule product is recomputed from the
    current beta1, where torch accumulates it over the cycled values.

    Example:
        >>> import fusedmlp as fm
        >>> s = fm.schedules.OneCycle(max_lr=1.0, total=101, pct_start=0.5, anneal="linear")
        >>> round(s.lr_at(0), 6), round(s.lr_at(49.5), 6)
        (0.04, 1.0)
    """

    name: ClassVar[str] = "one_cycle"
    max_lr: float = 1e-2
    total: int = 1000
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    three_phase: bool = False
    per: str = "step"
    cycle_momentum: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self):
        super().__post_init__()
        self.max_lr = _lr("max_lr", self.max_lr)
        if not isinstance(self.cycle_momentum, bool):
            raise TypeError("cycle_momentum: expected True or False")
        self.base_momentum = v.real("base_momentum", self.base_momentum, 0.0, 1.0, high_open=True)
        self.max_momentum = v.real("max_momentum", self.max_momentum, 0.0, 1.0, high_open=True)
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"base_momentum: expected <= max_momentum ({self.max_momentum}), "
                f"got {self.base_momentum}"
            )
        self.total = v.integer("total", self.total, 2)
        self.pct_start = v.real(
            "pct_start", self.pct_start, 0.0, 1.0, low_open=True, high_open=True
        )
        self.div_factor = v.real("div_factor", self.div_factor, 1.0)
        self.final_div_factor = v.real("final_div_factor", self.final_div_factor, 1.0)
        if self.anneal not in ("cos", "linear"):
            raise ValueError(f"anneal: expected 'cos' or 'linear', got {self.anneal!r}")
        if not isinstance(self.three_phase, bool):
            raise TypeError("three_phase: expected True or False")
        self.per = _per(self.per)
        up = self.pct_start * self.total - 1
        ends = [up, 2 * up, self.total - 1] if self.three_phase else [up, self.total - 1]
        if any(b <= a for a, b in zip([0.0, *ends[:-1]], ends, strict=True)):
            raise ValueError(
                f"pct_start: {self.pct_start} leaves an empty phase with total={self.total}"
            )

    def lr_at(self, step: float, epoch: float = 0) -> float:
        init = self.max_lr / self.div_factor
        low = init / self.final_div_factor
        return self._cycle(self._t(step, epoch), (init, self.max_lr, init, low))

    def momentum_at(self, step: float, epoch: float = 0) -> float | None:
        """torch's cycled momentum: max -> base while the lr rises, back to max as it falls
        (three-phase: max -> base -> max, then held). None unless ``cycle_momentum``."""
        if not self.cycle_momentum:
            return None
        lo, hi = self.base_momentum, self.max_momentum
        return self._cycle(self._t(step, epoch), (hi, lo, hi, hi))

    def get_momentum(self) -> float | None:
        return self.momentum_at(self.steps, self.epochs)

    def _cycle(self, t: float, v: tuple[float, float, float, float]) -> float:
        """Anneal through the phases; ``v`` = (start, peak, three-phase middle end, final)."""
        up = self.pct_start * self.total - 1
        if self.three_phase:
            phases = [(up, v[0], v[1]), (2 * up, v[1], v[2]), (self.total - 1, v[2], v[3])]
        else:
            phases = [(up, v[0], v[1]), (self.total - 1, v[1], v[3])]
        start = 0.0
        for i, (end, a, b) in enumerate(phases):
            if t <= end or i == len(phases) - 1:
                pct = min(1.0, (t - start) / (end - start))
                if self.anneal == "cos":
                    return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1.0)
                return (b - a) * pct + a
            start = end
        raise AssertionError("unreachable: the last phase always returns")


@dataclass
class SGDR(Schedule):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017; deck 003), as torch's
    CosineAnnealingWarmRestarts: period T_0, each next period T_mult times longer;
    lr_t = lr_min + (lr - lr_min)/2 (1 + cos(pi T_cur / T_i)). Fractional epochs work.

    Example:
        >>> import fusedmlp as fm
        >>> s = fm.schedules.SGDR(1.0, T_0=10)
        >>> s.lr_at(0, 5), s.lr_at(0, 10)
        (0.5, 1.0)
    """

    name: ClassVar[str] = "sgdr"
    lr: float = 1e-3
    T_0: int = 10
    T_mult: int = 1
    lr_min: float = 0.0
    per: str = "epoch"

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.T_0 = v.integer("T_0", self.T_0, 1)
        self.T_mult = v.integer("T_mult", self.T_mult, 1)
        self.lr_min = v.real("lr_min", self.lr_min, 0.0, self.lr)
        self.per = _per(self.per)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        t = self._t(step, epoch)
        if t < self.T_0:
            t_cur, t_i = t, self.T_0
        elif self.T_mult == 1:
            t_cur, t_i = t % self.T_0, self.T_0
        else:
            n = int(math.log(t / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
            t_cur = t - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
            t_i = self.T_0 * self.T_mult**n
            if t_cur >= t_i:  # log rounding just below a restart point
                t_cur, t_i = t_cur - t_i, t_i * self.T_mult
            elif t_cur < 0:
                t_i //= self.T_mult
                t_cur += t_i
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1.0 + math.cos(math.pi * t_cur / t_i))


@dataclass
class ReduceOnPlateau(Schedule):
    """Multiply the lr by ``factor`` (deck 003: halve, 0.5) when the monitored value has not
    improved for more than ``patience`` checks (torch's ReduceLROnPlateau: relative or
    absolute threshold, cooldown, floor ``lr_min``). Each ``epoch_end(metric)`` (or
    ``report(metric)``) is one check.

    Attributes (position): ``current`` lr, ``best`` value, ``bad_checks``, ``cooldown_left``.

    Example:
        >>> import fusedmlp as fm
        >>> s = fm.schedules.ReduceOnPlateau(1.0, patience=1)
        >>> for m in (1.0, 1.0, 1.0): s.epoch_end(m)
        >>> s.get_lr()
        0.5
    """

    name: ClassVar[str] = "reduce_on_plateau"
    lr: float = 1e-3
    factor: float = 0.5
    patience: int = 10
    mode: str = "min"
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    lr_min: float = 0.0
    current: float | None = None
    best: float | None = None
    bad_checks: int = 0
    cooldown_left: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.lr = _lr("lr", self.lr)
        self.factor = v.real("factor", self.factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = v.integer("patience", self.patience, 0)
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {self.mode!r}")
        self.threshold = v.real("threshold", self.threshold, 0.0)
        if self.threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"threshold_mode: expected 'rel' or 'abs', got {self.threshold_mode!r}"
            )
        self.cooldown = v.integer("cooldown", self.cooldown, 0)
        self.lr_min = v.real("lr_min", self.lr_min, 0.0, self.lr)
        self.current = self.lr if self.current is None else _lr("current", self.current)
        if self.best is None:
            self.best = math.inf if self.mode == "min" else -math.inf
        self.best = float(self.best)
        self.bad_checks = v.integer("bad_checks", self.bad_checks, 0)
        self.cooldown_left = v.integer("cooldown_left", self.cooldown_left, 0)

    def lr_at(self, step: float, epoch: float = 0) -> float:
        _position(step, epoch)
        return self.current

    def _better(self, a: float) -> bool:
        if self.mode == "min":
            ref = (
                self.best * (1 - self.threshold)
                if self.threshold_mode == "rel"
                else self.best - self.threshold
            )
            return a < ref
        ref = (
            self.best * (1 + self.threshold)
            if self.threshold_mode == "rel"
            else self.best + self.threshold
        )
        return a > ref

    def report(self, metric: float) -> None:
        """One check of the monitored value."""
        m = v.real("metric", metric)
        if self._better(m):
            self.best = m
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_checks = 0
        if self.bad_checks > self.patience:
            new = max(self.current * self.factor, self.lr_min)
            if self.current - new > 1e-8 * self.current:
                self.current = new
                self.cooldown_left = self.cooldown
            self.bad_checks = 0

    def epoch_end(self, metric: float | None = None) -> None:
        if metric is None:
            raise ValueError("metric: ReduceOnPlateau needs the monitored value at every epoch end")
        super().epoch_end()
        self.report(metric)


_CLASSES: dict[str, type[Schedule]] = {
    c.name: c
    for c in (
        Constant,
        StepDecay,
        MultiStep,
        Exponential,
        LinearDecay,
        Cosine,
        Warmup,
        OneCycle,
        SGDR,
        ReduceOnPlateau,
    )
}
_ALIASES = {
    "step": "step_decay",
    "multistep": "multi_step",
    "linear": "linear_decay",
    "cosine_warm_restarts": "sgdr",
    "onecycle": "one_cycle",
    "plateau": "reduce_on_plateau",
}


def get(name: str | Schedule, **kwargs: Any) -> Schedule:
    """A schedule from its name ("constant", "step_decay", "multi_step", "exponential",
    "linear_decay", "cosine", "warmup", "one_cycle", "sgdr", "reduce_on_plateau"; aliases
    "step", "multistep", "linear", "cosine_warm_restarts", "onecycle", "plateau").

    Example:
        >>> import fusedmlp as fm
        >>> fm.schedules.get("cosine", lr=0.1, T=10).lr_at(0, 10)
        0.0
    """
    if isinstance(name, Schedule):
        if kwargs:
            raise ValueError("kwargs: cannot be combined with a Schedule instance")
        return name
    if not isinstance(name, str):
        raise TypeError(f"name: expected a schedule name, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _CLASSES:
        raise ValueError(f"name: unknown schedule {name!r}; expected one of {sorted(_CLASSES)}")
    return _CLASSES[key](**kwargs)


def from_state_dict(state: dict) -> Schedule:
    """Rebuild a schedule (hyper-parameters and position) from ``state_dict()``.

    Example:
        >>> import fusedmlp as fm
        >>> s = fm.schedules.Cosine(0.1, T=10); s.epoch_end()
        >>> fm.schedules.from_state_dict(s.state_dict()) == s
        True
    """
    if not isinstance(state, dict) or state.get("schedule") not in _CLASSES:
        raise ValueError(f"state: expected a dict with 'schedule' one of {sorted(_CLASSES)}")
    sched = _CLASSES[state["schedule"]]()
    sched.load_state_dict(state)
    return sched


__all__ = [
    "SGDR",
    "Constant",
    "Cosine",
    "Exponential",
    "LinearDecay",
    "MultiStep",
    "OneCycle",
    "ReduceOnPlateau",
    "Schedule",
    "StepDecay",
    "Warmup",
    "from_state_dict",
    "get",
]
