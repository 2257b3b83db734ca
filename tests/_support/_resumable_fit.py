"""A resumable fit in its own process, for the kill-and-resume tests (tests/test_resume.py).

    python tests/_support/_resumable_fit.py OUT CHECKPOINT_DIR [--pause-after K] [--stall WHAT]
                                   [--worker INDEX PORT0 PORT1] [--epochs E]

Fits ``StableClassifier(checkpoint_dir=CHECKPOINT_DIR, ...)`` on digits and
writes ``OUT/result-<tag>.json`` (``n_iter_``, ``history_``, classes, held-out
accuracy, the epochs begun in this process, a digest of the weights). Every
epoch begun and ended is appended to ``OUT/epochs-<tag>.log`` (``<tag>``: the
worker index, or ``single``).

``--pause-after K``: after the backup of epoch K (1-based) is written, write
``OUT/paused-<tag>`` and sleep, so that the test can SIGKILL the process at a
known point. ``--stall weights|state``: in the save of epoch K + 1, stop just
before the new weights file (``weights``, its temporary file cut to half its
size, as a process killed while writing it leaves it) or the new
``state.json`` (``state``, its temporary file cut to half) is renamed into
place, write ``OUT/paused-<tag>`` and sleep.

``--worker INDEX PORT0 PORT1``: one of two workers of a multi-worker fit on
127.0.0.1 (``TF_CONFIG`` is set here, before TensorFlow starts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The fit (small and quick: about a second per epoch).
FIT = dict(width=16, depth=2, batch_size=100, learning_rate=0.02, random_state=0)
SLEEP = 600


def _args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("checkpoint_dir")
    parser.add_argument("--pause-after", type=int, default=None)
    parser.add_argument("--stall", choices=("weights", "state"), default=None)
    parser.add_argument("--worker", nargs=3, type=int, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    return parser.parse_args(argv)


def main(argv):
    args = _args(argv)
    tag = "single"
    if args.worker is not None:
        index, *ports = args.worker
        tag = str(index)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )

    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    from stablekeras import StableClassifier, _backup

    log_path = os.path.join(args.out, f"epochs-{tag}.log")
    paused = os.path.join(args.out, f"paused-{tag}")

    def pause():
        with open(paused, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(SLEEP)

    class Report(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            with open(log_path, "a") as fh:
                fh.write(f"{os.getpid()} begin {epoch + 1}\n")

        def on_epoch_end(self, epoch, logs=None):
            with open(log_path, "a") as fh:
                fh.write(f"{os.getpid()} end {epoch + 1}\n")
            if args.stall is None and epoch + 1 == args.pause_after:
                pause()  # the backup of this epoch is written (it runs first)

    if args.stall is not None:
        replace = _backup._replace_durably

        def stalling_replace(tmp, final):
            name = os.path.basename(final)
            stall_here = {"weights": name.endswith(".weights.h5"), "state": name == "state.json"}
            state = _backup.read_state(os.path.dirname(final))
            saving = 1 if state is None else state["epoch"] + 1
            if name.endswith(".weights.h5"):
                saving = int(name.split("-")[1].split(".")[0])
            if stall_here[args.stall] and saving == args.pause_after + 1:
                size = os.path.getsize(tmp)
                with open(tmp, "r+b") as fh:
                    fh.truncate(size // 2)
                pause()
            replace(tmp, final)

        _backup._replace_durably = stalling_replace

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype("float32")
    distribute = None if args.worker is None else "multi_worker"
    clf = StableClassifier(
        epochs=args.epochs, checkpoint_dir=args.checkpoint_dir, distribute=distribute, **FIT
    )
    clf.fit(X[:1400], y[:1400], callbacks=[Report])  # after the backup: it runs first
    weights = np.concatenate([w.ravel() for w in clf.model_.get_weights()])
    with open(log_path) as fh:
        mine = [line.split() for line in fh if line.startswith(f"{os.getpid()} ")]
    begun = [int(epoch) for _, what, epoch in mine if what == "begin"]
    result = {
        "n_iter_": clf.n_iter_,
        "history_": clf.history_,
        "classes_": clf.classes_.tolist(),
        "accuracy": float(clf.score(X[1400:], y[1400:])),
        "begun_here": begun,
        "weights_sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
        "lipschitz_bound_": clf.lipschitz_bound_,
        "backup_left": os.path.exists(args.checkpoint_dir),
        # multi-worker: model_ is a local copy, without the optimizer
        "optimizer_iterations": None
        if clf.model_.optimizer is None
        else int(clf.model_.optimizer.iterations.numpy()),
    }
    with open(os.path.join(args.out, f"result-{tag}.json"), "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
