"""Fit time of the stable network against the unconstrained ResNet of the same shape.

``python -m benchmarks.fit_speed`` fits, side by side in one process on the
same 4,000 MNIST images for 3 epochs with default settings,
``StableClassifier(image_shape=(28, 28, 1))`` (the certified defaults) and the
same estimator with ``constraint="none"`` (the unconstrained network of the same
shape), alternating the order, and reports the ratio of fit times (median, min,
max of the pairs), once per way of keeping the blocks' condition: the default
``enforcement="normalize"``, ``"project"`` (a kernel constraint after each step) and
``"substeps"`` (with its cost per sub-step). ``--scaling`` adds the tables
of fit time per epoch against depth, width and batch size, and the cost of
certified accuracy against data size. Writes ``benchmarks/results/fit_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks import _results
from benchmarks._data import load_mnist_t10k
from stablekeras import StableClassifier
from stablekeras.robustness import certified_accuracy

RESULTS = Path(__file__).resolve().parent / "results"


def _fit_seconds(X, y, **params) -> tuple[float, StableClassifier]:
    clf = StableClassifier(image_shape=(28, 28, 1), random_state=0, **params)
    start = time.perf_counter()
    clf.fit(X, y)
    return time.perf_counter() - start, clf


def _summary(values) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def fit_ratio(X, y, *, pairs: int, epochs: int, **params) -> dict:
    """Median/min/max of t(stable) / t(baseline) over ``pairs`` alternating pairs."""
    ratios, stable_t, base_t = [], [], []
    for i in range(pairs):
        order = ("stable", "none") if i % 2 == 0 else ("none", "stable")
        times = {}
        for kind in order:
            constraint = "none" if kind == "none" else "nonexpansive"
            kw = dict(params, epochs=epochs, constraint=constraint)
            if kind == "none":
                kw.pop("enforcement", None)
            times[kind], clf = _fit_seconds(X, y, **kw)
            if kind == "stable":
                substeps = [
                    int(layer.substeps.numpy())
                    for layer in clf.model_.layers
                    if hasattr(layer, "substeps")
                ]
        ratios.append(times["stable"] / times["none"])
        stable_t.append(times["stable"])
        base_t.append(times["none"])
    return {
        "ratio": _summary(ratios),
        "stable_seconds": _summary(stable_t),
        "baseline_seconds": _summary(base_t),
        "final_substeps": substeps,
    }


def scaling(X, y, *, epochs: int = 1) -> dict:
    """Fit time per epoch against depth, width and batch size (the defaults otherwise)."""
    table = {"depth": {}, "width": {}, "batch_size": {}}
    for depth in (2, 4, 8, 16):
        table["depth"][depth] = _fit_seconds(X, y, depth=depth, epochs=epochs)[0] / epochs
    for width in (16, 24, 32):  # the 4x4 lift gives 16 channels: width >= 16
        table["width"][width] = _fit_seconds(X, y, width=width, epochs=epochs)[0] / epochs
    for batch in (32, 128, 512):
        table["batch_size"][batch] = _fit_seconds(X, y, batch_size=batch, epochs=epochs)[0] / epochs
    return table


def certified_cost(X, y, clf) -> dict:
    """Seconds of ``certified_accuracy`` (one forward pass plus the bound) against data size."""
    out = {}
    for n in (250, 500, 1000, 2000):
        certified_accuracy(clf, X[:n], y[:n], eps=0.1)  # warm
        start = time.perf_counter()
        certified_accuracy(clf, X[:n], y[:n], eps=0.1)
        out[n] = time.perf_counter() - start
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--n", type=int, default=4000, help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--enforcements",
        nargs="+",
        default=["normalize", "project", "substeps"],
        choices=["normalize", "project", "substeps"],
        help="ways of keeping the condition to time against constraint='none'",
    )
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "fit_speed.json")
    run = _results.start(__file__, argv)
    args = parser.parse_args(argv)

    X_train, y_train, X_test, y_test = load_mnist_t10k()
    X, y = X_train[: args.n], y_train[: args.n]
    result = {
        "n_images": args.n,
        "epochs": args.epochs,
        "pairs": args.pairs,
    }
    _fit_seconds(X[:256], y[:256], epochs=1)  # import and first-trace costs out of the pairs
    result["enforcement"] = {}
    for enforcement in args.enforcements:
        r = fit_ratio(X, y, pairs=args.pairs, epochs=args.epochs, enforcement=enforcement)
        if enforcement == "substeps":
            mean_s = float(np.mean(r["final_substeps"]))
            r["mean_final_substeps"] = mean_s
            r["ratio_per_substep"] = r["ratio"]["median"] / mean_s
        result["enforcement"][enforcement] = r
        extra = f"  final S={r['final_substeps']}" if enforcement == "substeps" else ""
        print(_line(f"enforcement={enforcement}", r) + extra, flush=True)
    if args.scaling:
        result["scaling_seconds_per_epoch"] = scaling(X, y)
        _, clf = _fit_seconds(X, y, epochs=1)
        result["certified_seconds"] = certified_cost(X_test, y_test, clf)
        print(json.dumps(result["scaling_seconds_per_epoch"], indent=1))
        print(json.dumps(result["certified_seconds"], indent=1))
    print(f"wrote {_results.write_result(run, result, args.out)}")
    return result


def _line(name, r) -> str:
    q = r["ratio"]
    return (
        f"{name:24s} ratio median {q['median']:.2f} (min {q['min']:.2f}, max {q['max']:.2f}); "
        f"stable {r['stable_seconds']['median']:.1f} s, "
        f"baseline {r['baseline_seconds']['median']:.1f} s"
    )


if __name__ == "__main__":
    main()
