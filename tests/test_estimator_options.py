"""The fit-time options of the estimators: callbacks, class weights, warm start, the
user's own model, and metadata routing of the fit's options through pipelines and
grid searches."""

import functools
import os
import pickle
import threading

import keras
import numpy as np
import pytest
import sklearn
import tensorflow as tf
from _support.lipschitz_probe import probe
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.metrics import balanced_accuracy_score, get_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils._param_validation import InvalidParameterError

from stablekeras import StableClassifier, StableRegressor, lipschitz_bound
from stablekeras.export import INPUT_NAME, SIGNATURE_NAME, export_saved_model
from stablekeras.layers import NonExpansiveDense, SpectralDense
from stablekeras.robustness import (
    certified_accuracy,
    make_certified_scorer,
    make_robustness_scorer,
    robustness_curve,
)

# a small dense stage keeps the default (certified) network quick to fit
SMALL = dict(width=8, depth=1, dense_width=16, dense_depth=1, epochs=3, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32) / 16.0, y


# ---- module-level helpers (picklable: grid-search workers and pickle import them) -----------


class RecordEpochs(keras.callbacks.Callback):
    """Keeps, in its own state, the epochs it saw, the keys of their logs and the
    weights the network had when training began."""

    def __init__(self):
        super().__init__()
        self.epochs = []
        self.keys = set()
        self.initial_weights = None

    def on_train_begin(self, logs=None):
        self.initial_weights = [np.array(w) for w in self.model.get_weights()]

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.keys.update(logs or {})


def epochs_seen(estimator, X, y):
    """A scorer: how many epochs the (first) callback of the fit recorded."""
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    return float(len(final.callbacks_[0].epochs))


def fraction_predicted_0_or_1(estimator, X, y):
    """A scorer: the share of predictions that are 0 or 1."""
    return float(np.isin(estimator.predict(X), [0, 1]).mean())


def certified_network(input_shape, n_outputs, width=16, depth=2):
    """lift -> ``depth`` non-expansive steps -> projection, both capped at norm 1."""
    layers = [keras.Input(input_shape), SpectralDense(width, max_norm=1.0, name="lift")]
    layers += [NonExpansiveDense(width, name=f"step_{i}") for i in range(depth)]
    layers.append(SpectralDense(n_outputs, max_norm=1.0, name="projection"))
    return keras.Sequential(layers)


def functional_certified_network(input_shape, n_outputs, width=16):
    inputs = keras.Input(input_shape)
    h = SpectralDense(width, max_norm=1.0)(inputs)
    h = NonExpansiveDense(width)(h)
    return keras.Model(inputs, SpectralDense(n_outputs, max_norm=1.0)(h))


