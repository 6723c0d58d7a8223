"""Learning-rate schedules against their closed forms (tests/reference/schedules.py), per
step and per epoch, the step()/epoch_end() protocol, reduce-on-plateau against torch's
rules, state save/restore, and bad input."""

from __future__ import annotations

import math

import fusedmlp as fm
import numpy as np
import pytest
from conftest import assert_close
from reference import schedules as ref

S = fm.schedules
TS = [0, 1, 2, 7, 29, 30, 31, 59, 60, 61, 89, 90, 91, 150, 999, 1000, 1001, 5000]


def close(a, b):
    return a == pytest.approx(b, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("per", ["epoch", "step"])
def test_closed_forms(per):
    def at(s, t):
        return s.lr_at(t, 0) if per == "step" else s.lr_at(0, t)

    cases = [
        (S.Constant(0.3), lambda t: 0.3),
        (
            S.StepDecay(0.5, step_size=7, gamma=0.3, per=per),
            lambda t: ref.step_decay(0.5, t, 7, 0.3),
        ),
        (S.MultiStep(0.1, per=per), lambda t: ref.multi_step(0.1, t, (30, 60, 90), 0.1)),
        (
            S.MultiStep(1.0, milestones=[5, 100], gamma=0.5, per=per),
            lambda t: ref.multi_step(1.0, t, (5, 100), 0.5),
        ),
        (S.Exponential(0.2, gamma=0.99, per=per), lambda t: ref.exponential(0.2, t, 0.99)),
        (S.LinearDecay(0.1, tau=1000, per=per), lambda t: ref.linear_decay(0.1, t, 1000, 0.001)),
        (
            S.LinearDecay(0.1, tau=90, lr_end=0.05, per=per),
            lambda t: ref.linear_decay(0.1, t, 90, 0.05),
        ),
        (S.Cosine(0.1, T=100, per=per), lambda t: ref.cosine(0.1, t, 100)),
        (S.Cosine(0.1, T=61, lr_min=0.01, per=per), lambda t: ref.cosine(0.1, t, 61, 0.01)),
        (
            S.Warmup(0.4, warmup=60, start_factor=0.25, per=per),
            lambda t: ref.warmup(0.4, t, 60, 0.25),
        ),
        (
            S.OneCycle(0.2, total=1000, per=per),
            lambda t: ref.one_cycle(0.2, t, 1000, 0.3, 25.0, 1e4),
        ),
        (
            S.OneCycle(
                0.2,
                total=200,
                pct_start=0.25,
                anneal="linear",
                div_factor=10,
                final_div_factor=100,
                per=per,
            ),
            lambda t: ref.one_cycle(0.2, t, 200, 0.25, 10.0, 100.0, "linear"),
        ),
        (S.SGDR(0.1, T_0=10, per=per), lambda t: ref.sgdr(0.1, t, 10, 1)),
        (
            S.SGDR(0.1, T_0=3, T_mult=2, lr_min=1e-3, per=per),
            lambda t: ref.sgdr(0.1, t, 3, 2, 1e-3),
        ),
        (S.SGDR(0.1, T_0=5, T_mult=3, per=per), lambda t: ref.sgdr(0.1, t, 5, 3)),
    ]
    for sched, want in cases:
        for t in TS:
            assert close(at(sched, t), want(t)), f"{sched.name} at t={t}"


def test_deck_values():
    # deck 000: cosine 1/2 a0 (1 + cos(t pi / T)): a0 at 0, a0/2 at T/2, 0 at T
    c = S.Cosine(0.1, T=90)
    assert (c.lr_at(0, 0), c.lr_at(0, 45), c.lr_at(0, 90)) == (0.1, pytest.approx(0.05), 0.0)
    # deck 002: linear decay to eps_tau = 1% of eps_0, constant afterwards
    d = S.LinearDecay(0.5, tau=200)
    assert d.lr_at(200) == pytest.approx(0.005) and d.lr_at(10**6) == pytest.approx(0.005)
    # 1-cycle: starts at max/25, peaks at max, ends at max/25/1e4
    o = S.OneCycle(1.0, total=100)
    assert o.lr_at(0) == pytest.approx(0.04) and o.lr_at(29) == pytest.approx(1.0)
    assert o.lr_at(99) == pytest.approx(4e-6) and o.lr_at(500) == pytest.approx(4e-6)
    # SGDR restarts to the full lr at 3, 3+6, 3+6+12 with T_mult=2
    s = S.SGDR(1.0, T_0=3, T_mult=2)
    assert [s.lr_at(0, t) for t in (0, 3, 9, 21)] == [1.0, 1.0, 1.0, 1.0]
    assert s.lr_at(0, 8.999) < 1e-6


def test_three_phase_one_cycle():
    o = S.OneCycle(1.0, total=100, pct_start=0.25, three_phase=True)
    assert o.lr_at(0) == pytest.approx(0.04)
    assert o.lr_at(24) == pytest.approx(1.0)
    assert o.lr_at(48) == pytest.approx(0.04)
    assert o.lr_at(99) == pytest.approx(4e-6)
    lrs = [o.lr_at(t) for t in range(100)]
    assert np.all(np.diff(lrs[:25]) > 0) and np.all(np.diff(lrs[24:49]) < 0)


def test_sgdr_fractional_epochs():
    s = S.SGDR(1.0, T_0=2, T_mult=2)
    for e in np.linspace(0, 30, 301):
        assert close(s.lr_at(0, float(e)), ref.sgdr(1.0, float(e), 2, 2))


def test_warmup_wraps_a_schedule():
    after = S.MultiStep(0.1, milestones=(3,), per="epoch")
    w = S.Warmup(warmup=100, start_factor=0.0, after=after, per="step")
    assert w.lr_at(0, 0) == 0.0
    assert w.lr_at(50, 0) == pytest.approx(0.05)
    assert w.lr_at(100, 0) == pytest.approx(0.1)
    assert w.lr_at(5000, 3) == pytest.approx(0.01)


def test_protocol_per_step_and_per_epoch():
    s = S.StepDecay(1.0, step_size=2, gamma=0.5, per="step")
    e = S.StepDecay(1.0, step_size=2, gamma=0.5, per="epoch")
    seen_s, seen_e = [], []
    for _epoch in range(3):
        for _ in range(3):
            seen_s.append(s.get_lr())
            seen_e.append(e.get_lr())
            s.step()
            e.step()
        s.epoch_end()
        e.epoch_end()
    assert seen_s == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625]
    assert seen_e == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    assert (s.steps, s.epochs) == (9, 3)


