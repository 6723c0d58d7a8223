"""Every optimizer rule against its float64 reference (tests/reference/optimizer.py) over
120-step trajectories, the decks' variants and their documented equivalences, the fused
regularization (L2, L1, decoupled decay, clipping by norm and by value, max-norm, weights-only
decay), the arena layout with segments, thread-count independence, bit-exact save/restore,
the state sizes, and bad input. The trajectories (the Optimizer classes on lists of arrays and
the raw arena step fm.ops.optimizer_step), the gradient norm and the bad input run on every
device (conftest.DEVICES)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import fusedmlp as fm
import numpy as np
import pytest
from conftest import CUDA, DEVICES, array_module, assert_close, kernels, to_device, to_host
from fusedmlp._loader import _core
from reference import optimizer as ref
from reference.optimizer_cases import (
    CASES,
    REG_CASES,
    SHAPES,
    STEPS,
    TRAJ_TOL,
    arena,
    eps1_for,
    problem,
    run_arena,
    run_fm,
    run_ref,
    views,
)

DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_trajectory_matches_reference(case, dtype, device, rng):
    """Optimizer.step on lists of arrays of the device (the standalone optimizer)."""
    name, cls, kw, rkw = case
    theta, curv, noise = problem(SHAPES, dtype, rng)
    opt = cls(**kw)
    got = run_fm(opt, theta, curv, noise, dtype, put=lambda a: to_device(a, device), get=to_host)
    decay = opt.decay_mask(theta)
    r = ref.RefOptimizer(opt.name, **rkw, **eps1_for(name, rkw, dtype))
    want = run_ref(r, theta, curv, noise, opt.lr, decay)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == dtype
        assert_close(g, w, dtype, tol=TRAJ_TOL[dtype], what=f"{name} param {i}")
    # the trajectory really moved (not a no-op passing by accident)
    assert max(float(np.abs(w - t).max()) for w, t in zip(want, theta, strict=True)) > 1e-2
    assert opt.state.step == STEPS


@pytest.mark.parametrize("name", ["sgd_momentum", "sgd_deck", "adam", "nadam", "adafactor_lr"])
def test_trajectory_with_scheduled_lr(name, rng):
    _, cls, kw, rkw = next(c for c in CASES if c[0] == name)
    theta, curv, noise = problem(SHAPES[:2], np.float64, rng)
    lrs = [fm.schedules.Cosine(lr=0.05, T=STEPS, per="step").lr_at(t) + 1e-4 for t in range(STEPS)]
    opt = cls(**kw)
    got = run_fm(opt, theta, curv, noise, np.float64, lrs=lrs)
    r = ref.RefOptimizer(opt.name, **rkw, **eps1_for(name, rkw, np.float64))
    want = run_ref(r, theta, curv, noise, None, opt.decay_mask(theta), lrs=lrs)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, np.float64, tol=1e-10, what=name)


def test_momentum_conventions_equal_at_constant_lr_and_differ_with_a_schedule(rng):
    """Deck 000 / torch (b <- mu b + g, theta -= lr b) and decks 001-003 (v <- mu v - lr g,
    theta += v) are the same method while lr is constant (v = -lr b)."""
    theta, curv, noise = problem([(4, 3)], np.float64, rng)
    for nesterov in (False, True):
        a = run_fm(fm.optim.SGD(0.05, 0.9, nesterov), theta, curv, noise, np.float64)
        b = run_fm(
            fm.optim.SGD(0.05, 0.9, nesterov, deck_variant=True), theta, curv, noise, np.float64
        )
        assert_close(a[0], b[0], np.float64, tol=1e-12)
    lrs = [0.05 * 0.97**t for t in range(STEPS)]
    a = run_fm(fm.optim.SGD(0.05, 0.9), theta, curv, noise, np.float64, lrs=lrs)
    b = run_fm(fm.optim.SGD(0.05, 0.9, deck_variant=True), theta, curv, noise, np.float64, lrs=lrs)
    assert float(np.abs(a[0] - b[0]).max()) > 1e-4


def test_nesterov_is_deck003_lookahead_on_the_lookahead_parameters(rng):
    """Deck 003 Alg. 3 (gradient at theta + beta v) equals the stored-parameter form: our
    parameters are phi = theta + beta v and the gradient is taken at phi."""
    beta, lr, shape = 0.8, 0.005 * 10, (3, 2)
    curv = rng.uniform(0.2, 2.0, shape)
    noise = [rng.normal(0, 0.3, shape) for _ in range(STEPS)]
    theta0 = rng.normal(0, 1, shape)

    def grad(x, t):
        return curv * x + noise[t]

    deck = ref.deck003_nesterov(theta0, grad, lr, beta, STEPS)
    for deck_variant in (False, True):
        phi = theta0.copy()  # v_0 = 0, so phi_0 = theta_0
        opt = fm.optim.SGD(lr, beta, True, deck_variant=deck_variant)
        for t in range(STEPS):
            opt.step([phi], [grad(phi, t)])
            th, vel = deck[t]
            assert_close(phi, th + beta * vel, np.float64, tol=1e-11, what=f"step {t}")


def test_deck_algorithms_literally(rng):
    """deck_variant reproduces deck 002's Alg. 8.5 (RMSProp) and 8.7 (Adam) as printed."""
    shape = (5, 4)
    theta0 = rng.normal(0, 1, shape)
    gs = [rng.normal(0, 1, shape) for _ in range(STEPS)]
    eps, lr, rho = 1e-6, 0.01, 0.9
    th, r = theta0.copy(), np.zeros(shape)
    opt, p = fm.optim.RMSProp(lr, rho, eps, deck_variant=True), theta0.copy()
    for g in gs:
        r = rho * r + (1 - rho) * g * g
        th = th + (-lr / np.sqrt(eps + r) * g)
        opt.step([p], [g])
    assert_close(p, th, np.float64, tol=1e-12)
    s, r, th, t = np.zeros(shape), np.zeros(shape), theta0.copy(), 0
    opt, p = fm.optim.Adam(1e-3, (0.9, 0.999), 1e-8, deck_variant=True), theta0.copy()
    for g in gs:
        t += 1
        s = 0.9 * s + 0.1 * g
        r = 0.999 * r + 0.001 * g * g
        th = th - 1e-3 * (s / (1 - 0.9**t)) / np.sqrt(r / (1 - 0.999**t) + 1e-8)
        opt.step([p], [g])
    assert_close(p, th, np.float64, tol=1e-12)


