"""Files saved by stablekeras before its modules moved still load and compute the same.

``tests/data`` holds a Keras model with every layer class and a pickled classifier and
regressor, written by the code of commit 26faeb8 (before the layers were regrouped by
role and the estimators and robustness became packages) with
``tests/_support/make_legacy_fixtures.py``. Keras finds the layers by their registered
names (``stablekeras>NonExpansiveDense``), pickle the estimators by
``stablekeras.estimators.StableClassifier``: both must survive every move.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import keras
import numpy as np
import pytest

import stablekeras.layers

DATA = Path(__file__).resolve().parent / "data"


def test_saved_layers_load_and_compute_the_same():
    model = keras.models.load_model(DATA / "legacy_layers.keras")
    saved = np.load(DATA / "legacy_layers.npz")
    y = keras.ops.convert_to_numpy(model(saved["x"], training=False))
    np.testing.assert_allclose(y, saved["y"], rtol=1e-5, atol=1e-6)
    found = {type(layer).__name__ for layer in model.layers}
    assert found >= set(stablekeras.layers.__all__) - {"SubstepSchedule", "SubstepCapWarning"}
    for layer in model.layers:
        if type(layer).__module__.startswith("stablekeras"):
            assert isinstance(layer, getattr(stablekeras.layers, type(layer).__name__))


@pytest.fixture(scope="module")
def legacy():
    with open(DATA / "legacy_estimators.pkl", "rb") as fh:
        return pickle.load(fh)


def test_pickled_estimators_load_and_predict_the_same(legacy):
    X = legacy["X"]
    np.testing.assert_allclose(legacy["classifier"].predict_proba(X), legacy["proba"], rtol=1e-6)
    np.testing.assert_allclose(legacy["regressor"].predict(X), legacy["prediction"], rtol=1e-6)
    # the fitted attributes that replaced private ones are there, and the parameters
    # added since the files were written have their defaults
    assert legacy["regressor"].y_ndim_ == 1
    for est in (legacy["classifier"], legacy["regressor"]):
        assert est.chief_ is True and not hasattr(est, "_chief")
        assert est.get_params()["random_shift"] == 0
    assert legacy["regressor"].predict(X).shape == (len(X),)


def test_a_loaded_estimator_fits_again(legacy):
    clf = legacy["classifier"]
    X = legacy["X"]
    y = np.where(X[:, 0] > 0.5, "b", "a")  # the labels it was fitted on
    refit = clf.set_params(warm_start=True, epochs=1).fit(X, y)
    assert refit.n_iter_ == 3
