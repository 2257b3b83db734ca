"""The sweep that chose the certified default network: variants on real MNIST, clean and certified.

Each variant is ``StableClassifier(image_shape=(28, 28, 1), random_state=0, **overrides)``
(the estimator's defaults changed by ``overrides``), fitted on the project's split
(first 8,000 images of ``../shared/data/mnist-t10k``; the last 2,000 held out).
Reported per variant: clean accuracy and certified accuracy at ``CERTIFIED_EPS``
on the held-out images and on the training images (the gap shows how much of the
large-radius certificate is lost to generalisation), ``lipschitz_bound_`` and the
fit time (wall clock, machine load in the provenance record). No attacks: the
chosen configurations are attacked by ``benchmarks.certified_mnist`` and
``benchmarks.defaults_mnist``.

Run ``python -m benchmarks.certified_sweep`` (all variants, about 35 minutes on 2
quiet cores), ``--only NAME [NAME ...]`` for some, ``--smoke`` for a quick pass.
Writes ``benchmarks/results/certified_sweep.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks._results import start, write_result

CERTIFIED_EPS = (36 / 255, 0.3, 0.5, 1.0, 1.58)

#: The dense network of round one (the certified_mnist_dense preset): no conv step.
DENSE = dict(depth=0, lift_block_size=4, batch_size=128, learning_rate=5e-3)

#: name -> overrides of the defaults, one change at a time. The first block answers
#: "which convolutional gradient step" (dense only, Gram instead of AOL, the kernel
#: constraint instead of normalisation), the second "how large a network and how long",
#: the third "which margin", the fourth "does translation augmentation close the gap
#: between training and held-out certificates" (for the dense network too), the fifth
#: "with shifted images, what makes the convolutional network pull ahead, if anything".
VARIANTS = {
    "the defaults (2 conv steps, AOL, batch 256, lr 1e-2)": dict(),
    "dense stage only (the certified_mnist_dense preset: depth 0, batch 128, lr 5e-3)": DENSE,
    "the defaults, Gram normalisation": dict(normalization="gram"),
    "the defaults, kernel constraint (enforcement='project')": dict(enforcement="project"),
    "the defaults, width 32": dict(width=32),
    "the defaults, 120 epochs": dict(epochs=120),
    "the defaults, dense stage of 512 units": dict(dense_width=512),
    "the defaults, margin 4": dict(margin=4.0),
    "the defaults, random shifts of 1 pixel (the certified_mnist preset)": dict(random_shift=1),
    "the defaults, random shifts of 2 pixels": dict(random_shift=2),
    "dense stage only, random shifts of 1 pixel": dict(DENSE, random_shift=1),
    "shifts of 1 pixel, 120 epochs": dict(random_shift=1, epochs=120),
    "shifts of 1 pixel, 5x5 kernels": dict(random_shift=1, kernel_size=5),
    "shifts of 1 pixel, three conv steps": dict(random_shift=1, depth=3),
    "shifts of 1 pixel, 2x2 lift (conv steps on 14x14x16)": dict(random_shift=1, lift_block_size=2),
    "dense stage only, shifts of 1 pixel, 120 epochs": dict(DENSE, random_shift=1, epochs=120),
}


def _key(eps: float) -> str:
    return f"{eps:.3g}"


def _certified(clf, X, y) -> tuple[float, dict]:
    from stablekeras.robustness import certified_accuracy

    clean = float(clf.score(X, y))
    values = certified_accuracy(clf, X, y, eps=list(CERTIFIED_EPS))
    return clean, {_key(e): float(v) for e, v in zip(CERTIFIED_EPS, values)}


def run_variant(overrides: dict, data, verbose=True) -> dict:
    from stablekeras import StableClassifier

    X_train, y_train, X_test, y_test = data
    clf = StableClassifier(image_shape=(28, 28, 1), random_state=0, **overrides)
    t0 = time.perf_counter()
    clf.fit(X_train, y_train)
    fit = time.perf_counter() - t0
    clean, certified = _certified(clf, X_test, y_test)
    train_clean, train_certified = _certified(clf, X_train, y_train)
    row = {
        "overrides": overrides,
        "clean": clean,
        "certified": certified,
        "train_clean": train_clean,
        "train_certified": train_certified,
        "lipschitz_bound": float(clf.lipschitz_bound_),
        "fit_seconds": fit,
        "epochs": int(clf.n_iter_),
    }
    if verbose:
        print(markdown_row("", row), flush=True)
    return row


def markdown_row(name: str, row: dict) -> str:
    cert = " / ".join(f"{100 * row['certified'][_key(e)]:.1f}" for e in CERTIFIED_EPS)
    train = " / ".join(f"{100 * row['train_certified'][_key(e)]:.1f}" for e in CERTIFIED_EPS)
    return (
        f"| {name} | {100 * row['clean']:.2f} | {cert} | {100 * row['train_clean']:.2f} | "
        f"{train} | {row['fit_seconds']:.0f} s |"
    )


def markdown_table(rows: dict) -> str:
    head = (
        "| variant | clean | certified 0.141 / 0.3 / 0.5 / 1.0 / 1.58 | train clean | "
        "train certified (same radii) | fit |\n|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(markdown_row(name, row) for name, row in rows.items())])


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="some of VARIANTS (prefixes)")
    parser.add_argument("--smoke", action="store_true", help="2 variants, 500 images, 2 epochs")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args(argv)
    record = start(__file__, argv)
    from benchmarks._data import load_mnist_t10k

    X_train, y_train, X_test, y_test = load_mnist_t10k()
    variants = dict(VARIANTS)
    if args.only:
        variants = {k: v for k, v in variants.items() if any(k.startswith(p) for p in args.only)}
        if not variants:
            parser.error(f"no variant starts with {args.only}; variants: {list(VARIANTS)}")
    data = (X_train, y_train, X_test, y_test)
    if args.smoke:
        variants = dict(list(variants.items())[:2])
        variants = {k: {**v, "epochs": 2} for k, v in variants.items()}
        data = (X_train[:500], y_train[:500], X_test[:200], y_test[:200])
    rows = {}
    for name, overrides in variants.items():
        if not args.smoke:
            print(name, flush=True)
        rows[name] = run_variant(overrides, data, verbose=not args.smoke)
    result = {
        "n_train": int(len(data[0])),
        "n_test": int(len(data[2])),
        "smoke": bool(args.smoke),
        "variants": rows,
        "best_clean_at_least_97_by_certified_1.58": max(
            (n for n, r in rows.items() if r["clean"] >= 0.97),
            key=lambda n: rows[n]["certified"]["1.58"],
            default=None,
        ),
    }
    path = write_result(record, result, args.out)
    print(markdown_table(rows))
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
