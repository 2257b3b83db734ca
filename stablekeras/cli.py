"""The command line: ``stablekeras`` (or ``python -m stablekeras``).

Subcommands
-----------
``demo``
    The main job (``make demo``): train the non-expansive classifier and the
    unconstrained ResNet of the same size on a data set (scikit-learn's digits
    by default), compare their clean, robust (l2 PGD) and certified accuracy
    over a range of radii, plot the curves, export the non-expansive model for
    TF Serving and write everything to ``--out``.
``train``
    Fit a :class:`~stablekeras.StableClassifier` on a data set and pickle it.
``evaluate``
    Clean, robust and certified accuracy of a pickled classifier.
``export``
    Export a pickled estimator as a SavedModel version for TF Serving.

Errors in the arguments (an unknown data set, a missing model file, a bad
``--eps`` list or hyperparameter) print one line, ``stablekeras: error: ...``,
on stderr and exit with status 2, as argparse does for usage errors; a data set
that is not available offline exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import is_classifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from stablekeras.datasets import DatasetNotAvailableError, load_dataset
from stablekeras.estimators import StableClassifier, StableRegressor
from stablekeras.export import export_saved_model
from stablekeras.robustness import plot_robustness_curve, robustness_curve

__all__ = ["main", "build_parser"]

PROG = "stablekeras"
_UNSET = object()  # an option left out (argparse would convert a string default)

#: The demo's settings. Both networks share the size and the training schedule.
DEMO_DEFAULTS = {
    "width": 32,
    "depth": 4,
    "epochs": 40,
    "learning_rate": 0.02,
    "eps": (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
    "steps": 20,
    "n_eval": 500,
    "held_out": 0.25,
}
#: What ``demo --quick`` changes: a smoke run with a few seconds of training.
DEMO_QUICK = {"epochs": 3, "steps": 5, "n_eval": 200, "eps": (0.0, 0.3, 1.0)}
#: The two networks of the demo. The non-expansive one is trained with the
#: multi-class hinge loss and its lift and projection capped at spectral norm 1,
#: so the whole network is 1-Lipschitz and a logit margin above ``sqrt(2) eps``
#: certifies the eps-ball; margin 0.4 keeps its accuracy close to the baseline's
#: on digits. The baseline is the unconstrained ResNet of the same size, trained
#: with cross-entropy as usual.
DEMO_MODELS = {
    "nonexpansive": (
        "non-expansive",
        dict(constraint="nonexpansive", loss="hinge", margin=0.4, max_norm=1.0),
    ),
    "baseline": ("unconstrained", dict(constraint="none", loss="crossentropy")),
}


class UsageError(Exception):
    """A bad argument found after parsing (a file that is not a model, ...): exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (argparse prints the usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---- argument types -----------------------------------------------------------------
def _eps_list(text: str) -> list[float]:
    """``"0,0.1,0.3"`` -> ``[0.0, 0.1, 0.3]``: finite radii >= 0."""
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid eps list {text!r}: {item.strip()!r} is not a number "
                "(expected comma-separated radii such as 0,0.1,0.3)"
            ) from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(
                f"invalid eps list {text!r}: radii must be finite and >= 0, got {item.strip()}"
            )
        values.append(value)
    return values


def _image_shape(text: str) -> tuple[int, int, int]:
    """``"8,8,1"`` -> ``(8, 8, 1)``."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid image shape {text!r}: expected three positive integers H,W,C such as 8,8,1"
        )
    return shape


def _max_norm(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid max norm {text!r}: expected a number > 0 or 'none'"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---- helpers ---------------------------------------------------------------------------
def _verbose(args) -> int:
    """Keras' verbosity: progress bars on a terminal, one line per epoch in a log (2)."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _load_data(args, split=None):
    X, y = load_dataset(args.dataset, split=split, data_dir=args.data_dir, download=args.download)
    if len(X) == 0:
        raise UsageError(f"data set {args.dataset!r} split {split!r} is empty")
    return X, y


