"""The skip mark of the tests that read the offline MNIST copy, ``../shared/data/mnist-t10k``,
which a checkout outside this workplace does not have."""

import pytest

from benchmarks._data import mnist_available

needs_mnist = pytest.mark.skipif(not mnist_available(), reason="../shared/data/mnist-t10k missing")
