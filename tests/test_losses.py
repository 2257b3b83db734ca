"""MulticlassHinge against a NumPy reference."""

import keras
import numpy as np
import pytest

from stablekeras.losses import MulticlassHinge


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
