"""fusedmlp.sklearn: scikit-learn's estimator checks, agreement with scikit-learn's own MLP
(trajectories to rounding error where the algorithms are the same, accuracy and R^2 on four
real data sets and one synthetic one), exact optima against LogisticRegression and Ridge for
the full-batch solvers, pipelines and grid search, and the features scikit-learn's MLP lacks.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import warnings

import fusedmlp as fm
import numpy as np
import pytest
import scipy.sparse
import sklearn
import sklearn.neural_network as sknn
from fusedmlp.sklearn import MLPClassifier, MLPRegressor, solvers
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
    make_friedman1,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.fixes import parse_version
from threadpoolctl import threadpool_limits

# Fits cut short on purpose (estimator checks, short runs) warn; tests about the warning
# itself record it explicitly.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The networks here are tiny: one thread for our kernels and for the BLAS scikit-learn's
    # MLP calls avoids thread start-up and contention on shared CI cores (it changes no result
    # these tests compare: float64 sums of a few hundred terms).
    before = fm.get_num_threads()
    fm.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    fm.set_num_threads(before)


# -- scikit-learn's estimator checks -----------------------------------------------------------
_SW_REASON = (
    "sample weights are not equivalent to repeated rows here, by design: batch-norm statistics "
    "are plain means over the rows of the batch (as torch.nn.BatchNorm1d and Keras compute "
    "them), and dropout draws one mask per row, so a row of weight 2 and two copies of it "
    "differ"
)
_SW_CHECKS = (
    "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weight_equivalence_on_sparse_data",
)
_EXTENDED = (
    MLPClassifier(
        solver="rmsprop",
        activation="gelu",
        batchnorm=True,
        dropout=0.1,
        learning_rate="cosine",
        schedule_params={"T": 200},
        label_smoothing=0.1,
        hidden_layer_sizes=(32,),
    ),
    MLPRegressor(
        solver="nadam",
        activation="elu",
        batchnorm="pre",
        init="he_normal",
        clip_norm=1.0,
        dtype="float32",
        hidden_layer_sizes=(32,),
    ),
)


def _expected_failures(est):
    return dict.fromkeys(_SW_CHECKS, _SW_REASON) if est.batchnorm or est.dropout else {}


@parametrize_with_checks(
    [
        MLPClassifier(),
        MLPRegressor(),
        MLPClassifier(solver="lbfgs", hidden_layer_sizes=(16,)),
        MLPRegressor(solver="cg", activation="tanh", hidden_layer_sizes=(16,)),
        *_EXTENDED,
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- helpers -----------------------------------------------------------------------------------
def _quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def _small_classification(n=120, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = centers[y] + rng.normal(size=(n, d))
    return X, y


def _assert_same_fit(a, b, tol):
    """``a`` (ours) and ``b`` (scikit-learn's) ended at the same point of the same run."""
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_"):
        assert getattr(a, name) == getattr(b, name), name
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        assert ca.shape == cb.shape and ca.dtype == cb.dtype
        np.testing.assert_allclose(ca, cb, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.loss_, b.loss_, rtol=tol, atol=tol)
    if hasattr(b, "loss_curve_"):
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=tol, atol=tol)
        for name in ("best_loss_", "best_validation_score_"):
            va, vb = getattr(a, name), getattr(b, name)
            assert (va is None) == (vb is None), name
            if vb is not None:
                np.testing.assert_allclose(va, vb, rtol=tol, atol=tol)
        if b.validation_scores_ is None:
            assert a.validation_scores_ is None
        else:
            np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=tol)


# -- agreement with scikit-learn: the same run, to rounding error -------------------------------
# Same Glorot draws from the same RandomState, same shuffles, same early-stopping split, same
# loss, L2 scaling, SGD velocity rule, learning-rate schedules and stopping rules: solvers "sgd"
# and "lbfgs" reproduce scikit-learn's fitted weights in float64 to rounding error.
_SGD = dict(
    solver="sgd",
    learning_rate_init=0.05,
    batch_size=16,
    alpha=1e-3,
    hidden_layer_sizes=(12, 7),
    random_state=3,
    max_iter=15,
)
TRAJECTORIES = {
    "multiclass-nesterov": ("clf", 3, _SGD),
    "binary-invscaling-nomomentum": (
        "clf",
        2,
        {**_SGD, "learning_rate": "invscaling", "learning_rate_init": 0.5, "momentum": 0.0},
    ),
    "multiclass-adaptive": (
        "clf",
        3,
        {
            **_SGD,
            "learning_rate": "adaptive",
            "tol": 0.05,
            "n_iter_no_change": 1,
            "max_iter": 40,
            "nesterovs_momentum": False,
        },
    ),
    "tol-stop-logistic": (
        "clf",
        3,
        {**_SGD, "activation": "logistic", "tol": 0.02, "n_iter_no_change": 2, "max_iter": 100},
    ),
    "early-stopping-binary": (
        "clf",
        2,
        {
            **_SGD,
            "early_stopping": True,
            "max_iter": 25,
            "validation_fraction": 0.2,
            "activation": "tanh",
        },
    ),
    "multilabel": ("multilabel", 3, _SGD),
    "sample-weight": ("clf", 3, {**_SGD, "sample_weight": True}),
    "no-shuffle-identity": ("clf", 3, {**_SGD, "shuffle": False, "activation": "identity"}),
    "lbfgs-clf": (
        "clf",
        3,
        {
            "solver": "lbfgs",
            "hidden_layer_sizes": (10,),
            "random_state": 1,
            "max_iter": 60,
            "alpha": 1e-2,
        },
    ),
    "lbfgs-clf-weighted": (
        "clf",
        2,
        {
            "solver": "lbfgs",
            "hidden_layer_sizes": (10,),
            "random_state": 1,
            "max_iter": 40,
            "sample_weight": True,
        },
    ),
    "regressor-multioutput": ("reg", 2, _SGD),
    "regressor-early-stopping": ("reg", 1, {**_SGD, "early_stopping": True, "max_iter": 20}),
    "regressor-lbfgs": (
        "reg",
        1,
        {
            "solver": "lbfgs",
            "hidden_layer_sizes": (8,),
            "random_state": 0,
            "max_iter": 50,
            "activation": "tanh",
        },
    ),
    "regressor-poisson": ("poisson", 1, {**_SGD, "learning_rate_init": 0.01}),
    "regressor-weighted": ("reg", 1, {**_SGD, "sample_weight": True}),
}


