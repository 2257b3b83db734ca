"""Fit StableClassifier under MirroredStrategy on two logical CPUs; write what the test checks.

Run by tests/test_distributed_fit.py in a fresh interpreter, because the logical devices
must be configured before TensorFlow initialises its devices:

    python tests/_support/_distributed_fit.py OUT_DIR MODE [MODE ...]

For each ENFORCEMENT ("project" or "substeps") it writes ``OUT_DIR/ENFORCEMENT.json``
(held-out accuracy, replicas, per-block bounds and probe results) and
``OUT_DIR/MODE_{proba,pickled,served}.npy`` (``predict_proba`` of the fitted
estimator, of its pickle round-trip and of its exported SavedModel signature),
or ``OUT_DIR/MODE.error`` with the traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from stablekeras import StableClassifier  # noqa: E402
from stablekeras.export import SIGNATURE_NAME, export_saved_model  # noqa: E402
from stablekeras.layers import NonExpansiveDense  # noqa: E402

#: Enough for >= 0.85 held-out accuracy in ~110 mirrored steps: the chapter's network
#: on flat digits, whose dense gradient-step blocks run in either mode.
FIT = dict(
    network="chapter",
    dense_width=None,
    width=16,
    depth=3,
    epochs=10,
    batch_size=128,
    learning_rate=0.02,
    random_state=0,
)


def block_inputs(model, X):
    """``{block: its input on X}`` for the non-expansive blocks of a sequential model."""
    found, h = {}, tf.constant(X)
    for layer in model.layers:
        if isinstance(layer, NonExpansiveDense):
            found[layer] = h
        h = layer(h, training=False)
    return found


def _ratio(block, x, d):
    f = block(tf.concat([x, x + d], axis=0), training=False)
    n = tf.shape(x)[0]
    return tf.norm(f[n:] - f[:n], axis=1) / tf.norm(d, axis=1)


def probe(block, starts, *, n_ascent=64, steps=60, learning_rate=0.05, seed=0):
    """Largest ``||f(x) - f(y)|| / ||x - y||`` of a block over random and ascended pairs.

    ``starts`` are real inputs of the block (activations of data). Pairs are
    (a) two different starts, (b) a start and a random offset at a far and a close
    distance, and (c) pairs ascended by Adam on the log ratio from (b), with
    ``||x - y||`` held at its initial value so that float32 rounding of a
    vanishing difference cannot pass for expansion.
    """
    rng = np.random.default_rng(seed)
    x = starts.numpy()
    n, dim = x.shape
    radius = float(np.median(np.linalg.norm(x - x.mean(0), axis=1)))
    found = [_ratio(block, x[: n // 2], x[n // 2 : 2 * (n // 2)] - x[: n // 2]).numpy().max()]

    def offsets(m):
        e = rng.normal(size=(m, dim)).astype("float32")
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        s = np.where(np.arange(m) % 2 == 0, 0.5, 0.02) * radius
        return e, s[:, None].astype("float32")

    e, s = offsets(n)
    found.append(_ratio(block, x, s * e).numpy().max())

    xs = tf.Variable(x[rng.choice(n, n_ascent, replace=False)])
    e, s = offsets(n_ascent)
    es = tf.Variable(e)
    opt = keras.optimizers.Adam(learning_rate * radius)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            d = s * es / tf.norm(es, axis=1, keepdims=True)
            r = _ratio(block, xs, d)
            loss = -tf.reduce_mean(tf.math.log(r))
        opt.apply_gradients(zip(tape.gradient(loss, [xs, es]), [xs, es]))
        return tf.reduce_max(r)

    found += [float(step()) for _ in range(steps)]
    found.append(_ratio(block, xs, s * es / tf.norm(es, axis=1, keepdims=True)).numpy().max())
    return float(max(found))


def run(mode, out_dir, data):
    X_train, X_test, y_train, y_test = data
    # "mirrored" for one enforcement and a strategy object for the other: both paths.
    distribute = "mirrored" if mode == "project" else tf.distribute.MirroredStrategy()
    clf = StableClassifier(enforcement=mode, distribute=distribute, **FIT).fit(X_train, y_train)
    strategy = clf.model_.distribute_strategy
    blocks = block_inputs(clf.model_, X_test[:512])
    result = {
        "accuracy": float(clf.score(X_test, y_test)),
        "num_replicas_in_sync": int(strategy.num_replicas_in_sync),
        "strategy": type(strategy).__name__,
        # exact (float64) kernel norms, and the largest the condition allows (projected kernels)
        "kernel_norm": [float(b.operator_norm()) for b in blocks],
        "kernel_norm_limit": [float(b._boundary_norm()) for b in blocks],
        "block_bounds": [float(b.lipschitz_bound()) for b in blocks],
        "probe": [probe(b, h) for b, h in blocks.items()],
        "substeps": [int(b.substeps.numpy()) for b in blocks],
        "lipschitz_bound_": float(clf.lipschitz_bound_),
    }
    proba = clf.predict_proba(X_test)
    restored = pickle.loads(pickle.dumps(clf))
    result["pickled_distribute"] = restored.distribute
    served = tf.saved_model.load(export_saved_model(clf, os.path.join(out_dir, f"export_{mode}")))
    out = served.signatures[SIGNATURE_NAME](inputs=tf.constant(X_test))
    np.save(os.path.join(out_dir, f"{mode}_proba.npy"), proba)
    np.save(os.path.join(out_dir, f"{mode}_pickled.npy"), restored.predict_proba(X_test))
    np.save(os.path.join(out_dir, f"{mode}_served.npy"), out["probabilities"].numpy())
    with open(os.path.join(out_dir, f"{mode}.json"), "w") as fh:
        json.dump(result, fh, indent=1)


def main(argv):
    out_dir, modes = argv[0], argv[1:]
    X, y = load_digits(return_X_y=True)
    data = train_test_split(
        (X / 16.0).astype("float32"), y, train_size=1400, stratify=y, random_state=0
    )
    for mode in modes:
        try:
            run(mode, out_dir, data)
        except Exception:
            with open(os.path.join(out_dir, f"{mode}.error"), "w") as fh:
                fh.write(traceback.format_exc())


if __name__ == "__main__":
    main(sys.argv[1:])