# ---------------------------------------------------------------------- regularization
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "rmsprop", "adafactor"])
@pytest.mark.parametrize("reg", REG_CASES, ids=[r[0] for r in REG_CASES])
def test_regularization_matches_reference(reg, opt_name, dtype, rng):
    """Penalties fused into the step, applied to the weight matrix only (not the bias)."""
    rname, kw, rkw = reg
    kw, rkw = dict(kw), dict(rkw)
    base = {"sgd": dict(momentum=0.9), "adam": {}, "rmsprop": {}, "adafactor": {}}[opt_name]
    lr = kw.pop("lr", 0.02)
    if opt_name == "adafactor" and "weight_decay" in rkw:  # Adafactor's weight decay is decoupled
        rkw["decoupled"] = rkw.pop("weight_decay")
    opt = fm.optim.get(opt_name, lr=lr, **base, **kw)
    theta, curv, noise = problem([(6, 70), (70,)], dtype, rng)
    theta[0] *= 2.0  # columns above the max-norm radius (more than one column block)
    got = run_fm(opt, theta, curv, noise, dtype)
    mask = opt.decay_mask(theta)
    assert mask == [True, False]
    r = ref.RefOptimizer(
        opt_name,
        **base,
        **rkw,
        **(
            {"relative_step": False, "eps1": float(np.finfo(dtype).eps)}
            if opt_name == "adafactor"
            else {}
        ),
    )
    want = run_ref(r, theta, curv, noise, lr, mask)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, dtype, tol=TRAJ_TOL[dtype], what=f"{opt_name}/{rname} param {i}")
    if rname == "max_norm":
        assert np.sqrt((got[0].astype(np.float64) ** 2).sum(axis=0)).max() <= 0.8 * (1 + 1e-6)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_clip_norm_matches_reference(opt_name, rng):
    theta, curv, noise = problem([(6, 4), (4,)], np.float64, rng)
    noise = [[10.0 * n for n in step] for step in noise]  # norms well above the threshold
    opt = fm.optim.get(opt_name, lr=0.02, clip_norm=1.0)
    got = run_fm(opt, theta, curv, noise, np.float64)
    r = ref.RefOptimizer(opt_name)
    want = run_ref(
        r, theta, curv, noise, 0.02, grad_scale_fn=lambda g: ref.clip_grad_norm_scale(g, 1.0)
    )
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, np.float64, tol=1e-10)


