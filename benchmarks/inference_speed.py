"""Inference: an exported SavedModel against ``estimator.predict`` on a batch of 1,000.

Two estimators, each fitted briefly: the default dense network on digits, and the
issue's model, ``StableClassifier(image_shape=(28, 28, 1))`` on MNIST
(``../shared/data/mnist-t10k``, one epoch on 2,000 images; skipped when the data
is missing). Each is exported with :func:`stablekeras.export.export_saved_model`,
loaded back with ``tf.saved_model.load`` (as TF Serving loads it, in the same
process here so that both sides share the machine's state), and its
``serving_default`` signature is called on the same 1,000 rows that
``estimator.predict`` gets. Both are warmed up first; each timing is the best of
``--repeat`` calls; the ratio (SavedModel / predict) is reported as the median of
three interleaved pairs with min and max, and the outputs are checked to agree.

Run from the repository root::

    python -m benchmarks.inference_speed

It prints a table and writes ``benchmarks/results/inference_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks import _results  # noqa: E402
from benchmarks._timing import best_of  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 1000


def _fitted(kind: str):
    from stablekeras import StableClassifier, datasets

    if kind == "mnist":
        from benchmarks._data import load_mnist_t10k

        X_fit, y_fit, X_test, _ = load_mnist_t10k()
        clf = StableClassifier(image_shape=(28, 28, 1), epochs=1, random_state=0)
        clf.fit(X_fit[:2000], y_fit[:2000])
        return clf, X_test[:BATCH]
    X, y = datasets.load_dataset("digits")
    clf = StableClassifier(epochs=3, random_state=0).fit(X, y)
    rows = np.random.default_rng(0).integers(0, len(X), size=BATCH)
    return clf, X[rows]


def measure(kind: str, repeat: int = 10) -> dict:
    import tensorflow as tf

    from stablekeras.export import INPUT_NAME, export_saved_model

    clf, X = _fitted(kind)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(clf, Path(tmp) / kind)
        serving = tf.saved_model.load(str(path)).signatures["serving_default"]
        inputs = tf.constant(X)

        def served():
            return serving(**{INPUT_NAME: inputs})["classes"].numpy()

        def predict():
            return clf.predict(X)

        np.testing.assert_array_equal(served(), predict())  # also the warm-up
        pairs = []
        for _ in range(3):
            pairs.append((best_of(served, repeat), best_of(predict, repeat)))
    ratios = [a / b for a, b in pairs]
    return {
        "model": kind,
        "batch": BATCH,
        "pairs_seconds": [[round(a, 6), round(b, 6)] for a, b in pairs],
        "ratio_savedmodel_over_predict": {
            "median": float(np.median(ratios)),
            "min": float(np.min(ratios)),
            "max": float(np.max(ratios)),
        },
    }


def main(argv=None) -> dict:
    from benchmarks._data import mnist_available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "inference_speed.json")
    run = _results.start(__file__, argv)
    args = parser.parse_args(argv)
    kinds = ("dense", "mnist") if mnist_available() else ("dense",)
    rows = [measure(kind, repeat=args.repeat) for kind in kinds]
    print("| model | SavedModel (ms) | predict (ms) | ratio median | min | max |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        a, b = np.median(np.array(row["pairs_seconds"]), axis=0)
        q = row["ratio_savedmodel_over_predict"]
        print(
            f"| {row['model']} | {1e3 * a:.2f} | {1e3 * b:.2f} | {q['median']:.3f} "
            f"| {q['min']:.3f} | {q['max']:.3f} |"
        )
    result = {"rows": rows}
    print(f"wrote {_results.write_result(run, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
