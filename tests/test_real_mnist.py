"""Real images (marked slow): ../shared/data/mnist-t10k, 8,000 to train, the last 2,000 held out."""

import pytest

from benchmarks._data import load_mnist_t10k, mnist_available
from stablekeras import StableClassifier

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mnist_available(), reason="../shared/data/mnist-t10k is not here"),
]


def test_convolutional_classifier_reaches_97_percent():
    X_train, y_train, X_test, y_test = load_mnist_t10k()
    clf = StableClassifier(image_shape=(28, 28, 1), random_state=0).fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    assert accuracy >= 0.97, accuracy
    assert clf.lipschitz_bound_ < float("inf")
