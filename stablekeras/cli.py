"""The command line: ``stablekeras`` (or ``python -m stablekeras``).

Subcommands
-----------
``demo``
    The main job (``make demo``): :func:`stablekeras.demo.run_demo`, the stable
    estimator at its defaults against the unconstrained network of the same
    shape (clean, certified and robust accuracy, a plot, results.json and a
    SavedModel).
``train``
    Fit a :class:`~stablekeras.StableClassifier` on a data set and pickle it.
``evaluate``
    Clean, robust and certified accuracy of a pickled classifier.
``export``
    Export a pickled estimator as a SavedModel version for TF Serving.

This module only parses arguments and dispatches: it imports TensorFlow (and
the modules that need it) inside the subcommands, so ``--help``, ``--version``
and argument errors come back at once. TensorFlow's C++ start-up logs and its
Python warnings are silenced unless ``--verbose`` is given.

Errors in the arguments (an unknown data set, a missing model file, a bad
``--eps`` list or hyperparameter) print one line, ``stablekeras: error: ...``,
on stderr and exit with status 2, as argparse does for usage errors; a data set
that is not available offline exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from stablekeras import __version__
from stablekeras._cli_types import eps_list, image_shape, max_norm, positive_int
from stablekeras._io import dump_pickle, format_bound
from stablekeras.demo import DEMO_SETTINGS, QUICK_SETTINGS
from stablekeras.presets import list_presets

__all__ = ["main", "build_parser"]

PROG = "stablekeras"
_UNSET = object()  # an option left out (argparse would convert a string default)
#: The radii ``evaluate`` uses when ``--eps`` is left out.
_EVAL_EPS = (0.0, 0.1, 0.3, 0.5, 1.0)


class UsageError(Exception):
    """A bad argument found after parsing (a file that is not a model, ...): exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (argparse prints the usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


#: The options of ``train`` that set a StableClassifier parameter of the same name
#: (dashes for underscores); one left out (its default) keeps the estimator's value.
_TRAIN_OPTIONS = (
    ("--network", dict(help="certified (the default: every layer bounded) or chapter")),
    ("--constraint", dict(help="nonexpansive, contractive or none")),
    ("--loss", dict(help="offset_crossentropy, crossentropy, hinge or hkr")),
    ("--margin", dict(type=float, help="target margin of the loss")),
    (
        "--max-norm",
        dict(
            type=max_norm,
            default=_UNSET,
            help="network chapter: spectral-norm cap of lift and projection, or 'none'",
        ),
    ),
    ("--step-size", dict(type=float, help="step h of each block")),
    ("--depth", dict(type=int, help="number of blocks")),
    ("--width", dict(type=int, help="units (channels) of each block")),
    ("--epochs", dict(type=int)),
    ("--learning-rate", dict(type=float)),
    ("--batch-size", dict(type=int)),
    ("--image-shape", dict(type=image_shape, help="H,W,C: use the convolutional network")),
    ("--random-state", dict(type=int)),
)


# ---- TensorFlow, quietly -------------------------------------------------------------
@contextlib.contextmanager
def _stderr_to_devnull():
    """Point file descriptor 2 at /dev/null: C++ code writes there, not to ``sys.stderr``."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _start_tensorflow(args) -> None:
    """Import TensorFlow before a subcommand needs it, silent unless ``--verbose``.

    ``TF_CPP_MIN_LOG_LEVEL=3`` silences the C++ logs of a running TensorFlow, but
    TensorFlow 2.21 logs at start-up (oneDNN, CUDA) before its logging reads the
    variable, so the import itself runs with file descriptor 2 on /dev/null. A
    Python error of the import is still raised (and printed) after it.
    """
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"(tensorflow|keras|tensorflow_datasets|absl)\b")
    if "tensorflow" in sys.modules:
        return
    if args.verbose:
        import tensorflow  # noqa: F401

        return
    with _stderr_to_devnull():
        import tensorflow  # noqa: F401
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)


# ---- helpers ---------------------------------------------------------------------------
def _keras_verbose(args) -> int:
    """Keras' verbosity: progress bars on a terminal, one line per epoch in a log (2)."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _load_data(args, split=None):
    from stablekeras import datasets

    X, y = datasets.load_dataset(
        args.dataset, split=split, data_dir=args.data_dir, download=args.download
    )
    if len(X) == 0:
        raise UsageError(f"data set {args.dataset!r} split {split!r} is empty")
    return X, y


def _load_model(path: str, args):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    _start_tensorflow(args)  # unpickling an estimator loads its Keras model
    from sklearn.pipeline import Pipeline

    from stablekeras.estimators import StableClassifier, StableRegressor

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


def _say(args, *lines):
    if not args.quiet:
        print(*lines, sep="\n", flush=True)


# ---- subcommands --------------------------------------------------------------------------
def _cmd_demo(args) -> int:
    """The main job: stable vs unconstrained network.

    Train StableClassifier at its defaults and the unconstrained network of the same
    shape (constraint='none'), compare clean, certified and robust accuracy (l2-PGD with
    steps of 0.1 eps; a point is robust only if a cross-entropy and a margin attack both
    fail), plot the curves, export the stable model for TF Serving, and write it all to
    --out.
    """
    _start_tensorflow(args)
    from stablekeras.demo import run_demo

    run_demo(
        args.out, dataset=args.dataset, split=args.split, data_dir=args.data_dir,
        download=args.download, quick=args.quick, epochs=args.epochs, eps=args.eps,
        steps=args.steps, n_eval=args.n_eval, random_state=args.random_state,
        verbose=1 if args.quiet else 2,
    )  # fmt: skip
    return 0


def _cmd_train(args) -> int:
    """Fit a StableClassifier and pickle it.

    Fit a StableClassifier on a data set and pickle it. Options left out keep the
    estimator's defaults.
    """
    params = {}  # the options given, by the estimator's parameter names
    for flag, options in _TRAIN_OPTIONS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not options.get("default"):
            params[name] = value
    _start_tensorflow(args)
    from stablekeras.estimators import StableClassifier

    if args.preset is None:
        clf = StableClassifier(**params, verbose=_keras_verbose(args))
    else:
        clf = StableClassifier.from_preset(args.preset, **params, verbose=_keras_verbose(args))
    X, y = _load_data(args, split=args.split)
    _say(args, f"training on {len(X)} points of {args.dataset} ({X.shape[1]} features)")
    clf.fit(X, y)
    dump_pickle(clf, args.out)
    print(
        f"training accuracy {100 * clf.score(X, y):.1f}%, "
        f"Lipschitz bound {format_bound(clf.lipschitz_bound_)}"
    )
    print(f"wrote {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    """Clean, robust and certified accuracy.

    Clean, robust (l2-PGD with steps of 0.1 eps) and certified accuracy of a pickled
    classifier on a data set.
    """
    model = _load_model(args.model, args)
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    from stablekeras.robustness import format_table, robustness_curve

    if not is_classifier(model):
        raise UsageError(f"{args.model} holds a regressor; evaluate measures classifiers")
    X, y = _load_data(args, split=args.split)
    if args.n_eval:
        X, y = X[: args.n_eval], y[: args.n_eval]
    name = Path(args.model).stem
    _say(
        args,
        f"attacking {name} on {len(X)} points of {args.dataset}: l2-PGD, {args.steps} steps "
        f"of 0.1 eps, loss {args.loss}",
    )
    eps = sorted({0.0, *(args.eps or _EVAL_EPS)})  # eps=0: the clean accuracy
    curve = robustness_curve(
        model, X, y, eps=eps, steps=args.steps, relative_step=0.1,
        loss=args.loss, clip=None if isinstance(model, Pipeline) else (0.0, 1.0),
        random_state=args.random_state, verbose=int(_keras_verbose(args) == 1), name=name,
    )  # fmt: skip
    print(f"Lipschitz bound {format_bound(curve['lipschitz_bound'])}, {len(X)} points")
    print(format_table(curve))
    return 0


def _cmd_export(args) -> int:
    """Export a SavedModel version for TF Serving.

    Export a pickled estimator as BASE_DIR/<version>/ (a SavedModel with the signature
    serving_default) and print its path.
    """
    model = _load_model(args.model, args)
    from stablekeras.export import export_saved_model

    print(export_saved_model(model, args.out, version=args.version))
    return 0


# ---- the parser -----------------------------------------------------------------------------
def _subcommand(sub, func, parents) -> argparse.ArgumentParser:
    """Add to the subparsers ``sub`` the subcommand that ``func(args)`` runs.

    Its name is that of ``func`` without ``_cmd_``; its help is the first line of
    ``func``'s docstring (lower case first, without the final full stop), its
    description the rest.
    """
    summary, _, rest = (func.__doc__ or "").partition("\n")
    command = sub.add_parser(
        func.__name__.removeprefix("_cmd_"),
        parents=parents,
        help=summary[:1].lower() + summary[1:].strip().removesuffix("."),
        description=" ".join(rest.split()),
    )
    command.set_defaults(func=func)
    return command


def build_parser() -> argparse.ArgumentParser:
    """The ``stablekeras`` argument parser (subcommands demo, train, evaluate, export).

    Returns
    -------
    argparse.ArgumentParser
        Building it imports nothing heavy.
    """
    parser = _Parser(
        prog=PROG,
        description="Stable-by-construction Keras networks: train, attack, certify, export.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common.add_argument(
        "-v", "--verbose", action="store_true",
        help="show TensorFlow's start-up logs and warnings (silent by default)",
    )  # fmt: skip

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

    model_in = _Parser(add_help=False)
    model_in.add_argument("--model", required=True, help="a pickle written by 'train'")

    def radii(values):
        return ",".join(f"{e:g}" for e in values)

    quick = QUICK_SETTINGS
    demo = _subcommand(sub, _cmd_demo, parents=[common, data])
    demo.add_argument(
        "--out", default="stablekeras-out", help="output directory (default: %(default)s)"
    )
    demo.add_argument(
        "--epochs", type=positive_int,
        help="training epochs of both networks (default: the estimator's default)",
    )  # fmt: skip
    demo.add_argument(
        "--eps", type=eps_list,
        help=f"comma-separated l2 radii (default: {radii(DEMO_SETTINGS['eps'])})",
    )  # fmt: skip
    demo.add_argument(
        "--steps", type=positive_int,
        help=f"PGD steps of 0.1 eps (default: {DEMO_SETTINGS['steps']})",
    )  # fmt: skip
    demo.add_argument(
        "--n-eval", type=positive_int,
        help=f"held-out points attacked (default: {DEMO_SETTINGS['n_eval']})",
    )  # fmt: skip
    demo.add_argument("--random-state", type=int, default=0, help="seed (default: %(default)s)")
    demo.add_argument(
        "--quick", action="store_true",
        help=f"a smoke run: {quick['epochs']} epochs, {quick['steps']} PGD steps, "
        f"{quick['n_eval']} points, eps {radii(quick['eps'])}",
    )  # fmt: skip

    train = _subcommand(sub, _cmd_train, parents=[common, data])
    train.add_argument("--out", required=True, help="the pickle to write, e.g. model.pkl")
    train.add_argument(
        "--preset", choices=list_presets(),
        help="a named configuration of stablekeras.presets; the other options override it",
    )  # fmt: skip
    for flag, options in _TRAIN_OPTIONS:
        train.add_argument(flag, **options)

    evaluate = _subcommand(sub, _cmd_evaluate, parents=[common, data, model_in])
    evaluate.add_argument(
        "--eps", type=eps_list, help=f"comma-separated l2 radii (default: {radii(_EVAL_EPS)})"
    )
    evaluate.add_argument(
        "--steps", type=positive_int, default=100, help="PGD steps (default: %(default)s)"
    )
    evaluate.add_argument(
        "--loss", choices=("both", "crossentropy", "margin"), default="both",
        help="the attack's loss; 'both': a point is robust only if a cross-entropy and a "
        "margin attack both fail (default: %(default)s)",
    )  # fmt: skip
    evaluate.add_argument("--n-eval", type=positive_int, help="evaluate the first N points only")
    evaluate.add_argument("--random-state", type=int, default=0)

    export = _subcommand(sub, _cmd_export, parents=[common, model_in])
    export.add_argument("--out", required=True, metavar="BASE_DIR", help="the model base path")
    export.add_argument(
        "--version", type=int, help="version number (default: the next free integer)"
    )
    return parser


def _fail(err: BaseException, status: int) -> int:
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _dataset_unavailable(err: BaseException) -> bool:
    """Whether ``err`` is :class:`~stablekeras.datasets.DatasetNotAvailableError`.

    Looked up in ``sys.modules``: a subcommand that never loaded the datasets
    module cannot have raised it, and importing it here would cost the start-up
    this module avoids.
    """
    module = sys.modules.get("stablekeras.datasets")
    return module is not None and isinstance(err, module.DatasetNotAvailableError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 2 on bad arguments, 1 on other errors
        (such as a data set that is not available offline).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except Exception as err:
        if _dataset_unavailable(err):
            return _fail(err, 1)
        if isinstance(
            err, UsageError | ValueError | FileNotFoundError | FileExistsError | IsADirectoryError
        ):
            return _fail(err, 2)
        if isinstance(err, OSError):
            return _fail(err, 1)
        raise
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