def _trajectory_data(kind, k, seed=0):
    X, y = _small_classification(n=90, d=5, k=3, seed=seed)
    rng = np.random.default_rng(seed + 1)
    if kind == "clf":
        return X, y % k
    if kind == "multilabel":
        return X, (X[:, :k] + rng.normal(size=(len(X), k)) > 0).astype(int)
    W = rng.normal(size=(5, k))
    Y = np.tanh(X @ W) + 0.1 * rng.normal(size=(len(X), k))
    if kind == "poisson":
        Y = rng.poisson(np.exp(0.5 * np.tanh(X @ W)))
    return X, Y.ravel() if k == 1 else Y


# scikit-learn's MLP takes sample_weight and loss="poisson" from version 1.7
_SKLEARN_17 = parse_version(sklearn.__version__) >= parse_version("1.7")


@pytest.mark.parametrize("case", list(TRAJECTORIES))
def test_same_run_as_sklearn(case):
    kind, k, params = TRAJECTORIES[case]
    params = dict(params)
    if (params.get("sample_weight") or kind == "poisson") and not _SKLEARN_17:
        pytest.skip("scikit-learn < 1.7 has no sample_weight / Poisson loss in its MLP")
    X, y = _trajectory_data(kind, k)
    fit_kw = {}
    if params.pop("sample_weight", False):
        fit_kw["sample_weight"] = np.random.default_rng(5).uniform(0.0, 3.0, size=len(X))
    if kind == "poisson":
        params["loss"] = "poisson"
    ours_cls, ref_cls = (
        (MLPClassifier, sknn.MLPClassifier)
        if kind in ("clf", "multilabel")
        else (MLPRegressor, sknn.MLPRegressor)
    )
    with warnings.catch_warnings(record=True) as w_ours:
        warnings.simplefilter("always", ConvergenceWarning)
        ours = ours_cls(**params).fit(X, y, **fit_kw)
    with warnings.catch_warnings(record=True) as w_ref:
        warnings.simplefilter("always", ConvergenceWarning)
        ref = ref_cls(**params).fit(X, y, **fit_kw)
    _assert_same_fit(ours, ref, tol=1e-8)
    # the same ConvergenceWarnings (max_iter reached, or none after a tol stop)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in w_ours) == sum(
        issubclass(w.category, ConvergenceWarning) for w in w_ref
    )
    if ours_cls is MLPClassifier:
        np.testing.assert_array_equal(ours.classes_, ref.classes_)
        np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)
        assert ours.score(X, y) == ref.score(X, y)
    else:
        np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8, atol=1e-8)


def test_adaptive_schedule_and_tol_stop_really_happened():
    # the trajectory cases above are only meaningful if these rules fired
    X, y = _trajectory_data("clf", 3)
    est = MLPClassifier(**TRAJECTORIES["multiclass-adaptive"][2]).fit(X, y)
    assert est._learning_rate < 0.05 / 4  # divided by 5 at least once
    est = MLPClassifier(**TRAJECTORIES["tol-stop-logistic"][2]).fit(X, y)
    assert est.n_iter_ < 100


def test_float32_runs_the_same_run_in_single_precision():
    X, y = _trajectory_data("clf", 3)
    ours = MLPClassifier(**_SGD).fit(X.astype(np.float32), y)
    ref = sknn.MLPClassifier(**_SGD).fit(X.astype(np.float32), y)
    assert (
        ours.coefs_[0].dtype == np.float32
        and ours.predict_proba(X[:3].astype(np.float32)).dtype == np.float32
    )
    _assert_same_fit(ours, ref, tol=2e-4)


def test_adam_matches_sklearn_up_to_epsilon_placement():
    # Adam's epsilon sits as in torch (m^ / (sqrt(v^) + eps)) where scikit-learn adds it before
    # the bias correction: the runs differ by O(eps / sqrt(v)) per step, invisibly in the loss.
    X, y = _trajectory_data("clf", 3)
    kw = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=30, batch_size=32)
    ours = _quiet_fit(MLPClassifier(**kw), X, y)
    ref = _quiet_fit(sknn.MLPClassifier(**kw), X, y)
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-3)


