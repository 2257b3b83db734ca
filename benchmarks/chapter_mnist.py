"""The chapter's robustness experiment on real MNIST: ResNet, non-expansive and certified networks.

Section 5 of ``shared/MATH.md`` (Ehrhardt, Murari, Sherry 2025, Fashion-MNIST) on the
offline MNIST copy ``../shared/data/mnist-t10k``: train on the first 8,000 images,
attack the first 1,000 of the last 2,000 with the project's measure (l2-PGD, 100
steps of 0.1 eps from the clean image, projected on the ball and on [0, 1]; a point
is robust only if both a cross-entropy and a margin attack fail on it; each
attack's own curve is in the JSON) and add the certified accuracy from the logit
margins and the Lipschitz bound.

Three networks, from :mod:`stablekeras.presets`:

* ResNet: the chapter's network (``"chapter"`` preset) with ``constraint="none"``:
  1x1 lift to 8 channels, 2x2 max pooling, 4 blocks ``x + B relu(Ax + b)``, max
  pooling, dense projection;
* Non-expansive: the ``"chapter"`` preset itself, blocks ``x - (T/S) A^T relu(Ax + b)``
  taken ``S`` times, ``S`` adapted to ``||A||`` (``enforcement="substeps"``),
  ``T = 1/4``; lift and projection free, so its Lipschitz bound is their norms'
  product and it certifies little;
* Certified: ``StableClassifier(image_shape=(28, 28, 1))``, the estimator's defaults
  (every layer bounded by 1).

The chapter attacked with cross-entropy alone (100 steps of 0.025 eps from zero),
which overstates 1-Lipschitz networks; ``--chapter-attack`` reproduces that
protocol instead (and says so in the JSON and the plot).

Run from the repository root::

    python -m benchmarks.chapter_mnist            # about 20 minutes on 2 cores
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
    """The chapter's ResNet and non-expansive network (presets), and the certified defaults."""
    from stablekeras import StableClassifier

    chapter = dict(image_shape=(28, 28, 1), epochs=args.epochs, random_state=args.seed)
    certified = dict(epochs=args.epochs) if args.quick else {}  # else the defaults' 60
    return {
        # x + h B relu(A x + b), h = 1: the chapter's ResNet block, in the chapter's network
        "ResNet": StableClassifier.from_preset(
            "chapter", constraint="none", step_size=1.0, **chapter
        ),
        # x - (T/S) A^T relu(Ax + b), S sub-steps adapted to ||A||, T = 1/4 per block
        "Non-expansive (chapter)": StableClassifier.from_preset("chapter", **chapter),
        # the estimator's defaults: every layer bounded by 1
        "Certified (defaults)": StableClassifier(
            image_shape=(28, 28, 1), random_state=args.seed, **certified
        ),
    }


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
    parser.add_argument(
        "--epochs", type=int, default=15, help="epochs of the two chapter networks (preset: 15)"
    )
    parser.add_argument("--steps", type=int, default=100, help="PGD iterations")
    parser.add_argument(
        "--chapter-attack",
        action="store_true",
        help="the chapter's protocol: cross-entropy alone, steps of 2.5 eps / steps",
    )
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
        if args.chapter_attack:
            curve = robustness_curve(
                clf, X_att, y_att, eps=EPS, steps=args.steps, loss="crossentropy", name=name
            )
        else:
            curve = robustness_curve(
                clf, X_att, y_att, eps=EPS, steps=args.steps, relative_step=0.1, name=name
            )
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
            "step_size": f"{2.5 / args.steps:g} eps" if args.chapter_attack else "0.1 eps",
            "loss": "crossentropy" if args.chapter_attack else "both",
            "robust_means": (
                "the cross-entropy attack fails"
                if args.chapter_attack
                else "both the cross-entropy and the margin attack fail"
            ),
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