def gelu_network(input_shape, n_outputs):
    """A network with a layer that cannot be bounded (GELU is not monotone)."""
    inputs = keras.Input(input_shape)
    h = keras.layers.Dense(16, activation="gelu", name="gelu_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, name="out")(h))


class UnboundedLayer(keras.layers.Layer):
    """Doubles its input and reports an infinite bound."""

    def call(self, inputs):
        return 2.0 * inputs

    def lipschitz_bound(self):
        return float("inf")


def infinite_bound_network(input_shape, n_outputs):
    return keras.Sequential(
        [keras.Input(input_shape), UnboundedLayer(name="doubling"), SpectralDense(n_outputs)]
    )


# ---- callbacks ---------------------------------------------------------------------------------


def test_callbacks_get_fresh_state_for_every_fit(digits):
    X, y = digits
    mine = RecordEpochs()
    clf = StableClassifier(
        **SMALL, callbacks=[mine, RecordEpochs, functools.partial(keras.callbacks.TerminateOnNaN)]
    )
    clf.fit(X[:200], y[:200])
    assert mine.epochs == [] and mine.model is None  # the user's instance never reaches Keras
    assert [type(c) for c in clf.callbacks_] == [
        RecordEpochs,
        RecordEpochs,
        keras.callbacks.TerminateOnNaN,
    ]
    assert clf.callbacks_[0] is not mine
    assert clf.callbacks_[0].epochs == clf.callbacks_[1].epochs == [0, 1, 2]
    first = clf.callbacks_
    clf.fit(X[:200], y[:200])  # a refit: new copies, nothing carried over
    assert clf.callbacks_[0] is not first[0] and clf.callbacks_[0].epochs == [0, 1, 2]
    assert first[0].epochs == [0, 1, 2]

    fresh = clone(clf)
    assert fresh.callbacks[0] is not mine and fresh.callbacks[0].epochs == []
    back = pickle.loads(pickle.dumps(clf))
    assert not hasattr(back, "callbacks_")  # they hold the Keras model: not pickled
    assert type(back.callbacks[0]) is RecordEpochs and back.callbacks[0].epochs == []
    np.testing.assert_array_equal(back.predict(X[:20]), clf.predict(X[:20]))


def test_fit_time_callbacks_come_after_the_parameter(digits):
    X, y = digits
    clf = StableClassifier(**SMALL, callbacks=[keras.callbacks.TerminateOnNaN()])
    extra = RecordEpochs()
    clf.fit(X[:200], y[:200], callbacks=[extra])
    assert isinstance(clf.callbacks_[0], keras.callbacks.TerminateOnNaN)
    assert clf.callbacks_[1].epochs == [0, 1, 2] and extra.epochs == []


class _Locked(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


@pytest.mark.parametrize(
    "callbacks, error, match",
    [
        ([keras.callbacks.TerminateOnNaN(), "stop"], TypeError, r"callbacks\[1\]"),
        ([lambda: "not a callback"], TypeError, r"callbacks\[0\].*must return"),
        ([_Locked()], TypeError, r"cannot be deep-copied.*factory"),
        ("TerminateOnNaN", InvalidParameterError, "'callbacks' parameter"),
        (
            [keras.callbacks.EarlyStopping(monitor="val_loss")],
            ValueError,
            r"monitors 'val_loss'.*early_stopping=True",
        ),
    ],
    ids=["not-a-callback", "bad-factory", "uncopyable", "not-a-list", "val-without-validation"],
)
def test_bad_callbacks_fail_before_training(digits, callbacks, error, match):
    X, y = digits
    clf = StableClassifier(**SMALL, callbacks=callbacks)
    with pytest.raises(error, match=match):
        clf.fit(X[:50], y[:50])
    assert not hasattr(clf, "model_")


def test_callbacks_monitoring_validation_metrics_use_the_early_stopping_split(digits):
    X, y = digits
    clf = StableClassifier(
        **{**SMALL, "epochs": 4},
        early_stopping=True,
        n_iter_no_change=4,
        validation_fraction=0.25,
        callbacks=[RecordEpochs, keras.callbacks.EarlyStopping(monitor="val_loss", patience=50)],
    ).fit(X[:300], y[:300])
    assert "val_loss" in clf.callbacks_[0].keys
    assert clf.callbacks_[0].epochs == list(range(clf.n_iter_))
    # the user's EarlyStopping ran on the same validation loss as the estimator's
    assert clf.callbacks_[1].best == pytest.approx(min(clf.history_["val_loss"]))


# ---- class weights -----------------------------------------------------------------------------


def test_balanced_class_weight_raises_balanced_accuracy(digits):
    X, y = digits
    Xtr, ytr, Xte, yte = X[:1200], y[:1200], X[1200:], y[1200:]
    rng = np.random.RandomState(0)
    # classes 0-4 in full (about 120 rows each), 6 rows of each of the classes 5-9
    keep = [
        np.flatnonzero(ytr == c) if c < 5 else rng.choice(np.flatnonzero(ytr == c), 6, False)
        for c in range(10)
    ]
    idx = np.concatenate(keep)
    kw = dict(dense_width=32, dense_depth=1, epochs=10, random_state=0)
    plain = StableClassifier(**kw).fit(Xtr[idx], ytr[idx])
    balanced = StableClassifier(**kw, class_weight="balanced").fit(Xtr[idx], ytr[idx])
    before = balanced_accuracy_score(yte, plain.predict(Xte))
    after = balanced_accuracy_score(yte, balanced.predict(Xte))
    # measured: 0.45 -> 0.78 (seeds 1 and 2: 0.45 -> 0.82, 0.45 -> 0.79)
    assert after >= before + 0.15, (before, after)


def test_class_weight_multiplies_sample_weight_and_missing_classes_weigh_one(digits):
    X, y = digits
    X, y = X[:200], y[:200]
    w = np.random.default_rng(0).uniform(0.5, 1.5, len(y))
    both = StableClassifier(**SMALL, class_weight={3: 0.0, 5: 2.5}).fit(X, y, sample_weight=w)
    by_hand = w * np.select([y == 3, y == 5], [0.0, 2.5], 1.0)
    explicit = StableClassifier(**SMALL).fit(X, y, sample_weight=by_hand)
    np.testing.assert_allclose(both.predict_proba(X), explicit.predict_proba(X), rtol=1e-5)
    unweighted = StableClassifier(**SMALL).fit(X, y, sample_weight=w)
    assert not np.allclose(both.predict_proba(X), unweighted.predict_proba(X))
    back = pickle.loads(pickle.dumps(both))
    assert back.class_weight == {3: 0.0, 5: 2.5}
    np.testing.assert_array_equal(back.predict_proba(X), both.predict_proba(X))
    again = clone(both).fit(X, y, sample_weight=w)  # the clone weighs the same way
    np.testing.assert_allclose(again.predict_proba(X), both.predict_proba(X), rtol=1e-5)


def test_class_weight_keys_are_the_labels(digits):
    X, y = digits
    names = np.array([f"digit-{v}" for v in y[:200]])
    a = StableClassifier(**SMALL, class_weight={"digit-3": 0.0}).fit(X[:200], names)
    b = StableClassifier(**SMALL).fit(X[:200], names, sample_weight=(names != "digit-3") * 1.0)
    np.testing.assert_allclose(a.predict_proba(X[:50]), b.predict_proba(X[:50]), rtol=1e-5)


@pytest.mark.parametrize(
    "class_weight, error, match",
    [
        ({3: 1.0, 11: 2.0, "x": 1.0}, ValueError, r"keys \[11, 'x'\] are not classes"),
        ({3: -1.0}, ValueError, r"class_weight\[3\]=-1.0"),
        ({3: float("nan")}, ValueError, r"class_weight\[3\]=nan"),
        ("auto", InvalidParameterError, "'class_weight' parameter"),
    ],
)
def test_bad_class_weight_fails_before_training(digits, class_weight, error, match):
    X, y = digits
    clf = StableClassifier(**SMALL, class_weight=class_weight)
    with pytest.raises(error, match=match):
        clf.fit(X[:50], y[:50])
    assert not hasattr(clf, "model_")


def test_class_weight_on_a_dataset(digits):
    X, y = digits
    X, y = X[:256], y[:256]
    weights = np.where(y == 3, 0.0, np.where(y == 5, 2.0, 1.0)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((X, y)).batch(64)
    dsw = tf.data.Dataset.from_tensor_slices((X, y, weights)).batch(64)
    a = StableClassifier(**SMALL, class_weight={3: 0.0, 5: 2.0}).fit(ds)
    b = StableClassifier(**SMALL).fit(dsw)
    np.testing.assert_allclose(a.predict_proba(X[:50]), b.predict_proba(X[:50]), rtol=1e-5)
    with pytest.raises(ValueError, match="'balanced' needs the class counts"):
        StableClassifier(**SMALL, class_weight="balanced").fit(ds)


# ---- warm start --------------------------------------------------------------------------------


def test_warm_start_continues_the_fitted_network(digits):
    X, y = digits
    clf = StableClassifier(**SMALL, warm_start=True).fit(X[:300], y[:300])
    model, fitted = clf.model_, [np.array(w) for w in clf.model_.get_weights()]
    first_bound, first_history = clf.lipschitz_bound_, clf.history_["loss"]
    clf.set_params(epochs=2, callbacks=[RecordEpochs])
    clf.fit(X[:300], y[:300])
    assert clf.model_ is model
    for before, start in zip(fitted, clf.callbacks_[0].initial_weights):
        np.testing.assert_array_equal(before, start)  # training resumed from the fitted weights
    assert clf.n_iter_ == 5
    assert clf.history_["loss"][:3] == first_history and len(clf.history_["loss"]) == 5
    assert clf.history_["loss"][3] < first_history[0]
    assert clf.lipschitz_bound_ == pytest.approx(lipschitz_bound(clf.model_))
    assert clf.lipschitz_bound_ != first_bound

    cold = clone(clf).set_params(warm_start=False)
    cold.fit(X[:300], y[:300])
    assert cold.n_iter_ == 2
    # a pickled estimator continues too
    back = pickle.loads(pickle.dumps(clf))
    back.fit(X[:300], y[:300])
    assert back.n_iter_ == 7 and len(back.history_["loss"]) == 7


def test_warm_start_off_builds_a_new_network(digits):
    X, y = digits
    clf = StableClassifier(**SMALL).fit(X[:200], y[:200])
    model = clf.model_
    clf.fit(X[:200], y[:200])
    assert clf.model_ is not model and clf.n_iter_ == 3


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda X, y: (X[:, :10], y, {}), r"number of features changed.*=64, X has 10"),
        (lambda X, y: (X, y % 5, {}), r"classes changed.*y has \[0, 1, 2, 3, 4\]"),
        (lambda X, y: (X[:, :10], 0 * y, {}), r"only one class"),  # not a warm-start error
        (lambda X, y: (X, y.astype(str), {}), r"classes changed.*y has \['0', '1'"),
        (lambda X, y: (X, y, {"width": 16}), r"width=8 -> 16"),
        (lambda X, y: (X, y, {"image_shape": (8, 8, 1)}), r"image_shape=None -> \(8, 8, 1\)"),
        (
            lambda X, y: (X, y, {"model": certified_network}),
            r"model=None -> <function certified_network",
        ),
    ],
    ids=["features", "classes", "one-class", "label-type", "width", "image_shape", "model"],
)
def test_warm_start_refuses_a_change_and_keeps_the_fit(digits, change, match):
    X, y = digits
    clf = StableClassifier(**SMALL, warm_start=True).fit(X[:200], y[:200])
    model, proba, n_iter = clf.model_, clf.predict_proba(X[:20]), clf.n_iter_
    Xc, yc, params = change(X[:200], y[:200])
    clf.set_params(**params)
    with pytest.raises(ValueError, match=match):
        clf.fit(Xc, yc)
    assert clf.model_ is model and clf.n_iter_ == n_iter
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    clf.set_params(**{k: StableClassifier(**SMALL).get_params()[k] for k in params})
    np.testing.assert_array_equal(clf.predict_proba(X[:20]), proba)