def test_partial_fit_and_warm_start_follow_sklearn():
    X, y = _trajectory_data("clf", 3)
    kw = {k: v for k, v in _SGD.items() if k != "max_iter"}
    ours, ref = MLPClassifier(**kw), sknn.MLPClassifier(**kw)
    for part in (slice(0, 45), slice(45, 90), slice(0, 90)):
        ours.partial_fit(X[part], y[part], classes=[0, 1, 2])
        ref.partial_fit(X[part], y[part], classes=[0, 1, 2])
        _assert_same_fit(ours, ref, tol=1e-8)
    kw = {**_SGD, "warm_start": True, "max_iter": 5}
    ours, ref = MLPClassifier(**kw), sknn.MLPClassifier(**kw)
    for _ in range(3):
        _quiet_fit(ours, X, y)
        _quiet_fit(ref, X, y)
        _assert_same_fit(ours, ref, tol=1e-8)


def test_loss_has_sklearn_meaning():
    # recomputed from the definitions at the fitted parameters: mean over samples of the
    # cross-entropy / binary cross-entropy summed over labels / half squared error averaged
    # over samples and outputs, plus alpha/2 ||W||^2 / n
    X, y = _trajectory_data("clf", 3)
    alpha = 0.05
    n = len(X)

    def penalty(est):
        return 0.5 * alpha * sum(float((W**2).sum()) for W in est.coefs_) / n

    clf = _quiet_fit(
        MLPClassifier(
            solver="lbfgs", alpha=alpha, hidden_layer_sizes=(8,), random_state=0, max_iter=20
        ),
        X,
        y,
    )
    p = clf.predict_proba(X)
    ce = -np.mean(np.log(p[np.arange(n), y]))
    np.testing.assert_allclose(clf.loss_, ce + penalty(clf), rtol=1e-10)

    Y = (X[:, :3] + np.random.default_rng(1).normal(size=(n, 3)) > 0).astype(int)
    ml = _quiet_fit(
        MLPClassifier(
            solver="lbfgs", alpha=alpha, hidden_layer_sizes=(8,), random_state=0, max_iter=20
        ),
        X,
        Y,
    )
    p = ml.predict_proba(X)
    bce = -np.mean(np.sum(Y * np.log(p) + (1 - Y) * np.log(1 - p), axis=1))
    np.testing.assert_allclose(ml.loss_, bce + penalty(ml), rtol=1e-10)

    _, Yr = _trajectory_data("reg", 3)
    reg = _quiet_fit(
        MLPRegressor(
            solver="lbfgs", alpha=alpha, hidden_layer_sizes=(8,), random_state=0, max_iter=20
        ),
        X,
        Yr,
    )
    se = 0.5 * np.mean((Yr - reg.predict(X)) ** 2)
    np.testing.assert_allclose(reg.loss_, se + penalty(reg), rtol=1e-10)
    assert len(reg.loss_curve_) == reg.n_iter_ and reg.best_loss_ == min(reg.loss_curve_)

    reg = _quiet_fit(
        MLPRegressor(
            solver="sgd",
            alpha=alpha,
            hidden_layer_sizes=(8,),
            random_state=0,
            max_iter=3,
            batch_size=n,
        ),
        X,
        Yr,
    )
    assert len(reg.loss_curve_) == 3 and reg.loss_ == reg.loss_curve_[-1]


# -- full-batch solvers against convex references ------------------------------------------------
_TIGHT = {"lbfgs": {"ftol": 1e-15}, "cg": None}  # L-BFGS-B also stops on a relative f change


@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_full_batch_solvers_reach_the_logistic_regression_optimum(solver):
    # No hidden layer: the objective mean CE + alpha/(2n) ||W||^2 is LogisticRegression's with
    # C = 1/alpha (intercepts unpenalized in both), a strictly convex problem.
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    alpha = 0.5
    est = MLPClassifier(
        hidden_layer_sizes=(),
        solver=solver,
        alpha=alpha,
        tol=1e-10,
        max_iter=2000,
        random_state=0,
        solver_params=_TIGHT[solver],
    )
    _quiet_fit(est, X, y)
    ref = LogisticRegression(C=1 / alpha, tol=1e-12, max_iter=10000).fit(X, y)
    assert est.n_layers_ == 2
    np.testing.assert_allclose(est.coefs_[0], ref.coef_.T, atol=1e-5)
    # softmax intercepts are determined up to a common constant (they are not penalized)
    b, b_ref = est.intercepts_[0], ref.intercept_
    np.testing.assert_allclose(b - b.mean(), b_ref - b_ref.mean(), atol=1e-5)


@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_full_batch_solvers_reach_the_ridge_optimum(solver):
    # 0.5 mean (y - Xw - b)^2 + alpha/(2n) ||w||^2 is Ridge(alpha)'s objective divided by 2n
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(X))
    est = MLPRegressor(
        hidden_layer_sizes=(),
        solver=solver,
        alpha=3.0,
        tol=1e-12,
        max_iter=5000,
        random_state=0,
        solver_params=_TIGHT[solver],
    )
    _quiet_fit(est, X, y, sample_weight=w)
    # with weights: sum_i w_i (y_i - f_i)^2 / (2 sum w) + alpha ||w||^2 / (2 sum w), Ridge's
    # weighted objective divided by 2 sum(w)
    ref = Ridge(alpha=3.0, tol=1e-12).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(est.coefs_[0].ravel(), ref.coef_, atol=1e-6)
    np.testing.assert_allclose(est.intercepts_[0], [ref.intercept_], atol=1e-6)


