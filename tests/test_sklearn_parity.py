"""scikit-learn parity (issue 18, item 4): the same scenarios on
``sklearn.neural_network.MLPClassifier/MLPRegressor`` and on ``fusedmlp.sklearn``'s, with their
behaviour compared. Where ours differs by design the test states the difference (the list is in
the module docstring of ``fusedmlp.sklearn``).

Numbers are compared only where the two libraries compute the same thing in the same order:
solver "sgd" in float64 follows scikit-learn's trajectory to rounding (the same random stream,
the same update), so those comparisons use 1e-10; Adam places epsilon as PyTorch does (a
documented difference of order epsilon / sqrt(v)), so its comparison is at 1e-5.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.neural_network")
fs = pytest.importorskip("fusedmlp.sklearn")

LIBS = {"sklearn": sk, "fusedmlp": fs}


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y_cls = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    y_reg = np.abs(X[:, 0]) + 0.1 * X[:, 1] ** 2
    return X, y_cls, y_reg


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# -- public attributes settable before fit ---------------------------------------------------
@pytest.mark.parametrize("lib", LIBS)
def test_coefs_and_intercepts_assignable_before_fit(lib):
    X, _, y = _data()
    est = LIBS[lib].MLPRegressor(hidden_layer_sizes=(5,), solver="sgd", max_iter=3, random_state=0)
    coefs = [np.full((4, 5), 0.25), np.full((5, 1), -0.5)]
    est.coefs_ = coefs
    est.intercepts_ = [np.zeros(5), np.ones(1)]
    np.testing.assert_array_equal(est.coefs_[0], coefs[0])  # read back as assigned
    np.testing.assert_array_equal(est.intercepts_[1], [1.0])
    # fit (warm_start=False) initializes afresh in both: the same weights as a fit without
    # the assignment.
    _quiet(est.fit, X, y)
    fresh = _quiet(
        LIBS[lib]
        .MLPRegressor(hidden_layer_sizes=(5,), solver="sgd", max_iter=3, random_state=0)
        .fit,
        X,
        y,
    )
    for a, b in zip(est.coefs_, fresh.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sgd_fit_matches_sklearn_weights():
    X, _, y = _data()
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", max_iter=5, random_state=0)
    a = _quiet(sk.MLPRegressor(**kw).fit, X, y)
    b = _quiet(fs.MLPRegressor(**kw).fit, X, y)
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_allclose(cb, ca, rtol=1e-10, atol=1e-12)


def test_preset_weights_with_warm_start_are_the_starting_point():
    """Deliberate difference: scikit-learn's fit with warm_start=True after assigning only
    coefs_/intercepts_ fails (AttributeError, its other fitted attributes are missing); ours
    starts training from the assigned weights."""
    X, _, y = _data()
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", warm_start=True, max_iter=1)
    ref = sk.MLPRegressor(**kw)
    ref.coefs_, ref.intercepts_ = [np.zeros((4, 5)), np.zeros((5, 1))], [np.zeros(5), np.zeros(1)]
    with pytest.raises(AttributeError):
        _quiet(ref.fit, X, y)
    ours = fs.MLPRegressor(learning_rate_init=1e-12, random_state=0, **kw)
    ours.coefs_, ours.intercepts_ = [np.zeros((4, 5)), np.zeros((5, 1))], [np.zeros(5), np.zeros(1)]
    _quiet(ours.fit, X, y)
    assert max(np.abs(c).max() for c in ours.coefs_) < 1e-9  # one tiny step from zero
    bad = fs.MLPRegressor(random_state=0, **kw)
    bad.coefs_ = [np.zeros((3, 5)), np.zeros((5, 1))]
    with pytest.raises(ValueError, match=r"coefs_\[0\]: expected shape \(4, 5\)"):
        bad.fit(X, y)


# -- early stopping on a diverging loss -------------------------------------------------------
@pytest.mark.parametrize("lib", LIBS)
def test_early_stopping_survives_a_diverging_loss(lib):
    """Both keep training after the loss diverges, record the validation scores, and return
    the best (finite) weights: no exception."""
    X, _, _ = _data()
    y = X[:, 0] * 1e3
    est = LIBS[lib].MLPRegressor(
        hidden_layer_sizes=(5,),
        solver="sgd",
        learning_rate_init=10.0,
        early_stopping=True,
        max_iter=20,
        random_state=0,
    )
    _quiet(est.fit, X, y)
    assert not np.isfinite(est.loss_curve_).all()  # it did diverge
    assert len(est.validation_scores_) == est.n_iter_ > 4
    assert np.isfinite(est.best_validation_score_)
    assert est.best_validation_score_ == np.nanmax(est.validation_scores_)
    assert np.isfinite(est.predict(X)).all()  # the best weights, restored


def test_early_stopping_divergence_same_history_as_sklearn():
    """The epochs before the divergence are the same numbers in both. After it, scikit-learn's
    weights are NaN (it records NaN scores, which also reset its no-improvement counter, so it
    runs to max_iter); our fused step skips an update whose loss is not finite, so our weights
    stay finite, the recorded scores are theirs, and the run stops after n_iter_no_change
    epochs without improvement (deliberate difference)."""
    X, _, _ = _data()
    y = X[:, 0] * 1e3
    kw = dict(
        hidden_layer_sizes=(5,),
        solver="sgd",
        learning_rate_init=10.0,
        early_stopping=True,
        max_iter=20,
        random_state=0,
    )
    a = _quiet(sk.MLPRegressor(**kw).fit, X, y)
    b = _quiet(fs.MLPRegressor(**kw).fit, X, y)
    finite = int(np.isfinite(a.loss_curve_).sum())
    np.testing.assert_allclose(b.loss_curve_[:finite], a.loss_curve_[:finite], rtol=1e-10)
    assert b.best_validation_score_ == pytest.approx(a.best_validation_score_, rel=1e-10)
    assert b.n_iter_ == 1 + int(np.argmax(b.validation_scores_)) + b.n_iter_no_change + 1
    np.testing.assert_allclose(b.predict(X), a.predict(X), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("lib", LIBS)
def test_divergence_without_early_stopping_raises(lib):
    X, _, _ = _data()
    est = LIBS[lib].MLPRegressor(
        hidden_layer_sizes=(5,), solver="sgd", learning_rate_init=10.0, max_iter=20, random_state=0
    )
    with pytest.raises(ValueError, match="non-finite"):
        _quiet(est.fit, X, X[:, 0] * 1e3)


# -- warm_start and partial_fit ---------------------------------------------------------------
@pytest.mark.parametrize("lib", LIBS)
def test_partial_fit_classes_rules(lib):
    X, y, _ = _data()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        LIBS[lib].MLPClassifier(random_state=0).partial_fit(X, y)
    est = LIBS[lib].MLPClassifier(random_state=0).partial_fit(X[:10], y[:10], classes=[0, 1, 2])
    assert est.classes_.tolist() == [0, 1, 2]
    assert est.predict_proba(X).shape == (len(X), 3)  # a class y has not shown yet
    with pytest.raises(ValueError, match="is not the same as on last call"):
        est.partial_fit(X, y, classes=[0, 1])
    est.partial_fit(X, y)  # classes may be omitted after the first call


def _counters(est):
    return est.n_iter_, est.t_, len(est.loss_curve_)


def test_partial_fit_counters_and_curve_match_sklearn():
    X, y, _ = _data()
    kw = dict(hidden_layer_sizes=(5,), solver="sgd", random_state=0)
    a, b = sk.MLPClassifier(**kw), fs.MLPClassifier(**kw)
    for i in range(3):
        rows = slice(40 * i, 40 * (i + 1))
        for est in (a, b):
            est.partial_fit(X[rows], y[rows], classes=[0, 1])
        assert _counters(b) == _counters(a) == (1, 40 * (i + 1), i + 1)
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_warm_start_counters_and_curve_match_sklearn(solver):
    X, y, _ = _data()
    kw = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=4, random_state=0, warm_start=True)
    a, b = sk.MLPClassifier(**kw), fs.MLPClassifier(**kw)
    tol = 1e-10 if solver == "sgd" else 1e-5
    for expected in [(4, 480, 4), (4, 960, 8)]:
        _quiet(a.fit, X, y)
        _quiet(b.fit, X, y)
        assert _counters(b) == _counters(a) == expected  # n_iter_ per fit, t_ and curve go on
    np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=tol)
    for est in (a, b):
        est.set_params(warm_start=False)
        _quiet(est.fit, X, y)
    assert _counters(b) == _counters(a) == (4, 480, 4)  # a fresh fit


# -- every loss with every solver -------------------------------------------------------------
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_every_loss_with_every_sklearn_solver(loss, solver):
    X, _, y = _data()
    kw = dict(hidden_layer_sizes=(5,), solver=solver, loss=loss, max_iter=20, random_state=0)
    a = _quiet(sk.MLPRegressor(**kw).fit, X, y)
    b = _quiet(fs.MLPRegressor(**kw).fit, X, y)
    assert b.n_iter_ == a.n_iter_
    # lbfgs: the same objective and the same L-BFGS-B; ours sums the rows in a canonical
    # order (a documented difference), so the values agree to accumulated rounding.
    tol = {"sgd": 1e-10, "adam": 1e-5, "lbfgs": 1e-8}[solver]
    assert b.loss_ == pytest.approx(a.loss_, rel=tol)
    np.testing.assert_allclose(b.predict(X), a.predict(X), rtol=tol, atol=tol)
    if solver != "lbfgs":
        np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=tol)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_classifier_log_loss_with_every_sklearn_solver(solver):
    X, y, _ = _data()
    kw = dict(hidden_layer_sizes=(5,), solver=solver, max_iter=20, random_state=0)
    a = _quiet(sk.MLPClassifier(**kw).fit, X, y)
    b = _quiet(fs.MLPClassifier(**kw).fit, X, y)
    tol = {"sgd": 1e-10, "adam": 1e-5, "lbfgs": 1e-8}[solver]
    assert b.loss_ == pytest.approx(a.loss_, rel=tol)
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=tol, atol=tol)


@pytest.mark.parametrize("solver", fs.solvers())
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_every_loss_with_every_fusedmlp_solver(loss, solver):
    """Our extra solvers (cg, rmsprop, adamw, ...) take every loss too."""
    X, _, y = _data()
    est = fs.MLPRegressor(
        hidden_layer_sizes=(5,), solver=solver, loss=loss, max_iter=10, random_state=0
    )
    _quiet(est.fit, X, y)
    assert np.isfinite(est.loss_) and np.isfinite(est.predict(X)).all()
    assert len(est.loss_curve_) >= 1
