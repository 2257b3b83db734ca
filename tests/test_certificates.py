"""The rounding allowance of the certificates: at the threshold, against float64, consistent.

A point is certified at ``eps`` only when its computed margin exceeds
``sqrt(2) L eps + a(x)``, ``a`` the :func:`~stablekeras.robustness.rounding_allowance`;
``certified_radius`` subtracts the same ``a``. The tests put ``eps`` just on either side
of that threshold, check the radius against the accuracy at every ``eps``, and check
the allowance against the actual float32 rounding (the same weights evaluated in
float64).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from stablekeras import StableClassifier
from stablekeras.robustness import (
    certified_accuracy,
    certified_radius,
    make_certified_scorer,
    rounding_allowance,
)
from stablekeras.robustness._inputs import predict_logits

CONFIGS = {
    # the certified network (every layer bounded by 1): flat features, and images
    "dense": dict(dense_width=32, dense_depth=2),
    "conv": dict(depth=1, width=8, image_shape=(8, 8, 1), dense_width=32, dense_depth=1),
    # the chapter's network with sub-steps, lift and projection capped at 1, no dense stage
    "substeps": dict(
        network="chapter",
        depth=2,
        width=16,
        enforcement="substeps",
        max_norm=1.0,
        dense_width=None,
        loss="hinge",
    ),
    # the chapter's convolutional network, kernels projected after each step
    "chapter-conv": dict(
        network="chapter",
        depth=1,
        width=8,
        image_shape=(8, 8, 1),
        enforcement="project",
        max_norm=1.0,
        dense_width=None,
        loss="hinge",
    ),
}
# The layers that compute in float64 when asked to (the orthogonal and normalized layers of
# the certified network cast to float32 inside their forward pass): the float64 reference.
FLOAT64_CAPABLE = ["substeps", "chapter-conv"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    order = np.random.RandomState(1).permutation(len(X))
    X = (X[order] / 16).astype(np.float32)
    return X[:600], y[order][:600], X[600:800], y[order][600:800]


@pytest.fixture(scope="module")
def nets(digits):
    Xtr, ytr, _, _ = digits
    common = dict(epochs=6, random_state=0)
    return {
        name: StableClassifier(**common, **kwargs).fit(Xtr, ytr) for name, kwargs in CONFIGS.items()
    }


def _margins(clf, X):
    """Top minus second of the logits the certificates compute (same batch, same rounding)."""
    top2 = np.sort(predict_logits(clf, X), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_certificate_at_the_threshold(nets, digits, name):
    """Margin just above ``sqrt(2) L eps + a``: certified; just below: not, even where the
    margin alone clears ``sqrt(2) L eps``."""
    clf = nets[name]
    _, _, X, y = digits
    L = clf.lipschitz_bound_
    correct = clf.predict(X) == y
    candidates = np.flatnonzero(correct & (_margins(clf, X) > 10 * rounding_allowance(clf, X)))
    assert len(candidates) >= 20, "too few certifiable points to test the threshold"
    for i in candidates[:5]:
        xi, yi = X[i : i + 1], y[i : i + 1]
        margin, allowance = _margins(clf, xi)[0], rounding_allowance(clf, xi)[0]
        assert allowance > 0
        threshold = (margin - allowance) / (math.sqrt(2) * L)  # margin = sqrt(2) L eps + a
        assert certified_accuracy(clf, xi, yi, eps=threshold * (1 - 1e-6)) == 1.0
        assert certified_accuracy(clf, xi, yi, eps=threshold * (1 + 1e-6)) == 0.0
        # between the threshold with the allowance and the one without it
        between = (threshold + margin / (math.sqrt(2) * L)) / 2
        assert certified_accuracy(clf, xi, yi, eps=between) == 0.0
        assert certified_accuracy(clf, xi, yi, eps=between, unit_roundoff=0) == 1.0
        assert make_certified_scorer(eps=between)(clf, xi, yi) == 0.0
        assert make_certified_scorer(eps=between, unit_roundoff=0)(clf, xi, yi) == 1.0
        assert certified_radius(clf, xi)[0] == pytest.approx(threshold, rel=1e-12)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_radius_and_accuracy_agree_at_every_eps(nets, digits, name):
    clf = nets[name]
    _, _, X, y = digits
    radius = certified_radius(clf, X)
    correct = clf.predict(X) == y
    assert np.all(radius >= 0)
    # every radius itself, and points around the radii, as eps
    eps = np.concatenate([[0.0], np.sort(radius)[::17], np.sort(radius)[::17] * (1 + 1e-7)])
    acc = certified_accuracy(clf, X, y, eps=list(eps))
    expected = [np.mean(correct & (radius > e)) for e in eps]
    np.testing.assert_array_equal(acc, expected)
    assert acc[0] > 0.1, "the fixture's network certifies almost nothing at eps=0"
    # the allowance only ever removes certificates
    exact = certified_radius(clf, X, unit_roundoff=0)
    assert np.all(radius <= exact) and np.any(radius < exact)


def _float64_twin(model, n_features):
    """The same layers and weights computing in float64: the reference for the rounding."""
    config = model.get_config()
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float64"
    twin = keras.Sequential.from_config(config)
    twin.build((None, n_features))
    twin.set_weights([w.astype(np.float64) for w in model.get_weights()])
    assert all(layer.compute_dtype == "float64" for layer in twin.layers)
    return twin


@pytest.mark.parametrize("name", FLOAT64_CAPABLE)
def test_allowance_covers_the_float32_rounding_with_room(nets, digits, name):
    """``sqrt(2) ||z32 - z64||`` is far below the half of the allowance meant for it."""
    clf = nets[name]
    _, _, X, _ = digits
    twin = _float64_twin(clf.model_, X.shape[1])
    z32 = clf.model_(X, training=False).numpy().astype(np.float64)
    z64 = twin(X.astype(np.float64), training=False).numpy()
    error = math.sqrt(2) * np.linalg.norm(z32 - z64, axis=1)
    allowance = rounding_allowance(clf, X)
    assert np.all(error > 0), "float32 and float64 agree exactly: the comparison is vacuous"
    assert np.all(error <= allowance / 2 / 50), (error / allowance).max()
    # and small enough not to eat the certificates: below 1% of a unit margin
    assert allowance.max() < 1e-2


def test_allowance_scales_with_roundoff_and_substeps(nets, digits):
    clf = nets["substeps"]
    _, _, X, _ = digits
    X = X[:50]
    default = rounding_allowance(clf, X)
    np.testing.assert_array_equal(default, rounding_allowance(clf, X, unit_roundoff=2.0**-24))
    coarse = rounding_allowance(clf, X, unit_roundoff=2.0**-11)  # float16 / TF32
    assert np.all(coarse >= default * 2.0**13)
    assert np.all(rounding_allowance(clf, X, unit_roundoff=0) == 0)
    # more sub-steps, more roundings: the same weights with a larger flow time
    blocks = [
        layer for layer in clf.model_.layers if getattr(layer, "enforcement", "") == "substeps"
    ]
    steps = [layer.substep_schedule().substeps for layer in blocks]
    try:
        for layer in blocks:
            layer.step_size *= 8
        assert [layer.substep_schedule().substeps for layer in blocks] > steps
        assert np.all(rounding_allowance(clf, X) > default)
    finally:
        for layer in blocks:
            layer.step_size /= 8


def test_allowance_rejects_a_bad_unit_roundoff(nets, digits):
    _, _, X, y = digits
    with pytest.raises(ValueError, match="unit_roundoff=-1"):
        rounding_allowance(nets["dense"], X[:3], unit_roundoff=-1)
    with pytest.raises(ValueError, match="unit_roundoff=-1"):
        make_certified_scorer(eps=0.1, unit_roundoff=-1)
