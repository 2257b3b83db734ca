"""The classification losses against NumPy references: MulticlassHinge, MulticlassHKR and
OffsetCrossentropy; the loss registry."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stablekeras.losses import (
    CLASSIFICATION_LOSSES,
    MulticlassHinge,
    MulticlassHKR,
    OffsetCrossentropy,
    get_classification_loss,
)


def _reference(y, logits, margin):
    """mean over samples of mean_{j != y} max(0, margin - (f_y - f_j)), float64."""
    logits = np.asarray(logits, np.float64)
    n, c = logits.shape
    out = []
    for f, label in zip(logits, y):
        terms = [max(0.0, margin - (f[label] - f[j])) for j in range(c) if j != label]
        out.append(sum(terms) / (c - 1))
    return float(np.mean(out))


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_matches_numpy_reference(margin, n_classes):
    rng = np.random.default_rng(n_classes)
    logits = rng.normal(scale=2.0, size=(16, n_classes)).astype("float32")
    y = rng.integers(0, n_classes, size=16)
    loss = float(MulticlassHinge(margin=margin)(y, logits))
    assert loss == pytest.approx(_reference(y, logits, margin), rel=1e-5)
    assert loss > 0


def test_zero_when_margins_exceed_margin():
    y = np.array([0, 2, 1])
    logits = np.array([[3.0, 1.9, 0.0], [0.0, -1.0, 1.5], [-2.0, 0.0, -1.1]], "float32")
    assert float(MulticlassHinge(margin=1.0)(y, logits)) == 0.0
    # but not for a larger target margin
    assert float(MulticlassHinge(margin=2.0)(y, logits)) > 0.0


def test_per_sample_values_and_column_labels():
    loss = MulticlassHinge(margin=1.0, reduction=None)
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], "float32")
    values = np.asarray(loss(np.array([[0], [2]]), logits))
    np.testing.assert_allclose(values, [(1.0 + 0.0) / 2, 1.0], rtol=1e-6)


def test_config_and_bad_margin():
    loss = MulticlassHinge(margin=0.7)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, MulticlassHinge) and restored.margin == 0.7
    with pytest.raises(ValueError, match="margin=0.0"):
        MulticlassHinge(margin=0)


def _hkr_reference(y, logits, alpha, margin):
    logits = np.asarray(logits, np.float64)
    out = []
    for f, label in zip(logits, y):
        gaps = [f[label] - f[j] for j in range(len(f)) if j != label]
        hinge = np.mean([max(0.0, margin - g) for g in gaps])
        out.append(alpha * hinge - np.mean(gaps))
    return float(np.mean(out))


def _offset_ce_reference(y, logits, margin, t):
    logits = np.asarray(logits, np.float64)
    out = []
    for f, label in zip(logits, y):
        z = t * (f - margin * (np.arange(len(f)) == label))
        z = z - z.max()
        out.append(-(z[label] - np.log(np.exp(z).sum())) / t)
    return float(np.mean(out))


@pytest.mark.parametrize("alpha", [0.5, 10.0, 100.0])
@pytest.mark.parametrize("n_classes", [2, 10])
def test_hkr_matches_numpy_reference(alpha, n_classes):
    rng = np.random.default_rng(n_classes)
    logits = rng.normal(scale=2.0, size=(32, n_classes)).astype("float32")
    y = rng.integers(0, n_classes, size=32)
    value = float(MulticlassHKR(alpha=alpha, margin=1.5)(y, logits))
    assert value == pytest.approx(_hkr_reference(y, logits, alpha, 1.5), rel=1e-5, abs=1e-5)


def test_hkr_is_hinge_minus_mean_margin_and_shift_invariant():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 10)).astype("float32")
    y = rng.integers(0, 10, size=8)
    hinge = float(MulticlassHinge(margin=1.0)(y, logits))
    onehot = np.eye(10)[y]
    gaps = (logits * onehot).sum(1, keepdims=True) - logits
    kr = float(((gaps * (1 - onehot)).sum(1) / 9).mean())
    hkr = MulticlassHKR(alpha=7.0, margin=1.0)
    assert float(hkr(y, logits)) == pytest.approx(7.0 * hinge - kr, rel=1e-5)
    assert float(hkr(y, logits + 3.0)) == pytest.approx(float(hkr(y, logits)), rel=1e-5)


def test_hkr_keeps_pushing_margins_beyond_the_hinge():
    # every margin exceeds the target: the hinge is flat, the KR term is not
    y = np.array([0])
    logits = keras.Variable(np.array([[5.0, 0.0, 1.0]], "float32"))
    with tf.GradientTape() as tape:
        value = MulticlassHKR(alpha=10.0, margin=1.0)(y, logits)
    grad = tape.gradient(value, logits).numpy()
    assert grad[0, 0] < 0 and grad[0, 1] > 0 and grad[0, 2] > 0


@pytest.mark.parametrize("temperature", [1.0, 8.0, 32.0])
def test_offset_crossentropy_matches_numpy_reference(temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(32, 10)).astype("float32")
    y = rng.integers(0, 10, size=32)
    value = float(OffsetCrossentropy(margin=1.2, temperature=temperature)(y, logits))
    assert value == pytest.approx(_offset_ce_reference(y, logits, 1.2, temperature), rel=1e-5)


def test_offset_crossentropy_tends_to_top_hinge():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(64, 10)).astype("float32")
    y = rng.integers(0, 10, size=64)
    onehot = np.eye(10, dtype=bool)[y]
    top_wrong = np.where(onehot, -np.inf, logits).max(1)
    hinge = np.maximum(0.0, 1.0 - (logits[onehot] - top_wrong)).mean()
    value = float(OffsetCrossentropy(margin=1.0, temperature=1e4)(y, logits))
    assert value == pytest.approx(hinge, abs=1e-3)


@pytest.mark.parametrize(
    "loss",
    [MulticlassHKR(alpha=30.0, margin=0.7), OffsetCrossentropy(margin=0.7, temperature=4.0)],
)
def test_config_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y = np.array([1, 0])
    logits = np.array([[0.0, 1.0, -1.0], [0.5, 0.2, 0.1]], "float32")
    assert float(restored(y, logits)) == pytest.approx(float(loss(y, logits)))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: MulticlassHKR(alpha=0.0),
        lambda: MulticlassHKR(margin=-1.0),
        lambda: OffsetCrossentropy(temperature=0.0),
        lambda: OffsetCrossentropy(margin=0.0),
    ],
)
def test_bad_parameters_are_named(bad):
    with pytest.raises(ValueError, match="Received an invalid value"):
        bad()


def test_registry():
    assert {"hinge", "crossentropy", "hkr", "offset_crossentropy"} <= set(CLASSIFICATION_LOSSES)
    hkr = get_classification_loss("hkr", 1.5, alpha=40.0)
    assert isinstance(hkr, MulticlassHKR) and (hkr.alpha, hkr.margin) == (40.0, 1.5)
    assert get_classification_loss("hkr", 1.5).alpha == 10.0
    ce = get_classification_loss("offset_crossentropy", 2.0, temperature=16.0)
    assert isinstance(ce, OffsetCrossentropy) and (ce.margin, ce.temperature) == (2.0, 16.0)
    with pytest.raises(ValueError, match="does not take"):
        get_classification_loss("hinge", 1.0, alpha=3.0)
    with pytest.raises(ValueError, match="loss='nope'"):
        get_classification_loss("nope")


def test_trains_a_keras_model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype("float32")
    y = (X[:, 0] > 0).astype("int32")
    for loss in (MulticlassHKR(alpha=10.0, margin=0.5), OffsetCrossentropy(0.5, 4.0)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(keras.optimizers.Adam(0.05), loss)
        model.fit(X, y, epochs=30, batch_size=64, verbose=0)
        assert (model.predict(X, verbose=0).argmax(1) == y).mean() > 0.9
