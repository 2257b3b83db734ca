"""One worker of a two-worker fit (distribute="multi_worker") on 127.0.0.1 (test_distributed_fit).

    python tests/_support/_multi_worker_fit.py OUT INDEX PORT0 PORT1 [shift]

Sets ``TF_CONFIG`` (before TensorFlow starts), fits ``StableClassifier`` on
digits and writes ``OUT/worker-INDEX.json`` (held-out accuracy, bounds, the
per-block Lipschitz probe, the export's path or None, the pickled
``distribute``) and ``OUT/worker-INDEX.npy`` (all weights, flattened), or
``OUT/worker-INDEX.error`` with the traceback. With ``shift``, a small fit on
shifted images (``random_shift``) that writes only the weights, the epochs and the bound.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The same fit as tests/_support/_distributed_fit.py (the MirroredStrategy test).
FIT = dict(width=16, depth=3, epochs=10, batch_size=128, learning_rate=0.02, random_state=0)
#: ``shift`` mode: a small network on the digits as 8x8 images, trained on shifted images.
SHIFT_FIT = dict(image_shape=(8, 8, 1), random_shift=1, width=4, depth=1, dense_width=16)
SHIFT_FIT.update(dense_depth=1, epochs=3, batch_size=128, random_state=0)


def split():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(
        (X / 16.0).astype(np.float32), y, train_size=1400, stratify=y, random_state=0
    )


def run_shifted(out, index):
    """The ``shift`` mode: only the weights, the epochs and the bound."""
    import numpy as np

    from stablekeras import StableClassifier

    X_train, X_test, y_train, y_test = split()
    clf = StableClassifier(distribute="multi_worker", **SHIFT_FIT).fit(X_train, y_train)
    np.save(
        os.path.join(out, f"worker-{index}.npy"),
        np.concatenate([w.ravel() for w in clf.model_.get_weights()]),
    )
    result = {"n_iter_": clf.n_iter_, "lipschitz_bound_": float(clf.lipschitz_bound_)}
    with open(os.path.join(out, f"worker-{index}.json"), "w") as fh:
        json.dump(result, fh)


def run(out, index):
    import numpy as np
    import tensorflow as tf
    from lipschitz_probe import probe

    from stablekeras import StableClassifier
    from stablekeras.export import export_saved_model

    X_train, X_test, y_train, y_test = split()
    clf = StableClassifier(distribute="multi_worker", **FIT).fit(X_train, y_train)
    # the per-block probe (every layer with a bound), at the scale of its real inputs
    blocks, h = [], tf.constant(X_test[:512])
    for layer in clf.model_.layers:
        if hasattr(layer, "lipschitz_bound"):
            blocks.append((layer, tuple(h.shape[1:]), float(np.median(np.std(h.numpy(), axis=1)))))
        h = layer(h, training=False)
    probes = [
        float(probe([lambda x, b=b: b(x, training=False)], shape, scale=s)[0])
        for b, shape, s in blocks
    ]
    exported = export_saved_model(clf, os.path.join(out, "export"))
    result = {
        "accuracy": float(clf.score(X_test, y_test)),
        "lipschitz_bound_": float(clf.lipschitz_bound_),
        "blocks": [type(b).__name__ for b, _, _ in blocks],
        "block_bounds": [float(b.lipschitz_bound()) for b, _, _ in blocks],
        "probe": probes,
        "n_iter_": clf.n_iter_,
        "exported": exported,
        "pickled_distribute": pickle.loads(pickle.dumps(clf)).distribute,
        "variables_distributed": any(
            isinstance(v.value, tf.distribute.DistributedValues) for v in clf.model_.variables
        ),
    }
    weights = np.concatenate([w.ravel() for w in clf.model_.get_weights()])
    np.save(os.path.join(out, f"worker-{index}.npy"), weights)
    with open(os.path.join(out, f"worker-{index}.json"), "w") as fh:
        json.dump(result, fh, indent=1)


def main(argv):
    out, index, *ports = argv
    mode = ports.pop() if ports[-1] == "shift" else None
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": int(index)}}
    )
    try:
        (run_shifted if mode == "shift" else run)(out, int(index))
    except Exception:
        with open(os.path.join(out, f"worker-{index}.error"), "w") as fh:
            fh.write(traceback.format_exc())
        raise


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1:])
