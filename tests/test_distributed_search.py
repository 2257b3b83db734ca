"""Grid search and cross-validation of the estimators on a dask cluster and on Ray."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest
import tensorflow as tf
from _support.local_clusters import local_dask_client, local_ray
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_validate, train_test_split

from stablekeras import StableClassifier, lipschitz_bound
from stablekeras.robustness import make_robustness_scorer


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


# ---- grid search on a dask cluster (and Ray) -------------------------------------------------

SEARCH_FIT = dict(width=8, depth=2, epochs=4, batch_size=50, learning_rate=0.03, random_state=0)
GRID = {"step_size": [0.25, 1.0]}


class RecordingScorer:
    """Wrap a scorer and leave ``<pid> <score>`` in a file of ``log_dir`` per call."""

    def __init__(self, scorer, log_dir):
        self.scorer, self.log_dir = scorer, str(log_dir)

    def __call__(self, estimator, X, y, sample_weight=None):
        score = self.scorer(estimator, X, y, sample_weight=sample_weight)
        with open(os.path.join(self.log_dir, uuid.uuid4().hex), "w") as fh:
            fh.write(f"{os.getpid()} {score!r}")
        return score


def _calls(log_dir):
    """The (pid, score) of every call recorded in ``log_dir``."""
    calls = [Path(log_dir, f).read_text().split() for f in os.listdir(log_dir)]
    return [(int(pid), float(score)) for pid, score in calls]


def _scoring(log_dir):
    robust = make_robustness_scorer(eps=0.5, steps=5, random_state=0)
    return {"accuracy": "accuracy", "robust": RecordingScorer(robust, log_dir)}


@pytest.fixture(scope="module")
def search_data(digits):
    X, y = digits
    X, _, y, _ = train_test_split(X, y, train_size=400, stratify=y, random_state=0)
    return X, y


def _search(X, y, log_dir, n_jobs=None):
    search = GridSearchCV(
        StableClassifier(**SEARCH_FIT),
        GRID,
        cv=2,
        scoring=_scoring(log_dir),
        refit="robust",
        n_jobs=n_jobs,
    )
    return search.fit(X, y)


@pytest.fixture(scope="module")
def sequential_search(search_data, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("calls_here")
    search = _search(*search_data, log_dir, n_jobs=1)
    assert {pid for pid, _ in _calls(log_dir)} == {os.getpid()}
    return search


def _check_search(search, reference, log_dir, data, worker_pids=None):
    """The scores and the choice of ``reference``; the robustness scorer ran in the workers.

    The seeded fits are the same fits in the workers as here (every initializer is
    seeded from ``random_state``, tests/test_seeds.py), so every score is equal.
    """
    for key in ("mean_test_accuracy", "mean_test_robust"):
        np.testing.assert_array_equal(search.cv_results_[key], reference.cv_results_[key])
    assert search.best_params_ == reference.best_params_
    calls = _calls(log_dir)
    assert len(calls) == len(GRID["step_size"]) * 2  # one per candidate and split
    # the robustness scorer ran in the workers, and its scores are the ones reported
    pids = {pid for pid, _ in calls}
    assert os.getpid() not in pids
    if worker_pids is not None:
        assert pids <= set(worker_pids)
    reported = [search.cv_results_[f"split{i}_test_robust"] for i in range(2)]
    assert sorted(s for _, s in calls) == pytest.approx(sorted(np.ravel(reported)))
    # the scorer attacked in the workers: it found adversarial points
    assert np.any(search.cv_results_["mean_test_robust"] < search.cv_results_["mean_test_accuracy"])
    # the refit best estimator (in this process) is a working StableClassifier
    best = search.best_estimator_
    assert best.step_size == reference.best_params_["step_size"] and best.score(*data) >= 0.5


@pytest.fixture(scope="module")
def dask_client():
    with local_dask_client(n_workers=2) as client:
        yield client


@pytest.mark.slow  # the sequential reference search and the dask one; the default suite
# keeps dask through cross_validate and the thread-pool check below
def test_grid_search_on_dask(dask_client, search_data, sequential_search, tmp_path):
    worker_pids = dask_client.run(os.getpid).values()
    with joblib.parallel_backend("dask"):
        search = _search(*search_data, tmp_path, n_jobs=-1)
    _check_search(search, sequential_search, tmp_path, search_data, worker_pids)


def _fit_and_report_pools(X, y):
    StableClassifier(**SEARCH_FIT).fit(X, y)
    threading = tf.config.threading
    pools = (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )
    return os.getpid(), pools


def test_fits_on_a_two_worker_dask_cluster_do_not_oversubscribe(dask_client, search_data):
    """Each worker (one thread) sizes TensorFlow's pools to one thread: two busy threads in all."""
    nthreads = dask_client.nthreads()
    futures = [
        dask_client.submit(_fit_and_report_pools, *search_data, workers=[w], pure=False)
        for w in nthreads
    ]
    reports = dask_client.gather(futures)
    assert len({pid for pid, _ in reports}) == 2
    assert all(pools == (nthreads[w], nthreads[w]) for w, (_, pools) in zip(nthreads, reports))
    assert sum(nthreads.values()) == 2


def test_cross_validate_on_dask(dask_client, search_data, tmp_path):
    X, y = search_data
    with joblib.parallel_backend("dask"):
        cv = cross_validate(
            StableClassifier(**SEARCH_FIT),
            X,
            y,
            cv=2,
            scoring=_scoring(tmp_path),
            return_estimator=True,
            return_indices=True,
            n_jobs=-1,
        )
    calls = _calls(tmp_path)
    assert {pid for pid, _ in calls} <= set(dask_client.run(os.getpid).values())
    assert sorted(s for _, s in calls) == pytest.approx(sorted(cv["test_robust"]))
    # the fitted estimators come back from the workers intact (pickled as .keras bytes):
    # here they score their test fold exactly as they did in the worker
    for i, (back, test) in enumerate(zip(cv["estimator"], cv["indices"]["test"])):
        assert back.score(X[test], y[test]) == pytest.approx(cv["test_accuracy"][i], abs=1e-12)
        assert back.lipschitz_bound_ == pytest.approx(lipschitz_bound(back.model_))
        restored = pickle.loads(pickle.dumps(back))
        np.testing.assert_array_equal(restored.predict_proba(X), back.predict_proba(X))


@pytest.fixture(scope="module")
def ray_session():
    from ray.util.joblib import register_ray

    # the workers unpickle RecordingScorer by reference: the tests folder is on their path
    with local_ray(num_cpus=2) as session:
        register_ray()
        yield session


@pytest.mark.slow  # a Ray session in the test process; seeded fits on Ray: tests/test_seeds.py
def test_grid_search_on_ray(ray_session, search_data, sequential_search, tmp_path):
    with joblib.parallel_backend("ray"):
        search = _search(*search_data, tmp_path, n_jobs=2)
    _check_search(search, sequential_search, tmp_path, search_data)