def test_warm_start_regressor_outputs_and_dataset(digits):
    X, y = digits
    Y = np.c_[y, -y].astype(np.float32)
    reg = StableRegressor(**SMALL, warm_start=True).fit(X[:200], Y[:200])
    with pytest.raises(ValueError, match=r"number of outputs changed.*=2, y has 1"):
        reg.fit(X[:200], y[:200].astype(np.float32))
    assert reg.n_outputs_ == 2
    reg.fit(X[:200], Y[:200] + 1.0)
    assert reg.n_iter_ == 6
    ds = tf.data.Dataset.from_tensor_slices((X[:200], Y[:200])).batch(50)
    reg.fit(ds)
    assert reg.n_iter_ == 9


def test_warm_start_in_a_strategy(digits):
    X, y = digits
    clf = StableClassifier(**SMALL, distribute="mirrored", warm_start=True)
    clf.fit(X[:200], y[:200]).fit(X[:200], y[:200])
    assert clf.n_iter_ == 6
    back = pickle.loads(pickle.dumps(clf))
    with pytest.raises(ValueError, match="not built in a distribution strategy"):
        back.fit(X[:200], y[:200])
    plain = StableClassifier(**SMALL, warm_start=True).fit(X[:200], y[:200])
    with pytest.raises(ValueError, match="not built in a distribution strategy"):
        plain.set_params(distribute="mirrored").fit(X[:200], y[:200])
    assert plain.n_iter_ == 3
    # with a strategy object (which does not pickle), the fitted estimator still pickles
    strategy = tf.distribute.MirroredStrategy()
    fitted = StableClassifier(**SMALL, distribute=strategy, warm_start=True).fit(X[:200], y[:200])
    fitted.fit(X[:200], y[:200])
    assert fitted.n_iter_ == 6
    assert pickle.loads(pickle.dumps(fitted)).distribute == "mirrored"


