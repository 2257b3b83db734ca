"""A seeded fit is the same fit everywhere: in this process, on a dask worker, on a Ray worker.

Keras draws the seed of an unseeded initializer from Python's global ``random`` when
the layer is made, and a dask worker's event loop uses the same generator, so a seeded
fit used to start from other weights there. ``build_network(seed=...)`` now gives every
random initializer its own seed, derived from ``random_state``.
"""

from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest
from _support.local_clusters import local_dask_client, local_ray
from sklearn.datasets import load_digits

from stablekeras import StableClassifier
from stablekeras.models import build_network

FIT = dict(depth=2, width=16, epochs=3, batch_size=32, random_state=0)


def fit_predict_proba(X, y, X_test, busy=False):
    """The seeded fit and its probabilities, wherever this runs (and the pid).

    ``busy``: meanwhile another thread keeps drawing from Python's global ``random``,
    as a dask worker's event loop may.
    """
    stop = threading.Event()
    if busy:

        def draw():
            while not stop.is_set():
                random.random()
                time.sleep(0.0002)

        threading.Thread(target=draw, daemon=True).start()
    try:
        proba = StableClassifier(**FIT).fit(X, y).predict_proba(X_test)
    finally:
        stop.set()
    return os.getpid(), proba


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    return X[:400], y[:400], X[400:500]


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(image_shape=(8, 8, 1)),
        dict(constraint="none"),
        dict(network="chapter", image_shape=(8, 8, 1), max_norm=1.0),
    ],
    ids=["certified-flat", "certified-image", "resnet", "chapter"],
)
def test_build_network_seed_fixes_every_initial_weight(kwargs):
    """The same seed gives the same weights whatever Python's global ``random`` holds; another
    seed gives other weights; every random kernel is drawn from its own seed."""
    models = []
    for state, seed in [(1, 7), (2, 7), (1, 8)]:
        random.seed(state)
        models.append(
            build_network((64,), 10, width=16, depth=2, dense_width=32, seed=seed, **kwargs)
        )
    same, other = _weights(models[0]), _weights(models[2])
    for a, b in zip(same, _weights(models[1])):
        np.testing.assert_array_equal(a, b)
    random_kernels = [
        i for i, w in enumerate(same) if w.ndim >= 2 and np.unique(w).size > w.size // 2
    ]
    assert random_kernels, "no random kernel in the network"
    for i in random_kernels:
        assert not np.array_equal(same[i], other[i])
    # two kernels of the same shape do not repeat each other's draws
    for i in random_kernels:
        for j in random_kernels:
            if i < j and same[i].shape == same[j].shape:
                assert not np.array_equal(same[i], same[j])


def test_unseeded_networks_differ():
    a = build_network((8,), 3, width=4, depth=1)
    b = build_network((8,), 3, width=4, depth=1)
    assert any(not np.array_equal(x, y) for x, y in zip(_weights(a), _weights(b)))


@pytest.fixture(scope="module")
def driver(data):
    X, y, X_test = data
    pid, proba = fit_predict_proba(X, y, X_test)
    assert pid == os.getpid()
    # the same again here, while another thread draws from Python's random
    np.testing.assert_array_equal(fit_predict_proba(X, y, X_test, busy=True)[1], proba)
    return proba


def test_seeded_fit_is_identical_in_this_process_while_another_thread_draws(driver):
    assert driver.shape == (100, 10)  # the fixture compared the two fits


# Starting a worker process and importing TensorFlow there takes most of a minute
# per backend: these two run with `make test-slow`.
@pytest.mark.slow
def test_seeded_fit_is_identical_on_a_dask_worker(data, driver):
    with local_dask_client(n_workers=1) as client:
        results = [
            client.submit(fit_predict_proba, *data, busy=busy, pure=False).result()
            for busy in (False, True)
        ]
    for pid, proba in results:
        assert pid != os.getpid()
        np.testing.assert_array_equal(proba, driver)


@pytest.mark.slow
def test_seeded_fit_is_identical_on_a_ray_worker(data, driver):
    with local_ray(num_cpus=1) as session:
        remote = session.remote(fit_predict_proba)
        results = session.get([remote.remote(*data, busy=busy) for busy in (False, True)])
    for pid, proba in results:
        assert pid != os.getpid()
        np.testing.assert_array_equal(proba, driver)