def _load_model(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with open(path, "rb") as fh:
            model = pickle.load(fh)
    except Exception as err:  # pickle raises many kinds on a file that is not a pickle
        raise UsageError(f"cannot read a model from {path}: {type(err).__name__}: {err}") from err
    final = model[-1] if isinstance(model, Pipeline) else model
    if not isinstance(final, StableClassifier | StableRegressor):
        raise UsageError(
            f"{path} holds a {type(model).__name__}, not a stablekeras estimator "
            "(StableClassifier, StableRegressor or a Pipeline ending in one)"
        )
    return model


def _dump_model(model, path: str | os.PathLike) -> None:
    """Pickle ``model`` to ``path`` via a temporary file, so a failure leaves no torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt_bound(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first two columns left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if i < 2 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _accuracy_table(curves: Sequence[dict]) -> str:
    """Clean, robust and certified accuracy (%) per model, one column per radius."""
    radii = [e for e in curves[0]["eps"] if e > 0]
    header = ["model", "accuracy (%)", "clean", *[f"eps={e:g}" for e in radii]]
    rows = []
    for c in curves:
        by_eps = dict(zip(c["eps"], c["robust"], strict=True))
        rows.append(
            [c["name"], "robust", f"{100 * c['clean']:.1f}"]
            + [f"{100 * by_eps[e]:.1f}" for e in radii]
        )
        if c.get("certified") is not None:
            cert = dict(zip(c["eps"], c["certified"], strict=True))
            cert0 = cert.get(0.0, c["clean"])
            rows.append(
                ["", "certified", f"{100 * cert0:.1f}"] + [f"{100 * cert[e]:.1f}" for e in radii]
            )
    return _table(header, rows)


def _curve(model, X, y, eps, steps, args, name):
    # PGD on the Carlini-Wagner margin: cross-entropy gradients vanish on the
    # saturated softmax of an unconstrained network and would overstate its robustness.
    clip = None if isinstance(model, Pipeline) else (0.0, 1.0)
    return robustness_curve(
        model, X, y, eps=eps, attack="pgd", norm=2, steps=steps, loss="margin", clip=clip,
        random_state=args.random_state, verbose=int(_verbose(args) == 1), name=name,
    )  # fmt: skip


def _say(args, *lines):
    if not args.quiet:
        print(*lines, sep="\n", flush=True)


# ---- subcommands --------------------------------------------------------------------------
def _cmd_demo(args) -> int:
    settings = {**DEMO_DEFAULTS, **(DEMO_QUICK if args.quick else {})}
    shared = {k: settings[k] for k in ("width", "depth", "epochs", "learning_rate")}
    shared["epochs"] = args.epochs or shared["epochs"]
    eps = args.eps or list(settings["eps"])
    steps = args.steps or settings["steps"]
    started = time.perf_counter()
    X, y = _load_data(args, split=args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=settings["held_out"], stratify=y, random_state=args.random_state
    )
    n_eval = args.n_eval or settings["n_eval"]
    X_eval, y_eval = X_test[:n_eval], y_test[:n_eval]
    print(
        f"{args.dataset}: {len(X_train)} training and {len(X_test)} held-out points, "
        f"{X.shape[1]} features, {len(np.unique(y))} classes",
        flush=True,
    )

    models, curves, summary = {}, [], {}
    for key, (name, params) in DEMO_MODELS.items():
        clf = StableClassifier(
            **shared, **params, random_state=args.random_state, verbose=_verbose(args)
        )
        _say(args, f"\ntraining the {name} network: {params | shared}")
        t0 = time.perf_counter()
        clf.fit(X_train, y_train)
        fit_s = time.perf_counter() - t0
        _say(args, f"attacking it: l2 PGD, {steps} steps, eps={eps}, on {len(X_eval)} points")
        curve = _curve(clf, X_eval, y_eval, eps, steps, args, name)
        models[key] = clf
        curves.append(curve)
        summary[key] = {
            "name": name,
            "params": clf.get_params(),
            "held_out_accuracy": float(clf.score(X_test, y_test)),
            "lipschitz_bound": float(clf.lipschitz_bound_),
            "fit_seconds": round(fit_s, 2),
            "curve": curve,
        }

    files = {}
    for key, clf in models.items():
        files[f"{key}_model"] = out / f"{key}.pkl"
        _dump_model(clf, files[f"{key}_model"])
    files["plot"] = out / "robustness.png"
    _save_plot(curves, files["plot"], f"{args.dataset}: l2 PGD ({steps} steps) and certificates")
    files["saved_model"] = Path(export_saved_model(models["nonexpansive"], out / "saved_model"))
    files["results"] = out / "results.json"
    results = {
        "dataset": args.dataset,
        "split": args.split,
        "n_train": len(X_train),
        "n_held_out": len(X_test),
        "n_attacked": len(X_eval),
        "attack": {"attack": "pgd", "norm": "l2", "steps": steps, "loss": "margin"},
        "random_state": args.random_state,
        "models": summary,
        "files": {k: os.fspath(v) for k, v in files.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    files["results"].write_text(json.dumps(results, indent=2, default=_json_default) + "\n")

    print()
    print(
        _table(
            ["model", "constraint", "held-out accuracy (%)", "Lipschitz bound", "fit (s)"],
            [
                [s["name"], s["params"]["constraint"], f"{100 * s['held_out_accuracy']:.1f}",
                 _fmt_bound(s["lipschitz_bound"]), f"{s['fit_seconds']:.1f}"]
                for s in summary.values()
            ],
        )
    )  # fmt: skip
    print(
        f"\naccuracy on {len(X_eval)} held-out points under l2 PGD ({steps} steps), and certified"
    )
    print(_accuracy_table(curves))
    print(f"\ndone in {results['seconds']:.0f} s; wrote:")
    for path in files.values():
        print(f"  {path}")
    return 0


def _json_default(value):
    return value.tolist() if isinstance(value, np.generic | np.ndarray) else str(value)


def _save_plot(curves, path, title):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figures

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    plot_robustness_curve(curves, ax=ax)
    ax.set_title(title)
    fig.savefig(path, dpi=150, bbox_inches="tight")


def _cmd_train(args) -> int:
    params = {
        "constraint": args.constraint,
        "loss": args.loss,
        "margin": args.margin,
        "step_size": args.step_size,
        "depth": args.depth,
        "width": args.width,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "image_shape": args.image_shape,
        "random_state": args.random_state,
    }
    params = {k: v for k, v in params.items() if v is not None}
    if args.max_norm is not _UNSET:
        params["max_norm"] = args.max_norm
    clf = StableClassifier(**params, verbose=_verbose(args))
    X, y = _load_data(args, split=args.split)
    _say(args, f"training on {len(X)} points of {args.dataset} ({X.shape[1]} features)")
    clf.fit(X, y)
    _dump_model(clf, args.out)
    print(
        f"training accuracy {100 * clf.score(X, y):.1f}%, "
        f"Lipschitz bound {_fmt_bound(clf.lipschitz_bound_)}"
    )
    print(f"wrote {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    model = _load_model(args.model)
    if not is_classifier(model):
        raise UsageError(f"{args.model} holds a regressor; evaluate measures classifiers")
    X, y = _load_data(args, split=args.split)
    if args.n_eval:
        X, y = X[: args.n_eval], y[: args.n_eval]
    eps = args.eps or list(DEMO_DEFAULTS["eps"])
    name = Path(args.model).stem
    _say(args, f"attacking {name} on {len(X)} points of {args.dataset}: l2 PGD, {args.steps} steps")
    curve = _curve(model, X, y, eps, args.steps, args, name)
    print(f"Lipschitz bound {_fmt_bound(curve['lipschitz_bound'])}, {len(X)} points")
    print(_accuracy_table([curve]))
    return 0


def _cmd_export(args) -> int:
    model = _load_model(args.model)
    print(export_saved_model(model, args.out, version=args.version))
    return 0


# ---- the parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``stablekeras`` argument parser (subcommands demo, train, evaluate, export)."""
    parser = _Parser(
        prog=PROG,
        description="Stable-by-construction Keras networks: train, attack, certify, export.",
    )
    from stablekeras import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    data = _Parser(add_help=False)
    data.add_argument(
        "--dataset", default="digits",
        help="'digits' (bundled, offline) or a prepared TFDS image set such as mnist "
        "(default: %(default)s)",
    )  # fmt: skip
    data.add_argument("--data-dir", help="TFDS data directory (default: TFDS's own)")
    data.add_argument("--split", help="TFDS split, e.g. train, test, 'train[:80%%]'")
    data.add_argument(
        "--download", action="store_true", help="download and prepare a missing TFDS set"
    )

    radii = ",".join(f"{e:g}" for e in DEMO_DEFAULTS["eps"])
    eps_help = f"comma-separated l2 radii (default: {radii})"

    demo = sub.add_parser(
        "demo", parents=[common, data], help="the main job: stable vs unconstrained network",
        description="Train the non-expansive classifier and the unconstrained ResNet of the "
        "same size, compare clean, robust (l2 PGD) and certified accuracy, plot the curves, "
        "export the non-expansive model for TF Serving, and write it all to --out.",
    )  # fmt: skip
    demo.add_argument(
        "--out", default="stablekeras-out", help="output directory (default: %(default)s)"
    )
    demo.add_argument("--epochs", type=_positive_int, help="training epochs (default: 40)")
    demo.add_argument("--eps", type=_eps_list, help=eps_help)
    demo.add_argument("--steps", type=_positive_int, help="PGD steps (default: 20)")
    demo.add_argument(
        "--n-eval", type=_positive_int, help="held-out points attacked (default: 500)"
    )
    demo.add_argument("--random-state", type=int, default=0, help="seed (default: %(default)s)")
    demo.add_argument(
        "--quick", action="store_true",
        help="a smoke run: 3 epochs, 5 PGD steps, 200 points, eps 0,0.3,1",
    )  # fmt: skip
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser(
        "train", parents=[common, data], help="fit a StableClassifier and pickle it",
        description="Fit a StableClassifier on a data set and pickle it. Options left out keep "
        "the estimator's defaults.",
    )  # fmt: skip
    train.add_argument("--out", required=True, help="the pickle to write, e.g. model.pkl")
    train.add_argument("--constraint", help="nonexpansive, contractive or none")
    train.add_argument("--loss", help="crossentropy or hinge")
    train.add_argument("--margin", type=float, help="target margin of the hinge loss")
    train.add_argument(
        "--max-norm", type=_max_norm, default=_UNSET,
        help="spectral-norm cap of lift and projection, or 'none'",
    )  # fmt: skip
    train.add_argument("--step-size", type=float, help="step h of each block")
    train.add_argument("--depth", type=int, help="number of blocks")
    train.add_argument("--width", type=int, help="units (channels) of each block")
    train.add_argument("--epochs", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument(
        "--image-shape", type=_image_shape, help="H,W,C: use the convolutional network"
    )
    train.add_argument("--random-state", type=int)
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate", parents=[common, data], help="clean, robust and certified accuracy",
        description="Clean, robust (l2 PGD on the logit margin) and certified accuracy of a "
        "pickled classifier on a data set.",
    )  # fmt: skip
    evaluate.add_argument("--model", required=True, help="a pickle written by 'train'")
    evaluate.add_argument("--eps", type=_eps_list, help=eps_help)
    evaluate.add_argument("--steps", type=_positive_int, default=20, help="PGD steps (default: 20)")
    evaluate.add_argument("--n-eval", type=_positive_int, help="evaluate the first N points only")
    evaluate.add_argument("--random-state", type=int, default=0)
    evaluate.set_defaults(func=_cmd_evaluate)

    export = sub.add_parser(
        "export", parents=[common], help="export a SavedModel version for TF Serving",
        description="Export a pickled estimator as BASE_DIR/<version>/ (a SavedModel with the "
        "signature serving_default) and print its path.",
    )  # fmt: skip
    export.add_argument("--model", required=True, help="a pickle written by 'train'")
    export.add_argument("--out", required=True, metavar="BASE_DIR", help="the model base path")
    export.add_argument(
        "--version", type=int, help="version number (default: the next free integer)"
    )
    export.set_defaults(func=_cmd_export)
    return parser


def _fail(err: BaseException, status: int) -> int:
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success, 2 on bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except DatasetNotAvailableError as err:
        return _fail(err, 1)
    except (UsageError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError) as err:
        return _fail(err, 2)
    except OSError as err:
        return _fail(err, 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
