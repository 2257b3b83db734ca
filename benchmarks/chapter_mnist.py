"""The chapter's robustness experiment on real MNIST: ResNet against non-expansive network.

Section 5 of ``shared/MATH.md`` (Ehrhardt, Murari, Sherry 2025, Fashion-MNIST) on the
offline MNIST copy ``../shared/data/mnist-t10k``: train on the first 8,000 images,
attack the first 1,000 of the last 2,000 with l2-PGD (100 steps of 0.025 eps, zero
start, cross-entropy, projection on the ball and on [0, 1]) and add the certified
accuracy from logit margins and the Lipschitz bound.

Three networks of the same shape (1x1 lift to ``width`` channels, 2x2 max pooling,
``depth`` 3x3 blocks, max pooling, dense projection), all trained with the
multi-class hinge loss:

* ResNet: blocks ``x + B relu(Ax)``;
* Non-expansive: the chapter's blocks ``x - (T/S) A^T relu(Ax + b)`` taken ``S``
  times, ``S`` adapted to ``||A||`` (``enforcement="substeps"``), ``T = 1/4``; lift and
  projection free, so the Lipschitz bound is their norms' product;
* Non-expansive, L <= 1: one Euler step per block with ``h ||A||^2 <= 2`` and lift
  and projection of norm at most 1 (``max_norm=1``), so margins certify radii.

Run from the repository root::

    python -m benchmarks.chapter_mnist            # about 15 minutes on 2 cores
    python -m benchmarks.chapter_mnist --quick    # a smoke run, about a minute

It writes ``benchmarks/results/chapter_mnist.json`` and ``chapter_mnist.png`` and
prints a Markdown table (the one in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from benchmarks import _results  # noqa: E402
from benchmarks._data import MNIST_DIR, ROOT, load_mnist_t10k  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EPS = (0.0, 0.1, 0.3, 0.5, 1.0, 1.5)


def estimators(args):
    """The ResNet, the chapter's non-expansive network, and a certified variant."""
    from stablekeras import StableClassifier

    common = dict(
        image_shape=(28, 28, 1),
        width=args.width,
        depth=args.depth,
        loss="hinge",
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        random_state=args.seed,
    )
    models = {
        # x + h B relu(A x), h = 1: the chapter's ResNet block
        "ResNet": StableClassifier(constraint="none", margin=args.margin, **common),
        # x - (T/S) A^T relu(Ax + b), S sub-steps adapted to ||A||, T = 1/4 per block:
        # the chapter's non-expansive network (lift and projection free)
        "Non-expansive": StableClassifier(
            constraint="nonexpansive",
            enforcement="substeps",
            step_size=args.time_per_block,
            margin=args.margin,
            **common,
        ),
    }
    if args.certified_model:
        # one Euler step per block (h ||A||^2 <= 2), lift and projection of norm <= 1:
        # a network with Lipschitz bound <= 1, so the margins certify radii
        models["Non-expansive, L <= 1"] = StableClassifier(
            constraint="nonexpansive", max_norm=1.0, margin=args.certified_margin, **common
        )
    return models


def plot(result: dict, path: Path) -> None:
    """Robust (solid) and certified (dashed) accuracy of every network against eps."""
    import matplotlib.pyplot as plt

    from stablekeras.robustness import plot_robustness_curve

    fig, ax = plt.subplots(figsize=(8, 4))
    plot_robustness_curve(result["curves"], ax=ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.set_title(
        f"MNIST, l2-PGD ({result['attack']['steps']} steps), "
        f"{result['data']['attacked']} held-out images"
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--margin", type=float, default=1.0, help="hinge margin")
    parser.add_argument(
        "--time-per-block", type=float, default=0.25, help="T of the sub-stepped blocks"
    )
    parser.add_argument(
        "--certified-model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the non-expansive network with lift and projection of norm <= 1",
    )
    parser.add_argument(
        "--certified-margin", type=float, default=0.5, help="hinge margin of that network"
    )
    parser.add_argument("--steps", type=int, default=100, help="PGD iterations")
    parser.add_argument("--n-attack", type=int, default=1000, help="held-out images attacked")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=MNIST_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="chapter_mnist", help="stem of the output files")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 200 images, 20 steps")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the PNG from the JSON of a run"
    )
    run = _results.start(__file__, argv)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.n_attack, args.steps = 2, 200, 20
        args.name += "_quick"
    if args.replot:
        result = json.loads((args.out / f"{args.name}.json").read_text())
        plot(result, args.out / f"{args.name}.png")
        return result

    from stablekeras.robustness import format_table, robustness_curve

    X_train, y_train, X_held, y_held = load_mnist_t10k(args.data)
    X_att, y_att = X_held[: args.n_attack], y_held[: args.n_attack]
    start = time.perf_counter()
    curves, runs = {}, {}
    for name, clf in estimators(args).items():
        t0 = time.perf_counter()
        clf.fit(X_train, y_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        curve = robustness_curve(clf, X_att, y_att, eps=EPS, steps=args.steps, name=name)
        attack_s = time.perf_counter() - t0
        curves[name] = curve
        runs[name] = {
            "params": {k: v for k, v in clf.get_params().items() if k != "verbose"},
            "fit_seconds": round(fit_s, 1),
            "attack_seconds": round(attack_s, 1),
            "held_out_accuracy_2000": float(clf.score(X_held, y_held)),
        }
        if clf.enforcement == "substeps":
            runs[name]["substeps"] = [
                int(layer.substeps.numpy())
                for layer in clf.model_.layers
                if hasattr(layer, "substeps")
            ]
            # S, h and the flow time S h actually used (below T where max_substeps binds)
            runs[name]["substep_schedule"] = [
                layer.substep_schedule()._asdict()
                for layer in clf.model_.layers
                if hasattr(layer, "substep_schedule")
            ]
        print(
            f"{name}: fit {fit_s:.0f} s, attacks {attack_s:.0f} s, clean {curve['clean']:.3f}, "
            f"L <= {curve['lipschitz_bound']:.3g}",
            flush=True,
        )
    total = time.perf_counter() - start

    table = format_table(curves)
    print(table)
    result = {
        "experiment": "chapter_mnist",
        "data": {
            "source": "MNIST t10k (offline copy)",
            "train": len(X_train),
            "attacked": len(X_att),
            "held_out": len(X_held),
        },
        "attack": {
            "name": "l2-PGD (stablekeras.robustness: CleverHans FGM steps, projected)",
            "steps": args.steps,
            "step_size": "0.025 eps" if args.steps == 100 else f"{2.5 / args.steps:g} eps",
            "loss": "crossentropy",
            "random_start": False,
            "clip": [0.0, 1.0],
        },
        "runs": runs,
        "curves": curves,
        "table": table,
        "total_seconds": round(total, 1),
    }
    _results.write_result(run, result, args.out / f"{args.name}.json")
    plot(result, args.out / f"{args.name}.png")
    print(f"wrote {args.out / (args.name + '.json')} and .png in {total:.0f} s")
    return result


if __name__ == "__main__":
    main()