def _full_batch_objective(est, X, y, sample_weight, monkeypatch):
    """The (value, gradient) function and start point the estimator hands scipy.optimize."""
    import scipy.optimize

    captured = []
    minimize = scipy.optimize.minimize

    def spy(fun, x0, **kwargs):
        captured.append((fun, np.array(x0, copy=True)))
        return minimize(fun, x0, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", spy)
    _quiet_fit(est, X, y, sample_weight=sample_weight)
    monkeypatch.undo()
    assert len(captured) == 1
    return captured[0]


def _loss_cases():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5))
    z = X @ rng.normal(size=(5, 2)) * 0.5
    sw = rng.uniform(0.2, 3.0, size=40)
    labels3 = np.argmax(z @ rng.normal(size=(2, 3)), axis=1)
    return {
        "squared_error": (MLPRegressor(), X, z[:, 0]),
        "squared_error-2outputs": (MLPRegressor(), X, z),
        "poisson": (MLPRegressor(loss="poisson"), X, rng.poisson(np.exp(z[:, 0]))),
        "poisson-2outputs": (MLPRegressor(loss="poisson"), X, rng.poisson(np.exp(z))),
        "binary_log_loss": (MLPClassifier(), X, (z[:, 0] > 0).astype(int)),
        "multilabel_log_loss": (MLPClassifier(), X, (z > 0).astype(int)),
        "multiclass_log_loss": (MLPClassifier(), X, labels3),
        "multiclass_smoothed": (MLPClassifier(label_smoothing=0.1), X, labels3),
        "squared_error-batchnorm": (MLPRegressor(batchnorm=True), X, z[:, 0]),
    }, sw


_LOSS_CASES, _LOSS_SW = _loss_cases()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", list(_LOSS_CASES))
@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_full_batch_value_and_gradient_agree_by_finite_differences(
    solver, case, weighted, monkeypatch
):
    # The solvers trust that the value they get is the objective whose gradient they get
    # (Poisson once handed over the head's half-MSE with Poisson's gradient: L-BFGS stopped
    # ABNORMAL after 2 iterations). Central differences in float64 along random directions,
    # at the start point and at a point away from it, with the L2 term on (alpha > 0).
    est, X, y = _LOSS_CASES[case]
    est = clone(est).set_params(
        solver=solver,
        hidden_layer_sizes=(6,),
        activation="tanh",
        alpha=0.3,
        max_iter=2,
        random_state=0,
    )
    sw = _LOSS_SW if weighted else None
    fun, x0 = _full_batch_objective(est, X, y, sw, monkeypatch)
    rng = np.random.default_rng(0)
    h = 1e-5
    for x in (x0, x0 + 0.3 * rng.normal(size=x0.shape)):
        _, g = fun(x)
        for _ in range(3):
            d = rng.normal(size=x.shape)
            d /= np.linalg.norm(d)
            fd = (fun(x + h * d)[0] - fun(x - h * d)[0]) / (2 * h)
            # truncation error ~ h^2 |f^(3)|, rounding ~ 1e-16 |f| / h: both far below 1e-8
            np.testing.assert_allclose(fd, g @ d, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_full_batch_solvers_reach_the_poisson_regression_optimum(solver):
    # No hidden layer: mean half deviance + alpha/(2 sum w) ||W||^2 is PoissonRegressor's
    # weighted objective with its alpha = ours / sum(w), strictly convex. Handed the wrong value
    # for Poisson's gradient, L-BFGS-B stopped ABNORMAL far from this optimum.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = rng.poisson(np.exp(X @ np.array([0.5, -0.3, 0.2, 0.1]) + 0.3))
    w = rng.uniform(0.5, 2.0, size=len(X))
    alpha = 5.0
    est = MLPRegressor(
        loss="poisson",
        hidden_layer_sizes=(),
        solver=solver,
        alpha=alpha,
        tol=1e-12,
        max_iter=5000,
        random_state=0,
        solver_params=_TIGHT[solver],
    )
    _quiet_fit(est, X, y, sample_weight=w)
    ref = PoissonRegressor(alpha=alpha / w.sum(), tol=1e-12, max_iter=10000).fit(
        X, y, sample_weight=w
    )
    np.testing.assert_allclose(est.coefs_[0].ravel(), ref.coef_, atol=1e-6)
    np.testing.assert_allclose(est.intercepts_[0], [ref.intercept_], atol=1e-6)


@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_full_batch_fit_is_bit_identical_for_repeated_weighted_and_shuffled_rows(solver):
    # Canonical data set: repeated rows, integer weights and any row order give one objective,
    # summed in one order, so the solver's iterates are bit-identical (a last-bit difference
    # in the value or gradient grows to ~1e-9 in the predictions over a CG fit).
    rng = np.random.default_rng(0)
    X = rng.random((15, 30))
    y = rng.integers(0, 3, size=15).astype(float)
    sw = rng.integers(0, 5, size=15)
    sw[0] = 2
    perm = rng.permutation(15)
    est = MLPRegressor(solver=solver, activation="tanh", hidden_layer_sizes=(16,), random_state=0)
    fits = [
        clone(est).fit(X.repeat(sw, axis=0), y.repeat(sw)),
        clone(est).fit(X[perm], y[perm], sample_weight=sw[perm]),
        clone(est).fit(scipy.sparse.csr_matrix(X), y, sample_weight=sw.astype(float)),
    ]
    for f in fits[1:]:
        assert f.n_iter_ == fits[0].n_iter_
        np.testing.assert_array_equal(f.predict(X), fits[0].predict(X))
        for a, b in zip(f.coefs_, fits[0].coefs_, strict=True):
            np.testing.assert_array_equal(a, b)


def test_cg_trains_a_hidden_layer_and_warns_when_cut_short():
    X, y = _small_classification()
    with pytest.warns(ConvergenceWarning, match="cg failed to converge"):
        MLPClassifier(solver="cg", hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X, y)
    est = MLPClassifier(solver="cg", hidden_layer_sizes=(16,), random_state=0, max_iter=300)
    _quiet_fit(est, X, y)
    assert est.score(X, y) > 0.95
    assert np.all(np.diff(est.loss_curve_) <= 1e-12)  # CG's line search never goes uphill
    assert not hasattr(est, "partial_fit")


# -- accuracy and R^2 against scikit-learn on real data ------------------------------------------
# Margin: 0.02 accuracy / R^2. The two implementations share initialization, shuffles and
# update rules, so their scores differ only through Adam's epsilon placement and rounding
# (measured differences are <= 0.001); 0.02 is one to three test samples on these sets.
AGREEMENT = {
    "digits-adam": ("digits", dict()),
    "breast_cancer-sgd": ("breast_cancer", dict(solver="sgd")),
    "wine-lbfgs": ("wine", dict(solver="lbfgs")),
    "wine-adam-float32": ("wine", dict(max_iter=100, dtype="float32")),
    "diabetes-adam-early-stopping": ("diabetes", dict(early_stopping=True)),
    "friedman1-lbfgs": ("friedman1", dict(solver="lbfgs", alpha=1.0, hidden_layer_sizes=(32,))),
}


def _dataset(name):
    if name == "friedman1":
        return make_friedman1(n_samples=600, noise=1.0, random_state=0)
    loader = {
        "digits": load_digits,
        "breast_cancer": load_breast_cancer,
        "wine": load_wine,
        "diabetes": load_diabetes,
    }[name]
    return loader(return_X_y=True)


def _agreement_scores(case):
    name, params = AGREEMENT[case]
    X, y = _dataset(name)
    regression = name in ("diabetes", "friedman1")
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=None if regression else y
    )
    scores = []
    for lib in (fm.sklearn, sknn):
        kw = {k: v for k, v in params.items() if lib is fm.sklearn or k != "dtype"}
        if regression:
            model = TransformedTargetRegressor(
                make_pipeline(StandardScaler(), lib.MLPRegressor(random_state=0, **kw)),
                transformer=StandardScaler(),
            )
        else:
            model = make_pipeline(StandardScaler(), lib.MLPClassifier(random_state=0, **kw))
        _quiet_fit(model, Xtr, ytr)
        scores.append(model.score(Xte, yte))
    return scores