@pytest.mark.parametrize(
    "kw",
    [
        dict(factor=0.5, patience=2),
        dict(factor=0.1, patience=0, cooldown=2),
        dict(factor=0.5, patience=1, mode="max", threshold=0.01, threshold_mode="abs"),
        dict(factor=0.5, patience=1, lr_min=0.1),
    ],
)
def test_reduce_on_plateau_matches_reference(kw, rng):
    # improving with noise, then flat: both branches of every rule are taken
    metrics = list(np.round(1.0 / (1 + np.arange(40)) + rng.uniform(0, 0.03, 40), 3)) + [0.05] * 15
    if kw.get("mode") == "max":
        metrics = [-m for m in metrics]
    want = ref.reduce_on_plateau(1.0, metrics, **kw)
    s = S.ReduceOnPlateau(1.0, **kw)
    got = []
    for m in metrics:
        s.epoch_end(m)
        got.append(s.get_lr())
    assert got == want
    assert min(got) < 1.0  # the plateau was detected


def test_plateau_halves_by_default():
    s = S.ReduceOnPlateau(0.8, patience=2)
    for m in (1.0, 0.9, 0.9, 0.9, 0.9):
        s.epoch_end(m)
    assert s.get_lr() == 0.4
    with pytest.raises(ValueError, match="metric"):
        s.epoch_end()


