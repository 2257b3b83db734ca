"""scikit-learn's own estimator checks over both estimators."""

import functools

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.utils.estimator_checks import check_estimator, estimator_checks_generator

from stablekeras import StableClassifier, StableRegressor

# Small networks keep each of the ~60 checks (many fits each) quick; the
# acceptance configuration itself is checked by the slow test below.
FAST = dict(
    width=8,
    depth=1,
    dense_width=32,  # flat inputs get the dense stage only: keep it small
    dense_depth=1,
    epochs=5,
    batch_size=32,
    learning_rate=0.03,
    random_state=0,
)

# Failures that are certain: strict, so that a check that starts passing is noticed.
CERTAIN = {
    "check_sample_weight_equivalence_on_dense_data": (
        "stochastic mini-batch training: a weight of 2 is not the same optimisation "
        "path as a repeated row, so the fits differ"
    ),
}
# Failures that depend on the machine: scikit-learn asks for outputs equal to 1e-7
# absolute between a prediction on the whole set and on subsets, and float32 kernels
# (oneDNN) vectorise differently for different batch sizes. On the development machine
# the classifier's logits differ in the last bits and the check fails, the regressor's
# agree and it passes; another CPU may do either. Not strict, and the property itself is
# tested within float32 rounding by test_subset_invariance_within_float32_rounding below.
MACHINE_DEPENDENT = {
    "check_methods_subset_invariance": (
        "float32 kernels vectorise differently for different batch sizes: outputs agree "
        "to ~1e-7 relative, scikit-learn asks for 1e-7 absolute (machine-dependent)"
    ),
}
ESTIMATORS = [StableClassifier(**FAST), StableRegressor(**FAST)]


def _name(check) -> str:
    while hasattr(check, "__wrapped__"):
        check = check.__wrapped__
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


def _checks():
    """scikit-learn's checks of both estimators, each expected failure marked as above."""
    params = []
    for estimator in ESTIMATORS:
        for est, check in estimator_checks_generator(estimator, legacy=True, mark=None):
            name = _name(check)
            marks = ()
            if name in CERTAIN:
                marks = pytest.mark.xfail(reason=CERTAIN[name], strict=True)
            elif name in MACHINE_DEPENDENT:
                marks = pytest.mark.xfail(reason=MACHINE_DEPENDENT[name], strict=False)
            params.append(pytest.param(est, check, marks=marks, id=f"{type(est).__name__}-{name}"))
    return params


@pytest.mark.parametrize("estimator, check", _checks())
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_subset_invariance_within_float32_rounding(estimator):
    """What check_methods_subset_invariance asks, to float32 rounding: a method gives the same
    outputs on a subset of the rows as on the whole set."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    s = X[:, 0] + X[:, 1]
    y = np.digitize(s, [-0.5, 0.5]) if is_classifier(estimator) else X.sum(axis=1)
    est = clone(estimator).fit(X, y)
    methods = ["predict", "decision_function", "predict_proba"]
    if not is_classifier(estimator):
        methods = ["predict"]
    compared = 0
    for method in methods:
        full = getattr(est, method)(X)
        for batch in np.array_split(np.arange(len(X)), 4):
            part = getattr(est, method)(X[batch])
            if method == "predict" and is_classifier(estimator):
                # a label may only differ where two logits tie to rounding
                logits = est.decision_function(X[batch])
                top2 = np.sort(logits, axis=1)[:, -2:]
                clear = top2[:, 1] - top2[:, 0] > 1e-4
                np.testing.assert_array_equal(part[clear], full[batch][clear])
            else:
                np.testing.assert_allclose(part, full[batch], rtol=1e-5, atol=1e-6)
            compared += 1
    assert compared == 4 * len(methods)


ALLOWED = {
    "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weight_equivalence_on_sparse_data",
    "check_sample_weights_invariance",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", [StableClassifier, StableRegressor])
def test_check_estimator_default_configuration(estimator):
    results = check_estimator(estimator(epochs=3, random_state=0), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed <= ALLOWED, failed - ALLOWED