@pytest.mark.parametrize("case", list(AGREEMENT))
def test_scores_agree_with_sklearn(case):
    ours, ref = _agreement_scores(case)
    assert abs(ours - ref) <= 0.02, (ours, ref)
    floor = {"digits": 0.9, "breast_cancer": 0.9, "wine": 0.9, "diabetes": 0.2, "friedman1": 0.85}
    assert ours >= floor[AGREEMENT[case][0]]


# -- pipelines, grid search, cloning, pickling ----------------------------------------------------
def test_grid_search_in_a_pipeline_matches_sklearn():
    X, y = load_iris(return_X_y=True)
    grid = {"mlp__alpha": [1e-4, 1.0], "mlp__hidden_layer_sizes": [(4,), (16,)]}
    results = []
    for lib in (fm.sklearn, sknn):
        pipe = Pipeline(
            [
                ("scale", StandardScaler()),
                ("mlp", lib.MLPClassifier(solver="lbfgs", max_iter=100, random_state=0)),
            ]
        )
        search = GridSearchCV(pipe, grid, cv=3)
        _quiet_fit(search, X, y)
        results.append(search)
    ours, ref = results
    assert ours.best_params_ == ref.best_params_
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=0.02
    )
    assert ours.best_estimator_.score(X, y) > 0.95


def test_cross_val_score_regressor_pipeline():
    X, y = make_friedman1(n_samples=600, noise=0.5, random_state=1)
    pipe = make_pipeline(
        StandardScaler(),
        MLPRegressor(solver="lbfgs", hidden_layer_sizes=(16,), alpha=1.0, random_state=0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.min() > 0.8


def test_pickle_resumes_the_same_trajectory():
    X, y = _small_classification()
    kw = dict(hidden_layer_sizes=(16,), batchnorm=True, dropout=0.2, random_state=0)
    a = MLPClassifier(**kw)
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1, 2])
    b = pickle.loads(pickle.dumps(a))
    c = copy.deepcopy(a)
    np.testing.assert_array_equal(b.predict_proba(X), a.predict_proba(X))
    for _ in range(2):  # optimizer moments, RNG step and BN statistics carried over
        for est in (a, b, c):
            est.partial_fit(X, y)
    for est in (b, c):
        for wa, wb in zip(a.model_.get_weights(), est.model_.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)
        assert est.t_ == a.t_ and est.loss_curve_ == a.loss_curve_
    assert clone(a).get_params() == a.get_params() and not hasattr(clone(a), "model_")


