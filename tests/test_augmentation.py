"""Translation augmentation (``random_shift``): what the pipeline does to the images,
that a fit with it is reproducible and certified, and that bad settings fail first."""

import itertools
import pickle

import numpy as np
import pytest
import tensorflow as tf
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from stablekeras import StableClassifier, StableRegressor, datasets
from stablekeras.estimators._augment import shift_rows, shifted_batches

NETWORK = dict(image_shape=(8, 8, 1), width=4, depth=1, dense_width=16, dense_depth=1)
SMALL = dict(NETWORK, epochs=3, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_dataset("digits")
    return X[:300], y[:300], X[300:500], y[300:500]


def _shifted(image, dy, dx):
    """``image`` moved down by dy and right by dx, zero-filled (the reference)."""
    h, w = image.shape
    out = np.zeros_like(image)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def _offset(original, shifted, max_shift):
    """The (dy, dx) within ``max_shift`` that turns ``original`` into ``shifted``, else None."""
    for dy, dx in itertools.product(range(-max_shift, max_shift + 1), repeat=2):
        if np.array_equal(_shifted(original, dy, dx), shifted):
            return dy, dx
    return None


@pytest.mark.parametrize("max_shift", [1, 2])
def test_each_image_is_moved_by_its_own_offset_within_the_range(max_shift):
    rng = np.random.default_rng(0)
    images = rng.uniform(0.1, 1.0, size=(64, 7, 9)).astype(np.float32)  # no zero pixels
    out = shift_rows(images.reshape(64, -1), (7, 9, 1), max_shift, tf.constant([5, 0], tf.int64))
    out = out.numpy().reshape(64, 7, 9)
    offsets = [_offset(a, b, max_shift) for a, b in zip(images, out)]
    assert None not in offsets
    assert len(set(offsets)) > 1  # not one offset for the whole batch
    # the shift never rescales a pixel: what stays in view keeps its value
    assert np.isin(out[out != 0], images).all()


def test_channels_move_together():
    images = np.arange(1, 2 * 5 * 5 * 3 + 1, dtype=np.float32).reshape(2, 5, 5, 3)
    out = shift_rows(images.reshape(2, -1), (5, 5, 3), 1, tf.constant([1, 0], tf.int64))
    out = out.numpy().reshape(2, 5, 5, 3)
    for a, b in zip(images, out):
        offset = _offset(a[..., 0], b[..., 0], 1)
        assert offset is not None
        for c in (1, 2):
            assert np.array_equal(_shifted(a[..., c], *offset), b[..., c])


def test_offsets_change_every_epoch_and_repeat_with_the_seed(digits):
    X, y, *_ = digits
    batches = tf.data.Dataset.from_tensor_slices((X[:64], y[:64])).batch(32)

    def epochs(dataset, n=2):
        return [np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(n)]

    first, second = epochs(shifted_batches(batches, (8, 8, 1), 1, seed=3))
    again, _ = epochs(shifted_batches(batches, (8, 8, 1), 1, seed=3))
    other, _ = epochs(shifted_batches(batches, (8, 8, 1), 1, seed=4))
    assert not np.array_equal(first, second)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    labels = np.concatenate([yb.numpy() for _, yb in shifted_batches(batches, (8, 8, 1), 1)])
    assert np.array_equal(labels, y[:64])  # the targets travel unchanged


def test_a_shifted_fit_is_reproducible_certified_and_differs_from_a_plain_one(digits):
    X, y, X_test, y_test = digits
    a = StableClassifier(random_shift=1, **SMALL).fit(X, y)
    b = StableClassifier(random_shift=1, **SMALL).fit(X, y)
    plain = StableClassifier(**SMALL).fit(X, y)
    for u, v in zip(a.model_.get_weights(), b.model_.get_weights()):
        np.testing.assert_array_equal(u, v)
    assert any(
        not np.array_equal(u, v) for u, v in zip(a.model_.get_weights(), plain.model_.get_weights())
    )
    assert a.n_iter_ == SMALL["epochs"]
    assert a.lipschitz_bound_ <= 1.0 + 1e-4
    assert a.predict(X_test).shape == y_test.shape
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(restored.predict_proba(X_test), a.predict_proba(X_test))
    assert clone(a).get_params()["random_shift"] == 1


def test_shifts_apply_to_datasets_regressors_and_warm_starts(digits):
    X, y, X_test, _ = digits
    data = tf.data.Dataset.from_tensor_slices((X, y)).batch(64)
    clf = StableClassifier(random_shift=1, **SMALL).fit(data, classes=np.arange(10))
    assert clf.n_iter_ == SMALL["epochs"]
    reg = StableRegressor(random_shift=1, **SMALL).fit(X, y.astype(float))
    assert np.isfinite(reg.predict(X_test)).all()
    warm = StableClassifier(warm_start=True, **SMALL).fit(X, y)
    weights = warm.model_.get_weights()
    warm.set_params(random_shift=2).fit(X, y)  # a training option: allowed to change
    assert any(not np.array_equal(u, v) for u, v in zip(weights, warm.model_.get_weights()))


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(random_shift=1, image_shape=None), ValueError, "needs image_shape"),
        (dict(random_shift=8), ValueError, r"random_shift=8 would shift whole images"),
        (dict(random_shift=-1), InvalidParameterError, "random_shift"),
        (dict(random_shift=0.5), InvalidParameterError, "random_shift"),
    ],
)
def test_bad_shifts_fail_before_training(digits, tmp_path, params, error, match):
    X, y, *_ = digits
    checkpoints = tmp_path / "backup"
    clf = StableClassifier(**{**SMALL, **params, "checkpoint_dir": str(checkpoints)})
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "model_")
    assert not checkpoints.exists()
