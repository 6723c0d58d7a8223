"""The optimizer case tables and the trajectory harness, shared by tests/test_optimizer.py
(both devices: the Optimizer classes and the raw arena step), tests/test_alignment.py (array
addresses) and tests/test_network.py (the fused Trainer step).

Unlike the references beside it, this module names fusedmlp's classes: a case is
(id, fusedmlp constructor, its kwargs, the kwargs of ``optimizer.RefOptimizer``). The
problem is the quadratic g = c theta + noise, float64 noise drawn once per step.
"""

from __future__ import annotations

import fusedmlp as fm
import numpy as np

STEPS = 120
SHAPES = [(7, 5), (5,), (1, 6), (6, 1), (3, 70)]  # matrices, a bias, degenerate and wide ones
TRAJ_TOL = {np.float64: 1e-10, np.float32: 2e-4}

# (id, fusedmlp constructor, its kwargs, reference kwargs)
CASES = [
    ("sgd", fm.optim.SGD, dict(lr=0.05), {}),
    ("sgd_momentum", fm.optim.SGD, dict(lr=0.05, momentum=0.9), dict(momentum=0.9)),
    (
        "sgd_dampening",
        fm.optim.SGD,
        dict(lr=0.05, momentum=0.8, dampening=0.3),
        dict(momentum=0.8, dampening=0.3),
    ),
    (
        "sgd_nesterov",
        fm.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True),
        dict(momentum=0.9, nesterov=True),
    ),
    (
        "sgd_deck",
        fm.optim.SGD,
        dict(lr=0.05, momentum=0.9, deck_variant=True),
        dict(momentum=0.9, deck=True),
    ),
    (
        "sgd_deck_nesterov",
        fm.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, deck_variant=True),
        dict(momentum=0.9, nesterov=True, deck=True),
    ),
    ("adagrad", fm.optim.AdaGrad, dict(lr=0.1), dict(eps=1e-10)),
    (
        "adagrad_decay_r0",
        fm.optim.AdaGrad,
        dict(lr=0.1, eps=1e-7, lr_decay=0.01, initial_accumulator_value=0.1),
        dict(eps=1e-7, lr_decay=0.01, initial_accumulator_value=0.1),
    ),
    ("rmsprop", fm.optim.RMSProp, dict(lr=0.01), dict(rho=0.9)),
    (
        "rmsprop_centered",
        fm.optim.RMSProp,
        dict(lr=0.01, rho=0.95, centered=True),
        dict(rho=0.95, centered=True),
    ),
    ("rmsprop_momentum", fm.optim.RMSProp, dict(lr=0.01, momentum=0.9), dict(momentum=0.9)),
    (
        "rmsprop_centered_momentum",
        fm.optim.RMSProp,
        dict(lr=0.01, momentum=0.5, centered=True),
        dict(momentum=0.5, centered=True),
    ),
    (
        "rmsprop_deck",
        fm.optim.RMSProp,
        dict(lr=0.01, eps=1e-6, deck_variant=True),
        dict(eps=1e-6, deck=True),
    ),
    ("adadelta", fm.optim.AdaDelta, dict(), dict(rho=0.9, eps=1e-6)),
    ("adam", fm.optim.Adam, dict(lr=0.02), {}),
    ("adam_amsgrad", fm.optim.Adam, dict(lr=0.02, amsgrad=True), dict(amsgrad=True)),
    ("adam_deck", fm.optim.Adam, dict(lr=0.02, deck_variant=True), dict(deck=True)),
    (
        "adam_betas",
        fm.optim.Adam,
        dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
        dict(betas=(0.8, 0.99), eps=1e-6),
    ),
    ("adamw", fm.optim.AdamW, dict(lr=0.02, decay="all"), dict(decoupled=0.01)),
    (
        "adamw_amsgrad",
        fm.optim.AdamW,
        dict(lr=0.02, weight_decay=0.1, amsgrad=True, decay="all"),
        dict(decoupled=0.1, amsgrad=True),
    ),
    ("nadam", fm.optim.NAdam, dict(lr=0.02), {}),
    ("nadam_deck", fm.optim.NAdam, dict(lr=0.02, deck_variant=True), dict(deck=True)),
    ("nadam_psi", fm.optim.NAdam, dict(lr=0.02, momentum_decay=0.5), dict(momentum_decay=0.5)),
    ("adamax", fm.optim.AdaMax, dict(lr=0.02), {}),
    ("adabelief", fm.optim.AdaBelief, dict(lr=0.02), dict(eps=1e-16)),
    (
        "adabelief_amsgrad",
        fm.optim.AdaBelief,
        dict(lr=0.02, eps=1e-12, amsgrad=True),
        dict(eps=1e-12, amsgrad=True),
    ),
    ("adafactor", fm.optim.Adafactor, dict(), dict(relative_step=True)),
    ("adafactor_lr", fm.optim.Adafactor, dict(lr=0.05), dict(relative_step=False)),
    (
        "adafactor_torch_lr",
        fm.optim.Adafactor,
        dict(lr=0.05, relative_step=True),
        dict(relative_step=True),
    ),
    (
        "adafactor_options",
        fm.optim.Adafactor,
        dict(
            lr=0.03,
            beta2_decay=-0.5,
            eps=(1e-20, 1e-2),
            d=0.5,
            weight_decay=0.1,
            scale_parameter=False,
            decay="all",
        ),
        dict(
            relative_step=False,
            beta2_decay=-0.5,
            eps1=1e-20,
            eps2=1e-2,
            d=0.5,
            decoupled=0.1,
            scale_parameter=False,
        ),
    ),
]