def test_decay_scope_options(rng):
    theta = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
    grads = [np.zeros((3, 2)), np.zeros(2)]
    for decay, expect in (
        ("weights", [True, False]),
        ("all", [True, True]),
        ("none", [False, False]),
    ):
        params = [p.copy() for p in theta]
        fm.optim.SGD(lr=0.1, weight_decay=0.5, decay=decay).step(params, grads)
        for p, t, e in zip(params, theta, expect, strict=True):
            np.testing.assert_allclose(p, t * (1 - 0.05) if e else t, rtol=1e-15)
    params = [p.copy() for p in theta]
    fm.optim.SGD(lr=0.1, weight_decay=0.5).step(params, grads, decay=[False, True])
    np.testing.assert_array_equal(params[0], theta[0])
    np.testing.assert_allclose(params[1], theta[1] * 0.95, rtol=1e-15)


def test_regularizer_records():
    R = fm.regularizers
    cfg = fm.optim.Adam(lr=0.01).config()
    R.configure(
        cfg,
        [
            R.L1L2(l1=1e-3, l2=1e-2),
            R.WeightDecay(0.1),
            R.MaxNorm(2.0),
            R.ClipValue(0.5),
            R.ClipNorm(1.0),
        ],
    )
    assert (cfg.l1, cfg.weight_decay, cfg.decoupled_weight_decay) == (1e-3, 1e-2, 0.1)
    assert (cfg.max_norm, cfg.clip_value) == (2.0, 0.5)
    w = np.array([[1.0, -2.0], [3.0, 0.0]])
    assert R.penalty([R.L1(0.1), R.L2(0.5)], [w]) == pytest.approx(0.1 * 6 + 0.25 * 14)
    g = [np.full((3, 4), 2.0), np.full(5, -1.0)]
    norm = math.sqrt(12 * 4 + 5)
    assert R.global_grad_norm(g) == pytest.approx(norm, rel=1e-15)
    assert R.grad_scale([R.ClipNorm(1.0)], g) == pytest.approx(1.0 / (norm + 1e-6), rel=1e-15)
    assert R.grad_scale([R.L2(0.1)], g) == 1.0
    with pytest.raises(ValueError, match="l2"):
        R.L2(-1.0)
    with pytest.raises(ValueError, match="max_value"):
        R.MaxNorm(0.0)
    with pytest.raises(TypeError, match=r"regularizers\[0\]"):
        R.configure(cfg, ["l2"])


