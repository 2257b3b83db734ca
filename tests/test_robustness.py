"""Tests for stablekeras.robustness: attacks, robust and certified accuracy, scorers, curves.

Every estimator is fitted once per module on scikit-learn's digits (pixels / 16).
"""

from __future__ import annotations

import copy
import pickle

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402

from stablekeras import StableClassifier, robustness  # noqa: E402
from stablekeras.robustness import (  # noqa: E402
    attacks,
    certified_accuracy,
    certified_mask,
    certified_radius,
    format_table,
    generate_adversarial,
    make_certified_scorer,
    make_robustness_scorer,
    plot_robustness_curve,
    robust_accuracy,
    robustness_curve,
    rounding_allowance,
)


# ---- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(X))
    X = (X[order] / 16).astype(np.float32)
    y = y[order]
    return X[:1200], y[:1200], X[1200:1500], y[1200:1500]


#: The chapter's dense network with one Euler step per block, trained as these tests were
#: written for (cross-entropy, batches of 128), independent of the estimator's defaults.
CHAPTER = dict(
    network="chapter", enforcement="project", step_size=1.0, dense_width=None, loss="crossentropy",
    margin=1.0, batch_size=128, learning_rate=0.01, weight_decay=1e-5, random_state=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def resnet(digits):
    """The chapter's unconstrained ResNet: accurate, and easy to attack."""
    Xtr, ytr, _, _ = digits
    return StableClassifier(**CHAPTER, constraint="none", depth=2, epochs=10).fit(Xtr, ytr)


@pytest.fixture(scope="module")
def certified_net(digits):
    """The chapter's non-expansive blocks, lift and projection capped at norm 1, hinge loss:
    L <= 1."""
    Xtr, ytr, _, _ = digits
    clf = StableClassifier(
        **{**CHAPTER, "loss": "hinge", "margin": 0.5}, max_norm=1.0, depth=2, width=32, epochs=10
    )
    return clf.fit(Xtr, ytr)


class _CountingModel(keras.Model):
    """Wraps a model and counts the Python calls of ``call``: a compiled function runs
    ``call`` only while it is traced, so the count goes up exactly when one retraces."""

    def __init__(self, inner):
        super().__init__(name="counting")
        self.inner = inner
        self.calls = 0

    def call(self, x, training=None):
        self.calls += 1
        return self.inner(x, training=training)


def _counted(estimator):
    """A copy of a fitted estimator whose ``model_`` counts its traces (a fresh cache)."""
    counted = copy.copy(estimator)
    counted.model_ = _CountingModel(estimator.model_)
    return counted


# ---- attack mechanics ------------------------------------------------------------------------
@pytest.mark.parametrize("attack", ["fgsm", "pgd", "bim", "mim"])
@pytest.mark.parametrize("norm", [2, np.inf])
def test_adversarial_examples_stay_in_ball_and_clip_range(resnet, digits, attack, norm):
    _, _, X, y = digits
    X, y = X[:100], y[:100]
    eps = 0.6 if norm == 2 else 0.05
    X_adv = generate_adversarial(resnet, X, y, attack=attack, eps=eps, norm=norm, steps=5)
    assert X_adv.dtype == np.float32 and X_adv.shape == X.shape
    delta = (X_adv - X).astype(np.float64)
    size = np.linalg.norm(delta, axis=1) if norm == 2 else np.abs(delta).max(axis=1)
    assert np.all(size <= eps + 1e-5)
    assert X_adv.min() >= 0.0 and X_adv.max() <= 1.0
    assert size.max() > 0.5 * eps  # it did move


def test_random_start_is_deterministic_with_random_state(resnet, digits):
    _, _, X, y = digits
    X, y = X[:150], y[:150]
    kw = dict(eps=0.5, steps=3, random_start=True, batch_size=64)
    a = generate_adversarial(resnet, X, y, random_state=0, **kw)
    b = generate_adversarial(resnet, X, y, random_state=0, **kw)
    c = generate_adversarial(resnet, X, y, random_state=1, **kw)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert np.all(np.linalg.norm(a - X, axis=1) <= 0.5 + 1e-5)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_pgd_breaks_the_unconstrained_network(resnet, digits):
    _, _, X, y = digits
    clean = resnet.score(X, y)
    assert clean > 0.85
    robust = robust_accuracy(resnet, X, y, eps=0.5, norm=2, steps=20)
    assert robust < 0.5 * clean
    # the margin (Carlini-Wagner) loss and l-inf PGD also break it
    assert robust_accuracy(resnet, X, y, eps=0.5, steps=10, loss="margin") < 0.5 * clean
    assert robust_accuracy(resnet, X, y, eps=0.08, steps=10, norm="linf") < 0.5 * clean


@pytest.mark.parametrize("norm", [2, np.inf])
def test_attacks_match_cleverhans_functions(resnet, digits, norm):
    """The eps-scaled while-loop takes CleverHans's steps: compare with direct calls."""
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
    from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    _, _, X, y = digits
    X, y = X[:100], y[:100]
    eps = 0.5 if norm == 2 else 0.05
    x, labels = tf.constant(X), tf.constant(y)

    def model_fn(z):
        return resnet.model_(z, training=False)

    common = dict(clip_min=0.0, clip_max=1.0, y=labels, sanity_checks=False)
    references = {
        "pgd": projected_gradient_descent(model_fn, x, eps, eps / 4, 10, norm, **common),
        "mim": momentum_iterative_method(model_fn, x, eps, eps / 4, 10, norm, **common),
        "fgsm": fast_gradient_method(model_fn, x, eps, norm, **common),
    }
    for attack, reference in references.items():
        ours = generate_adversarial(
            resnet, X, y, attack=attack, eps=eps, norm=norm, steps=10, step_size=eps / 4
        )
        # equal up to rounding; with l-inf, up to the sign of (near-)zero gradient entries
        close = np.abs(ours - reference.numpy()) <= 1e-4
        assert close.mean() > (0.999 if norm == 2 else 0.99), attack


def test_one_trace_for_all_batches_and_radii(resnet, digits):
    _, _, X, y = digits
    X, y = X[:250], y[:250]  # batches of 100, 100 and a partial 50
    counted = _counted(resnet)
    robust_accuracy(counted, X, y, eps=0.3, steps=7, batch_size=100)
    traced = counted.model_.calls
    assert traced > 0
    robust_accuracy(counted, X, y, eps=0.7, steps=7, batch_size=64)
    generate_adversarial(counted, X[:10], y[:10], eps=1.1, steps=3, step_size=0.5)
    assert counted.model_.calls == traced


def test_eps_zero_is_clean_accuracy_without_attack(resnet, digits, monkeypatch):
    _, _, X, y = digits

    def no_attack(*args, **kwargs):
        raise AssertionError("eps=0 built an attack")

    monkeypatch.setattr(attacks, "attack_fn", no_attack)
    assert robust_accuracy(resnet, X, y, eps=0) == pytest.approx(resnet.score(X, y))
    np.testing.assert_array_equal(generate_adversarial(resnet, X, y, eps=0.0), X)


def test_labels_are_mapped_through_classes(resnet, digits):
    _, _, X, y = digits
    assert robust_accuracy(resnet, X, y, eps=0) == pytest.approx(resnet.score(X, y))
    with pytest.raises(ValueError, match="not fitted on"):
        robust_accuracy(resnet, X[:3], np.array([0, 1, 42]), eps=0.1)
    weights = np.ones(len(y))
    assert robust_accuracy(resnet, X, y, eps=0.3, steps=5, sample_weight=weights) == pytest.approx(
        robust_accuracy(resnet, X, y, eps=0.3, steps=5)
    )


def test_progress_bar_when_verbose(resnet, digits, capsys):
    _, _, X, y = digits
    robust_accuracy(resnet, X[:120], y[:120], eps=0.3, steps=7, batch_size=40, verbose=1)
    assert "3/3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attack="deepfool", eps=0.1), "attack='deepfool'"),
        (dict(eps=-0.1), "eps=-0.1"),
        (dict(eps=float("nan")), "eps=nan"),
        (dict(eps=0.1, norm=1), "norm=1"),
        (dict(eps=0.1, norm="l3"), "norm='l3'"),
        (dict(eps=0.1, loss="hinge"), "loss='hinge'"),
        (dict(eps=0.1, steps=0), "steps=0"),
        (dict(eps=0.1, step_size=0.5), "step_size=0.5"),
        (dict(eps=0.1, attack="bim", random_start=True), "no random start"),
        (dict(eps=0.1, clip=(1.0, 0.0)), "clip"),
        (dict(eps=0.1, clip=(0.0, 0.5)), "clip=None"),
    ],
)
def test_invalid_arguments_raise_naming_the_value(resnet, digits, kwargs, match):
    _, _, X, y = digits
    with pytest.raises(ValueError, match=match):
        robust_accuracy(resnet, X[:5], y[:5], **kwargs)