@pytest.mark.parametrize(
    "sched",
    [
        S.Constant(0.1),
        S.StepDecay(0.1, step_size=3),
        S.MultiStep(0.1),
        S.Exponential(0.1),
        S.LinearDecay(0.1, tau=50),
        S.Cosine(0.1, T=20),
        S.Warmup(0.1, warmup=5, after=S.Cosine(0.1, T=9)),
        S.OneCycle(0.1, total=40),
        S.SGDR(0.1, T_0=4, T_mult=2),
        S.ReduceOnPlateau(0.1, patience=1),
    ],
    ids=lambda s: s.name,
)
def test_save_restore(sched):
    def advance(s, n, k0):
        out = []
        for k in range(k0, k0 + n):
            out.append(s.get_lr())
            s.step()
            if k % 3 == 2:
                s.epoch_end(1.0 if isinstance(s, S.ReduceOnPlateau) else None)
        return out

    advance(sched, 10, 0)
    saved = sched.state_dict()
    first = advance(sched, 20, 10)
    for restored in (S.from_state_dict(saved), type(sched)()):
        if restored.steps == 0:
            restored.load_state_dict(saved)
        assert advance(restored, 20, 10) == first
    assert saved["steps"] == 10 and saved["schedule"] == sched.name


def test_get():
    assert isinstance(S.get("cosine", lr=0.1, T=5), S.Cosine)
    assert isinstance(S.get("plateau"), S.ReduceOnPlateau)
    assert isinstance(S.get("multistep"), S.MultiStep)
    s = S.Constant(0.1)
    assert S.get(s) is s
    with pytest.raises(ValueError, match="unknown schedule"):
        S.get("cyclic")


@pytest.mark.parametrize(
    "ctor, exc, match",
    [
        (lambda: S.Constant(-0.1), ValueError, "lr"),
        (lambda: S.Constant(float("nan")), ValueError, "lr"),
        (lambda: S.OneCycle(max_lr=-1.0), ValueError, "max_lr"),
        (lambda: S.StepDecay(0.1, step_size=0), ValueError, "step_size"),
        (lambda: S.StepDecay(0.1, gamma=1.5), ValueError, "gamma"),
        (lambda: S.MultiStep(0.1, milestones=(60, 30)), ValueError, "milestones"),
        (lambda: S.MultiStep(0.1, milestones=30), TypeError, "milestones"),
        (lambda: S.Exponential(0.1, per="batch"), ValueError, "per"),
        (lambda: S.LinearDecay(0.1, tau=0), ValueError, "tau"),
        (lambda: S.Cosine(0.1, T=0), ValueError, "T"),
        (lambda: S.Cosine(0.1, lr_min=0.2), ValueError, "lr_min"),
        (lambda: S.Warmup(0.1, warmup=0), ValueError, "warmup"),
        (lambda: S.Warmup(0.1, after="cosine"), TypeError, "after"),
        (lambda: S.OneCycle(0.1, pct_start=1.0), ValueError, "pct_start"),
        (lambda: S.OneCycle(0.1, anneal="exp"), ValueError, "anneal"),
        (lambda: S.SGDR(0.1, T_mult=0), ValueError, "T_mult"),
        (lambda: S.ReduceOnPlateau(0.1, factor=1.0), ValueError, "factor"),
        (lambda: S.ReduceOnPlateau(0.1, mode="up"), ValueError, "mode"),
        (lambda: S.ReduceOnPlateau(0.1, patience=-1), ValueError, "patience"),
    ],
)
def test_invalid(ctor, exc, match):
    with pytest.raises(exc, match=match):
        ctor()