# ---------------------------------------------------------------------- the raw arena step
def check_arena_step(
    opt, rkw, name, shapes, dtype, rng, layout, device, clip_norm=None, scale_fn=None
):
    """fm.ops.optimizer_step on an arena of the device against the float64 reference and
    against _core.optimizer_step on the host (its state layout too)."""
    theta, curv, noise = problem(shapes, dtype, rng)
    if clip_norm is not None:
        noise = [[10.0 * n for n in step] for step in noise]
    decay = opt.decay_mask(theta)
    # "aligned": n a multiple of the 16-byte group, so the vector path runs inside the runs;
    # "gaps": 3 untouched elements after the first segment and n odd: the scalar path.
    gap, pad = {"aligned": (0, 0), "gaps": (3, 2)}[layout]
    segs, n = arena(shapes, decay, gap, pad)
    if layout == "aligned":
        n += (-n) % 4
    else:
        n += 1 - n % 2
    flat0 = rng.normal(size=n).astype(dtype)  # gap and pad elements must stay as they are
    for v_, th in zip(views(flat0, segs, shapes), theta, strict=True):
        v_[...] = th
    cfg = opt.config()
    lr = opt.lr
    size = _core.optimizer_state_size(cfg, n, segs)
    assert fm.ops.optimizer_state_size(cfg, n, segs) == size

    p_d = to_device(flat0.copy(), device)
    st_d = array_module(device).zeros(size, dtype=dtype)

    def device_step(g, t):
        g_d = to_device(g, device)
        fm.ops.optimizer_step(cfg, p_d, g_d, st_d, segs, step=t, lr=lr, clip_norm=clip_norm)
        return to_host(p_d).copy()

    p_c, st_c = flat0.copy(), np.zeros(size, dtype=dtype)

    def host_step(g, t):
        scale = 1.0 if clip_norm is None else ref.clip_grad_norm_scale([g], clip_norm)
        _core.optimizer_step(cfg, p_c, g, st_c, segs, t, lr, scale)
        return p_c

    got = run_arena(device_step, flat0, segs, shapes, curv, noise, dtype)
    host = run_arena(host_step, flat0, segs, shapes, curv, noise, dtype)
    r = ref.RefOptimizer(opt.name, **rkw, **eps1_for(name, rkw, dtype))
    want = run_ref(r, theta, curv, noise, lr, decay, grad_scale_fn=scale_fn)
    tol = TRAJ_TOL[dtype]
    for i, (g_, c_, w_) in enumerate(
        zip(views(got, segs, shapes), views(host, segs, shapes), want, strict=True)
    ):
        assert_close(g_, w_, dtype, tol=tol, what=f"{name} param {i} vs reference")
        assert_close(g_, c_, dtype, tol=tol, what=f"{name} param {i} vs the host step")
    # elements outside every segment are not touched
    inside = np.zeros(n, dtype=bool)
    for s in segs:
        inside[s.offset : s.offset + s.rows * s.cols] = True
    np.testing.assert_array_equal(got[~inside], flat0[~inside])
    # the state has the host's layout (so it moves between the backends unchanged)
    assert_close(st_d, st_c, dtype, tol=tol, what=f"{name} state vs the host step")
    assert max(float(np.abs(w_ - t_).max()) for w_, t_ in zip(want, theta, strict=True)) > 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["aligned", "gaps"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_arena_trajectory_matches_reference(case, dtype, layout, device, rng):
    name, cls, kw, rkw = case
    check_arena_step(cls(**kw), rkw, name, SHAPES, dtype, rng, layout, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["aligned", "gaps"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "rmsprop", "adafactor"])
@pytest.mark.parametrize("reg", REG_CASES, ids=[r[0] for r in REG_CASES])
def test_arena_regularization_matches_reference(reg, opt_name, dtype, layout, device, rng):
    rname, kw, rkw = reg
    kw, rkw = dict(kw), dict(rkw)
    base = {"sgd": dict(momentum=0.9), "adam": {}, "rmsprop": {}, "adafactor": {}}[opt_name]
    lr = kw.pop("lr", 0.02)
    if opt_name == "adafactor" and "weight_decay" in rkw:  # Adafactor's decay is decoupled
        rkw["decoupled"] = rkw.pop("weight_decay")
    if opt_name == "adafactor":
        rkw["relative_step"] = False
        rkw["eps1"] = float(np.finfo(dtype).eps)
    opt = fm.optim.get(opt_name, lr=lr, **base, **kw)
    shapes = [(6, 70), (70,)]
    check_arena_step(
        opt, {**base, **rkw}, f"{opt_name}/{rname}", shapes, dtype, rng, layout, device
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adafactor"])
def test_arena_clip_norm_on_the_device_matches_reference(opt_name, device, rng):
    opt = fm.optim.get(opt_name, lr=0.02)  # Adafactor: an explicit lr, no relative step
    rkw = {"relative_step": False} if opt_name == "adafactor" else {}
    check_arena_step(
        opt,
        rkw,
        opt_name,
        [(6, 4), (4,)],
        np.float64,
        rng,
        "gaps",
        device,
        clip_norm=1.0,
        scale_fn=lambda g: ref.clip_grad_norm_scale(g, 1.0),
    )


# ---------------------------------------------------------------------- arena and threads
def arena_layout(shapes, gap=3):
    segs, off = [], 0
    for i, s in enumerate(shapes):
        rows, cols = (1, s[0]) if len(s) == 1 else s
        segs.append(_core.Segment(off, rows, cols, decay=len(s) == 2, max_norm=len(s) == 2))
        off += rows * cols + (gap if i == 0 else 0)
    return segs, off


@pytest.mark.parametrize("name", fm.optim.OPTIMIZERS)
def test_arena_equals_per_parameter_steps(name, rng):
    """One call over a flat arena with segments (what the Network does) gives bit for bit
    the per-parameter steps; elements in gaps between segments are not touched."""
    shapes = [(7, 5), (5,), (5, 3), (3,)]
    segs, n = arena_layout(shapes)
    extra = {
        "sgd": dict(momentum=0.9),
        "rmsprop": dict(momentum=0.9, centered=True),
        "adam": dict(amsgrad=True),
    }.get(name, {})
    opt = fm.optim.get(name, lr=0.01, l1=1e-3, max_norm=1.0, weight_decay=1e-2, **extra)
    cfg = opt.config()
    arena = rng.normal(size=n)
    garena = np.zeros(n)
    state = np.zeros(_core.optimizer_state_size(cfg, n, segs))
    params = [
        arena[s.offset : s.offset + s.rows * s.cols].reshape(sh).copy()
        for s, sh in zip(segs, shapes, strict=True)
    ]
    gap_before = arena[35:38].copy()
    states = [np.zeros(_core.optimizer_param_state_size(cfg, s.rows, s.cols)) for s in segs]
    for t in range(1, 6):
        grads = [rng.normal(size=sh) for sh in shapes]
        for s, g in zip(segs, grads, strict=True):
            garena[s.offset : s.offset + s.rows * s.cols] = g.ravel()
        _core.optimizer_step(cfg, arena, garena, state, segs, t, 0.01, 0.9)
        for p, g, s, st in zip(params, grads, segs, states, strict=True):
            one = [_core.Segment(0, s.rows, s.cols, s.decay, s.max_norm)]
            _core.optimizer_step(cfg, p.reshape(-1), g.reshape(-1), st, one, t, 0.01, 0.9)
    for p, s in zip(params, segs, strict=True):
        np.testing.assert_array_equal(arena[s.offset : s.offset + s.rows * s.cols], p.ravel())
    np.testing.assert_array_equal(arena[35:38], gap_before)
    # state layout: slot j of element e at state[j * n + e]; Adafactor segment after segment
    if name != "adafactor":
        k = state.size // n
        for s, st in zip(segs, states, strict=True):
            ln = s.rows * s.cols
            for j in range(k):
                np.testing.assert_array_equal(
                    state[j * n + s.offset : j * n + s.offset + ln], st[j * ln : (j + 1) * ln]
                )
    else:
        np.testing.assert_array_equal(state, np.concatenate(states))


@pytest.mark.parametrize("name", ["adam", "sgd", "adafactor"])
def test_thread_count_does_not_change_the_result(name, rng):
    n_before = fm.get_num_threads()
    shape = (400, 300)  # above the parallel threshold
    theta = rng.normal(size=shape).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    out = []
    try:
        for nt in (1, 2, 3):
            fm.set_num_threads(nt)
            p = theta.copy()
            opt = fm.optim.get(
                name,
                lr=0.01,
                **({"momentum": 0.9} if name == "sgd" else {}),
                max_norm=2.0,
                clip_norm=50.0,
            )
            for _ in range(3):
                opt.step([p], [g])
            out.append((p, float(fm.ops.grad_sq_norm(g))))
    finally:
        fm.set_num_threads(n_before)
    for p, s in out[1:]:
        np.testing.assert_array_equal(p, out[0][0])
        assert s == out[0][1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 7, 4096, 4097, 70001, 5_000_000])
def test_grad_sq_norm_and_clip_scale(n, device, rng):
    for dtype in DTYPES:
        g = rng.normal(size=n).astype(dtype)
        gd = to_device(g, device)
        want = float(np.sum(g.astype(np.float64) ** 2))
        got = fm.ops.grad_sq_norm(gd)
        assert type(got) is type(gd) and got.shape == () and got.dtype == np.float64
        assert float(got) == pytest.approx(want, rel=1e-13)
        assert float(fm.ops.grad_sq_norm(gd)) == float(got)  # deterministic
        scale = float(fm.ops.clip_norm_scale(gd, 0.5))
        assert scale == pytest.approx(ref.clip_grad_norm_scale([g], 0.5), rel=1e-13)


# ---------------------------------------------------------------------- state
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES[::3] + [CASES[-1]], ids=lambda c: c[0])
def test_save_restore_reproduces_the_trajectory_bit_for_bit(case, dtype, rng):
    name, cls, kw, _ = case
    theta, curv, noise = problem(SHAPES, dtype, rng)
    lrs = [0.01 * (1 + 0.5 * math.sin(t)) for t in range(STEPS)]
    opt = cls(**kw)
    mid = run_fm(opt, theta, curv, noise, dtype, lrs=lrs, steps=60)
    saved = opt.state_dict()
    saved_params = [p.copy() for p in mid]
    full = run_fm(opt, mid, curv, noise, dtype, lrs=lrs, steps=60, start=60)
    for restored in (fm.optim.from_state_dict(saved), cls()):
        if restored.state.step == 0:
            restored.load_state_dict(saved)
        again = run_fm(restored, saved_params, curv, noise, dtype, lrs=lrs, steps=60, start=60)
        for a, b in zip(full, again, strict=True):
            np.testing.assert_array_equal(a, b)
        assert restored.state.step == STEPS
    # the saved dict is a copy: stepping did not change it
    assert saved["step"] == 60


