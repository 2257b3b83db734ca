"""The estimator at its defaults on real MNIST, beside the unconstrained network of the same shape.

``StableClassifier(image_shape=(28, 28, 1), random_state=0)`` (nothing else set:
the certified network) against ``StableClassifier(image_shape=(28, 28, 1),
random_state=0, constraint="none")`` (the same shape with every bounded layer
made free), on the project's split: the first 8,000 images of
``../shared/data/mnist-t10k`` to train, the last 2,000 held out.

Measured for both:

* clean accuracy on the 2,000 held-out images;
* certified accuracy at ``CERTIFIED_EPS`` on the same images
  (:func:`stablekeras.robustness.certified_accuracy`: correct with a margin above
  ``sqrt(2) L eps`` plus the rounding allowance, ``L = lipschitz_bound_``);
* robust accuracy at ``PGD_EPS`` on the first ``--n-pgd`` (500) held-out images:
  l2-PGD, 100 steps of ``0.1 eps`` from the clean image, once with cross-entropy
  and once with the margin loss; a point is robust only if **both** attacks fail
  on it (each attack's own figure is in the JSON too);
* the fit time, in ``--pairs`` (3) side-by-side pairs in one process, the order
  alternating; the ratio is the median of the pairs' ratios.

The issue's acceptance (issue 13) is evaluated and printed: clean >= 97%,
certified at 0.5 >= 90%, robust at 1.0 >= max(1.5 x, +10 points) of the
baseline's, fit ratio <= 2.

Run ``python -m benchmarks.defaults_mnist`` (about 15 minutes on 2 cores) or
``--smoke`` (a minute). Writes ``benchmarks/results/defaults_mnist.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from benchmarks._results import start, write_result

CERTIFIED_EPS = (36 / 255, 0.3, 0.5, 1.0, 1.58)
PGD_EPS = (0.5, 1.0, 1.5)
DEFAULTS = {"image_shape": (28, 28, 1), "random_state": 0}
BASELINE = {**DEFAULTS, "constraint": "none"}


def _key(eps: float) -> str:
    return f"{eps:.3g}"


def fit_pairs(X, y, n_pairs: int, overrides=None, verbose=True):
    """Fit the defaults and the baseline ``n_pairs`` times, alternating the order.

    Returns the first fitted model of each and the fit times (seconds) per pair.
    """
    from stablekeras import StableClassifier

    overrides = overrides or {}
    specs = {"default": {**DEFAULTS, **overrides}, "baseline": {**BASELINE, **overrides}}
    models, times = {}, {"default": [], "baseline": []}
    for pair in range(n_pairs):
        order = ("default", "baseline") if pair % 2 == 0 else ("baseline", "default")
        for name in order:
            clf = StableClassifier(**specs[name])
            t0 = time.perf_counter()
            clf.fit(X, y)
            times[name].append(time.perf_counter() - t0)
            models.setdefault(name, clf)
            if verbose:
                print(f"pair {pair}: {name} fit {times[name][-1]:.0f} s", flush=True)
    return models, times


def evaluate(clf, X_test, y_test, n_pgd: int, steps: int, pgd_eps=PGD_EPS) -> dict:
    """Clean, certified (if the model has a bound) and two-attack robust accuracy."""
    from stablekeras.robustness import certified_accuracy, robust_accuracy

    result = {"clean": float(clf.score(X_test, y_test)), "lipschitz_bound": clf.lipschitz_bound_}
    result["certified"] = dict(
        zip(
            map(_key, CERTIFIED_EPS),
            map(float, certified_accuracy(clf, X_test, y_test, eps=list(CERTIFIED_EPS))),
        )
    )
    X_pgd, y_pgd = X_test[:n_pgd], y_test[:n_pgd]
    robust, by_loss = {}, {"crossentropy": {}, "margin": {}}
    for eps in pgd_eps:
        common = dict(attack="pgd", eps=eps, norm=2, steps=steps, step_size=0.1 * eps)
        robust[_key(eps)] = float(robust_accuracy(clf, X_pgd, y_pgd, loss="both", **common))
        for loss in by_loss:
            by_loss[loss][_key(eps)] = float(
                robust_accuracy(clf, X_pgd, y_pgd, loss=loss, **common)
            )
    result.update(robust_both_attacks=robust, robust_by_attack=by_loss)
    return result


def acceptance(result: dict) -> dict:
    """The issue's four checks with the measured values."""
    ours, base = result["default"], result["baseline"]
    robust_target = max(
        1.5 * base["robust_both_attacks"]["1"], base["robust_both_attacks"]["1"] + 0.10
    )
    return {
        "clean >= 0.97": [ours["clean"], ours["clean"] >= 0.97],
        "certified at 0.5 >= 0.90": [ours["certified"]["0.5"], ours["certified"]["0.5"] >= 0.90],
        "robust at 1.0 >= max(1.5 x, +0.10) of the baseline": [
            ours["robust_both_attacks"]["1"],
            robust_target,
            ours["robust_both_attacks"]["1"] >= robust_target,
        ],
        "fit ratio <= 2": [result["fit_ratio"]["median"], result["fit_ratio"]["median"] <= 2.0],
    }