# ---- the user's own model ----------------------------------------------------------------------


def test_a_hand_built_certified_network_gets_the_full_api(digits, tmp_path):
    X, y = digits
    clf = StableClassifier(
        model=certified_network,
        model_params={"width": 32, "depth": 2},
        loss="offset_crossentropy",
        temperature=8.0,
        epochs=20,
        batch_size=128,
        random_state=0,
    ).fit(X[:1000], y[:1000])
    assert [layer.name for layer in clf.model_.layers] == ["lift", "step_0", "step_1", "projection"]
    assert clf.score(X[1000:], y[1000:]) > 0.7  # measured 0.79
    assert clf.lipschitz_bound_ == pytest.approx(lipschitz_bound(clf.model_))
    assert clf.lipschitz_bound_ <= 1.0 + 1e-5 and clf.lipschitz_bound_error_ is None
    found = probe([lambda x: clf.model_(x, training=False)], (64,), scale=0.5)[0]
    assert found <= clf.lipschitz_bound_ * (1 + 1e-5)

    Xte, yte = X[1000:1200], y[1000:1200]
    cert = certified_accuracy(clf, Xte, yte, eps=[0.0, 0.1])
    assert cert[0] >= cert[1] > 0.5  # measured 0.815, 0.71
    assert make_certified_scorer(eps=0.1)(clf, Xte, yte) == pytest.approx(cert[1])
    robust = make_robustness_scorer(eps=0.1, steps=5)(clf, Xte, yte)
    assert cert[1] <= robust <= clf.score(Xte, yte)

    path = export_saved_model(clf, tmp_path / "served")
    sig = tf.saved_model.load(os.fspath(path)).signatures[SIGNATURE_NAME]
    served = sig(**{INPUT_NAME: tf.constant(Xte)})
    np.testing.assert_array_equal(served["classes"].numpy(), clf.predict(Xte))

    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(Xte), clf.predict_proba(Xte))
    assert back.lipschitz_bound_ == clf.lipschitz_bound_
    fresh = clone(clf)
    assert fresh.model is certified_network and fresh.model_params == {"width": 32, "depth": 2}
    assert fresh.model_params is not clf.model_params