def test_state_dict_format():
    opt = fm.optim.Adam(lr=0.01, amsgrad=True)
    p = [np.ones((3, 4), np.float32), np.ones(4, np.float32)]
    opt.step(p, [np.ones((3, 4), np.float32), np.ones(4, np.float32)])
    d = opt.state_dict()
    assert d["optimizer"] == "adam" and d["step"] == 1
    assert d["hyper"]["lr"] == 0.01 and d["hyper"]["amsgrad"] is True
    assert [s.shape for s in d["state"]] == [(36,), (12,)]
    assert all(s.dtype == np.float32 for s in d["state"])


def test_state_sizes():
    def size(opt, rows, cols):
        return _core.optimizer_param_state_size(opt.config(), rows, cols)

    assert size(fm.optim.SGD(0.1), 4, 5) == 0
    assert size(fm.optim.SGD(0.1, 0.9), 4, 5) == 20
    assert size(fm.optim.AdaGrad(), 4, 5) == 20
    assert size(fm.optim.RMSProp(momentum=0.9, centered=True), 4, 5) == 60
    assert size(fm.optim.AdaDelta(), 4, 5) == 40
    assert size(fm.optim.Adam(), 4, 5) == 40
    assert size(fm.optim.Adam(amsgrad=True), 4, 5) == 60
    assert size(fm.optim.AdaBelief(amsgrad=True), 4, 5) == 60
    assert size(fm.optim.NAdam(), 4, 5) == 40
    assert size(fm.optim.AdaMax(), 4, 5) == 40
    assert size(fm.optim.Adafactor(), 40, 50) == 90
    assert size(fm.optim.Adafactor(), 1, 50) == 50
    segs = [_core.Segment(0, 40, 50), _core.Segment(2000, 1, 50), _core.Segment(2050, 7, 3)]
    assert _core.optimizer_state_size(fm.optim.Adafactor().config(), 2100, segs) == 90 + 50 + 10
    assert _core.optimizer_state_size(fm.optim.Adam().config(), 2100, segs) == 4200


