"""Fits from a tf.data.Dataset: the same fit as from arrays, and bad datasets refused
before any training."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from stablekeras import StableClassifier, StableRegressor
from stablekeras.datasets import load_dataset


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


# ---- fitting from a tf.data.Dataset ---------------------------------------------------------

DATA_FIT = dict(width=16, depth=2, epochs=8, batch_size=64, learning_rate=0.02, random_state=0)


def _batches(*arrays, batch_size=64, shuffle=True):
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        ds = ds.shuffle(len(arrays[0]), seed=0)
    return ds.batch(batch_size)


@pytest.fixture(scope="module")
def split(digits):
    X, y = digits
    return train_test_split(X, y, train_size=1000, stratify=y, random_state=0)


@pytest.mark.parametrize("labels", ["integers", "strings"])
def test_dataset_fit_matches_array_fit(split, labels):
    X_train, X_test, y_train, y_test = split
    if labels == "strings":
        names = np.array("zero one two three four five six seven eight nine".split())
        y_train, y_test = names[y_train], names[y_test]
    from_arrays = StableClassifier(**DATA_FIT).fit(X_train, y_train)
    from_dataset = StableClassifier(**DATA_FIT).fit(_batches(X_train, y_train))

    np.testing.assert_array_equal(from_dataset.classes_, from_arrays.classes_)
    assert from_dataset.classes_.dtype.kind == from_arrays.classes_.dtype.kind
    assert from_dataset.n_features_in_ == 64
    pred = from_dataset.predict(X_test)
    assert pred.dtype.kind == np.asarray(y_test).dtype.kind
    acc_arrays, acc_dataset = from_arrays.score(X_test, y_test), np.mean(pred == y_test)
    assert acc_dataset >= 0.85
    assert abs(acc_dataset - acc_arrays) <= 0.02, (acc_dataset, acc_arrays)


def test_regressor_from_dataset(split):
    X_train, X_test, y_train, y_test = split
    Y_train = np.c_[y_train, -2.0 * y_train].astype(np.float32)
    Y_test = np.c_[y_test, -2.0 * y_test].astype(np.float32)
    from_arrays = StableRegressor(**DATA_FIT).fit(X_train, Y_train)
    from_dataset = StableRegressor(**DATA_FIT).fit(_batches(X_train, Y_train))

    # one streaming pass finds the same target statistics as the arrays
    np.testing.assert_allclose(from_dataset._y_offset, Y_train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(from_dataset._y_scale, Y_train.std(0), rtol=1e-5)
    assert from_dataset.n_outputs_ == 2
    assert from_dataset.predict(X_test).shape == Y_test.shape
    r2_arrays, r2_dataset = from_arrays.score(X_test, Y_test), from_dataset.score(X_test, Y_test)
    assert r2_dataset >= 0.5
    assert abs(r2_dataset - r2_arrays) <= 0.1, (r2_dataset, r2_arrays)


def test_load_dataset_feeds_fit():
    train = load_dataset("digits", split="train[:75%]", as_dataset=True, batch_size=64)
    X_test, y_test = load_dataset("digits", split="train[75%:]")
    clf = StableClassifier(**DATA_FIT).fit(train, classes=np.arange(10))
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.n_features_in_ == X_test.shape[1]
    assert clf.score(X_test, y_test) >= 0.85


def _with_nan(X, y, row):
    X = X.copy()
    X[row, 3] = np.nan
    return _batches(X, y, batch_size=32, shuffle=False)


STRUCTURE = r"\(x, y\) or \(x, y, sample_weight\) batches"
FLAT = r"x of shape \(batch, n_features\)"

#: name: (make(X, y) -> (dataset, extra fit arguments), message)
BAD_DATASETS = {
    "x-only": (lambda X, y: (_batches(X), {}), STRUCTURE),
    "dict": (lambda X, y: (tf.data.Dataset.from_tensor_slices({"x": X, "y": y}), {}), STRUCTURE),
    "four-tuple": (lambda X, y: (_batches(X, y, y, y), {}), STRUCTURE),
    "unbatched": (lambda X, y: (tf.data.Dataset.from_tensor_slices((X, y)), {}), FLAT),
    "images": (lambda X, y: (_batches(X.reshape(-1, 8, 8, 1), y), {}), FLAT),
    "nan": (lambda X, y: (_with_nan(X, y, row=70), {}), r"NaN or infinity \(batch 3 of"),
    "y-alongside": (lambda X, y: (_batches(X, y), {"y": y}), "y and sample_weight must be None"),
    "weight-alongside": (
        lambda X, y: (_batches(X, y), {"sample_weight": np.ones(len(y))}),
        "y and sample_weight must be None",
    ),
    # unknown cardinality: the streaming pass runs even when `classes` is given
    "labels-not-in-classes": (
        lambda X, y: (_batches(X, y).filter(lambda x, y: True), {"classes": [0, 1, 2]}),
        r"labels \[3, 4, .*\] not in `classes`",
    ),
    "string-labels-numeric-classes": (
        lambda X, y: (_batches(X, y.astype(str)), {"classes": [0, 1, 2]}),
        "`classes` are numeric but the dataset's labels are strings",
    ),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_bad_datasets_raise_before_training(digits, case):
    make, match = BAD_DATASETS[case]
    dataset, kwargs = make(digits[0][:200], digits[1][:200])
    clf = StableClassifier(**DATA_FIT)
    with pytest.raises(ValueError, match=match):
        clf.fit(dataset, **kwargs)
    assert not hasattr(clf, "model_")


def test_label_outside_classes_stops_training(digits):
    # Known cardinality and `classes`: no scan; the label is found when its batch is read.
    X, y = digits[0][:200], digits[1][:200]
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels not in `classes`"):
        StableClassifier(**DATA_FIT).fit(_batches(X, y), classes=[0, 1, 2])


def test_bad_regression_datasets_raise_before_training(digits):
    X, y = digits[0][:200], digits[1][:200].astype(np.float32)
    y_nan = y.copy()
    y_nan[100] = np.nan
    reg = StableRegressor(**DATA_FIT)
    with pytest.raises(ValueError, match=r"y contains NaN or infinity \(batch 2"):
        reg.fit(_batches(X, y_nan, shuffle=False))
    with pytest.raises(ValueError, match="`classes` is for classifiers"):
        reg.fit(_batches(X, y), classes=[0, 1])
    with pytest.raises(ValueError, match="early_stopping=True needs arrays"):
        StableRegressor(early_stopping=True).fit(_batches(X, y))
    assert not hasattr(reg, "model_")
