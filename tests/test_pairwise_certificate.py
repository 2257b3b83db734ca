"""GloRo's pairwise certificate (``rule="pairwise"``): sound, never looser than the global rule.

``z_t - z_j`` of a linear last layer moves by at most ``||w_t - w_j|| L_body ||delta||``;
the tests attack the certified points with both PGD attacks at the radius, compare
the two rules point by point, and check the rule by hand on a network whose body is
the identity.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from stablekeras import StableClassifier
from stablekeras.models import lipschitz_bound
from stablekeras.robustness import (
    certified_accuracy,
    certified_radius,
    generate_adversarial,
    make_certified_scorer,
)

X, y = load_digits(return_X_y=True)
X = (X / 16).astype("float32")


@pytest.fixture(scope="module")
def capped():
    """The chapter's network with lift and projection capped at 1: a non-orthogonal last layer."""
    clf = StableClassifier(
        network="chapter",
        max_norm=1.0,
        dense_width=None,
        width=16,
        depth=2,
        loss="hinge",
        margin=0.3,
        epochs=20,
        batch_size=64,
        random_state=0,
    )
    return clf.fit(X[:1000], y[:1000])


@pytest.fixture(scope="module")
def certified():
    """The default certified network: an orthogonal projection."""
    return StableClassifier(dense_width=32, dense_depth=1, epochs=5, random_state=0).fit(
        X[:1000], y[:1000]
    )


def test_pairwise_is_never_looser_and_gains_on_a_non_orthogonal_head(capped):
    glob = certified_radius(capped, X[1000:1400])
    pair = certified_radius(capped, X[1000:1400], rule="pairwise")
    assert np.all(pair >= glob * (1 - 1e-9))
    assert np.mean(pair) > 1.05 * np.mean(glob)  # the capped head's rows are not orthonormal
    eps = [0.05, 0.1, 0.2]
    acc_g = certified_accuracy(capped, X[1000:1400], y[1000:1400], eps=eps)
    acc_p = certified_accuracy(capped, X[1000:1400], y[1000:1400], eps=eps, rule="pairwise")
    assert np.all(acc_p >= acc_g) and acc_p.sum() > acc_g.sum()


def test_pairwise_certified_points_survive_both_attacks(capped):
    Xe, ye = X[1000:1300], y[1000:1300]
    radius = certified_radius(capped, Xe, rule="pairwise")
    correct = capped.predict(Xe) == ye
    eps = 0.15
    cert = correct & (radius > eps)
    assert cert.sum() >= 20  # enough certified points for the check to mean something
    for loss in ("crossentropy", "margin"):
        adv = generate_adversarial(
            capped, Xe, ye, attack="pgd", eps=eps, steps=50, step_size=0.1 * eps, loss=loss
        )
        assert np.all(capped.predict(adv)[cert] == ye[cert]), loss


def test_the_rules_agree_with_an_orthogonal_projection(certified):
    glob = certified_radius(certified, X[1000:1200])
    pair = certified_radius(certified, X[1000:1200], rule="pairwise")
    # ||w_t - w_j|| = sqrt(2) for orthonormal rows, and L = L_body
    np.testing.assert_allclose(pair, glob, rtol=1e-4, atol=1e-6)


def _fitted_with(build, n_features, n_classes=3):
    """A classifier wrapping ``build``'s network, fitted briefly, then given chosen weights."""
    rng = np.random.default_rng(0)
    Xs = rng.random((30, n_features)).astype("float32")
    clf = StableClassifier(model=lambda shape, n, **_: build(), epochs=1, random_state=0)
    return clf.fit(Xs, np.arange(30) % n_classes)


def test_pairwise_rule_by_hand():
    """Identity body (L_body = 1), a diagonal head: the radius is min_j gap_j / ||w_t - w_j||."""

    def build():
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(inputs))

    est = _fitted_with(build, 3)
    est.model_.layers[-1].kernel.assign(np.diag([1.0, 2.0, 4.0]).astype("float32"))
    est.lipschitz_bound_ = lipschitz_bound(est.model_)
    assert est.lipschitz_bound_ == pytest.approx(4.0)
    x = np.array([[3.0, 0.5, 0.2]], "float32")  # logits 3, 1, 0.8
    pair = certified_radius(est, x, rule="pairwise", unit_roundoff=0)
    expected = min((3 - 1) / math.hypot(1, 2), (3 - 0.8) / math.hypot(1, 4))
    assert pair[0] == pytest.approx(expected, rel=1e-6)
    glob = certified_radius(est, x, unit_roundoff=0)
    assert glob[0] == pytest.approx((3 - 1) / (math.sqrt(2) * 4), rel=1e-6)
    assert pair[0] > glob[0]


def test_pairwise_needs_a_linear_head_and_a_known_rule(certified):
    with pytest.raises(ValueError, match="rule='local'"):
        certified_radius(certified, X[:5], rule="local")
    with pytest.raises(ValueError, match="rule='local'"):
        make_certified_scorer(eps=0.1, rule="local")

    def build():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, activation="tanh")(inputs))

    est = _fitted_with(build, 4)
    with pytest.raises(ValueError, match="last layer is linear"):
        certified_radius(est, np.zeros((2, 4), "float32"), rule="pairwise")
    scorer = make_certified_scorer(eps=0.05, rule="pairwise")
    assert "rule='pairwise'" in repr(scorer)
    assert 0.0 <= scorer(certified, X[1000:1100], y[1000:1100]) <= 1.0