def test_a_functional_model_in_a_regressor_is_certified(digits):
    X, y = digits
    reg = StableRegressor(model=functional_certified_network, epochs=3, random_state=0)
    reg.fit(X[:300], y[:300].astype(np.float32))
    assert reg.model_.layers[-1].name == "unstandardize"
    assert reg.lipschitz_bound_ == pytest.approx(lipschitz_bound(reg.model_))
    assert reg.lipschitz_bound_ <= (1 + 1e-5) * float(np.asarray(reg.model_.layers[-1].scale).max())
    found = probe([lambda x: reg.model_(x, training=False)], (64,), scale=0.5)[0]
    assert found <= reg.lipschitz_bound_ * (1 + 1e-5)
    assert reg.predict(X[:5]).shape == (5,)


@pytest.mark.parametrize(
    "builder, layer, why",
    [
        (gelu_network, "gelu_hidden", "not monotone"),
        (infinite_bound_network, "doubling", "lipschitz_bound\\(\\)=inf"),
    ],
)
def test_a_layer_that_cannot_be_bounded_leaves_no_certificate(digits, builder, layer, why):
    X, y = digits
    clf = StableClassifier(model=builder, epochs=2, random_state=0).fit(X[:200], y[:200])
    assert clf.lipschitz_bound_ is None
    assert layer in clf.lipschitz_bound_error_ and why.replace("\\", "") in (
        clf.lipschitz_bound_error_
    )
    for certify in (
        lambda: certified_accuracy(clf, X[200:250], y[200:250], eps=0.1),
        lambda: make_certified_scorer(eps=0.1)(clf, X[200:250], y[200:250]),
    ):
        with pytest.raises(TypeError, match=rf"no certificate.*{layer!r}.*{why}"):
            certify()
    curve = robustness_curve(clf, X[200:250], y[200:250], eps=[0.0, 0.1], steps=2)
    assert curve["certified"] is None and curve["lipschitz_bound"] is None
    assert clf.score(X[200:250], y[200:250]) >= 0.0  # the rest of the API works


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"model": lambda shape, n: "not a model"}, TypeError, "must build a keras.Model.*str"),
        (
            {"model": lambda shape, n: certified_network((10,), n)},
            ValueError,
            r"inputs of shape \[\(None, 10\)\].*n_features=64",
        ),
        (
            {"model": lambda shape, n: certified_network(shape, n + 1)},
            ValueError,
            r"output .* is \(2, 11\); expected shape \(2, 10\): one logit",
        ),
        (
            {"model": certified_network((64,), 10)},
            InvalidParameterError,
            "not a built model",
        ),
        ({"model_params": {"width": 8}}, ValueError, "`model_params`.*`model`, which is None"),
        (
            {"model": certified_network, "model_params": {"widht": 8}},
            TypeError,
            "unexpected keyword argument 'widht'",
        ),
    ],
    ids=["not-a-model", "input-shape", "output-shape", "built-model", "params-alone", "typo"],
)
def test_a_bad_model_fails_before_training(digits, params, error, match):
    X, y = digits
    clf = StableClassifier(epochs=1, **params)
    with pytest.raises(error, match=match):
        clf.fit(X[:50], y[:50])
    assert not hasattr(clf, "model_")


