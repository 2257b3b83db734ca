"""Resumable fits (``checkpoint_dir``): real processes killed with SIGKILL, then started again.

Each fit runs in tests/_support/_resumable_fit.py, which reports every epoch it begins in
a log and can pause at a chosen point (after a backup; or in the middle of one,
with the temporary file cut to half) so that the kill lands there. The test then
starts the same fit again and checks where it resumed and how it ended.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from stablekeras import StableClassifier

HERE = Path(__file__).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
EPOCHS = 6
BATCHES = 14  # 1400 rows in batches of 100


def _start(out, *extra, index=None, ports=None):
    args = [
        sys.executable,
        str(HERE / "_support" / "_resumable_fit.py"),
        str(out),
        str(out / "ckpt"),
    ]
    if index is not None:
        args += ["--worker", str(index), *map(str, ports)]
    return subprocess.Popen(
        [*args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV
    )


def _wait_for(path, proc, timeout=300):
    start = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the fit exited before pausing:\n{proc.stderr.read()[-4000:]}")
        if time.monotonic() - start > timeout:
            proc.kill()
            pytest.fail(f"no {path.name} after {timeout} s")
        time.sleep(0.2)


def _kill_when_paused(out, proc, tag="single"):
    paused = out / f"paused-{tag}"
    _wait_for(paused, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    paused.unlink()


def _finish(proc, timeout=600):
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]


def _state(out):
    return json.loads((out / "ckpt" / "state.json").read_text())


def _begun(out, tag="single"):
    """The epochs begun, per process, in the order the processes ran."""
    runs = {}
    for line in (out / f"epochs-{tag}.log").read_text().splitlines():
        pid, what, epoch = line.split()
        if what == "begin":
            runs.setdefault(pid, []).append(int(epoch))
    return list(runs.values())


def test_a_killed_fit_resumes_after_its_last_backup(tmp_path):
    """Killed twice in the middle of a backup: it resumes each time, and ends whole.

    1. killed in the save of epoch 3 with the new weights half written (a temporary file):
       the backup of epoch 2 stands;
    2. resumed at epoch 3; killed in the save of epoch 4 with the new weights in place and
       ``state.json``'s replacement half written: the backup of epoch 3 stands;
    3. resumed at epoch 4, it completes: 6 epochs, the whole history, the backup removed.
    """
    out = tmp_path
    proc = _start(out, "--stall", "weights", "--pause-after", "2")
    _kill_when_paused(out, proc)
    assert _state(out)["epoch"] == 2
    leftovers = [p.name for p in (out / "ckpt").iterdir()]
    assert any(name.startswith(".tmp-") for name in leftovers), leftovers  # the half file

    proc = _start(out, "--stall", "state", "--pause-after", "3")
    _kill_when_paused(out, proc)
    assert _state(out)["epoch"] == 3
    assert (out / "ckpt" / "epoch-000004.weights.h5").exists()  # complete but not yet named

    proc = _start(out)
    _finish(proc)
    assert _begun(out) == [[1, 2, 3], [3, 4], [4, 5, 6]]
    result = json.loads((out / "result-single.json").read_text())
    assert result["n_iter_"] == EPOCHS
    assert len(result["history_"]["loss"]) == EPOCHS
    assert result["history_"]["loss"][-1] < result["history_"]["loss"][0]
    assert result["classes_"] == list(range(10))
    # the optimizer's state came back with the weights: one step per batch of every epoch
    assert result["optimizer_iterations"] == EPOCHS * BATCHES
    assert result["accuracy"] >= 0.8
    assert not result["backup_left"]  # a completed fit removes its backup


@pytest.mark.slow  # about 90 s: two starts of two workers, and the chief's wait for the dead one
def test_one_worker_of_two_killed_and_the_job_restarted_resumes(tmp_path):
    """Kill worker 1 after the backup of epoch 2: the chief stops with an error (a peer died);
    both started again resume at epoch 3 and end with the same weights and a whole history."""
    from test_distributed_fit import free_ports

    out = tmp_path
    ports = free_ports(2)
    chief = _start(out, index=0, ports=ports)
    worker = _start(out, "--pause-after", "2", index=1, ports=ports)
    try:
        _kill_when_paused(out, worker, tag="1")
        chief.communicate(timeout=300)
        assert chief.returncode != 0  # the collective ops notice the dead peer
    finally:
        for proc in (chief, worker):
            if proc.poll() is None:
                proc.kill()
    assert _state(out)["epoch"] == 2

    ports = free_ports(2)
    procs = [_start(out, index=i, ports=ports) for i in range(2)]
    try:
        for proc in procs:
            _finish(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = [json.loads((out / f"result-{i}.json").read_text()) for i in range(2)]
    for tag in ("0", "1"):
        assert _begun(out, tag)[-1] == [3, 4, 5, 6]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert results[0]["lipschitz_bound_"] == results[1]["lipschitz_bound_"]
    for result in results:
        assert result["n_iter_"] == EPOCHS and len(result["history_"]["loss"]) == EPOCHS
        assert result["classes_"] == list(range(10))
        assert result["accuracy"] >= 0.8
    assert not (out / "ckpt").exists()


# ---- in process: the parameter, the fingerprint, pickling ----------------------------------


@pytest.fixture(scope="module")
def data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


FIT = dict(width=8, depth=1, epochs=2, batch_size=100, random_state=0)


def test_checkpoint_dir_is_an_ordinary_parameter(tmp_path, data):
    clf = StableClassifier(checkpoint_dir=str(tmp_path / "ckpt"), n_threads=None, **FIT)
    assert clone(clf).get_params()["checkpoint_dir"] == str(tmp_path / "ckpt")
    clf.fit(*data)
    assert clf.n_iter_ == 2 and not (tmp_path / "ckpt").exists()
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.checkpoint_dir == clf.checkpoint_dir
    np.testing.assert_array_equal(restored.predict_proba(data[0]), clf.predict_proba(data[0]))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        StableClassifier(checkpoint_dir=3, **FIT).fit(*data)


def test_a_backup_of_another_fit_is_refused(tmp_path, data):
    """A backup left by a killed fit is not restored into a fit with other arguments."""
    from stablekeras._backup import AtomicBackupAndRestore

    ckpt = tmp_path / "ckpt"

    class Killed(Exception):
        pass

    class KillAfterFirstEpoch(AtomicBackupAndRestore):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            raise Killed  # leaves the backup of epoch 1, as a killed process would

    class Interrupted(StableClassifier):
        def _backup_callback(self, n_features, n_samples):
            cb = super()._backup_callback(n_features, n_samples)
            return KillAfterFirstEpoch(cb.backup_dir, cb.fingerprint)

    with pytest.raises(Killed):
        Interrupted(checkpoint_dir=str(ckpt), **FIT).fit(*data)
    assert (ckpt / "state.json").exists()
    other = StableClassifier(checkpoint_dir=str(ckpt), **{**FIT, "width": 16})
    with pytest.raises(ValueError, match=r"different fit \(differs in: width\)"):
        other.fit(*data)
    # the same arguments resume it: one epoch left, two in the history
    same = StableClassifier(checkpoint_dir=str(ckpt), **FIT).fit(*data)
    assert same.n_iter_ == 2 and len(same.history_["loss"]) == 2
    assert not ckpt.exists()


def test_the_fingerprint_is_stable_across_processes():
    """A RandomState's repr carries a memory address; the fingerprint must not."""
    a = StableClassifier(random_state=np.random.RandomState(0))._backup_fingerprint(4, 10)
    b = StableClassifier(random_state=np.random.RandomState(0))._backup_fingerprint(4, 10)
    assert a == b and "0x" not in a["random_state"]
    assert a != StableClassifier(random_state=1)._backup_fingerprint(4, 10)
