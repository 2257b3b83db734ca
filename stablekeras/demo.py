"""The demo (``make demo``, ``stablekeras demo``): the stable estimator against its baseline.

:func:`run_demo` trains :class:`~stablekeras.StableClassifier` at its defaults
and the unconstrained network of the same shape (``constraint="none"``), with
the same schedule, on an image data set (scikit-learn's 8x8 digits by
default). It then measures, for both, on held-out points:

* the clean accuracy;
* the certified accuracy at each radius (logit margin against
  ``sqrt(2) L eps``, with ``L`` the fitted ``lipschitz_bound_``);
* the robust accuracy under l2-PGD, 100 steps of 0.1 eps from the clean image,
  where a point counts as robust only if **both** a cross-entropy and a margin
  attack fail on it (:func:`stablekeras.robustness.robustness_curve` with
  ``loss="both"``).

It prints one progress bar per fit and the tables, and writes both fitted
estimators (pickles), the robustness plot, ``results.json`` and a SavedModel of
the stable estimator for TF Serving.

The module imports TensorFlow only inside :func:`run_demo`, so the command line
reads :data:`DEMO_SETTINGS` for its help without starting TensorFlow.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stablekeras._io import dump_pickle, format_bound

__all__ = ["DEMO_SETTINGS", "QUICK_SETTINGS", "run_demo"]

#: The demo's settings. ``epochs=None`` keeps the estimator's default schedule;
#: the attack is the project's measure (l2-PGD, ``steps`` steps of
#: ``relative_step * eps`` from the clean image, cross-entropy and margin), run on
#: the first ``n_eval`` held-out points to fit the demo's time; ``held_out`` is the
#: held-out fraction of the data set.
DEMO_SETTINGS: dict[str, Any] = {
    "epochs": None,
    "eps": (0.0, 0.1, 0.3, 0.5, 1.0),
    "steps": 100,
    "relative_step": 0.1,
    "n_eval": 300,
    "held_out": 0.25,
}
#: What ``quick=True`` changes: a smoke run of a few seconds of training and a
#: shorter attack (the test suite's demo).
QUICK_SETTINGS: dict[str, Any] = {
    "epochs": 5,
    "eps": (0.0, 0.3, 1.0),
    "steps": 20,
    "n_eval": 100,
}
#: The two estimators: the stable one at its defaults, and the unconstrained
#: network of the same shape. Keys name them in ``results.json`` and the files.
_MODELS = {
    "stable": ("stable (defaults)", {}),
    "baseline": ("unconstrained (constraint='none')", {"constraint": "none"}),
}


def _progress(desc: str, epochs: int):
    """A fresh Keras callback showing one tqdm bar over the epochs of one fit."""
    from tqdm.keras import TqdmCallback

    return TqdmCallback(epochs=epochs, verbose=0, desc=desc, file=sys.stderr, leave=True)


def _fit(clf, X, y, *, desc: str, progress: bool):
    """Fit ``clf``, with one progress bar when ``progress``.

    The bar is passed as a factory: the estimator makes a fresh callback for its fit.
    """
    if progress:
        return clf.fit(X, y, callbacks=[functools.partial(_progress, desc, clf.epochs)])
    return clf.fit(X, y)


def _json_default(value):
    import numpy as np

    return value.tolist() if isinstance(value, np.generic | np.ndarray) else str(value)


def _save_plot(curves, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figures

    from stablekeras.robustness import plot_robustness_curve

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    plot_robustness_curve(curves, ax=ax)
    ax.set_title(title)
    fig.savefig(path, dpi=150, bbox_inches="tight")


def run_demo(
    out: str | os.PathLike = "stablekeras-out",
    *,
    dataset: str = "digits",
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    quick: bool = False,
    epochs: int | None = None,
    eps: Sequence[float] | None = None,
    steps: int | None = None,
    n_eval: int | None = None,
    random_state: int = 0,
    verbose: int = 2,
) -> dict[str, Any]:
    """Train the stable estimator and its unconstrained baseline, attack, certify, export.

    Both estimators are ``StableClassifier(image_shape=..., random_state=...)``:
    the stable one at its defaults, the baseline with ``constraint="none"``
    (the same network shape without the stability condition), both with the
    same training schedule. Each is scored on held-out points: clean accuracy,
    certified accuracy at each radius of ``eps``, and robust accuracy under
    l2-PGD (``steps`` steps of 0.1 eps from the clean image) where a point is
    robust only if both a cross-entropy and a margin attack fail on it.

    Parameters
    ----------
    out : str or path-like, default="stablekeras-out"
        Directory of the files written (created if missing).
    dataset : str, default="digits"
        ``"digits"`` (bundled, offline) or a prepared TFDS image data set, see
        :func:`stablekeras.datasets.load_dataset`.
    split : str or None, default=None
        Its split; ``None`` is the whole of ``"digits"`` or TFDS's ``"train"``.
    data_dir : str or path-like or None, default=None
        The TFDS data directory.
    download : bool, default=False
        Download and prepare a missing TFDS set.
    quick : bool, default=False
        A smoke run: :data:`QUICK_SETTINGS` replace those of
        :data:`DEMO_SETTINGS` (5 epochs, 20 attack steps, 100 points).
    epochs : int or None, default=None
        Training epochs of both estimators; ``None``: the setting (the
        estimator's default unless ``quick``).
    eps : sequence of float or None, default=None
        l2 radii; ``None``: the setting's.
    steps : int or None, default=None
        PGD steps (each of 0.1 eps); ``None``: the setting's.
    n_eval : int or None, default=None
        Held-out points attacked and certified; ``None``: the setting's.
    random_state : int, default=0
        Seeds the split, both fits and the attacks.
    verbose : int, default=2
        0 prints nothing, 1 prints the tables and the files written, 2 also a
        progress line per step and one progress bar per fit (on stderr).

    Returns
    -------
    dict
        What ``results.json`` holds: the data (``"dataset"``, ``"split"``,
        ``"image_shape"``, ``"n_train"``, ``"n_held_out"``, ``"n_attacked"``), the
        ``"attack"`` settings, ``"models"`` (for ``"stable"`` and
        ``"baseline"``: ``"name"``, ``"params"``, ``"held_out_accuracy"``,
        ``"lipschitz_bound"``, ``"fit_seconds"`` and the
        :func:`~stablekeras.robustness.robustness_curve` result ``"curve"``),
        ``"files"`` (paths of the pickles, plot, SavedModel and results) and
        ``"seconds"``.

    Raises
    ------
    stablekeras.datasets.DatasetNotAvailableError
        The TFDS set is not prepared and ``download=False``.
    ValueError
        An empty data set or split, or invalid settings (named in the message).

    See Also
    --------
    stablekeras.robustness.robustness_curve : the measurements.
    stablekeras.export.export_saved_model : the SavedModel export.

    Notes
    -----
    With the defaults, ``make demo`` (this function on the 1,797 digits)
    takes about two minutes on two cores.

    Examples
    --------
    >>> import tempfile
    >>> results = run_demo(tempfile.mkdtemp(), quick=True, epochs=1, steps=2, n_eval=20, verbose=0)
    >>> sorted(results["models"])
    ['baseline', 'stable']
    >>> results["models"]["baseline"]["params"]["constraint"]
    'none'
    >>> results["models"]["stable"]["curve"]["loss"]
    'both'
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from stablekeras.datasets import load_dataset
    from stablekeras.estimators import StableClassifier
    from stablekeras.export import export_saved_model
    from stablekeras.robustness import format_table, robustness_curve

    settings = {**DEMO_SETTINGS, **(QUICK_SETTINGS if quick else {})}
    chosen = {"epochs": epochs, "eps": eps, "steps": steps, "n_eval": n_eval}
    settings.update({k: v for k, v in chosen.items() if v is not None})
    eps = [float(e) for e in settings["eps"]]

    def say(*lines):
        if verbose >= 2:
            print(*lines, sep="\n", flush=True)

    started = time.perf_counter()
    images, y = load_dataset(
        dataset, split=split, data_dir=data_dir, download=download, as_images=True
    )
    if len(images) == 0:
        raise ValueError(f"data set {dataset!r} split {split!r} is empty")
    image_shape = tuple(int(d) for d in images.shape[1:])
    X = images.reshape(len(images), math.prod(image_shape))
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=settings["held_out"], stratify=y, random_state=random_state
    )
    X_eval, y_eval = X_test[: settings["n_eval"]], y_test[: settings["n_eval"]]
    shape = "x".join(map(str, image_shape))
    say(
        f"{dataset}: {len(X_train)} training and {len(X_test)} held-out {shape} images, "
        f"{len(np.unique(y))} classes"
    )
    attack = {
        "attack": "pgd",
        "norm": "l2",
        "steps": int(settings["steps"]),
        "relative_step": settings["relative_step"],
        "loss": "both",
        "from": "the clean image",
    }

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shared = {"image_shape": image_shape, "random_state": random_state}
    if settings["epochs"] is not None:
        shared["epochs"] = int(settings["epochs"])
    models, curves, summary = {}, [], {}
    for key, (name, params) in _MODELS.items():
        clf = StableClassifier(**shared, **params)
        t0 = time.perf_counter()
        _fit(clf, X_train, y_train, desc=f"fitting {name}", progress=verbose >= 2)
        fit_seconds = time.perf_counter() - t0
        say(f"attacking {name} on {len(X_eval)} held-out points")
        curve = robustness_curve(
            clf, X_eval, y_eval, eps=eps, steps=attack["steps"],
            relative_step=attack["relative_step"], loss="both", random_state=random_state,
            name=name,
        )  # fmt: skip
        models[key] = clf
        curves.append(curve)
        summary[key] = {
            "name": name,
            "params": clf.get_params(),
            "held_out_accuracy": float(clf.score(X_test, y_test)),
            "lipschitz_bound": float(clf.lipschitz_bound_),
            "fit_seconds": round(fit_seconds, 2),
            "curve": curve,
        }

    files = {}
    for key, clf in models.items():
        files[f"{key}_model"] = out / f"{key}.pkl"
        dump_pickle(clf, files[f"{key}_model"])
    files["plot"] = out / "robustness.png"
    _save_plot(curves, files["plot"], f"{dataset}: l2-PGD ({attack['steps']} steps), certified")
    files["saved_model"] = Path(export_saved_model(models["stable"], out / "saved_model"))
    files["results"] = out / "results.json"
    results = {
        "dataset": dataset,
        "split": split,
        "image_shape": list(image_shape),
        "n_train": len(X_train),
        "n_held_out": len(X_test),
        "n_attacked": len(X_eval),
        "attack": attack,
        "random_state": random_state,
        "models": summary,
        "files": {k: os.fspath(v) for k, v in files.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    files["results"].write_text(json.dumps(results, indent=2, default=_json_default) + "\n")

    if verbose >= 1:
        print()
        for s in summary.values():
            print(
                f"{s['name']}: held-out accuracy {100 * s['held_out_accuracy']:.1f}% "
                f"({len(X_test)} points), Lipschitz bound {format_bound(s['lipschitz_bound'])}, "
                f"fit {s['fit_seconds']:.0f} s"
            )
        print(
            f"\nclean (eps=0), robust and certified accuracy on {len(X_eval)} held-out points; "
            f"robust: l2-PGD, {attack['steps']} steps of {attack['relative_step']:g} eps from "
            "the clean image, a point robust only if the cross-entropy and the margin attack "
            "both fail\n"
        )
        print(format_table(curves))
        print(f"\ndone in {results['seconds']:.0f} s; wrote:")
        for path in files.values():
            print(f"  {path}")
    return results
