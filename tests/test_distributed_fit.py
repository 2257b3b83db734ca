"""Data-parallel fits: MirroredStrategy over two logical CPUs, and two worker processes.

The mirrored fit runs in a fresh interpreter (tests/_support/_distributed_fit.py): two
logical CPU devices must be configured before TensorFlow initialises its devices,
which the test session has long done. The multi-worker fit runs two workers of
tests/_support/_multi_worker_fit.py on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from stablekeras import StableClassifier

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
        [sys.executable, str(HERE / "_support" / "_distributed_fit.py"), str(out), *ENFORCEMENTS],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    if proc.returncode != 0 and not any((out / f"{m}.json").exists() for m in ENFORCEMENTS):
        pytest.fail(f"tests/_support/_distributed_fit.py failed:\n{proc.stderr[-4000:]}")
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
            [
                sys.executable,
                str(HERE / "_support" / script),
                str(out),
                str(i),
                *map(str, ports),
                *extra,
            ],
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
    from _support._multi_worker_fit import FIT, split

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


@pytest.mark.slow
def test_multi_worker_fit_on_shifted_images_agrees_across_workers(tmp_path):
    """random_shift in a two-worker fit: the shifted batches come from one seed, so both
    workers end with the same weights, after every epoch, and the bound holds."""
    errors = run_workers("_multi_worker_fit.py", tmp_path, extra=("shift",))
    for i in range(2):
        if not (tmp_path / f"worker-{i}.json").exists():
            pytest.fail(f"worker {i} failed:\n{errors[i][-4000:]}")
    from _support._multi_worker_fit import SHIFT_FIT

    chief, other = (json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2))
    np.testing.assert_array_equal(
        np.load(tmp_path / "worker-0.npy"), np.load(tmp_path / "worker-1.npy")
    )
    assert chief["n_iter_"] == other["n_iter_"] == SHIFT_FIT["epochs"]
    assert chief["lipschitz_bound_"] == other["lipschitz_bound_"] <= 1.0 + 1e-4


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    clf = StableClassifier(distribute="multi_worker", epochs=1)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        clf.fit(np.random.rand(20, 4), np.arange(20) % 2)
    assert not hasattr(clf, "model_")