@pytest.mark.parametrize(
    "call",
    [
        lambda est, X, y: robustness.robust_accuracy(est, X, y, eps=0.1, stpes=5),
        lambda est, X, y: robustness.generate_adversarial(est, X, y, eps=0.1, stpes=5),
        lambda est, X, y: robustness.robustness_curve(est, X, y, eps=[0.1], stpes=5),
        lambda est, X, y: robustness.make_robustness_scorer(eps=0.1, stpes=5),
    ],
    ids=["robust_accuracy", "generate_adversarial", "robustness_curve", "scorer"],
)
def test_an_unknown_attack_setting_is_named_with_the_settings_there_are(resnet, digits, call):
    _, _, X, y = digits
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'stpes'.*steps, step_size"):
        call(resnet, X[:5], y[:5])


def test_the_settings_are_one_checked_object_shared_by_every_attacking_function(resnet, digits):
    _, _, X, y = digits
    settings = dict(attack="pgd", eps=0.5, steps=3, loss="both", clip=None)
    scorer = robustness.make_robustness_scorer(**settings)
    assert scorer(resnet, X[:40], y[:40]) == robustness.robust_accuracy(
        resnet, X[:40], y[:40], **settings
    )
    curve = robustness.robustness_curve(resnet, X[:40], y[:40], eps=[0.5], steps=3, clip=None)
    assert curve["robust"][0] == scorer(resnet, X[:40], y[:40])  # the curve's default loss is both
    assert robustness.AttackSettings(norm="L2").norm == 2