def test_trait_table_gives_state_sizes_and_momentum_fields():
    """The traits of the C++ rules (OptRule, exported by optimizer_table): one row per
    optimizer in the order of the enum, each state-owning variant one more array of n, and
    the momentum field cycled by the Network is one the Python class has."""
    table = _core.optimizer_table()
    assert [row["name"] for row in table] == list(fm.optim.OPTIMIZERS)
    switch_on = {"momentum": {"momentum": 0.5}, "centered": {"centered": True}}
    switch_on["amsgrad"] = {"amsgrad": True}
    for row in table:
        cls = type(fm.optim.get(row["name"]))
        fields = {f.name for f in dataclasses.fields(cls)}
        cycled = {"momentum": {"momentum"}, "beta1": {"betas"}, None: set()}[row["momentum"]]
        assert {"momentum", "betas"} & fields == cycled
        if not row["elementwise"]:
            continue
        variants = [f for f in (row["variant_a"], row["variant_b"]) if f is not None]
        for on in itertools.product((False, True), repeat=len(variants)):
            kw = {}
            for f, o in zip(variants, on, strict=True):
                kw.update(switch_on[f] if o else {})
            size = _core.optimizer_param_state_size(cls(**kw).config(), 3, 4)
            assert size == 12 * (row["state_slots"] + sum(on)), (row, kw)


def test_get_and_names():
    assert fm.optim.names() == list(fm.optim.OPTIMIZERS)
    for name in fm.optim.names():
        opt = fm.optim.get(name)
        assert opt.name == name and opt.config().opt == fm.optim.OPTIMIZERS.index(name)
    assert fm.optim.get("AMSGrad").hyper.amsgrad is True
    assert isinstance(fm.optim.get("rms-prop", lr=0.1), fm.optim.RMSProp)
    opt = fm.optim.SGD(0.1)
    assert fm.optim.get(opt) is opt
    with pytest.raises(ValueError, match="name: unknown optimizer"):
        fm.optim.get("adamm")


