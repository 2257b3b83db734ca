"""Cost of ``robust_accuracy`` against a bare loop of input gradients.

On 500 held-out images, l2-PGD with k = 20 steps through
:func:`stablekeras.robustness.robust_accuracy` is timed against a plain compiled
loop of k forward + backward passes of the cross-entropy with respect to the
input (``tf.function`` with an input signature, ``tf.range`` loop) on the same
model and data. Both are warmed up (traced and compiled) before timing; each
timing is the best of ``--repeat`` calls and the ratio is the median of three
(attack, loop) pairs.

Run from the repository root::

    python -m benchmarks.attack_speed

Three models: the default dense network on digits, the convolutional network on
digits (8x8x1), and the issue's model, ``StableClassifier(image_shape=(28, 28, 1))``
on MNIST (``../shared/data/mnist-t10k``, fitted for one epoch on 2,000 images;
skipped when the data is missing). It prints the ratios and writes
``benchmarks/results/attack_speed.json``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks import _results  # noqa: E402
from benchmarks._timing import best_of  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(model_kind: str, batch_sizes=(256, 500), steps: int = 20, repeat: int = 5) -> list:
    import tensorflow as tf

    from stablekeras import StableClassifier, datasets
    from stablekeras.robustness import robust_accuracy

    if model_kind == "mnist":
        from benchmarks._data import load_mnist_t10k

        X_fit, y_fit, X_test, y_test = load_mnist_t10k()
        clf = StableClassifier(image_shape=(28, 28, 1), epochs=1, random_state=0)
        clf.fit(X_fit[:2000], y_fit[:2000])
        X_att, y_att = X_test[:500], y_test[:500].astype(np.int64)
    else:
        X, y = datasets.load_dataset("digits")
        kwargs = {"image_shape": (8, 8, 1)} if model_kind == "conv" else {}
        clf = StableClassifier(epochs=3, random_state=0, **kwargs).fit(X[:1200], y[:1200])
        X_att, y_att = X[-500:], y[-500:].astype(np.int64)
    model = clf.model_
    n_features = X_att.shape[1]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n_features], tf.float32),
            tf.TensorSpec([None], tf.int64),
        ]
    )
    def gradient_loop(x, labels):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = model(x, training=False)
                loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            x = x + 1e-3 * tape.gradient(loss, x)
        return x

    def loop():
        gradient_loop(X_att, y_att).numpy()

    rows = []
    for batch_size in batch_sizes:

        def attack(batch_size=batch_size):
            robust_accuracy(clf, X_att, y_att, eps=0.5, steps=steps, batch_size=batch_size)

        attack()
        loop()  # warm up: trace and compile both
        pairs = []
        for _ in range(3):
            t_attack = best_of(attack, repeat)
            t_loop = best_of(loop, repeat)
            pairs.append((t_attack, t_loop))
        ratios = [a / b for a, b in pairs]
        rows.append(
            {
                "model": model_kind,
                "batch_size": batch_size,
                "steps": steps,
                "pairs_seconds": [[round(a, 5), round(b, 5)] for a, b in pairs],
                "median_ratio": float(np.median(ratios)),
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of attack_speed.json")
    run = _results.start(__file__, argv)
    args = parser.parse_args(argv)
    from benchmarks._data import mnist_available

    kinds = ("dense", "conv", "mnist") if mnist_available() else ("dense", "conv")
    rows = [row for kind in kinds for row in measure(kind, repeat=args.repeat)]
    for row in rows:
        a, b = np.median(np.array(row["pairs_seconds"]), axis=0)
        print(
            f"{row['model']:5s} batch {row['batch_size']:3d}: robust_accuracy {1e3 * a:7.1f} ms, "
            f"gradient loop {1e3 * b:7.1f} ms, median ratio {row['median_ratio']:.2f}"
        )
    result = {"images": 500, "rows": rows}
    print(f"wrote {_results.write_result(run, result, args.out / 'attack_speed.json')}")
    return result


if __name__ == "__main__":
    main()