# ---- the CleverHans attacks that are broken on this stack ------------------------------------
@pytest.mark.parametrize("name", ["cw", "carlini_wagner_l2", "spsa"])
def test_broken_attacks_are_rejected_with_an_alternative(resnet, digits, name):
    _, _, X, y = digits
    with pytest.raises(ValueError, match=f"attack='{name}' is not supported.*attack='pgd'"):
        robust_accuracy(resnet, X[:5], y[:5], attack=name, eps=0.1)
    with pytest.raises(ValueError, match="not supported"):
        make_robustness_scorer(attack=name, eps=0.1)


def test_upstream_attacks_are_still_broken(resnet, digits):
    """Why they are rejected. If this fails, CleverHans was fixed: consider enabling them."""
    from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
    from cleverhans.tf2.attacks.carlini_wagner_l2 import carlini_wagner_l2
    from cleverhans.tf2.attacks.spsa import spsa

    _, _, X, y = digits
    x = tf.constant(X[:2])
    model_fn = resnet.model_
    with pytest.raises(TypeError):  # Keras 3: optimizer.variables is a list
        carlini_wagner_l2(model_fn, x, binary_search_steps=1, max_iterations=1)
    with pytest.raises((TypeError, ValueError)):  # Keras 3 optimizers take no `lr`
        spsa(model_fn, x[:1], tf.constant(y[:1]), 0.1, 1)
    with pytest.raises(ValueError):  # NumPy 2: ragged sanity-check list
        basic_iterative_method(model_fn, x, 0.1, 0.01, 2, np.inf, clip_min=0.0, clip_max=1.0)


def _bim_reference(model, X, y, eps, alpha, steps):
    """An independent l-inf basic iterative method (Kurakin et al. 2016), eagerly."""
    x0 = tf.constant(X)
    x = tf.identity(x0)
    labels = tf.constant(y)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(x, training=False))
            )
        x = x + alpha * tf.sign(tape.gradient(loss, x))
        x = tf.clip_by_value(tf.clip_by_value(x, x0 - eps, x0 + eps), 0.0, 1.0)
    return x.numpy()


def test_bim_is_the_basic_iterative_method(resnet, digits):
    _, _, X, y = digits
    X, y = X[:100], y[:100]
    eps, steps = 0.05, 8
    ours = generate_adversarial(
        resnet, X, y, attack="bim", eps=eps, norm=np.inf, steps=steps, step_size=eps / 4
    )
    ref = _bim_reference(resnet.model_, X, y, eps, eps / 4, steps)
    # identical up to sign flips of (near-)zero gradient entries
    assert np.mean(np.abs(ours - ref) <= 1e-5) > 0.99
    assert np.mean(resnet.predict(ours) == resnet.predict(ref)) > 0.98