def test_defaults_follow_the_published_values():
    assert fm.optim.Adam().hyper.betas == (0.9, 0.999) and fm.optim.Adam().hyper.eps == 1e-8
    assert fm.optim.Adam().lr == 1e-3
    assert fm.optim.AdamW().hyper.weight_decay == 1e-2
    assert fm.optim.RMSProp().hyper.rho == 0.9
    assert fm.optim.AdaDelta().lr == 1.0 and fm.optim.AdaDelta().hyper.eps == 1e-6
    assert fm.optim.NAdam().hyper.momentum_decay == 4e-3
    af = fm.optim.Adafactor()
    assert (af.lr, af.hyper.beta2_decay, af.hyper.eps, af.hyper.d) == (
        1e-2,
        -0.8,
        (None, 1e-3),
        1.0,
    )
    assert af.config().eps == 0.0  # machine epsilon of the parameter dtype


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "ctor, match",
    [
        (lambda: fm.optim.SGD(lr=float("inf")), "lr"),
        (lambda: fm.optim.SGD(lr=-1.0), "lr"),
        (lambda: fm.optim.SGD(lr=float("nan")), "lr"),
        (lambda: fm.optim.SGD(0.1, momentum=1.0), "momentum"),
        (lambda: fm.optim.SGD(0.1, nesterov=True), "nesterov"),
        (lambda: fm.optim.SGD(0.1, 0.9, True, dampening=0.1), "nesterov"),
        (lambda: fm.optim.Adam(betas=(0.9, 1.0)), r"betas\[1\]"),
        (lambda: fm.optim.Adam(betas=(-0.1, 0.9)), r"betas\[0\]"),
        (lambda: fm.optim.Adam(betas=0.9), "betas"),
        (lambda: fm.optim.Adam(eps=0.0), "eps"),
        (lambda: fm.optim.AdaGrad(eps=-1e-8), "eps"),
        (lambda: fm.optim.RMSProp(rho=1.0), "rho"),
        (lambda: fm.optim.AdaDelta(rho=1.5), "rho"),
        (lambda: fm.optim.Adam(weight_decay=-0.1), "weight_decay"),
        (lambda: fm.optim.Adam(clip_norm=0.0), "clip_norm"),
        (lambda: fm.optim.Adam(max_norm=-1.0), "max_norm"),
        (lambda: fm.optim.Adam(decay="biases"), "decay"),
        (lambda: fm.optim.Adafactor(beta2_decay=0.5), "beta2_decay"),
        (lambda: fm.optim.Adafactor(eps=(0.0, 1e-3)), r"eps\[0\]"),
        (lambda: fm.optim.Adafactor(d=0.0), "d"),
        (lambda: fm.optim.AdamW(decoupled_weight_decay=False), "decoupled_weight_decay"),
    ],
)
def test_invalid_hyper_parameters(ctor, match):
    with pytest.raises(ValueError, match=match):
        ctor()


def test_invalid_types():
    with pytest.raises(TypeError, match="lr"):
        fm.optim.SGD(lr="0.1")
    with pytest.raises(TypeError, match="amsgrad"):
        fm.optim.Adam(amsgrad=1)
    with pytest.raises(TypeError, match="momenta"):
        fm.optim.SGD(0.1, momenta=0.9)


def test_assigned_hyper_parameters_are_checked():
    opt = fm.optim.SGD(0.1, momentum=0.5)
    assert opt.hyper is opt  # the optimizer is the dataclass of its hyper-parameters
    opt.momentum = 0.9
    assert opt.config().momentum == 0.9
    with pytest.raises(ValueError, match="momentum: expected < 1.0"):
        opt.momentum = 1.0
    with pytest.raises(ValueError, match="lr: expected >= 0"):
        opt.lr = -1
    with pytest.raises(ValueError, match="rho: expected <= 1.0"):
        fm.optim.AdaDelta().rho = 1.5  # AdaDelta's own range (RMSProp's excludes 1)
    assert (opt.momentum, opt.lr, fm.optim.AdaDelta(rho=1.0).rho) == (0.9, 0.1, 1.0)


