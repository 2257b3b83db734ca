"""Certificates: the radius within which no perturbation changes a prediction.

A point whose logit margin ``m(x)`` (top minus second logit) exceeds ``sqrt(2) L
eps`` plus an allowance for floating-point rounding
(:func:`~stablekeras.robustness.rounding_allowance`) keeps its label for every
l2 perturbation of norm below ``eps``, ``L`` a sound Lipschitz bound of the
logits (section 4 of the chapter). GloRo's pairwise rule refines the margin
with the rows of a linear last layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np

from stablekeras.bounds import layer_bound
from stablekeras.layers import OrthogonalDense, SpectralDense
from stablekeras.robustness._inputs import (
    fitted_classifier,
    label_indices,
    layer_chain,
    lipschitz_of,
    margins,
    predict_logits,
    weighted_mean,
)
from stablekeras.robustness._settings import check_eps_list, check_norm, check_rule
from stablekeras.robustness.rounding import allowance

__all__ = ["certified_radius", "certified_accuracy", "certified_mask"]


def global_radius(margin, allowance, lipschitz):
    """``max(m - a, 0) / (sqrt(2) L)``: the radius of the global rule."""
    return np.maximum(margin - allowance, 0.0) / (math.sqrt(2) * lipschitz)


def certified_mask(logits, y, lipschitz: float, eps: float, allowance=0.0) -> np.ndarray:
    """Per point: classified correctly, with a margin above ``sqrt(2) L eps + allowance``.

    The certificate of :func:`certified_accuracy` (global rule) on logits already
    computed, for code that evaluates its own network: the mean of the mask is
    the certified accuracy, bit for bit, when ``logits`` are those the network
    computes and ``allowance`` is its :func:`~stablekeras.robustness.rounding_allowance`.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    y : array-like of shape (n_samples,)
        The true classes, as column indices of ``logits``.
    lipschitz : float
        A sound l2 Lipschitz bound ``L`` of the logits, > 0.
    eps : float
        The l2 radius, >= 0.
    allowance : float or array-like of shape (n_samples,), default=0.0
        The rounding allowance of each point; 0 certifies in exact arithmetic.

    Returns
    -------
    ndarray of bool, shape (n_samples,)

    Examples
    --------
    >>> import math
    >>> logits = [[3.0, 0.0], [0.0, 1.0], [2.0, 1.9]]
    >>> certified_mask(logits, [0, 0, 0], lipschitz=1.0, eps=1.0).tolist()
    [True, False, False]
    >>> certified_mask(logits, [0, 0, 0], lipschitz=1.0, eps=3 / math.sqrt(2)).tolist()
    [False, False, False]
    """
    logits = np.asarray(logits, dtype=np.float64)
    radius = global_radius(margins(logits), np.asarray(allowance, dtype=np.float64), lipschitz)
    return (np.argmax(logits, axis=1) == np.asarray(y)) & (radius > eps)


def _last_linear_kernel(layer):
    """The kernel ``W`` (``d x n_classes``) with which a linear last layer computes ``h W + b``."""
    if isinstance(layer, OrthogonalDense):
        return keras.ops.convert_to_numpy(layer.orthonormal_kernel())
    linear = isinstance(layer, SpectralDense) or (
        isinstance(layer, keras.layers.Dense)
        and layer.activation in (None, keras.activations.linear)
    )
    if not linear:
        raise ValueError(
            "rule='pairwise' needs a network whose last layer is linear (Dense, SpectralDense "
            f"or OrthogonalDense, no activation): the pairwise bound is ||w_i - w_j|| times the "
            f"bound of the layers before it. The last layer {layer.name!r} is a "
            f"{type(layer).__name__}; use rule='global'"
        )
    return keras.ops.convert_to_numpy(layer.kernel)


def _pairwise_radius(est, logits, margin, L, X, unit_roundoff) -> np.ndarray:
    """``min_j (z_t - z_j - a) / (||w_t - w_j|| L_body)`` per point (see certified_radius)."""
    layers = layer_chain(est.model_)
    kernel = np.asarray(_last_linear_kernel(layers[-1]), dtype=np.float64)
    L_body = math.prod(layer_bound(layer) for layer in layers[:-1])
    logits = np.asarray(logits, dtype=np.float64)
    top = np.argmax(logits, axis=1)
    gaps = logits[np.arange(len(logits)), top][:, None] - logits  # z_t - z_j
    rows = kernel.T  # (n_classes, d): w_j
    dist = np.linalg.norm(rows[top][:, None, :] - rows[None, :, :], axis=2)  # ||w_t - w_j||
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dist > 0, gaps / (dist * L_body), np.inf)
    ratio[np.arange(len(logits)), top] = np.inf
    exact = ratio.min(axis=1)  # the radius in exact arithmetic
    # the allowance of the global rule, with the reach of this rule's radius
    allowed = allowance(est, X, exact * math.sqrt(2) * L, L, unit_roundoff)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrunk = np.where(dist > 0, (gaps - allowed[:, None]) / (dist * L_body), np.inf)
    shrunk[np.arange(len(logits)), top] = np.inf
    return np.maximum(shrunk.min(axis=1), 0.0)


def _radii(est, X, logits, L, unit_roundoff, rule) -> np.ndarray:
    """Each point's certified radius under ``rule`` (the allowance subtracted)."""
    margin = margins(logits)
    if rule == "pairwise":
        return _pairwise_radius(est, logits, margin, L, X, unit_roundoff)
    return global_radius(margin, allowance(est, X, margin, L, unit_roundoff), L)