# ---- certificates ------------------------------------------------------------------------------
def test_certificates_are_sound(certified_net, digits):
    _, _, X, y = digits
    assert certified_net.lipschitz_bound_ <= 1.0 + 1e-6
    eps = 0.25
    radius = certified_radius(certified_net, X)
    correct = certified_net.predict(X) == y
    certified = correct & (radius > eps)
    cert_acc = certified_accuracy(certified_net, X, y, eps=eps)
    assert certified.mean() == pytest.approx(cert_acc)
    assert cert_acc > 0.2  # non-trivial
    for loss in ("crossentropy", "margin"):
        X_adv = generate_adversarial(certified_net, X, y, eps=eps, steps=20, loss=loss)
        adv_correct = certified_net.predict(X_adv) == y
        # no certified point is broken, so certified accuracy <= robust accuracy
        assert np.all(adv_correct[certified])
        robust = robust_accuracy(certified_net, X, y, eps=eps, steps=20, loss=loss)
        assert robust == pytest.approx(np.mean(correct & adv_correct))
        assert cert_acc <= robust


def test_certified_accuracy_over_radii(certified_net, digits):
    _, _, X, y = digits
    radii = [0.0, 0.1, 0.25, 0.5, 2.0]
    acc = certified_accuracy(certified_net, X, y, eps=radii)
    assert isinstance(acc, np.ndarray) and acc.shape == (5,)
    assert np.all(np.diff(acc) <= 0) and acc[-1] == 0.0
    assert acc[0] <= certified_net.score(X, y)
    # an l-inf ball of radius e lies in the l2 ball of radius sqrt(64) e
    assert certified_accuracy(certified_net, X, y, eps=0.02, norm="inf") == pytest.approx(
        certified_accuracy(certified_net, X, y, eps=0.16)
    )
    with pytest.raises(ValueError, match="eps=-1"):
        certified_accuracy(certified_net, X, y, eps=[0.1, -1])


def test_certified_mask_on_the_logits_is_certified_accuracy(certified_net, digits):
    """The mask a benchmark computes from its own logits and allowance gives, in the
    mean, exactly the certified accuracy (one rule, one rounding)."""
    _, _, X, y = digits
    X = X.astype(np.float32)
    logits = certified_net.decision_function(X)
    labels = np.searchsorted(certified_net.classes_, y)
    allowance = rounding_allowance(certified_net, X)
    L = certified_net.lipschitz_bound_
    for eps in (0.0, 0.1, 0.3):
        mask = certified_mask(logits, labels, L, eps, allowance)
        assert mask.dtype == bool and mask.shape == (len(X),)
        assert np.mean(mask) == certified_accuracy(certified_net, X, y, eps=eps)
    assert not certified_mask(logits, labels, L, 1e6, allowance).any()


# ---- scorers ------------------------------------------------------------------------------------
def test_scorers_in_grid_search(digits):
    Xtr, ytr, _, _ = digits
    scoring = {
        "accuracy": "accuracy",
        "robust": make_robustness_scorer(eps=0.5, steps=3),
        "robust_small": make_robustness_scorer(eps=0.05, steps=3),
        "certified": make_certified_scorer(eps=0.05),
    }
    search = GridSearchCV(
        StableClassifier(depth=1, epochs=1, random_state=0),
        {"step_size": [0.5, 1.0], "constraint": ["nonexpansive", "none"]},
        scoring=scoring,
        refit="robust",
        cv=2,
    ).fit(Xtr[:300], ytr[:300])
    res = search.cv_results_
    for key in ("mean_test_accuracy", "mean_test_robust", "mean_test_certified"):
        assert np.all(np.isfinite(res[key]))
    # the flat hyperparameters reach the networks: four candidates, four different scores
    assert len(set(np.round(res["mean_test_accuracy"], 12))) == 4
    # sound certificates: no split certifies more points at eps than survive the attack
    for split in range(2):
        certified = res[f"split{split}_test_certified"]
        assert np.all(certified <= res[f"split{split}_test_robust_small"] + 1e-12)
    constrained = np.array([p["constraint"] == "nonexpansive" for p in res["params"]])
    assert np.all(res["mean_test_certified"][constrained] > 0), "nothing certified: vacuous"
    assert search.best_index_ == int(np.argmax(res["mean_test_robust"]))