def test_bad_state_dict():
    with pytest.raises(ValueError, match="schedule 'cosine'"):
        S.Cosine(0.1).load_state_dict(S.Constant(0.1).state_dict())
    d = S.Cosine(0.1).state_dict()
    d["T"] = -1
    with pytest.raises(ValueError, match="T"):
        S.Cosine(0.1).load_state_dict(d)
    with pytest.raises(ValueError, match="state"):
        S.from_state_dict({"schedule": "nope"})


def test_schedule_drives_an_optimizer():
    """A per-step schedule feeding the standalone step: SGD on f = theta^2 / 2 matches the
    closed-form product of (1 - lr_t)."""
    sched = S.Cosine(0.5, T=40, per="step")
    opt = fm.optim.SGD(lr=0.5)
    w = np.array([2.0])
    want = 2.0
    for _ in range(40):
        lr = sched.get_lr() + 1e-3
        opt.step([w], [w.copy()], lr=lr)
        want *= 1 - lr
        sched.step()
    assert w[0] == pytest.approx(want, rel=1e-12)
    assert math.isclose(sched.get_lr(), 0.0, abs_tol=1e-15)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_momentum_matches_closed_form(anneal):
    o = S.OneCycle(0.1, total=120, pct_start=0.3, anneal=anneal, cycle_momentum=True)
    for t in range(0, 140):
        assert close(o.momentum_at(t), ref.one_cycle_momentum(t, 120, 0.3, 0.85, 0.95, anneal))
    assert S.OneCycle(0.1, total=120).get_momentum() is None
    three = S.OneCycle(1.0, total=100, pct_start=0.25, three_phase=True, cycle_momentum=True)
    assert three.momentum_at(0) == pytest.approx(0.95)
    assert three.momentum_at(24) == pytest.approx(0.85)
    assert three.momentum_at(48) == pytest.approx(0.95) and three.momentum_at(99) == 0.95
    with pytest.raises(ValueError, match="base_momentum"):
        S.OneCycle(0.1, cycle_momentum=True, base_momentum=0.99, max_momentum=0.9)


def test_trainer_cycles_adam_beta1_like_torch():
    """A Trainer with a momentum-cycling 1-cycle follows a float64 Adam whose beta1 is set per
    step from the schedule (torch's OneCycleLR(cycle_momentum=True) on Adam)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(16, 3))
    y = rng.normal(size=(16, 1))
    model = fm.Sequential([fm.Dense(1)], n_in=3, dtype=np.float64, seed=1)
    W0, b0 = (w.copy() for w in model.get_weights())
    sched = S.OneCycle(0.05, total=30, cycle_momentum=True)
    tr = fm.Trainer(model, loss="mse", optimizer=fm.optim.Adam(lr=0.05), schedule=sched)
    theta = np.concatenate([W0.ravel(), b0])
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t in range(1, 31):
        lr = ref.one_cycle(0.05, t - 1, 30, 0.3, 25.0, 1e4)
        b1 = ref.one_cycle_momentum(t - 1, 30, 0.3, 0.85, 0.95)
        W, b = theta[:3].reshape(3, 1), theta[3:]
        r = X @ W + b - y  # mse of deck 004: mean over rows of the summed squared error
        gW, gb = 2 * X.T @ r / 16, 2 * r.sum(0) / 16
        g = np.concatenate([gW.ravel(), gb])
        m = b1 * m + (1 - b1) * g
        v = 0.999 * v + 0.001 * g * g
        theta = theta - lr / (1 - b1**t) * m / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        tr.train_step(X, y)
    got = np.concatenate([w.ravel() for w in model.get_weights()])
    assert_close(got, theta, np.float64, tol=1e-10, what="Adam with cycled beta1")


def test_trainer_momentum_cycling_needs_momentum():
    model = fm.Sequential([fm.Dense(1)], n_in=2, seed=0)
    with pytest.raises(ValueError, match="momentum"):
        fm.Trainer(
            model,
            loss="mse",
            optimizer=fm.optim.SGD(lr=0.1),
            schedule=S.OneCycle(0.1, total=10, cycle_momentum=True),
        )