def problem(shapes, dtype, rng):
    """Initial parameters, the curvatures c and the per-step noise of g = c theta + noise."""
    theta = [rng.normal(0.0, 1.0, s).astype(dtype) for s in shapes]
    curv = [rng.uniform(0.2, 2.0, s) for s in shapes]
    noise = [[rng.normal(0.0, 0.3, s) for s in shapes] for _ in range(STEPS)]
    return theta, curv, noise


def grads_at(params, curv, noise_t, dtype):
    return [
        (c * p.astype(np.float64) + n).astype(dtype)
        for p, c, n in zip(params, curv, noise_t, strict=True)
    ]


def run_fm(opt, theta, curv, noise, dtype, lrs=None, steps=STEPS, start=0, put=None, get=None):
    """``steps`` Optimizer.step calls; with ``put`` / ``get`` (host -> device, device -> host)
    the parameters and gradients live on a device, the gradients computed on the host."""
    put = put or (lambda a: a)
    get = get or (lambda a: a)
    params = [put(p.copy()) for p in theta]
    for t in range(start, start + steps):
        kw = {} if lrs is None else {"lr": lrs[t]}
        grads = grads_at([get(p) for p in params], curv, noise[t], dtype)
        opt.step(params, [put(g) for g in grads], **kw)
    return params


def run_ref(r, theta, curv, noise, lr, decay=None, lrs=None, grad_scale_fn=None):
    params = [p.astype(np.float64) for p in theta]
    for t in range(STEPS):
        g = grads_at(params, curv, noise[t], np.float64)
        scale = 1.0 if grad_scale_fn is None else grad_scale_fn(g)
        r.step(params, g, lr if lrs is None else lrs[t], scale, decay)
    return params


def eps1_for(name, rkw, dtype):
    if name.startswith("adafactor") and "eps1" not in rkw:
        return {"eps1": float(np.finfo(dtype).eps)}
    return {}


def arena(shapes, decay, gap, pad):
    """Segments of an arena holding the parameters of ``shapes`` (decay / max-norm per parameter
    as Optimizer.step sets them), with ``gap`` untouched elements after the first one and
    ``pad`` after the last; returns (segments, arena length)."""
    segs, off = [], 0
    for i, (s, d) in enumerate(zip(shapes, decay, strict=True)):
        rows, cols = (1, s[0]) if len(s) == 1 else s
        segs.append(fm._core.Segment(off, rows, cols, decay=d, max_norm=d and len(s) == 2))
        off += rows * cols + (gap if i == 0 else 0)
    return segs, off + pad


def views(flat, segs, shapes):
    """The parameters inside a host arena, as views."""
    return [
        flat[s.offset : s.offset + s.rows * s.cols].reshape(sh)
        for s, sh in zip(segs, shapes, strict=True)
    ]


def run_arena(step_fn, flat0, segs, shapes, curv, noise, dtype):
    """STEPS steps of g = c theta + noise on a host arena; step_fn(grad_arena, t) updates the
    arena and returns it on the host."""
    flat = flat0.copy()
    for t in range(STEPS):
        g = np.zeros_like(flat)
        for gv, gp in zip(
            views(g, segs, shapes),
            grads_at(views(flat, segs, shapes), curv, noise[t], dtype),
            strict=True,
        ):
            gv[...] = gp
        flat = step_fn(g, t + 1)
    return flat


# (id, fusedmlp regularization kwargs, reference kwargs)
REG_CASES = [
    ("l2", dict(weight_decay=0.05), dict(weight_decay=0.05)),
    ("l1", dict(l1=0.01), dict(l1=0.01)),
    ("decoupled", dict(weight_decay=0.1, decoupled_weight_decay=True), dict(decoupled=0.1)),
    ("clip_value", dict(clip_value=0.2), dict(clip_value=0.2)),
    ("max_norm", dict(max_norm=0.8), dict(max_norm=0.8)),
    ("maximize", dict(maximize=True, lr=1e-3), dict(maximize=True)),
    (
        "all",
        dict(weight_decay=0.02, l1=0.005, clip_value=0.5, max_norm=1.5),
        dict(weight_decay=0.02, l1=0.005, clip_value=0.5, max_norm=1.5),
    ),
]
