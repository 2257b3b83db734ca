"""Scale-out: data-parallel fits (tf.distribute), fits from tf.data, grid search on dask and Ray.

The mirrored fit runs in a fresh interpreter (tests/_distributed_fit.py): two
logical CPU devices must be configured before TensorFlow initialises its devices,
which the test session has long done.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import dask.distributed
import joblib
import numpy as np
import pytest
import ray
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_validate, train_test_split

from stablekeras import StableClassifier, StableRegressor, lipschitz_bound
from stablekeras.datasets import load_dataset
from stablekeras.robustness import make_robustness_scorer

HERE = Path(__file__).parent
ENFORCEMENTS = ("project", "substeps")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


# ---- data-parallel training: MirroredStrategy over two logical CPUs ------------------------


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Run both modes in one subprocess; return its output folder."""
    out = tmp_path_factory.mktemp("mirrored")
    proc = subprocess.run(
        [sys.executable, str(HERE / "_distributed_fit.py"), str(out), *ENFORCEMENTS],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    if proc.returncode != 0 and not any((out / f"{m}.json").exists() for m in ENFORCEMENTS):
        pytest.fail(f"tests/_distributed_fit.py failed:\n{proc.stderr[-4000:]}")
    return out


@pytest.mark.parametrize("enforcement", ENFORCEMENTS)
def test_mirrored_fit_keeps_accuracy_guarantee_pickle_and_export(mirrored, enforcement):
    error = mirrored / f"{enforcement}.error"
    if error.exists():
        pytest.fail(f"enforcement={enforcement!r} failed in the subprocess:\n{error.read_text()}")
    result = json.loads((mirrored / f"{enforcement}.json").read_text())

    assert result["strategy"] == "MirroredStrategy"
    assert result["num_replicas_in_sync"] == 2
    assert result["accuracy"] >= 0.85, result
    if enforcement == "project":
        # the constraint ran on the mirrored update: every kernel inside its limit
        for norm, limit in zip(result["kernel_norm"], result["kernel_norm_limit"]):
            assert norm <= limit * (1 + 1e-5), (norm, limit)
    # Sound bounds say 1; the probe (random and ascended pairs from real activations) agrees.
    assert all(b <= 1.0 + 1e-6 for b in result["block_bounds"]), result["block_bounds"]
    assert all(r <= 1.0 + 1e-4 for r in result["probe"]), result["probe"]
    assert all(r >= 0.5 for r in result["probe"]), "the probe found no large ratio at all"
    if enforcement == "substeps":  # S was recorded in training (aggregated from the first replica)
        assert max(result["substeps"]) > 1, result["substeps"]
    assert np.isfinite(result["lipschitz_bound_"])
    # A strategy object pickles as "mirrored"; the string stays as it was.
    assert result["pickled_distribute"] == "mirrored"

    proba = np.load(mirrored / f"{enforcement}_proba.npy")
    np.testing.assert_array_equal(np.load(mirrored / f"{enforcement}_pickled.npy"), proba)
    np.testing.assert_allclose(
        np.load(mirrored / f"{enforcement}_served.npy"), proba, rtol=0, atol=1e-5
    )


# ---- multi-worker training: two worker processes on 127.0.0.1 ----------------------------


def free_ports(n):
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together, then released)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(script, out, extra=(), timeout=600):
    """Start two workers of ``script`` (args: OUT INDEX PORT0 PORT1 *extra); wait for both."""
    ports = free_ports(2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / script), str(out), str(i), *map(str, ports), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        return [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi_worker")
    errors = run_workers("_multi_worker_fit.py", out)
    for i in range(2):
        if not (out / f"worker-{i}.json").exists():
            pytest.fail(f"worker {i} failed:\n{errors[i][-4000:]}")
    return out


def test_multi_worker_fit_agrees_across_workers_and_with_one_process(multi_worker):
    from _multi_worker_fit import FIT, split

    chief, other = (json.loads((multi_worker / f"worker-{i}.json").read_text()) for i in range(2))
    # identical weights and bound on both workers, and local (not distributed) afterwards
    np.testing.assert_array_equal(
        np.load(multi_worker / "worker-0.npy"), np.load(multi_worker / "worker-1.npy")
    )
    assert chief["lipschitz_bound_"] == other["lipschitz_bound_"]
    assert chief["block_bounds"] == other["block_bounds"]
    assert not chief["variables_distributed"] and not other["variables_distributed"]
    assert chief["n_iter_"] == other["n_iter_"] == FIT["epochs"]
    # the same fit in one process: held-out accuracy within 2 points
    X_train, X_test, y_train, y_test = split()
    single = StableClassifier(**FIT).fit(X_train, y_train).score(X_test, y_test)
    assert chief["accuracy"] >= 0.85
    assert abs(chief["accuracy"] - single) <= 0.02, (chief["accuracy"], single)
    # the guarantee: every layer's bound is 1 and the probe finds nothing above it
    assert len(chief["blocks"]) >= 3, chief["blocks"]
    for result in (chief, other):
        assert all(b <= 1.0 + 1e-6 for b in result["block_bounds"]), result["block_bounds"]
        for found, bound in zip(result["probe"], result["block_bounds"]):
            assert found <= bound * (1 + 1e-4), (result["blocks"], result["probe"])
            assert found >= 0.5 * bound, "the probe found no large ratio at all"
    # only the chief exports; a strategy string survives pickling
    assert chief["exported"] is not None and Path(chief["exported"]).is_dir()
    assert other["exported"] is None
    assert chief["pickled_distribute"] == other["pickled_distribute"] == "multi_worker"


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    clf = StableClassifier(distribute="multi_worker", epochs=1)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        clf.fit(np.random.rand(20, 4), np.arange(20) % 2)
    assert not hasattr(clf, "model_")


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
    cluster = dask.distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = dask.distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


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

    # the workers unpickle RecordingScorer by reference: put this folder on their path
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}},
    )
    register_ray()
    try:
        yield ray
    finally:
        ray.shutdown()


def test_grid_search_on_ray(ray_session, search_data, sequential_search, tmp_path):
    with joblib.parallel_backend("ray"):
        search = _search(*search_data, tmp_path, n_jobs=2)
    _check_search(search, sequential_search, tmp_path, search_data)