def test_partial_fit_rules():
    X, y = _small_classification()
    est = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X, y)
    est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # y need not hold every class
    assert est.predict_proba(X).shape == (len(X), 3) and est.n_iter_ == 1
    with pytest.raises(ValueError, match="not the same as on last call"):
        est.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X, y + 5)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    for solver in ("lbfgs", "cg"):
        assert not hasattr(MLPClassifier(solver=solver), "partial_fit")
        assert not hasattr(MLPRegressor(solver=solver), "partial_fit")
    reg = MLPRegressor(hidden_layer_sizes=(8,), random_state=0)
    reg.partial_fit(X, X[:, 0]).partial_fit(X, X[:, 0])
    assert reg.t_ == 2 * len(X) and len(reg.loss_curve_) == 2


def test_warm_start_refuses_another_architecture():
    X, y = _small_classification()
    est = _quiet_fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, warm_start=True), X, y)
    est.set_params(hidden_layer_sizes=(9,))
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        est.fit(X, y)
    with pytest.raises(ValueError, match="same classes"):
        est.set_params(hidden_layer_sizes=(8,)).fit(X, y % 2)
    # without warm_start every fit starts afresh, early-stopping state included
    est.set_params(warm_start=False, early_stopping=True)
    for width in (5, 7):
        _quiet_fit(est.set_params(hidden_layer_sizes=(width,)), X, y)
        assert est.coefs_[0].shape == (6, width) and len(est.validation_scores_) == est.n_iter_


# -- beyond scikit-learn -------------------------------------------------------------------------
@pytest.mark.parametrize("solver", [s for s in solvers() if s not in ("lbfgs", "cg")])
def test_every_optimizer_trains(solver):
    X, y = _small_classification()
    lr = {"adadelta": 1.0, "adagrad": 0.05, "sgd": 0.05}.get(solver, 0.01)
    est = _quiet_fit(
        MLPClassifier(
            solver=solver,
            hidden_layer_sizes=(16,),
            learning_rate_init=lr,
            max_iter=60,
            random_state=0,
        ),
        X,
        y,
    )
    assert est.score(X, y) > 0.9, solver
    assert est.loss_curve_[-1] < est.loss_curve_[0]


@pytest.mark.parametrize(
    "activation", ["gelu", "elu", "silu", "leaky_relu", "prelu", "softplus", "selu", "arctan"]
)
def test_any_activation_trains(activation):
    X, y = _small_classification()
    est = _quiet_fit(
        MLPClassifier(
            activation=activation,
            hidden_layer_sizes=(16,),
            max_iter=100,
            learning_rate_init=0.01,
            random_state=0,
        ),
        X,
        y,
    )
    assert est.score(X, y) > 0.9
    assert est.model_._all_layers()[0].activation == fm._activations.canonical(activation)


def test_activation_params_reach_the_layer():
    X, y = _small_classification()
    est = _quiet_fit(
        MLPClassifier(
            activation="leaky_relu",
            activation_params={"alpha": 0.3},
            hidden_layer_sizes=(4,),
            max_iter=1,
        ),
        X,
        y,
    )
    assert est.model_._all_layers()[0]._act.hyper["alpha"] == 0.3
    with pytest.raises(ValueError, match="beta"):
        MLPClassifier(activation="leaky_relu", activation_params={"beta": 1.0}).fit(X, y)


def test_fusedmlp_schedules_drive_the_learning_rate():
    X, y = _small_classification()
    kw = dict(
        hidden_layer_sizes=(8,),
        max_iter=6,
        random_state=0,
        batch_size=len(X),
        solver="sgd",
        momentum=0.0,
        learning_rate_init=0.1,
    )
    const = _quiet_fit(MLPClassifier(**kw), X, y)
    flat = _quiet_fit(
        MLPClassifier(learning_rate="exponential", schedule_params={"gamma": 1.0}, **kw), X, y
    )
    np.testing.assert_array_equal(const.loss_curve_, flat.loss_curve_)
    # step decay to lr * 1e-12 after the first epoch: the weights freeze after one epoch
    frozen = _quiet_fit(
        MLPClassifier(
            learning_rate="step_decay", schedule_params={"step_size": 1, "gamma": 1e-12}, **kw
        ),
        X,
        y,
    )
    one = _quiet_fit(MLPClassifier(**{**kw, "max_iter": 1}), X, y)
    np.testing.assert_allclose(frozen.coefs_[0], one.coefs_[0], atol=1e-9)
    assert not np.allclose(frozen.coefs_[0], const.coefs_[0])