def run(
    *,
    n_train=None,
    n_test=None,
    n_pgd=500,
    steps=100,
    n_pairs=3,
    overrides=None,
    verbose=True,
    pgd_eps=PGD_EPS,
):
    from benchmarks._data import load_mnist_t10k

    X_train, y_train, X_test, y_test = load_mnist_t10k()
    X_train, y_train = X_train[:n_train], y_train[:n_train]
    X_test, y_test = X_test[:n_test], y_test[:n_test]
    models, times = fit_pairs(X_train, y_train, n_pairs, overrides, verbose)
    ratios = [a / b for a, b in zip(times["default"], times["baseline"])]
    result = {
        "n_train": len(X_train),
        "n_test": len(X_test),
        "n_pgd": min(n_pgd, len(X_test)),
        "pgd_steps": steps,
        "overrides": overrides or {},
        "fit_seconds": times,
        "fit_ratio": {
            "pairs": ratios,
            "median": float(np.median(ratios)),
            "min": float(min(ratios)),
            "max": float(max(ratios)),
        },
        "epochs": {name: int(clf.n_iter_) for name, clf in models.items()},
    }
    for name, clf in models.items():
        result[name] = evaluate(clf, X_test, y_test, n_pgd, steps, pgd_eps)
        if not math.isfinite(result[name]["lipschitz_bound"]):
            result[name]["lipschitz_bound"] = None
    result["acceptance"] = acceptance(result)
    return result


def markdown_table(result: dict) -> str:
    """Default and baseline: clean, certified, robust (both attacks), fit."""
    head = (
        "| network | clean | "
        + " | ".join(f"cert {e:.3g}" for e in CERTIFIED_EPS)
        + " | "
        + " | ".join(f"robust {e:g} (both)" for e in PGD_EPS)
        + " | fit (median) |"
    )
    rows = [head, "|" + "---|" * (3 + len(CERTIFIED_EPS) + len(PGD_EPS))]
    for name, label in (("default", "defaults (certified)"), ("baseline", 'constraint="none"')):
        r = result[name]
        cells = [f"{100 * r['clean']:.2f}"]
        cells += [f"{100 * r['certified'][_key(e)]:.2f}" for e in CERTIFIED_EPS]
        cells += [f"{100 * r['robust_both_attacks'][_key(e)]:.1f}" for e in PGD_EPS]
        cells.append(f"{np.median(result['fit_seconds'][name]):.0f} s")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="side-by-side fit pairs")
    parser.add_argument("--n-pgd", type=int, default=500, help="held-out images attacked")
    parser.add_argument("--smoke", action="store_true", help="500 images, 2 epochs, 10 steps")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)
    record = start(__file__, argv)
    if args.smoke:
        result = run(
            n_train=500, n_test=200, n_pgd=50, steps=10, n_pairs=1, overrides={"epochs": 2}
        )
    else:
        result = run(n_pgd=args.n_pgd, n_pairs=args.pairs)
    result["smoke"] = bool(args.smoke)
    path = write_result(record, result, args.out)
    print(markdown_table(result))
    for check, values in result["acceptance"].items():
        print(f"{check}: {values}")
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
