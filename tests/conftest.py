"""Shared test set-up: quiet TensorFlow, one BLAS thread, a seed per test, helpers on the path.

This directory is put on ``sys.path`` by pytest (it holds a conftest), so the test
modules import their helpers from ``tests/_support`` as ``_support.lipschitz_probe``,
``_support.operator_matrices``, ...
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests run on a few shared cores: a multi-threaded BLAS busy-waits against
# TensorFlow's own threads and makes a 100x100 SVD take a second.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# A script that test_distributed_fit runs in a subprocess (it configures TensorFlow's devices
# when imported): not a module for `make test`'s doctest collection to import.
collect_ignore = ["_support/_distributed_fit.py"]

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(1, user_api="blas")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same Python, NumPy, TensorFlow and Keras seed."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def fast_graphs():
    """Skip Grappler's graph rewriting while a module traces many small, run-few-times graphs.

    Grappler costs seconds per traced function and saves nothing on graphs that
    run thirty steps; it does not change what the graph computes.
    """
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": before.get("disable_meta_optimizer", False)}
    )