def test_dropout_is_reproducible_and_off_at_inference():
    X, y = _small_classification()
    kw = dict(
        hidden_layer_sizes=(32,), dropout=0.3, max_iter=40, random_state=7, learning_rate_init=0.01
    )
    a = _quiet_fit(MLPClassifier(**kw), X, y)
    b = _quiet_fit(MLPClassifier(**kw), X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))
    no = _quiet_fit(MLPClassifier(**{**kw, "dropout": 0.0}), X, y)
    assert not np.allclose(a.coefs_[0], no.coefs_[0])
    assert a.score(X, y) > 0.9
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier(solver="lbfgs", dropout=0.1).fit(X, y)


@pytest.mark.parametrize("batchnorm", [True, "pre"])
def test_batchnorm_trains_and_keeps_sklearn_attributes(batchnorm):
    X, y = _small_classification(n=201)  # 201 = 200 + a lone last sample
    est = _quiet_fit(
        MLPClassifier(
            batchnorm=batchnorm,
            hidden_layer_sizes=(16, 8),
            max_iter=60,
            learning_rate_init=0.01,
            random_state=0,
        ),
        X * 10 + 3,
        y,
    )
    assert [c.shape for c in est.coefs_] == [(6, 16), (16, 8), (8, 3)]
    kinds = [lay.kind for lay in est.model_._all_layers()]
    assert kinds.count("batchnorm") == 2
    assert est.score(X * 10 + 3, y) > 0.9
    with pytest.raises(ValueError, match="n_samples=1"):
        MLPClassifier(batchnorm=True).fit(X[:1], y[:1])


def test_label_smoothing_bounds_the_confidence():
    X, y = _small_classification()
    X = X * 3  # well separated: without smoothing the probabilities go to 1
    kw = dict(solver="lbfgs", hidden_layer_sizes=(16,), alpha=0.0, max_iter=300, random_state=0)
    sharp = _quiet_fit(MLPClassifier(**kw), X, y)
    smooth = _quiet_fit(MLPClassifier(label_smoothing=0.3, **kw), X, y)
    target = 1 - 0.3 + 0.3 / 3  # the smoothed target of the true class
    assert sharp.predict_proba(X).max() > 0.99
    assert abs(smooth.predict_proba(X).max(axis=1).mean() - target) < 0.02


@pytest.mark.parametrize("clip", ["clip_value", "clip_norm"])
def test_gradient_clipping_bounds_each_step(clip):
    X, y = _small_classification()
    lr, c = 1.0, 1e-3
    kw = dict(
        solver="sgd",
        momentum=0.0,
        alpha=0.0,
        learning_rate_init=lr,
        batch_size=len(X),
        hidden_layer_sizes=(8,),
        random_state=0,
        max_iter=1,
    )
    start = _quiet_fit(MLPClassifier(**{**kw, "learning_rate_init": 1e-300}), X, y)
    est = _quiet_fit(MLPClassifier(**kw, **{clip: c}), X, y)
    step = np.concatenate(
        [
            (a - b).ravel()
            for a, b in zip(est.model_.get_weights(), start.model_.get_weights(), strict=True)
        ]
    )
    if clip == "clip_value":
        assert np.abs(step).max() <= lr * c * (1 + 1e-9)
    else:
        assert np.linalg.norm(step) <= lr * c * (1 + 1e-6)
    assert np.abs(step).max() > 0


@pytest.mark.parametrize("init", ["he_normal", "orthogonal", "lsuv"])
def test_initializers(init):
    X, y = _small_classification(n=300, d=40)
    est = _quiet_fit(
        MLPClassifier(
            init=init,
            hidden_layer_sizes=(64,),
            learning_rate_init=1e-300,
            max_iter=1,
            random_state=0,
        ),
        X,
        y,
    )
    W = est.coefs_[0]
    if init == "he_normal":
        assert abs(W.std() / np.sqrt(2 / 40) - 1) < 0.1
    elif init == "orthogonal":  # (40, 64): orthonormal rows
        np.testing.assert_allclose(W @ W.T, np.eye(40), atol=1e-10)
    else:
        h = est.model_._engine.forward(np.ascontiguousarray(X), False)  # runs the layers
        assert h[0].shape == (300, 3)
        hidden = est.model_._engine.layer_output(0)
        assert abs(np.var(hidden) - 1) < 0.1
    np.testing.assert_allclose(est.intercepts_[0], 0.0, atol=1e-250)  # a 1e-300 step moved them


def test_dtype_parameter_and_input_dtypes():
    X, y = _small_classification()
    f32 = _quiet_fit(MLPClassifier(dtype="float32", max_iter=20, random_state=0), X, y)
    f64 = _quiet_fit(MLPClassifier(max_iter=20, random_state=0), X, y)
    assert f32.coefs_[0].dtype == np.float32 and f64.coefs_[0].dtype == np.float64
    assert f32.predict_proba(X).dtype == np.float64  # predictions follow the input
    np.testing.assert_allclose(f32.predict_proba(X), f64.predict_proba(X), atol=1e-3)
    ints = _quiet_fit(MLPClassifier(max_iter=5, random_state=0), np.rint(X).astype(np.int64), y)
    assert ints.coefs_[0].dtype == np.float64