def test_bad_params_and_grads():
    opt = fm.optim.Adam(lr=0.01)
    p = np.ones((3, 4))
    with pytest.raises(ValueError, match="grads: expected 1 gradients"):
        opt.step([p], [np.ones((3, 4)), np.ones(2)])
    with pytest.raises(ValueError, match=r"grads\[0\]: expected shape \(3, 4\)"):
        opt.step([p], [np.ones((4, 3))])
    with pytest.raises(TypeError, match=r"grads\[0\]: expected dtype float64"):
        opt.step([p], [np.ones((3, 4), np.float32)])
    with pytest.raises(TypeError, match=r"params\[0\]: expected dtype"):
        opt.step([np.ones((3, 4), np.int64)], [np.ones((3, 4))])
    with pytest.raises(TypeError, match=r"params\[0\]: expected a NumPy array"):
        opt.step([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step([np.ones((4, 3)).T], [np.ones((3, 4))])
    with pytest.raises(ValueError, match="1-d or 2-d"):
        opt.step([np.ones((2, 2, 2))], [np.ones((2, 2, 2))])
    with pytest.raises(ValueError, match="NaN or Inf"):
        opt.step([p], [np.full((3, 4), np.nan)])
    with pytest.raises(TypeError, match="params: expected a list"):
        opt.step(p, np.ones((3, 4)))
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([p], [p])
    with pytest.raises(ValueError, match="lr"):
        opt.step([p], [np.ones((3, 4))], lr=-0.1)
    assert opt.state.step == 0  # nothing ran
    opt.step([p], [np.ones((3, 4))])
    with pytest.raises(ValueError, match=r"params\[0\]: shape \(2, 2\)"):
        opt.step([np.ones((2, 2))], [np.ones((2, 2))])
    with pytest.raises(ValueError, match="state for 1 parameters"):
        opt.step([p, p.copy()], [p.copy(), p.copy()])
    opt.reset()
    opt.step([np.ones((2, 2))], [np.ones((2, 2))])


def test_bad_state_dict():
    opt = fm.optim.Adam()
    with pytest.raises(ValueError, match="saved by optimizer 'sgd'"):
        opt.load_state_dict(fm.optim.SGD(0.1).state_dict())
    d = fm.optim.Adam().state_dict()
    d["hyper"]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.load_state_dict(d)
    with pytest.raises(ValueError, match="missing keys"):
        opt.load_state_dict({"optimizer": "adam"})
    with pytest.raises(TypeError, match="state"):
        opt.load_state_dict([1, 2])


@pytest.mark.parametrize("device", DEVICES)
def test_arena_step_bad_input(device):
    xp = array_module(device)
    cfg = fm.optim.Adam(lr=0.01).config()
    p, g = xp.ones(6), xp.ones(6)
    s = xp.zeros(12)
    before = to_host(p).copy()
    with pytest.raises(ValueError, match="state: expected 12 elements"):
        fm.ops.optimizer_step(cfg, p, g, xp.zeros(6), step=1, lr=0.1)
    with pytest.raises(TypeError, match="grads: expected dtype float64"):
        fm.ops.optimizer_step(cfg, p, g.astype(xp.float32), s, step=1, lr=0.1)
    with pytest.raises(ValueError, match="grads: contains NaN or Inf"):
        fm.ops.optimizer_step(cfg, p, xp.full(6, xp.nan), s, step=1, lr=0.1)
    with pytest.raises(ValueError, match="step"):
        fm.ops.optimizer_step(cfg, p, g, s, step=0, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        fm.ops.optimizer_step(cfg, p, g, s, step=1, lr=-0.1)
    with pytest.raises(ValueError, match="clip_norm"):
        fm.ops.optimizer_step(cfg, p, g, s, step=1, lr=0.1, clip_norm=0.0)
    with pytest.raises(ValueError, match=r"segments\[1\]: offset"):
        fm.ops.optimizer_step(
            cfg, p, g, s, [_core.Segment(0, 1, 4), _core.Segment(2, 1, 2)], step=1, lr=0.1
        )
    with pytest.raises(ValueError, match="params and state: expected separate arrays"):
        kernels(device).optimizer_step(cfg, s[:6], g, s, None, 1, 0.1)
    with pytest.raises(TypeError, match="config"):
        fm.ops.optimizer_step("adam", p, g, s, step=1, lr=0.1)
    np.testing.assert_array_equal(to_host(p), before)  # every call was refused before a launch


@pytest.mark.parametrize("device", CUDA)
def test_arena_step_on_mixed_devices_is_refused(device):
    cfg = fm.optim.Adam(lr=0.01).config()
    g, s = to_device(np.ones(6), device), to_device(np.zeros(12), device)
    with pytest.raises(TypeError, match="params: expected a CuPy array"):
        fm.ops.optimizer_step(cfg, np.ones(6), g, s, step=1, lr=0.1)


def test_cpp_checks():
    cfg = _core.OptConfig()
    cfg.opt = 4
    p, g = np.ones(6), np.ones(6)
    s = np.zeros(12)
    with pytest.raises(ValueError, match="step"):
        _core.optimizer_step(cfg, p, g, s, None, 0, 0.1)
    with pytest.raises(ValueError, match="state: expected 12 elements"):
        _core.optimizer_step(cfg, p, g, np.zeros(6), None, 1, 0.1)
    with pytest.raises(ValueError, match="grad_scale"):
        _core.optimizer_step(cfg, p, g, s, None, 1, 0.1, float("inf"))
    with pytest.raises(ValueError, match="params and state"):
        _core.optimizer_step(cfg, s[:6], g, s, None, 1, 0.1)
    with pytest.raises(ValueError, match=r"segments\[1\]: offset"):
        _core.optimizer_step(cfg, p, g, s, [_core.Segment(0, 1, 4), _core.Segment(2, 1, 2)], 1, 0.1)
    with pytest.raises(ValueError, match=r"segments\[0\]: ends at 8"):
        _core.optimizer_state_size(cfg, 6, [_core.Segment(2, 2, 3)])
    for field, value in (
        ("beta1", 1.0),
        ("eps", 0.0),
        ("lr", -1e-3),
        ("opt", 42),
        ("momentum", -0.5),
    ):
        bad = _core.OptConfig()
        bad.opt = 4
        setattr(bad, field, value)
        with pytest.raises(ValueError, match=field):
            bad.validate()
    with pytest.raises(TypeError, match="grads"):
        _core.optimizer_step(cfg, p, g.astype(np.float32), s, None, 1, 0.1)