def test_scorers_with_pipeline_and_string_labels(digits):
    Xtr, ytr, Xte, yte = digits
    names = np.array(list("abcdefghij"))
    pipe = make_pipeline(MinMaxScaler(), StableClassifier(depth=1, epochs=2, random_state=0))
    scorer = make_robustness_scorer(eps=0.5, steps=3, clip=None)
    cv = cross_validate(
        pipe, Xtr[:400], names[ytr[:400]], cv=2, scoring={"accuracy": "accuracy", "robust": scorer}
    )
    assert np.all(np.isfinite(cv["test_robust"]))
    assert np.all(cv["test_robust"] < cv["test_accuracy"])  # the attack found something

    pipe.fit(Xtr[:400], names[ytr[:400]])
    X, y = Xte[:100], names[yte[:100]]
    assert robust_accuracy(pipe, X, y, eps=0, clip=None) == pytest.approx(pipe.score(X, y))
    # eps is measured after the preprocessing: the same as attacking the final estimator
    Z = pipe[:-1].transform(X)
    assert scorer(pipe, X, y) == pytest.approx(
        robust_accuracy(pipe[-1], Z, y, eps=0.5, steps=3, clip=None)
    )
    assert certified_accuracy(pipe, X, y, eps=0.1) == pytest.approx(
        certified_accuracy(pipe[-1], Z, y, eps=0.1)
    )
    # the scaled test points leave [0, 1]: the default clip says so clearly
    out = np.vstack([X, Xtr[:1] * 0 + 2.0])
    with pytest.raises(ValueError, match="after the pipeline's preprocessing.*clip=None"):
        robust_accuracy(pipe, out, np.append(y, "a"), eps=0.1)
    # pickles (travels to joblib workers) and scores the same afterwards
    again = pickle.loads(pickle.dumps(scorer))
    assert again(pipe, X, y) == pytest.approx(scorer(pipe, X, y))
    assert "eps=0.5" in repr(again)


def test_standard_scaler_pipeline(digits):
    Xtr, ytr, Xte, yte = digits
    pipe = make_pipeline(StandardScaler(), StableClassifier(depth=1, epochs=1, random_state=0))
    pipe.fit(Xtr[:300], ytr[:300])
    robust = robust_accuracy(pipe, Xte[:50], yte[:50], eps=1.0, steps=3, clip=None)
    assert 0.0 <= robust <= pipe.score(Xte[:50], yte[:50])


# ---- curves, tables, plots ------------------------------------------------------------------
def test_robustness_curve_table_and_plot(resnet, certified_net, digits, tmp_path):
    _, _, X, y = digits
    radii = [0.0, 0.25, 0.5, 1.0]
    curves = {
        "resnet": robustness_curve(resnet, X, y, eps=radii, steps=10),
        "non-expansive": robustness_curve(certified_net, X, y, eps=radii, steps=10),
    }
    by_loss = {k: c["robust_by_loss"] for k, c in curves.items()}
    for clf, curve in zip((resnet, certified_net), curves.values()):
        assert curve["eps"] == radii
        assert curve["clean"] == pytest.approx(clf.score(X, y))
        assert curve["robust"][0] == curve["clean"]
        assert np.all(np.diff(curve["robust"]) <= 0.01)
        assert np.all(np.array(curve["certified"]) <= np.array(curve["robust"]) + 1e-12)
        assert curve["attack"] == "pgd" and curve["norm"] == "l2" and curve["steps"] == 10
        # the default measure: robust only if both attacks fail, never above either one
        assert curve["loss"] == "both" and set(curve["robust_by_loss"]) == {
            "crossentropy",
            "margin",
        }
        for robust, ce, margin in zip(curve["robust"], *curve["robust_by_loss"].values()):
            assert robust <= min(ce, margin)
    assert curves["resnet"]["name"] == "StableClassifier(none)"
    # the margin attack finds points the cross-entropy attack misses on the certified net
    assert by_loss["non-expansive"]["margin"][-1] < by_loss["non-expansive"]["crossentropy"][-1]
    table = format_table(curves)
    measure = "robust (pgd, l2, 10 steps, cross-entropy and margin)"
    assert table.count("\n") == 1 + 4 and f"| resnet | {measure} |" in table
    detailed = format_table(curves, by_loss=True)
    assert detailed.count("\n") == 1 + 8
    assert "| resnet | robust (pgd, l2, 10 steps, margin only) |" in detailed

    ax = plot_robustness_curve(curves)
    labels = [line.get_label() for line in ax.lines]
    assert labels == [
        "resnet (pgd, cross-entropy and margin)",
        "resnet (certified)",
        "non-expansive (pgd, cross-entropy and margin)",
        "non-expansive (certified)",
    ]
    assert ax.lines[0].get_color() == ax.lines[1].get_color() != ax.lines[2].get_color()
    assert ax.lines[0].get_linestyle() == "-" and ax.lines[1].get_linestyle() == "--"
    path = tmp_path / "curve.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000
    fig, ax2 = plt.subplots()
    assert plot_robustness_curve(curves["resnet"], ax=ax2, certified=False) is ax2
    assert len(ax2.lines) == 1
    plt.close("all")


