"""The activation registry: names, aliases, hyper-parameters with their defaults and ranges,
and learnable per-unit parameters. One table serves ``fusedmlp.ops`` and the layers.

The formulas live once, in ``csrc/common/activation.h`` (see its header for the deck
sources and the misprints corrected there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _validate as v
from ._loader import _core

_CODES = {name: i for i, name in enumerate(_core.activation_names())}

ALIASES = {
    "linear": "identity",
    "logistic": "sigmoid",
    "swish": "silu",
    "step": "binary_step",
    "heaviside": "binary_step",
    "asinh": "arsinh",
    "atan": "arctan",
    "leakyrelu": "leaky_relu",
    "gelu_exact": "gelu",
    "gelu_approx": "gelu_tanh",
    "soboleva": "soboleva_tanh",
    "scaled_tanh": "lecun_tanh",
    "sin": "sinusoid",
}

#: Row-wise output operations (not elementwise): they have their own kernels.
ROW_OPS = ("softmax", "maxout")


@dataclass(frozen=True)
class Hyper:
    default: float
    low: float | None = None
    high: float | None = None
    low_open: bool = False


# Scalar hyper-parameters per activation (name -> {param: Hyper}); see activation.h.
HYPER: dict[str, dict[str, Hyper]] = {
    "leaky_relu": {"alpha": Hyper(0.01)},
    "isru": {"alpha": Hyper(1.0, 0.0, low_open=True)},
    "isrlu": {"alpha": Hyper(1.0, 0.0, low_open=True)},
    "elu": {"alpha": Hyper(1.0, 0.0)},
    "soft_clipping": {"alpha": Hyper(1.0, 0.0, low_open=True)},
    "rrelu": {"lower": Hyper(0.125, 0.0), "upper": Hyper(1.0 / 3.0, 0.0)},
    "soboleva_tanh": {"a": Hyper(1.0), "b": Hyper(1.0), "c": Hyper(1.0), "d": Hyper(1.0)},
}

# Learnable per-unit parameters: name -> (row names, initial values). APL has 2S rows.
LEARNABLE: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "prelu": (("alpha",), (0.25,)),
    "soft_exponential": (("alpha",), (0.0,)),
    "srelu": (("t_left", "a_left", "t_right", "a_right"), (0.0, 0.01, 1.0, 1.0)),
}


def canonical(name: Any, what: str = "activation") -> str:
    """The canonical activation name for ``name`` (aliases and case folded); ``what`` is the
    argument named in errors."""
    if not isinstance(name, str):
        raise TypeError(f"{what}: expected an activation name (str), got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in _CODES and key not in ROW_OPS:
        known = ", ".join(sorted(list(_CODES) + list(ROW_OPS)))
        raise ValueError(f"{what}: unknown activation {name!r}; expected one of {known}")
    return key


def names() -> list[str]:
    """All activation names (elementwise ones, then the row ops)."""
    return list(_CODES) + list(ROW_OPS)


def num_params(name: str, hinges: int = 1) -> int:
    """Learnable parameters per unit."""
    return int(_core.activation_num_params(_CODES[name], hinges))


@dataclass
class ActivationSpec:
    """A validated activation choice: canonical name, hyper-parameters, APL hinges."""

    name: str
    hyper: dict[str, float] = field(default_factory=dict)
    hinges: int = 1

    def config(self, *, training: bool = False, seed: int = 0, step: int = 0, layer: int = 0):
        """The C++ configuration object for the kernels."""
        c = _core.ActConfig()
        c.code = _CODES[self.name]
        for k, val in self.hyper.items():
            setattr(c, k, val)
        c.hinges = self.hinges
        c.training = v.flag("training", training)
        c.seed, c.step, c.layer = v.philox_key(seed, step, layer)
        return c

    @property
    def learnable(self) -> bool:
        return num_params(self.name, self.hinges) > 0


def make_spec(name: Any, hinges: int | None = None, **hyper: Any) -> ActivationSpec:
    """Validate ``name`` and its hyper-parameters into an :class:`ActivationSpec`.

    Raises:
        ValueError / TypeError naming the offending argument.
    """
    key = canonical(name)
    if key in ROW_OPS:
        raise ValueError(
            f"activation: {key!r} is a row-wise operation, not an elementwise activation"
        )
    allowed = HYPER.get(key, {})
    unknown = set(hyper) - set(allowed)
    if unknown:
        want = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"{sorted(unknown)[0]}: not a hyper-parameter of activation {key!r} (it takes: {want})"
        )
    vals = {}
    for p, h in allowed.items():
        vals[p] = v.real(p, hyper.get(p, h.default), h.low, h.high, low_open=h.low_open)
    if key == "rrelu" and vals["lower"] > vals["upper"]:
        raise ValueError(f"lower: expected <= upper ({vals['upper']}), got {vals['lower']}")
    if key == "soboleva_tanh" and vals["c"] + vals["d"] <= 0:
        raise ValueError(f"c, d: expected c + d > 0, got c={vals['c']}, d={vals['d']}")
    s = 1
    if key == "apl":
        s = v.integer("hinges", 1 if hinges is None else hinges, low=1)
    elif hinges is not None:
        raise ValueError(f"hinges: only the 'apl' activation takes hinges, not {key!r}")
    return ActivationSpec(key, vals, s)
