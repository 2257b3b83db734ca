"""``n_threads``: a fit in a joblib worker sizes TensorFlow's thread pools to the worker's share.

What the workers report is read through public means only:
``tf.config.threading.get_{intra,inter}_op_parallelism_threads()`` inside the
worker, after its fit.
"""

from __future__ import annotations

import os
import uuid
import warnings

import joblib
import keras
import numpy as np
import pytest
import tensorflow as tf
import threadpoolctl
from joblib.externals.loky import get_reusable_executor
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from stablekeras import StableClassifier, StableRegressor
from stablekeras._threads import thread_budget
from stablekeras.estimators import _base

FIT = dict(width=8, depth=1, epochs=1, batch_size=100, random_state=0)


@pytest.fixture(autouse=True)
def fresh_workers():
    """New loky workers for each test.

    The pools can only be sized before TensorFlow starts in a process, and joblib
    reuses its workers: one that already ran TensorFlow for another test (in the
    same pytest process) would keep that test's pools.
    """
    get_reusable_executor().shutdown(wait=True)
    yield


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def _pools():
    threading = tf.config.threading
    return (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )


def fit_and_report(X, y, **params):
    """Fit in this process; return its pid, OMP_NUM_THREADS and TensorFlow's pool sizes."""
    StableClassifier(**FIT, **params).fit(X, y)
    return os.getpid(), os.environ.get("OMP_NUM_THREADS"), _pools()


def test_a_fit_in_a_joblib_worker_takes_the_workers_share(data):
    # joblib gives each of its n_jobs loky workers cpu_count() // n_jobs threads (at least 1)
    share = max(joblib.cpu_count() // 2, 1)
    with joblib.parallel_config(backend="loky", n_jobs=2):
        reports = joblib.Parallel()(joblib.delayed(fit_and_report)(*data) for _ in range(2))
    for pid, omp, pools in reports:
        assert pid != os.getpid()
        assert omp == str(share)
        assert pools == (share, share)


class ThreadRecordingScorer:
    """Accuracy; leaves the worker's pool sizes in ``log_dir`` (the scorer runs in the worker)."""

    def __init__(self, log_dir):
        self.log_dir = str(log_dir)

    def __call__(self, estimator, X, y):
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        with open(os.path.join(self.log_dir, name), "w") as fh:
            fh.write(" ".join(map(str, _pools())))
        return float(np.mean(estimator.predict(X) == y))


def test_grid_search_with_two_jobs_does_not_oversubscribe(data, tmp_path):
    share = max(joblib.cpu_count() // 2, 1)
    search = GridSearchCV(
        StableClassifier(**FIT),
        {"step_size": [0.5, 1.0]},
        cv=2,
        n_jobs=2,
        scoring=ThreadRecordingScorer(tmp_path),
        refit=False,
    ).fit(*data)
    assert len(search.cv_results_["params"]) == 2
    records = [f.read_text().split() for f in tmp_path.iterdir()]
    assert len(records) == 4  # one per candidate and split
    assert all(r == [str(share), str(share)] for r in records), records
    assert {int(f.name.split("-")[0]) for f in tmp_path.iterdir()} - {os.getpid()}


def test_the_budget_rule(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_budget(None) == 3
    assert thread_budget(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert thread_budget(None) is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_budget(None) is None


def test_a_limit_that_cannot_take_effect_warns_when_asked_for(data, monkeypatch):
    tf.constant(0.0)  # TensorFlow's runtime runs in this process from now on
    other = tf.config.threading.get_intra_op_parallelism_threads() + 1
    with pytest.warns(RuntimeWarning, match=f"n_threads: cannot size .* to {other} threads"):
        clf = StableClassifier(n_threads=other, **FIT).fit(*data)
    assert clf.n_iter_ == 1  # the fit goes on with the pools it has
    # the automatic budget (here from the environment) is best effort: no warning
    monkeypatch.setenv("OMP_NUM_THREADS", str(other))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        StableClassifier(**FIT).fit(*data)
    with pytest.raises(ValueError, match="n_threads"):
        StableClassifier(n_threads=0, **FIT).fit(*data)


def _blas_threads():
    """The thread counts of the process's BLAS and OpenMP pools (threadpoolctl)."""
    return sorted(pool["num_threads"] for pool in threadpoolctl.threadpool_info())


class BlasThreadsAtTrainBegin(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seen = _blas_threads()


def _fit_with_explicit_threads(est, X, y):
    """``est.fit(X, y)``, silencing the warning about TensorFlow's pools.

    Where TensorFlow's runtime already runs with other pools, an explicit
    ``n_threads`` warns about those (``test_a_limit_that_cannot_take_effect_warns_when_asked_for``);
    BLAS is bounded all the same.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return est.fit(X, y)


@pytest.mark.parametrize(
    ("Estimator", "how"), [(StableClassifier, "n_threads"), (StableRegressor, "environment")]
)
def test_the_budget_bounds_blas_threads_during_the_fit_only(data, monkeypatch, how, Estimator):
    # OpenBLAS' threads spin while they wait for work: two fits side by side, each
    # with every core's worth of them for the exact SVDs of the bound, slowed down
    # several times. The fit holds them to its budget and gives the process's back.
    with threadpoolctl.threadpool_limits(limits=2):
        outer = _blas_threads()
        if not outer or max(outer) < 2:
            pytest.skip(f"needs a BLAS pool of 2 threads to tell 1 from it; found {outer}")
        seen_by_bound = []

        def recording_bound(model):
            seen_by_bound.append(_blas_threads())
            return bound(model)

        bound = _base.lipschitz_bound
        monkeypatch.setattr(_base, "lipschitz_bound", recording_bound)
        if how == "environment":
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            params = {}
        else:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
            params = {"n_threads": 1}
        X, y = data
        target = y if Estimator is StableClassifier else y.astype(np.float32)
        est = Estimator(callbacks=[BlasThreadsAtTrainBegin()], **params, **FIT)
        _fit_with_explicit_threads(est, X, target)
        assert set(est.callbacks_[0].seen) == {1}
        assert seen_by_bound == [[1] * len(outer)]
        assert _blas_threads() == outer


def test_without_a_budget_blas_keeps_its_threads(data, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threadpoolctl.threadpool_limits(limits=2):
        outer = _blas_threads()
        est = StableClassifier(callbacks=[BlasThreadsAtTrainBegin()], **FIT).fit(*data)
        assert est.callbacks_[0].seen == outer


def test_the_budget_never_raises_a_smaller_blas_pool(data, monkeypatch):
    # a dask worker with nthreads=2 keeps the nanny's OMP_NUM_THREADS=1 for BLAS: its
    # other task threads may be in BLAS too
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with threadpoolctl.threadpool_limits(limits=1):
        outer = _blas_threads()
        est = StableClassifier(callbacks=[BlasThreadsAtTrainBegin()], n_threads=2, **FIT)
        _fit_with_explicit_threads(est, *data)
        assert est.callbacks_[0].seen == outer == [1] * len(outer)
        assert _blas_threads() == outer
