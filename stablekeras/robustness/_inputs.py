"""What every measure reads from its arguments: the fitted classifier, the points,
their labels, the logits, the margins and the Lipschitz bound."""

from __future__ import annotations

import math

import keras
import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted, validate_data

from stablekeras.robustness._compiled import forward_fn


def fitted_classifier(estimator, X):
    """Return (final estimator, X in its input space as float32).

    A pipeline's steps before the last transform ``X``; the last one must be a
    fitted classifier with a Keras ``model_`` and ``classes_``.
    """
    if isinstance(estimator, Pipeline):
        steps = estimator.steps
        if len(steps) > 1:
            X = estimator[:-1].transform(X)
        return fitted_classifier(steps[-1][1], X)
    if not hasattr(estimator, "model_") and not hasattr(estimator, "fit"):
        raise TypeError(
            "Expected a fitted stablekeras classifier (or a Pipeline ending in one). "
            f"Received: {type(estimator).__name__}"
        )
    check_is_fitted(estimator)
    if not (hasattr(estimator, "model_") and hasattr(estimator, "classes_")):
        raise TypeError(
            "Robustness needs a fitted classifier with a Keras `model_` that maps X to logits and "
            f"`classes_`, such as StableClassifier. Received: {type(estimator).__name__}"
        )
    X = validate_data(estimator, X, reset=False, dtype=np.float32, ensure_all_finite=True)
    return estimator, np.ascontiguousarray(X, dtype=np.float32)


def label_indices(estimator, y, n_samples):
    """The indices in ``estimator.classes_`` of the labels ``y`` (refusing unknown labels)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_samples:
        raise ValueError(
            f"y must be 1-D with {n_samples} labels, matching X. Received shape: {y.shape}"
        )
    classes = estimator.classes_
    try:
        idx_c = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
        unknown = classes[idx_c] != y
    except TypeError:  # labels of another type than classes_ (str vs int)
        idx_c, unknown = np.zeros(len(y), np.intp), np.ones(len(y), bool)
    if np.any(unknown):
        raise ValueError(
            "y contains labels the estimator was not fitted on: "
            f"{np.unique(y[unknown])[:5].tolist()}; expected labels from "
            f"classes_={classes.tolist()}"
        )
    return idx_c.astype(np.int64)


def check_in_clip(X, clip, pipeline):
    """Refuse clean points outside the clip box (the attack keeps its points in it)."""
    if clip is None or X.size == 0:
        return
    lo, hi = clip
    xmin, xmax = float(X.min()), float(X.max())
    if xmin < lo or xmax > hi:
        where = "after the pipeline's preprocessing " if pipeline else ""
        raise ValueError(
            f"X {where}lies in [{xmin:g}, {xmax:g}], outside clip={clip}: the attack keeps points "
            "in the clip range, so clean points must lie in it. Pass clip=None (no clipping) or "
            "the range of your features"
        )


def weighted_mean(values, sample_weight):
    """The (weighted) mean of a per-point measure; NaN for no points."""
    if sample_weight is None:
        return float(np.mean(values)) if len(values) else float("nan")
    return float(np.average(values, weights=np.asarray(sample_weight, dtype=np.float64)))


def predict_logits(est, X, batch_size=1024):
    """The logits of ``est.model_`` on ``X`` in inference mode, in float64 (exact)."""
    n, n_features = X.shape
    fn = forward_fn(est.model_, n_features)
    batch = max(int(batch_size), 1024)
    out = [fn(X[i : i + batch]).numpy() for i in range(0, n, batch)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(est.classes_)))


def margins(logits):
    """Top minus second logit, in float64 (exact for float32 logits); +inf for one class."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] < 2:
        return np.full(len(logits), np.inf)
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def lipschitz_of(est) -> float:
    """``est.lipschitz_bound_``, refusing an estimator without one (and saying why)."""
    L = getattr(est, "lipschitz_bound_", None)
    if L is None:
        why = getattr(est, "lipschitz_bound_error_", None)
        raise TypeError(
            f"certified accuracy needs `lipschitz_bound_` (a sound l2 Lipschitz bound of the "
            f"logits), which {type(est).__name__} does not have"
            + (f": its network has no certificate, {why}" if why else "")
        )
    L = float(L)
    if not L > 0 or math.isnan(L):
        raise ValueError(f"lipschitz_bound_ must be > 0. Received: lipschitz_bound_={L!r}")
    return L


def layer_chain(model) -> list:
    """The layers of a chain model, without its input layer."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