def test_both_attacks_is_the_per_point_and_of_the_two(resnet, digits):
    """loss="both": a point is robust only if the cross-entropy and the margin attack both fail."""
    _, _, X, y = digits
    X, y = X[:150], y[:150]
    settings = dict(eps=0.5, steps=10)
    clean = resnet.predict(X) == y
    robust = {}
    for loss in ("crossentropy", "margin", "both"):
        adv = generate_adversarial(resnet, X, y, loss=loss, **settings)
        assert np.all(np.linalg.norm(adv - X, axis=1) <= 0.5 + 1e-5)
        robust[loss] = clean & (resnet.predict(adv) == y)
    ce, margin, both = robust["crossentropy"], robust["margin"], robust["both"]
    # each attack breaks points the other misses here, so "both" is below each one
    assert (ce & ~margin).any() and (margin & ~ce).any()
    assert np.array_equal(both, ce & margin)
    assert both.sum() < min(ce.sum(), margin.sum())
    accuracy = robust_accuracy(resnet, X, y, loss="both", **settings)
    assert accuracy == pytest.approx(both.mean())
    scorer = make_robustness_scorer(loss="both", **settings)
    assert scorer(resnet, X, y) == pytest.approx(both.mean())
    assert "loss='both'" in repr(pickle.loads(pickle.dumps(scorer)))
    curve = robustness_curve(resnet, X, y, eps=[0.5], steps=10)
    assert curve["robust"] == [pytest.approx(both.mean())]
    assert curve["robust_by_loss"]["crossentropy"] == [pytest.approx(ce.mean())]
    assert curve["robust_by_loss"]["margin"] == [pytest.approx(margin.mean())]
    assert curve["clean"] == pytest.approx(clean.mean())


def test_relative_step_is_a_fraction_of_each_radius(resnet, digits):
    _, _, X, y = digits
    X, y = X[:100], y[:100]
    curve = robustness_curve(
        resnet, X, y, eps=[0.3, 0.6], steps=10, relative_step=0.1, loss="margin"
    )
    for eps, value in zip(curve["eps"], curve["robust"]):
        direct = robust_accuracy(
            resnet, X, y, eps=eps, steps=10, step_size=0.1 * eps, loss="margin"
        )
        assert value == pytest.approx(direct)
    assert curve["relative_step"] == 0.1
    assert "10 steps of 0.1 eps, margin only" in format_table(curve)
    with pytest.raises(ValueError, match="relative_step=1.5"):
        robustness_curve(resnet, X, y, eps=[0.3], relative_step=1.5)
    with pytest.raises(ValueError, match="either `step_size` or `relative_step`"):
        robustness_curve(resnet, X, y, eps=[0.3], relative_step=0.1, step_size=0.01)


# ---- documentation ---------------------------------------------------------------------------
def test_public_api():
    assert set(robustness.__all__) >= {
        "generate_adversarial",
        "robust_accuracy",
        "make_robustness_scorer",
        "certified_accuracy",
        "certified_radius",
        "make_certified_scorer",
        "robustness_curve",
        "format_table",
        "plot_robustness_curve",
    }
    for name in robustness.__all__:
        obj = getattr(robustness, name)
        assert callable(obj) or isinstance(obj, tuple)
        if callable(obj):
            assert "Examples" in obj.__doc__, name
