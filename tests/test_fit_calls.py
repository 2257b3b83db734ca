"""How a compiled fit calls into TensorFlow: one trace of the train step, an epoch a call.

Two costs of a fit do not train anything. Keras creates the optimizer's slots
inside the first trace of the train step unless a strategy was set, and
tf.function then traces the whole step again; the estimators build the
optimizer first. Every call into the train function hands the work from the
Python thread to TensorFlow's and back; with nothing that must see each batch,
one call runs a whole epoch. Neither may change what is learned.

tf.data's autotuning is off in the pipelines the estimators build from arrays:
it has nothing to tune there, and it stalls a fit that has one core to itself.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from stablekeras import StableClassifier, StableRegressor, datasets
from stablekeras.estimators import _distribution

# 13 batches an epoch, 26 steps: above the estimators' eager threshold, so compiled
FIT = dict(dense_width=16, dense_depth=1, epochs=2, batch_size=32, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_dataset("digits")
    return X[:400], y[:400]


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


@pytest.fixture
def count_traces(monkeypatch):
    """How many times ``train_step`` is called: once per trace when compiled."""
    calls = []
    step = keras.Model.train_step

    def counting(model, data):
        calls.append(1)
        return step(model, data)

    monkeypatch.setattr(keras.Model, "train_step", counting)
    return calls


@pytest.mark.parametrize("Estimator", [StableClassifier, StableRegressor])
def test_compiled_fit_traces_the_train_step_once(digits, count_traces, Estimator):
    X, y = digits
    est = Estimator(**FIT).fit(X, y)
    assert not est.model_.run_eagerly
    assert len(count_traces) == 1


def test_an_epoch_runs_in_one_call_without_callbacks_or_progress_bar(digits):
    X, y = digits
    clf = StableClassifier(**FIT).fit(X, y)
    assert clf.model_.steps_per_execution == 13  # ceil(400 / 32)


@pytest.mark.parametrize("where", ["constructor", "fit", "verbose"])
def test_callbacks_and_progress_bar_see_every_batch(digits, where):
    X, y = digits
    if where == "constructor":
        clf = StableClassifier(**FIT, callbacks=[BatchCounter()]).fit(X, y)
    elif where == "fit":
        clf = StableClassifier(**FIT).fit(X, y, callbacks=[BatchCounter()])
    else:
        clf = StableClassifier(**FIT, verbose=1).fit(X, y)
    assert clf.model_.steps_per_execution == 1
    if where != "verbose":  # the fit's own copy of the callback (callbacks_)
        assert clf.callbacks_[0].batches == 26


@pytest.mark.parametrize("Estimator", [StableClassifier, StableRegressor])
def test_an_epoch_a_call_learns_the_same_weights(digits, Estimator):
    X, y = digits
    whole = Estimator(**FIT).fit(X, y)
    each = Estimator(**FIT, callbacks=[BatchCounter()]).fit(X, y)
    assert whole.model_.steps_per_execution == 13 and each.model_.steps_per_execution == 1
    for a, b in zip(whole.model_.get_weights(), each.model_.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(whole.history_["loss"], each.history_["loss"], rtol=1e-6)
    np.testing.assert_array_equal(whole.predict(X), each.predict(X))


@pytest.fixture
def fit_pipelines(monkeypatch):
    """The training and validation datasets that ``keras.Model.fit`` receives."""
    seen = []
    fit = keras.Model.fit

    def spying(model, x=None, *args, validation_data=None, **kwargs):
        seen.append((x, validation_data))
        return fit(model, x, *args, validation_data=validation_data, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spying)
    return seen


@pytest.mark.parametrize(
    "options",
    [{}, {"early_stopping": True}, {"random_shift": 1, "image_shape": (8, 8, 1)}],
    ids=["plain", "early_stopping", "random_shift"],
)
def test_pipelines_from_arrays_do_not_autotune(digits, fit_pipelines, options):
    X, y = digits
    StableClassifier(**{**FIT, "epochs": 1, **options}).fit(X, y, sample_weight=np.ones(len(X)))
    [(train, validation)] = fit_pipelines
    assert train.options().autotune.enabled is False
    if options.get("early_stopping"):
        assert validation.options().autotune.enabled is False
    else:
        assert validation is None


def test_a_users_pipeline_keeps_its_options(digits, fit_pipelines):
    X, y = digits
    data = tf.data.Dataset.from_tensor_slices((X, y)).batch(32)
    StableClassifier(**{**FIT, "epochs": 1}).fit(data)
    [(train, _)] = fit_pipelines
    assert train.options().autotune.enabled is None  # tf.data's default: on


@pytest.mark.parametrize("Estimator", [StableClassifier, StableRegressor])
def test_autotuning_off_learns_the_same_weights(digits, monkeypatch, Estimator):
    X, y = digits
    off = Estimator(**FIT).fit(X, y)

    batches = _distribution._array_batches
    on_again = tf.data.Options()
    on_again.autotune.enabled = True  # the later options win

    def autotuned(*arrays):
        return batches(*arrays).with_options(on_again)

    monkeypatch.setattr(_distribution, "_array_batches", autotuned)
    on = Estimator(**FIT).fit(X, y)
    for a, b in zip(off.model_.get_weights(), on.model_.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(off.predict(X), on.predict(X))