@pytest.mark.parametrize("densify_once", [True, False])
def test_sparse_input_equals_dense(densify_once, monkeypatch):
    if not densify_once:  # the path of sparse data too large to densify: batch by batch
        monkeypatch.setattr(fm.sklearn, "_DENSIFY_BYTES", 0)
    X, y = _small_classification()
    X[np.abs(X) < 1.0] = 0.0
    kw = dict(
        hidden_layer_sizes=(8,), max_iter=10, random_state=0, solver="sgd", early_stopping=True
    )
    dense = _quiet_fit(MLPRegressor(**kw), X, y.astype(float))
    for fmt in (scipy.sparse.csr_matrix, scipy.sparse.csc_array):
        sparse = _quiet_fit(MLPRegressor(**kw), fmt(X), y.astype(float))
        np.testing.assert_array_equal(sparse.coefs_[0], dense.coefs_[0])
        assert sparse.validation_scores_ == dense.validation_scores_
        np.testing.assert_array_equal(sparse.predict(fmt(X)), dense.predict(X))


def test_coefs_are_live_views():
    X, y = _small_classification()
    est = _quiet_fit(MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0), X, y)
    est.coefs_[1][:] = 0.0
    est.intercepts_[1][:] = [0.0, 5.0, 0.0]
    assert (est.predict(X) == 1).all()
    est.coefs_ = [np.zeros((6, 4)), np.ones((4, 3))]
    assert np.array_equal(est.coefs_[1], np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"coefs_\[0\]: expected shape"):
        est.coefs_ = [np.zeros((5, 4)), np.ones((4, 3))]
    with pytest.raises(AttributeError):
        MLPClassifier().coefs_  # noqa: B018


def test_poisson_regressor_fits_counts():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]))
    est = MLPRegressor(
        loss="poisson",
        solver="lbfgs",
        hidden_layer_sizes=(8,),
        random_state=0,
        alpha=1.0,
        max_iter=200,
    )
    _quiet_fit(est, X, y)
    assert est.out_activation_ == "exp" and (est.predict(X) > 0).all()
    mu = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])
    assert np.corrcoef(est.predict(X), mu)[0, 1] > 0.95
    with pytest.raises(ValueError, match="non-negative"):
        est.fit(X, -y - 1.0)


def test_feature_names_are_recorded():
    pd = pytest.importorskip("pandas")
    X, y = _small_classification()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = _quiet_fit(MLPClassifier(max_iter=3), frame, y)
    assert list(est.feature_names_in_) == list(frame.columns) and est.n_features_in_ == 6


def test_verbose_and_convergence_warning(capsys):
    X, y = _small_classification()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\)"):
        MLPClassifier(max_iter=2, verbose=True).fit(X, y)
    assert "Iteration 2, loss = " in capsys.readouterr().out


def test_cuda_device_is_passed_through():
    if fm.cuda_available():
        pytest.skip("a CUDA device is present; this checks the error without one")
    X, y = _small_classification()
    with pytest.raises(ValueError, match="device"):
        MLPClassifier(device="cuda").fit(X, y)
    MLPClassifier(device="cuda")  # no logic in __init__: nothing raised before fit


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"hidden_layer_sizes": (4, 0)}, ValueError, "hidden_layer_sizes must be > 0"),
        ({"hidden_layer_sizes": "wide"}, TypeError, "hidden_layer_sizes"),
        ({"activation": "softmax"}, ValueError, "activation"),
        ({"activation": "nope"}, ValueError, "activation"),
        ({"solver": "newton"}, ValueError, "solver"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": "big"}, TypeError, "batch_size"),
        ({"learning_rate": "fastest"}, ValueError, "learning_rate"),
        ({"learning_rate": "cosine", "schedule_params": {"Tmax": 3}}, ValueError, "learning_rate"),
        ({"learning_rate_init": 0.0}, ValueError, "learning_rate_init"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"max_fun": 0}, ValueError, "max_fun"),
        ({"momentum": 1.5}, ValueError, "momentum"),
        ({"shuffle": "yes"}, TypeError, "shuffle"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"beta_1": 1.0}, ValueError, "beta_1"),
        ({"epsilon": 0.0}, ValueError, "epsilon"),
        ({"n_iter_no_change": 0}, ValueError, "n_iter_no_change"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"batchnorm": "maybe"}, ValueError, "batchnorm"),
        ({"init": "random"}, ValueError, "init"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing"),
        ({"clip_norm": 0.0}, ValueError, "clip_norm"),
        ({"dtype": "float16"}, ValueError, "dtype"),
        ({"solver_params": {"bogus": 1}}, TypeError, "solver"),
        ({"solver_params": [1]}, TypeError, "solver_params"),
        ({"solver": "lbfgs", "solver_params": {"gamma": 1}}, ValueError, "solver_params"),
    ],
)
def test_bad_parameters_are_named(params, error, match):
    X, y = _small_classification(n=20)
    est = MLPClassifier(**{"max_iter": 1, **params})  # accepted at construction, like sklearn's
    with pytest.raises(error, match=match):
        est.fit(X, y)


def test_bad_sample_weight():
    X, y = _small_classification(n=20)
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier(max_iter=1).fit(X, y, sample_weight=-np.ones(20))
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier(max_iter=1).fit(X, y, sample_weight=np.zeros(20))
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier(max_iter=1).fit(X, y, sample_weight=np.ones(19))


def test_import_fusedmlp_does_not_load_the_estimators():
    code = (
        "import sys, fusedmlp as fm; assert 'fusedmlp.sklearn' not in sys.modules; "
        "fm.sklearn.MLPClassifier; assert 'fusedmlp.sklearn' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