def certified_radius(
    estimator,
    X,
    *,
    rule: str = "global",
    unit_roundoff: float | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Certified l2 radius of each point's predicted class: ``(m(x) - a(x)) / (sqrt(2) L)``.

    ``m(x)`` is the logit margin (top minus second logit), ``a(x)`` the
    :func:`rounding_allowance` and ``L`` the estimator's ``lipschitz_bound_``;
    no perturbation of l2 norm below the radius changes the prediction, neither
    of the network in exact arithmetic nor of its floating-point evaluation.
    A margin within the allowance (a tie, for instance) gives 0. One forward
    pass, no attack.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        For a pipeline, the radius is measured after the preprocessing.
    X : array-like of shape (n_samples, n_features)
    rule : {"global", "pairwise"}, default="global"
        ``"global"``: ``(m(x) - a(x)) / (sqrt(2) L)``. ``"pairwise"`` (GloRo's
        rule, Leino, Wang and Fredrikson, ICML 2021): with the logits
        ``z = W^T h(x) + b`` of a linear last layer and ``L_body`` the sound
        bound of everything before it, ``min_{j != t} (z_t - z_j - a(x)) /
        (||w_t - w_j|| L_body)``, ``t`` the predicted class. See Notes.
    unit_roundoff : float or None, default=None
        See :func:`rounding_allowance`; ``0`` gives the exact-arithmetic radius
        ``m(x) / (sqrt(2) L)``.
    batch_size : int, default=1024

    Returns
    -------
    ndarray of shape (n_samples,)

    Notes
    -----
    A point is counted by :func:`certified_accuracy` at ``eps`` exactly when it
    is classified correctly and its radius exceeds ``eps``. The allowance and
    why it suffices are derived in :func:`rounding_allowance`.

    The pairwise rule is sound: ``z_t - z_j = (w_t - w_j)^T h(x) + b_t - b_j``
    changes by at most ``||w_t - w_j|| L_body ||delta||`` when ``x`` moves by
    ``delta``, so no class overtakes ``t`` inside the radius (the rounding
    allowance covers the computed gaps as in the global rule, since each gap
    is ``sqrt(2)``-Lipschitz in the logits too). It is never looser than the
    global rule when ``L = L_body ||W||``, the product :func:`~stablekeras.models.lipschitz_bound`
    computes: ``||w_t - w_j|| <= sqrt(2) ||W||`` and each gap is at least the
    margin. With an orthogonal projection (the certified network) the rows of
    ``W`` are orthonormal, ``||w_t - w_j|| = sqrt(2)``, and the two rules agree;
    a free or capped last layer gains.

    Examples
    --------
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> r = certified_radius(clf, X[:5])  # the network is certified: L <= 1
    >>> r.shape, bool((r >= 0).all())
    ((5,), True)
    >>> bool((r <= certified_radius(clf, X[:5], unit_roundoff=0)).all())
    True
    """
    rule = check_rule(rule)
    est, X = fitted_classifier(estimator, X)
    L = lipschitz_of(est)
    return _radii(est, X, predict_logits(est, X, batch_size), L, unit_roundoff, rule)


def certified_accuracy(
    estimator,
    X,
    y,
    *,
    eps: float | Sequence[float],
    norm: float | str = 2,
    rule: str = "global",
    unit_roundoff: float | None = None,
    batch_size: int = 1024,
    sample_weight=None,
) -> float | np.ndarray:
    """Certified accuracy: the fraction of points correctly classified with a
    logit margin above ``sqrt(2) L eps`` plus the rounding allowance.

    With ``L`` a sound l2 Lipschitz bound of the logits (``lipschitz_bound_``),
    such a point keeps its (correct) label for every perturbation of l2 norm
    ``eps``: no attack can bring the accuracy below this number (chapter,
    section 4). The allowance (:func:`rounding_allowance`) covers the float32
    rounding of the logits, at the point and at the perturbed points. One
    forward pass, no attack.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        A fitted classifier with ``lipschitz_bound_``, or a pipeline ending in one.
        For a pipeline, ``L`` is the final estimator's bound and ``eps`` is
        measured after the preprocessing (see Notes).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    eps : float or sequence of float
        Radii, >= 0.
    norm : {2, np.inf, "l2", "linf", "inf"}, default=2
        For ``np.inf`` the l-inf ball of radius ``eps`` is certified through the
        l2 ball of radius ``sqrt(n_features) * eps`` that contains it.
    rule : {"global", "pairwise"}, default="global"
        The certificate: the margin against ``sqrt(2) L eps``, or GloRo's
        pairwise gaps against ``||w_i - w_j|| L_body eps`` (never looser; see
        :func:`certified_radius`).
    unit_roundoff : float or None, default=None
        See :func:`rounding_allowance`; ``0`` compares the margins with
        ``sqrt(2) L eps`` alone (exact arithmetic).
    batch_size : int, default=1024
    sample_weight : array-like of shape (n_samples,), optional

    Returns
    -------
    float, or ndarray of shape (len(eps),) when ``eps`` is a sequence

    See Also
    --------
    certified_radius, rounding_allowance, robust_accuracy, make_certified_scorer

    Notes
    -----
    A point counts when it is classified correctly and ``m(x) > sqrt(2) L eps +
    a(x)``, ``a`` the allowance derived in :func:`rounding_allowance`;
    equivalently when its :func:`certified_radius` exceeds ``eps``.

    For a pipeline whose preprocessing is a known linear map the certificate can
    be carried back to the raw features: a ``StandardScaler`` multiplies l2
    distances by at most ``1 / min(scale_)``, a ``MinMaxScaler`` by at most
    ``max(scale_)``, so raw-space radius ``r`` is certified when the transformed
    radius ``r * max(scale_)`` (MinMax) is. This function does not compose them.

    Examples
    --------
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> acc = certified_accuracy(clf, X[300:400], y[300:400], eps=[0.0, 0.1, 1.0])
    >>> bool(acc[0] >= acc[1] >= acc[2])
    True
    """
    values, scalar = check_eps_list(eps)
    norm = check_norm(norm)
    rule = check_rule(rule)
    est, X = fitted_classifier(estimator, X)
    y_idx = label_indices(est, y, len(X))
    L = lipschitz_of(est)
    logits = predict_logits(est, X, batch_size)
    correct = np.argmax(logits, axis=1) == y_idx
    # margin > sqrt(2) L eps + allowance, as the radius computes it (the same rounding)
    radius = _radii(est, X, logits, L, unit_roundoff, rule)
    scale = math.sqrt(X.shape[1]) if norm == np.inf else 1.0
    acc = np.array([weighted_mean(correct & (radius > scale * e), sample_weight) for e in values])
    return float(acc[0]) if scalar else acc
