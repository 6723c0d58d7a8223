"""The fuzzed entry points: for each, the arguments (valid and invalid specs, drawn
consistently) and how the worker calls it."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from .harness import (
    BAD_BOOL,
    BAD_INT,
    BAD_NAME,
    BAD_REAL,
    BAD_SEED,
    INF,
    NAN,
    Arr,
    Obj,
    bad_array_specs,
    good_array_specs,
)


@dataclasses.dataclass
class Param:
    """One argument: valid specs, and invalid ones that must raise ValueError/TypeError whose
    message names ``name`` (default: the argument itself)."""

    good: list
    bad: list = dataclasses.field(default_factory=list)
    name: str | None = None


TARGETS: dict[str, tuple[Any, Any]] = {}


def target(gen):
    """Register ``gen(draw) -> dict[str, Param]``; the call is ``RUN[name]``."""
    TARGETS[gen.__name__[4:]] = gen
    return gen


FLOATS = ("float64", "float32")
ELEMENTWISE = ("relu", "sigmoid", "tanh", "elu", "softplus", "silu", "gelu", "leaky_relu", "rrelu")
LEARNED = {"prelu": 1, "srelu": 4}


def _dims(draw):
    return (
        draw(st.integers(1, 5)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 3)),
        draw(st.sampled_from(FLOATS)),
    )


def _arr(shape, dt, fills=("normal", "huge", "tiny", "zeros")):
    return Param(good_array_specs(shape, dt, fills), bad_array_specs(shape, dt))


def _key():
    return {
        "seed": Param([0, 7, 2**64 - 1], BAD_SEED),
        "step": Param([0, 3, 2**64 - 1], BAD_SEED),
        "layer": Param([0, 2**32 - 1], [-1, 2**32, 1.5, None, True, "1"]),
    }


def _act_params(draw, name_pool=ELEMENTWISE + tuple(LEARNED)):
    b, n, _, dt = _dims(draw)
    name = draw(st.sampled_from(name_pool))
    p = {
        "name": Param([name], BAD_NAME),
        "z": _arr((b, n), dt),
        "training": Param([False, True], BAD_BOOL),
        **_key(),
    }
    if name in LEARNED:
        p["params"] = Param(
            [Arr((LEARNED[name], n), dt, "zeros" if name == "srelu" else "normal")],
            bad_array_specs((LEARNED[name], n), dt),
        )
    return p, (b, n, dt)


@target
def gen_activation(draw):
    return _act_params(draw)[0]


@target
def gen_activation_grad(draw):
    return _act_params(draw)[0]


@target
def gen_activation_backward(draw):
    p, (b, n, dt) = _act_params(draw)
    p["grad_output"] = _arr((b, n), dt)
    return p


@target
def gen_softmax(draw):
    b, n, _, dt = _dims(draw)
    return {"z": _arr((b, n), dt)}


@target
def gen_maxout(draw):
    b, n, k, dt = _dims(draw)
    k += 1
    return {"z": _arr((b, n * k), dt), "pieces": Param([k], [0, -1, 2**64, *BAD_INT])}


@target
def gen_dense_forward(draw):
    b, n, m, dt = _dims(draw)
    return {
        "X": _arr((b, n), dt),
        "W": _arr((n, m), dt),
        # b=None is documented (no bias): not among the invalid values
        "b": Param([None, Arr((m,), dt)], [x for x in bad_array_specs((m,), dt) if x is not None]),
        "activation": Param([draw(st.sampled_from(ELEMENTWISE[:-1]))], BAD_NAME),
    }


@target
def gen_dense_backward(draw):
    b, n, m, dt = _dims(draw)
    return {
        "X": _arr((b, n), dt),
        "W": _arr((n, m), dt),
        "Z": _arr((b, m), dt),
        "grad_output": _arr((b, m), dt),
        "activation": Param([draw(st.sampled_from(ELEMENTWISE[:-1]))], BAD_NAME),
        "has_bias": Param([True, False], BAD_BOOL),
        "need_dx": Param([True, False], BAD_BOOL),
    }


def _bn(draw):
    b, n, _, dt = _dims(draw)
    b = max(b, 2)  # the batch variance in training needs two samples
    return {
        "x": _arr((b, n), dt),
        "gamma": _arr((n,), dt),
        "beta": _arr((n,), dt),
        # updated in place: only writeable C-contiguous arrays are valid
        "running_mean": Param([Arr((n,), dt), Arr((n,), dt, "huge")], bad_array_specs((n,), dt)),
        "running_var": Param(
            [Arr((n,), dt, "pos")],
            [*bad_array_specs((n,), dt), Arr((n,), dt, "neg")],
        ),
        "training": Param([True, False], BAD_BOOL),
        "momentum": Param([0.0, 0.1, 1.0], [*BAD_REAL, -0.1, 1.5]),
        "eps": Param([1e-5, 1.0], [*BAD_REAL, 0.0, -1e-5]),
        "init_from_batch": Param([False, True], BAD_BOOL),
    }, (b, n, dt)


@target
def gen_batchnorm_forward(draw):
    return _bn(draw)[0]


@target
def gen_batchnorm_backward(draw):
    b, n, _, dt = _dims(draw)
    b = max(b, 2)  # the saved statistics come from a training forward
    return {
        "x": Param([Arr((b, n), dt)]),
        "grad_output": _arr((b, n), dt),
        # gamma=None is the documented non-affine layer
        "gamma": Param(
            [*good_array_specs((n,), dt), None],
            [x for x in bad_array_specs((n,), dt) if x is not None],
        ),
        "saved": Param([Obj("bn_saved")], [None, "saved", (1, 2), 3.0]),
    }


@target
def gen_rbf(draw):
    b, n, m, dt = _dims(draw)
    return {
        "X": _arr((b, n), dt),
        "centers": _arr((m, n), dt),
        "widths": Param(
            good_array_specs((m,), dt, ("pos",)),
            [*bad_array_specs((m,), dt), Arr((m,), dt, "neg"), Arr((m,), dt, "zeros")],
        ),
    }


@target
def gen_rbf_backward(draw):
    b, n, m, dt = _dims(draw)
    return {
        "X": Param([Arr((b, n), dt)]),
        "centers": Param([Arr((m, n), dt, seed=1)]),
        "widths": Param([Arr((m,), dt, "pos")]),
        "grad_output": _arr((b, m), dt),
        "need_dx": Param([True, False], BAD_BOOL),
        "need_params": Param([True, False], BAD_BOOL),
    }


def _drop(draw, arg, rate_name, good, bad):
    b, n, _, dt = _dims(draw)
    # elementwise: any shape is valid (a scalar, 1-d, 3-d too); only an empty array is refused
    shapes_ok = [Arr((n,), dt), Arr((b, n, 1), dt)]
    bad_x = [
        x
        for x in bad_array_specs((b, n), dt)
        if not (x == 3.0 or (isinstance(x, Arr) and x == Arr(x.shape, dt) and all(x.shape)))
    ]
    return {
        arg: Param(good_array_specs((b, n), dt) + shapes_ok, bad_x),
        rate_name: Param(good, bad),
        "training": Param([True, False], BAD_BOOL),
        **_key(),
    }


@target
def gen_dropout(draw):
    return _drop(draw, "x", "rate", [0.0, 0.5, 0.999], [*BAD_REAL, -0.1, 1.0, 2.0])


@target
def gen_dropout_backward(draw):
    return _drop(draw, "grad_output", "rate", [0.0, 0.5], [*BAD_REAL, -0.1, 1.0])


@target
def gen_gaussian_noise(draw):
    return _drop(draw, "x", "stddev", [0.0, 0.1, 1e3], [*BAD_REAL, -0.1])


LOSSES = ("mse", "binary_cross_entropy", "cross_entropy")


def _target_specs(loss, b, m, dt):
    if loss == "mse":
        return good_array_specs((b, m), dt, ("normal", "huge"))
    if loss == "binary_cross_entropy":
        return good_array_specs((b, m), dt, ("prob", "zeros", "ones"))
    return [Arr((b, m), dt, "onehot"), Arr((b, m), "int64", "onehot")]


def _bad_target(loss, b, m, dt):
    bad = [
        Arr((b, m), "complex128"),
        Arr((b, m), "object"),
        Arr((b, m), dt, "nan"),
        None,
        "y",
        Arr((b + 1, m), dt),
        Arr((b, m), dt, form="bytes"),
    ]
    if loss != "mse":
        bad.append(Arr((b, m), dt, "neg"))
    return bad


def _weights(b, dt):
    good = [None, Arr((b,), dt, "pos"), Arr((b,), dt, "pos", "list"), Arr((b,), dt, "zeros")]
    bad = [
        Arr((b,), "uint8", "pos"),
        Arr((b,), "bool"),
        Arr((b,), "complex128"),
        Arr((b,), "object"),
        Arr((b,), dt, "neg"),
        Arr((b,), dt, "nan"),
        Arr((b + 1,), dt),
        Arr((b,), dt, form="bytes"),
        Arr((b,), dt, form="memoryview"),
        "w",
        1.0,
    ]
    return Param(good, bad)


@target
def gen_loss(draw):
    b, _, m, dt = _dims(draw)
    loss = draw(st.sampled_from(LOSSES))
    if loss == "cross_entropy":
        m += 1
    return {
        "name": Param([loss], BAD_NAME),
        "logits": _arr((b, m), dt),
        "target": Param(_target_specs(loss, b, m, dt), _bad_target(loss, b, m, dt)),
        "sample_weight": _weights(b, dt),
        "label_smoothing": Param([0.0] if loss == "mse" else [0.0, 0.1], [*BAD_REAL, -0.1, 1.0]),
        "half": Param([loss == "mse"], BAD_BOOL),
        "grad": Param([True, False], BAD_BOOL),
    }


@target
def gen_loss_output(draw):
    b, _, m, dt = _dims(draw)
    return {"name": Param([draw(st.sampled_from(LOSSES))], BAD_NAME), "logits": _arr((b, m), dt)}


# --------------------------------------------------------------------------- models, layers

BAD_WIDTH = [0, -1, 2**64, 1.5, "4", None, True, NAN]


@target
def gen_MLP(draw):
    b, n, m, dt = _dims(draw)
    return {
        "n_in": Param([n], BAD_WIDTH),
        "hidden": Param(
            [[4], [3, 2], []], [[0], [-2], ["4"], 4, None, [2**64], [1.5], "44"], name="hidden"
        ),
        "n_out": Param([m], BAD_WIDTH),
        "activation": Param(["relu", "tanh"], BAD_NAME),
        "dropout": Param([0.0, 0.5], [*BAD_REAL, -0.1, 1.0]),
        "input_dropout": Param([0.0, 0.2], [*BAD_REAL, -0.1, 1.0]),
        "bias_init": Param([0.0, -1.0], [*BAD_REAL]),
        "max_norm": Param([None, 3.0], [*[x for x in BAD_REAL if x is not None], 0.0, -1.0]),
        "seed": Param([0, 2**63 - 1], [-1, 2**64, 1.5, "0", None, True]),
        "dtype": Param([dt], ["int32", "float16", None, 3, "complex128", object()]),
        "batchnorm": Param([False, True, "pre"], [None, "yes", 2, 1.0]),
        "X": _arr((b, n), dt, ("normal", "huge", "zeros")),
        "batch_size": Param([1, 4096, 2**64], [0, -1, 1.5, None, True, "8"]),
    }


@target
def gen_layer_Dense(draw):
    return {
        "units": Param([1, 3], BAD_WIDTH),
        "activation": Param(["relu", "identity"], BAD_NAME),
        "use_bias": Param([True, False], BAD_BOOL),
        "bias_init": Param([0.0, 1.0], BAD_REAL),
        "max_norm": Param([None, 1.0], [NAN, INF, "1", True, 0.0, -1.0]),
        "n_in": Param([draw(st.integers(1, 4))], BAD_WIDTH),
    }


@target
def gen_layer_BatchNorm(draw):
    return {
        "momentum": Param([0.1, 1.0], [*BAD_REAL, -0.1, 1.1]),
        "eps": Param([1e-5], [*BAD_REAL, 0.0, -1.0]),
        "affine": Param([True, False], BAD_BOOL),
        "init": Param(["zeros_ones", "first_batch"], BAD_NAME),
        "n_in": Param([draw(st.integers(1, 4))], BAD_WIDTH),
    }


@target
def gen_layer_Dropout(draw):
    return {"rate": Param([0.0, 0.5], [*BAD_REAL, -0.1, 1.0]), "n_in": Param([3], BAD_WIDTH)}


@target
def gen_layer_GaussianNoise(draw):
    return {"std": Param([0.0, 0.5], [*BAD_REAL, -0.1]), "n_in": Param([3], BAD_WIDTH)}


@target
def gen_layer_Activation(draw):
    return {"name": Param(["relu", "tanh"], BAD_NAME), "n_in": Param([3], BAD_WIDTH)}


@target
def gen_layer_RBF(draw):
    return {
        "n_centers": Param([1, 3], BAD_WIDTH),
        "neighbors": Param([1, 2], [0, -1, 1.5, None, True]),
        "n_init": Param([1], [0, -1, 1.5, None, True]),
        "trainable": Param([True, False], BAD_BOOL),
        "width": Param(["spacing", 1.0], [NAN, INF, -1.0, 0.0, "nope", None, True]),
        "n_in": Param([2], BAD_WIDTH),
    }


# --------------------------------------------------------------------------- trainer


def _trainer(draw, with_fit=False):
    b, n, m, dt = _dims(draw)
    loss = draw(st.sampled_from(LOSSES))
    if loss == "cross_entropy":
        m += 1
    p = {
        "model": Param([Obj("mlp", (n, m, dt))], [None, "mlp", 3]),
        "loss": Param([loss], BAD_NAME),
        "optimizer": Param([Obj("adam"), "sgd", Obj("sgd"), None], [3, "no_such", Obj("object")]),
        "label_smoothing": Param([0.0] if loss == "mse" else [0.0, 0.1], [*BAD_REAL, -0.1, 1.0]),
        "X": _arr((b, n), dt, ("normal", "huge", "zeros")),
        "y": Param(_target_specs(loss, b, m, dt), _bad_target(loss, b, m, dt)),
        "sample_weight": _weights(b, dt),
    }
    if with_fit:
        p.update(
            epochs=Param([1, 2], [-1, 1.5, None, True, "2"]),
            batch_size=Param([None, 1, 2, 2**64], [0, -1, 1.5, True, "2"]),
            validation_split=Param([0.0], [*BAD_REAL, -0.1, 1.0]),
            shuffle=Param([True, False], BAD_BOOL),
            verbose=Param([0], [-1, 1.5, None, "0", 2**64]),
            initial_epoch=Param([None, 0], [-1, 1.5, "0", True, 2**64]),
        )
    return p


@target
def gen_Trainer_train_step(draw):
    return _trainer(draw)


@target
def gen_Trainer_fit(draw):
    return _trainer(draw, with_fit=True)


@target
def gen_Trainer_evaluate(draw):
    return _trainer(draw)


@target
def gen_Trainer_predict(draw):
    p = _trainer(draw)
    del p["y"], p["sample_weight"]
    return p


# --------------------------------------------------------------------------- optimizers

OPTIMIZERS = (
    "SGD",
    "AdaGrad",
    "RMSProp",
    "AdaDelta",
    "Adam",
    "AdamW",
    "NAdam",
    "AdaMax",
    "AdaBelief",
    "Adafactor",
)
# per optimizer field: valid values, extra invalid ones (beyond the type errors)
OPT_FIELDS = {
    "lr": ([1e-3, 0.0, 10.0], [-1e-3]),
    "weight_decay": ([0.0, 0.1], [-0.1]),
    "l1": ([0.0, 0.1], [-0.1]),
    "clip_norm": ([None, 1.0], [0.0, -1.0]),
    "clip_value": ([None, 1.0], [0.0, -1.0]),
    "max_norm": ([None, 1.0], [0.0, -1.0]),
    "maximize": ([False, True], None),
    "momentum": ([0.0, 0.9], [-0.1, 1.5]),
    "dampening": ([0.0], [-0.1, 1.5]),
    "nesterov": ([False], None),
    "betas": (
        [(0.9, 0.999), [0.5, 0.9]],
        [(0.9,), (1.0, 0.9), (0.9, -0.1), (NAN, 0.9), "ab", (0.9, "x"), None, (True, 0.9)],
    ),
    "eps": ([1e-8, 1e-3], [0.0, -1e-8]),
    "alpha": ([0.99], [-0.1, 1.5]),
    "rho": ([0.9], [-0.1, 1.5]),
    "amsgrad": ([False, True], None),
    "centered": ([False, True], None),
    "momentum_decay": ([4e-3], [-1.0]),
    "lr_decay": ([0.0], [-1.0]),
    "initial_accumulator_value": ([0.0], [-1.0]),
    "beta2_decay": ([-0.8], [0.5]),
    "d": ([1.0], [0.0, -1.0]),
}


@target
def gen_optimizer(draw):
    import inspect

    import fusedmlp as fm

    name = draw(st.sampled_from(OPTIMIZERS))
    cls = getattr(fm.optim, name)
    sig = inspect.signature(cls.__init__).parameters
    fields = [
        f
        for f in OPT_FIELDS
        if f in sig
        or f in ("weight_decay", "l1", "clip_norm", "clip_value", "max_norm", "maximize")
    ]
    p = {"cls": Param([name])}
    for f in fields:
        good, extra = OPT_FIELDS[f]
        if name == "Adafactor" and f == "eps":
            good, extra = [(None, 1e-3)], [(0.0, 1e-3), (None, -1.0), 1e-3, (NAN, 1e-3)]
        if name == "Adafactor" and f == "lr":
            good = [*good, None]  # None: Adafactor's relative step size (documented)
        if extra is None:
            bad = BAD_BOOL
        elif f == "betas" or (name == "Adafactor" and f == "eps"):
            bad = extra
        else:
            bad = [x for x in BAD_REAL if not (x is None and None in good)] + extra
        p[f] = Param(good, bad)
    b, n, _, dt = _dims(draw)
    shape = draw(st.sampled_from([(n,), (b, n)]))
    # The rules store g^2 in the parameter dtype (as torch.optim does), and Adafactor's RMS and
    # the max-norm constraint sum squares of the parameters: values whose squares overflow are
    # outside their domain ("large" keeps the squares finite). Gradients of any finite size are
    # valid once clip_norm rescales them (its norm is computed without overflow).
    clip = draw(st.sampled_from(OPT_FIELDS["clip_norm"][0]))
    p["clip_norm"].good = [clip]
    p["params"] = Param(
        [Arr(shape, dt), Arr(shape, dt, "large"), Arr(shape, dt, "zeros")],
        [
            Arr(shape, dt, form="readonly"),
            # a view of one column is contiguous after all: only wider views are invalid
            *([Arr(shape, dt, form="noncontig")] if shape[-1] > 1 else []),
            Arr(shape, dt, form="list"),
            Arr(shape, "int64"),
            Arr(shape, "float16"),
            Arr(shape, "complex128"),
            Arr((0,), dt),
            None,
            "p",
            Arr(shape, dt, form="memoryview"),
        ],
    )
    p["grads"] = Param(
        [
            Arr(shape, dt),
            Arr(shape, dt, form="noncontig"),
            Arr(shape, dt, "large"),
            *([Arr(shape, dt, "huge")] if clip is not None else []),
        ],
        [
            Arr(shape, "uint8"),
            Arr(shape, dt, "nan"),
            Arr(shape, dt, "inf"),
            Arr(shape + (1,), dt),
            None,
            "g",
            Arr(shape, "object"),
        ],
    )
    p["step_lr"] = Param([None, 0.1], [*[x for x in BAD_REAL if x is not None], -0.1], name="lr")
    return p


# --------------------------------------------------------------------------- schedules

SCHEDULES = {
    "Constant": {"lr": ([0.1, 0.0], [-0.1])},
    "StepDecay": {
        "lr": ([0.1], [-0.1]),
        "step_size": ([1, 30], [0, -1]),
        "gamma": ([0.5, 1.0], [0.0, 1.5]),
    },
    "MultiStep": {
        "lr": ([0.1], [-0.1]),
        "milestones": ([(2, 4), [3]], [(4, 2), (-1,), ("a",), (1.5,), None, 3, (2, 2)]),
        "gamma": ([0.5], [0.0, 2.0]),
    },
    "Exponential": {"lr": ([0.1], [-0.1]), "gamma": ([0.5, 0.99], [0.0, 1.5])},
    "LinearDecay": {"lr": ([0.1], [-0.1]), "tau": ([10], [0, -1]), "lr_end": ([None, 0.0], [-1.0])},
    "Cosine": {
        "lr": ([0.1], [-0.1]),
        "T": ([10, 0.5], [0.0, -1.0]),
        "lr_min": ([0.0], [-0.1, 1.0]),
    },
    "Warmup": {
        "lr": ([0.1], [-0.1]),
        "warmup": ([10], [0, -1]),
        "start_factor": ([0.0, 0.5], [-0.1, 1.5]),
    },
    "OneCycle": {
        "max_lr": ([0.1], [-0.1]),
        "total": ([100], [1, 0, -1]),
        "pct_start": ([0.3], [0.0, 1.0, -0.1]),
        "div_factor": ([25.0], [0.5]),
    },
    "SGDR": {
        "lr": ([0.1], [-0.1]),
        "T_0": ([10, 1], [0, -1]),
        "T_mult": ([1, 2], [0, -1]),
        "lr_min": ([0.0], [-0.1, 1.0]),
    },
    "ReduceOnPlateau": {
        "lr": ([0.1], [-0.1]),
        "factor": ([0.5], [0.0, 1.0]),
        "patience": ([0, 3], [-1]),
        "threshold": ([1e-4], [-1.0]),
    },
}
INT_FIELDS = {"step_size", "tau", "warmup", "total", "T_0", "T_mult", "patience"}
BAD_POS = [NAN, -1, -INF, "3", None, True, 1 + 0j, [1]]


@target
def gen_schedule(draw):
    name = draw(st.sampled_from(sorted(SCHEDULES)))
    p = {"cls": Param([name])}
    for f, (good, extra) in SCHEDULES[name].items():
        if f == "milestones":
            bad = extra
        else:
            base = BAD_INT if f in INT_FIELDS else BAD_REAL
            bad = [x for x in base if not (x is None and None in good)] + extra
        p[f] = Param(good, bad)
    if name not in ("ReduceOnPlateau", "Constant"):
        p["per"] = Param(["epoch", "step"], [None, "batch", 3])
    p["at_step"] = Param([0, 5, 10**6, 1e300, 2.5], [*BAD_POS, 2**2000], name="step")
    p["at_epoch"] = Param([0, 3, 1e300, 0.5], BAD_POS, name="epoch")
    return p