# ---- grid search in worker processes -----------------------------------------------------------


def test_every_option_in_a_grid_search_with_two_workers(digits):
    X, y = digits
    mine = RecordEpochs()
    clf = StableClassifier(
        model=certified_network,
        callbacks=[mine],
        warm_start=True,
        epochs=4,
        random_state=0,
    )
    grid = {
        "class_weight": [None, "balanced"],
        "model_params": [{"width": 8, "depth": 1}, {"width": 16, "depth": 1}],
    }
    scoring = {"accuracy": "accuracy", "epochs": epochs_seen}
    search = GridSearchCV(clf, grid, cv=2, n_jobs=2, scoring=scoring, refit="accuracy")
    search.fit(X[:400], y[:400])
    # every fold of every candidate had its own callback, which saw only its own epochs
    for split in range(2):
        np.testing.assert_array_equal(search.cv_results_[f"split{split}_test_epochs"], 4.0)
    assert mine.epochs == []
    best = search.best_estimator_
    assert best.callbacks_[0].epochs == [0, 1, 2, 3] and best.n_iter_ == 4
    assert best.model_params in grid["model_params"]
    assert best.lipschitz_bound_ <= 1.0 + 1e-5
    best.fit(X[:400], y[:400])  # the refitted best continues (warm start)
    assert best.n_iter_ == 8


# ---- metadata routing ------------------------------------------------------------------------


# four epochs of two steps: a larger learning rate than the default
QUICK = {**SMALL, "epochs": 4, "learning_rate": 0.03}


def test_sample_weight_and_callbacks_route_through_pipeline_and_grid_search(digits):
    X, y = digits
    X, y = X[:400], y[:400]
    only_01 = np.isin(y, [0, 1]).astype(np.float64)  # weight 0 on every other class
    with sklearn.config_context(enable_metadata_routing=True):
        # the scorer is told to leave the weights alone (they are for training here)
        accuracy = get_scorer("accuracy").set_score_request(sample_weight=False)
        clf = StableClassifier(**QUICK)
        pipe = make_pipeline(MinMaxScaler(), clf)
        search = GridSearchCV(
            pipe,
            {"stableclassifier__width": [8, 12]},
            cv=2,
            n_jobs=2,
            scoring={"accuracy": accuracy, "epochs": epochs_seen, "01": fraction_predicted_0_or_1},
            refit="accuracy",
        )
        with pytest.raises(UnsetMetadataPassedError, match="StableClassifier.set_fit_request"):
            pipe.fit(X, y, sample_weight=only_01)  # not requested: refused, not dropped
        clf.set_fit_request(sample_weight=True, callbacks=True)
        mine = RecordEpochs()
        search.fit(X, y, sample_weight=only_01, callbacks=[mine])
    assert not sklearn.get_config()["enable_metadata_routing"]
    for split in range(2):
        np.testing.assert_array_equal(search.cv_results_[f"split{split}_test_epochs"], 4.0)
        # trained on classes 0 and 1 alone, every fold predicts (almost) only them
        assert (search.cv_results_[f"split{split}_test_01"] > 0.9).all()
    assert mine.epochs == []
    best = search.best_estimator_[-1]
    assert best.callbacks_[0].epochs == [0, 1, 2, 3]
    assert fraction_predicted_0_or_1(search.best_estimator_, X, y) > 0.9
    # the control: the opposite weights leave 0 and 1 (almost) never predicted
    control = make_pipeline(MinMaxScaler(), StableClassifier(**QUICK))
    control.fit(X, y, stableclassifier__sample_weight=1.0 - only_01)
    assert fraction_predicted_0_or_1(control, X, y) < 0.1


@pytest.mark.parametrize(
    "params, name",
    [
        ({"warm_start": "yes"}, "warm_start"),
        ({"model_params": [("width", 8)]}, "model_params"),
    ],
)
def test_invalid_option_values_are_named(digits, params, name):
    X, y = digits
    for estimator in (StableClassifier, StableRegressor):
        est = estimator(**SMALL, **params)
        with pytest.raises(ValueError, match=rf"'{name}' parameter of {estimator.__name__}"):
            est.fit(X[:50], y[:50])
        assert not hasattr(est, "model_")
