"""Adversarial attacks, robust and certified accuracy, scorers and robustness curves.

Empirical robustness comes from `CleverHans <https://github.com/cleverhans-lab/cleverhans>`_'s
TF2 attacks (FGSM, PGD, BIM, MIM) run on a fitted classifier's logits; certified
robustness comes from the logit margin and the network's Lipschitz bound (section 4
of the chapter): a point whose margin ``m(x)`` (top minus second logit) exceeds
``sqrt(2) L eps`` plus an allowance for floating-point rounding
(:func:`rounding_allowance`) keeps its label for every l2 perturbation of norm
below ``eps``.

Every attack runs in inference mode (``model_(x, training=False)``), in batches,
inside one compiled :func:`tf.function` with the input signature
``[None, n_features]``: the last, partial batch does not retrace. The compiled
attack is cached per Keras model and attack setting; ``eps``, the step and the
number of steps are run-time inputs of it (the attack searches the perturbation in
units of ``eps``, see Notes of :func:`generate_adversarial`), so a whole robustness
curve compiles once.

FGSM is CleverHans's ``fast_gradient_method``. PGD, BIM and MIM iterate
CleverHans's own step (``fast_gradient_method``; for MIM ``compute_gradient`` and
``optimize_linear``), projection (``clip_eta``) and random start
(``random_lp_vector``) in a ``tf.while_loop``, instead of the Python loop of
``projected_gradient_descent`` / ``momentum_iterative_method``, which unrolls every
iteration into the graph: with 100 steps on the chapter's sub-stepped network (a
``tf.while_loop`` per block) that graph took over 9 minutes to compile for 6 seconds
of attack. The tests check that the points equal those of CleverHans's functions.

Three CleverHans 4.0.0 attacks do not run on this stack (Keras 3, NumPy 2):
``carlini_wagner_l2`` calls Keras 3's ``optimizer.variables`` as a method and
``spsa`` passes ``lr=`` to a Keras 3 optimizer; both are rejected with a
``ValueError`` that names the working alternative (``loss="margin"``, the
Carlini-Wagner margin objective, with PGD; PGD instead of the gradient-free SPSA).
``basic_iterative_method`` only fails through its default ``sanity_checks=True``
(a ragged NumPy 2 array); ``attack="bim"`` is what it is, projected gradient
descent without random start.

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from stablekeras import StableClassifier
>>> from stablekeras.robustness import certified_accuracy, robust_accuracy
>>> X, y = load_digits(return_X_y=True)
>>> X = X / 16
>>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
>>> clean = clf.score(X[300:400], y[300:400])
>>> robust = robust_accuracy(clf, X[300:400], y[300:400], eps=0.5, steps=5)
>>> certified = certified_accuracy(clf, X[300:400], y[300:400], eps=0.5)
>>> bool(certified <= robust <= clean)
True
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import clip_eta, compute_gradient, optimize_linear, random_lp_vector
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from stablekeras.layers import IsometricLift

__all__ = [
    "ATTACKS",
    "generate_adversarial",
    "robust_accuracy",
    "make_robustness_scorer",
    "certified_accuracy",
    "certified_radius",
    "rounding_allowance",
    "make_certified_scorer",
    "robustness_curve",
    "format_table",
    "plot_robustness_curve",
]

#: The attacks that run: CleverHans's fast gradient method, projected gradient
#: descent, the basic iterative method (PGD without random start) and the
#: momentum iterative method.
ATTACKS = ("fgsm", "pgd", "bim", "mim")

# CleverHans 4.0.0 attacks that do not run with Keras 3 / NumPy 2: name -> why and what instead.
_REJECTED = {
    "cw": (
        "CleverHans 4.0.0's carlini_wagner_l2 calls `optimizer.variables()`, which is a list "
        "property in Keras 3, so it fails on this stack"
    ),
    "spsa": (
        "CleverHans 4.0.0's spsa builds its optimizer with `lr=`, which Keras 3 optimizers "
        "reject, so it fails on this stack"
    ),
}
_REJECTED["carlini_wagner_l2"] = _REJECTED["carlini_wagner"] = _REJECTED["cw"]
_ALTERNATIVE = {
    "cw": (
        "For the Carlini-Wagner objective use attack='pgd' with loss='margin' "
        "(PGD on max_{j != y} z_j - z_y), e.g. robust_accuracy(est, X, y, eps=..., "
        "attack='pgd', loss='margin')"
    ),
    "spsa": (
        "SPSA is a gradient-free attack; these networks are differentiable, so use "
        "attack='pgd' (optionally random_start=True, loss='margin')"
    ),
}
_ALTERNATIVE["carlini_wagner_l2"] = _ALTERNATIVE["carlini_wagner"] = _ALTERNATIVE["cw"]

_NORMS = {"2": 2, "l2": 2, "inf": np.inf, "linf": np.inf}
#: The losses one compiled attack increases.
_LOSSES = ("crossentropy", "margin")
#: ``loss="both"``: run the attack with each of ``_LOSSES``; a point is robust only
#: if it survives all of them.
_BOTH = "both"
#: How tables and plots name each measure.
_LOSS_LABELS = {
    "crossentropy": "cross-entropy only",
    "margin": "margin only",
    _BOTH: "cross-entropy and margin",
}

#: Number of times an attack function has been traced (a Python side effect of
#: tracing, read by the tests to check that batches do not retrace).
_TRACE_COUNT = {"attack": 0, "forward": 0}

# model -> {setting: tf.function}; entries die with the Keras model.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ---- argument checks ----------------------------------------------------------------
def _invalid(name, expected, value):
    return ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


def _check_norm(norm) -> float:
    if isinstance(norm, str):
        key = norm.lower()
        if key in _NORMS:
            return _NORMS[key]
    elif isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        if norm == 2:
            return 2
        if norm == np.inf:
            return np.inf
    raise ValueError(
        "Received an invalid value for `norm`, expected one of 2, np.inf, 'inf', 'l2', "
        f"'linf'. Received: norm={norm!r}"
    )


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise _invalid("eps", "a number >= 0", eps)
    if not (math.isfinite(float(eps)) and eps >= 0):
        raise _invalid("eps", "a finite number >= 0", eps)
    return float(eps)


def _check_eps_list(eps) -> tuple[list[float], bool]:
    """Return (list of eps, whether a scalar was given)."""
    if isinstance(eps, str) or not isinstance(eps, Iterable):
        return [_check_eps(eps)], True
    values = [_check_eps(e) for e in np.asarray(eps, dtype=object).ravel()]
    if not values:
        raise ValueError(
            "Received an invalid value for `eps`, expected at least one value. Received: eps=[]"
        )
    return values, False


def _check_attack(attack) -> str:
    if not isinstance(attack, str):
        raise _invalid("attack", f"one of {ATTACKS}", attack)
    name = attack.lower()
    if name in _REJECTED:
        raise ValueError(
            f"attack={attack!r} is not supported: {_REJECTED[name]}. {_ALTERNATIVE[name]}."
        )
    if name not in ATTACKS:
        raise _invalid("attack", f"one of {ATTACKS}", attack)
    return name


def _check_clip(clip):
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise _invalid("clip", "None or a pair (min, max)", clip) from None
    if not lo < hi:
        raise _invalid("clip", "min < max", clip)
    return lo, hi


def _check_settings(attack, norm, steps, step_size, random_start, loss, clip, batch_size):
    attack = _check_attack(attack)
    norm = _check_norm(norm)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise _invalid("steps", "an integer >= 1", steps)
    if step_size is not None and (
        isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or not step_size > 0
    ):
        raise _invalid("step_size", "None or a number > 0", step_size)
    if loss not in (*_LOSSES, _BOTH):
        raise _invalid("loss", f"one of {(*_LOSSES, _BOTH)}", loss)
    if random_start and attack != "pgd":
        raise ValueError(
            f"attack={attack!r} has no random start (random_start=True); use attack='pgd' "
            "for projected gradient descent from a random point of the eps-ball"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise _invalid("batch_size", "an integer >= 1", batch_size)
    return (
        attack,
        norm,
        int(steps),
        step_size,
        bool(random_start),
        loss,
        _check_clip(clip),
        int(batch_size),
    )


# ---- estimators, data and labels ----------------------------------------------------
def _resolve(estimator, X):
    """Return (final estimator, X in its input space as float32)."""
    if isinstance(estimator, Pipeline):
        steps = estimator.steps
        if len(steps) > 1:
            X = estimator[:-1].transform(X)
        return _resolve(steps[-1][1], X)
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


def _encode(estimator, y, n_samples):
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


def _check_in_clip(X, clip, pipeline):
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


def _weighted_mean(values, sample_weight):
    if sample_weight is None:
        return float(np.mean(values)) if len(values) else float("nan")
    return float(np.average(values, weights=np.asarray(sample_weight, dtype=np.float64)))


# ---- compiled functions -----------------------------------------------------------------
def _crossentropy(labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def _margin_loss(labels, logits):
    """Carlini-Wagner margin: largest wrong logit minus the true logit (per example)."""
    onehot = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    wrong = tf.reduce_max(tf.where(onehot, tf.constant(-np.inf, logits.dtype), logits), axis=1)
    true = tf.reduce_max(tf.where(onehot, logits, tf.constant(-np.inf, logits.dtype)), axis=1)
    return wrong - true


_LOSS_FNS = {"crossentropy": _crossentropy, "margin": _margin_loss}


def _model_cache(model):
    try:
        return _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no cache
        return {}


def _forward_fn(model, n_features):
    cache = _model_cache(model)
    key = ("forward", n_features)
    if key not in cache:
        ref = weakref.ref(model)

        @tf.function(
            input_signature=[tf.TensorSpec([None, n_features], tf.float32)],
            autograph=False,
        )
        def forward(x):
            _TRACE_COUNT["forward"] += 1
            return ref()(x, training=False)

        cache[key] = forward
    return cache[key]


def _project(z, norm, lo, hi):
    """Back onto the unit ball of ``norm`` and into the (scaled) clip box."""
    z = clip_eta(z, norm, 1.0)
    return z if lo is None else tf.clip_by_value(z, lo, hi)


def _pgd_loop(model_fn, loss_fn, y, z, step, steps, norm, lo, hi):
    """CleverHans's PGD iteration (centre 0, radius 1): FGM step, project, clip."""

    def body(i, z):
        z = fast_gradient_method(
            model_fn, z, step, norm, loss_fn, clip_min=lo, clip_max=hi, y=y, sanity_checks=False
        )
        return i + 1, _project(z, norm, lo, hi)

    return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), z))[1]


def _mim_loop(model_fn, loss_fn, y, z, step, steps, norm, lo, hi, decay=1.0):
    """CleverHans's momentum iterative method (Dong et al. 2018), centre 0, radius 1."""

    def body(i, z, momentum):
        grad = compute_gradient(model_fn, loss_fn, z, y, False)
        grad = grad / tf.maximum(1e-12, tf.reduce_mean(tf.abs(grad), axis=1, keepdims=True))
        momentum = decay * momentum + grad
        z = _project(z + optimize_linear(momentum, step, norm), norm, lo, hi)
        return i + 1, z, momentum

    return tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), z, tf.zeros_like(z)))[1]


def _attack_fn(model, n_features, attack, norm, random_start, loss, clip, seed):
    """One compiled attack, ``(x, y, eps, step, steps) -> (x_adv, clean pred, adversarial pred)``.

    ``step`` is relative to ``eps``. Cached per model and setting, except with a
    seeded random start: that one is built afresh so that its random stream starts
    from the seed at each call.
    """
    key = ("attack", n_features, attack, norm, random_start, loss, clip)
    cache = _model_cache(model) if seed is None else {}
    if key in cache:
        return cache[key]
    ref = weakref.ref(model)
    loss_fn = _LOSS_FNS[loss]

    def logits(x):
        return ref()(x, training=False)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n_features], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
        ],
        autograph=False,
    )
    def run(x, y, eps, step, steps):
        _TRACE_COUNT["attack"] += 1
        if seed is not None:
            # the graph-level seed of this function only (TF1 API inside a trace)
            tf.compat.v1.set_random_seed(seed)

        # The attack searches z = (x_adv - x) / eps in the unit ball, so eps is a tensor
        # and one trace serves every eps. The value fed to the model is x + eps z, its
        # gradient is passed through unscaled: d logits / dz = d logits / dx at x + eps z,
        # so every step is the one CleverHans takes in input space.
        def model_fn(z):
            return logits(tf.stop_gradient(x + eps * z) + (z - tf.stop_gradient(z)))

        lo = hi = None
        if clip is not None:
            lo, hi = (clip[0] - x) / eps, (clip[1] - x) / eps
        if attack == "fgsm":
            z = fast_gradient_method(
                model_fn, tf.zeros_like(x), 1.0, norm, loss_fn,
                clip_min=lo, clip_max=hi, y=y, sanity_checks=False,
            )  # fmt: skip
        else:
            z = tf.zeros_like(x)
            if random_start:  # as CleverHans's PGD: uniform in the ball, then clipped
                z = _project(random_lp_vector(tf.shape(x), norm, 1.0, dtype=x.dtype), norm, lo, hi)
            loop = _mim_loop if attack == "mim" else _pgd_loop  # pgd; bim = pgd from 0
            z = loop(model_fn, loss_fn, y, z, step, steps, norm, lo, hi)
        # back to input space: exact projection on the eps-ball, then on the clip box
        # (clipping only shrinks |x_adv - x| coordinate-wise since x is in the box)
        x_adv = x + clip_eta(eps * z, norm, eps)
        if clip is not None:
            x_adv = tf.clip_by_value(x_adv, clip[0], clip[1])
        clean = tf.argmax(logits(x), axis=1)
        adv = tf.argmax(logits(x_adv), axis=1)
        return x_adv, clean, adv

    cache[key] = run
    return run


def _seed(random_state):
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _progbar(n_batches, verbose):
    if not verbose or n_batches <= 1:
        return None
    return keras.utils.Progbar(
        n_batches, verbose=1 if verbose is True else int(verbose), unit_name="batch"
    )


def _run_attack(
    estimator,
    X,
    y,
    *,
    attack,
    eps,
    norm,
    steps,
    step_size,
    random_start,
    loss,
    clip,
    batch_size,
    random_state,
    verbose,
):
    """Return (X_adv, clean predictions, adversarial predictions, encoded y).

    With ``loss="both"`` the points of the two attacks are combined per point
    (see :func:`_combine_attacks`).
    """
    if loss == _BOTH:
        runs = _attack_runs(
            estimator, X, y, attack=attack, eps=eps, norm=norm, steps=steps,
            step_size=step_size, random_start=random_start, loss=loss, clip=clip,
            batch_size=batch_size, random_state=random_state, verbose=verbose,
        )  # fmt: skip
        return _combine_attacks(runs)
    pipeline = isinstance(estimator, Pipeline)
    attack, norm, steps, step_size, random_start, loss, clip, batch_size = _check_settings(
        attack, norm, steps, step_size, random_start, loss, clip, batch_size
    )
    eps = _check_eps(eps)
    est, X = _resolve(estimator, X)
    _check_in_clip(X, clip, pipeline)
    n, n_features = X.shape
    model = est.model_
    if y is None:
        y_idx = np.argmax(_logits(est, X, batch_size), axis=1).astype(np.int64)
    else:
        y_idx = _encode(est, y, n)
    if eps == 0 or n == 0:
        pred = np.argmax(_logits(est, X, batch_size), axis=1) if n else np.zeros(0, np.int64)
        return X.copy(), pred, pred, y_idx
    if attack == "fgsm":
        rel_step = 1.0
    elif step_size is None:
        rel_step = min(1.0, 2.5 / steps)
    else:
        if step_size > eps:
            raise ValueError(
                f"step_size={step_size!r} is larger than eps={eps!r}; CleverHans requires "
                "step_size <= eps (leave step_size=None for 2.5 * eps / steps)"
            )
        rel_step = float(step_size) / eps
    seed = _seed(random_state) if random_start else None
    fn = _attack_fn(model, n_features, attack, norm, random_start, loss, clip, seed)
    scalars = (
        tf.constant(eps, tf.float32),
        tf.constant(rel_step, tf.float32),
        tf.constant(steps, tf.int32),
    )
    n_batches = -(-n // batch_size)
    bar = _progbar(n_batches, verbose)
    advs, cleans, preds = [], [], []
    for i, start in enumerate(range(0, n, batch_size)):
        stop = start + batch_size
        x_adv, clean, adv = fn(X[start:stop], y_idx[start:stop], *scalars)
        advs.append(x_adv.numpy())
        cleans.append(clean.numpy())
        preds.append(adv.numpy())
        if bar is not None:
            bar.update(i + 1)
    return np.concatenate(advs), np.concatenate(cleans), np.concatenate(preds), y_idx


def _attack_runs(estimator, X, y, *, loss, **settings) -> dict:
    """``{loss: _run_attack(...)}`` for each attack loss that ``loss`` names."""
    losses = _LOSSES if loss == _BOTH else (loss,)
    return {name: _run_attack(estimator, X, y, loss=name, **settings) for name in losses}


def _robust_mask(run) -> np.ndarray:
    """Per point: classified correctly as it is and after the attack of ``run``."""
    _, clean, adv, y_idx = run
    return (clean == y_idx) & (adv == y_idx)


def _combine_attacks(runs: dict):
    """One ``_run_attack`` result from several attacks on the same points.

    Per point, the adversarial point (and its prediction) of the first attack,
    in the order of ``_LOSSES``, whose point is misclassified; the last attack's
    point when none is. A point is then robust under the combination exactly
    when it is robust under every attack.
    """
    results = list(runs.values())
    x_adv, clean, adv, y_idx = (np.copy(v) for v in results[-1])
    for x_other, _, adv_other, _ in reversed(results[:-1]):
        take = adv_other != y_idx
        x_adv[take] = x_other[take]
        adv[take] = adv_other[take]
    return x_adv, clean, adv, y_idx


def _logits(est, X, batch_size=1024):
    n, n_features = X.shape
    fn = _forward_fn(est.model_, n_features)
    batch = max(int(batch_size), 1024)
    out = [fn(X[i : i + batch]).numpy() for i in range(0, n, batch)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(est.classes_)))


_ATTACK_PARAMS_DOC = """
    attack : {"fgsm", "pgd", "bim", "mim"}, default="pgd"
        The fast gradient (sign) method, projected gradient descent (``"bim"``:
        without random start, the basic iterative method) or the momentum
        iterative method, as in CleverHans. ``"cw"`` / ``"carlini_wagner_l2"`` and
        ``"spsa"`` raise ``ValueError`` (broken in CleverHans 4.0.0 with Keras 3;
        use ``loss="margin"`` for the Carlini-Wagner objective).
    eps : float
        Radius of the perturbation ball, >= 0. ``eps=0`` runs no attack.
    norm : {2, np.inf, "l2", "linf", "inf"}, default=2
        Norm of the ball.
    steps : int, default=20
        Iterations of PGD, BIM and MIM (unused by FGSM).
    step_size : float or None, default=None
        Step of each iteration, at most ``eps``; ``None`` is ``2.5 * eps / steps``
        (capped at ``eps``). Unused by FGSM, which takes one step of ``eps``.
    random_start : bool, default=False
        PGD only: start from a uniform random point of the ball (Madry et al.).
    loss : {"crossentropy", "margin", "both"}, default="crossentropy"
        The loss the attack increases: CleverHans's softmax cross-entropy, or the
        Carlini-Wagner margin ``max_{j != y} z_j - z_y``. ``"both"`` runs the
        attack once with each loss, and a point counts as robust only if it
        survives both (the stronger measure: cross-entropy gradients vanish on a
        saturated softmax, the margin's do not).
    clip : (float, float) or None, default=(0.0, 1.0)
        Box the adversarial points stay in (pixels in [0, 1]); ``None`` does not
        clip. ``X`` itself must lie in the box.
    batch_size : int, default=512
        Points attacked per call of the compiled attack.
    random_state : int, RandomState or None, default=None
        Seeds the random start, so that two calls give the same points.
    verbose : int, default=0
        1 shows a progress bar over batches."""


def generate_adversarial(
    estimator,
    X,
    y=None,
    *,
    attack: str = "pgd",
    eps: float,
    norm: float | str = 2,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = False,
    loss: str = "crossentropy",
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 512,
    random_state=None,
    verbose: int = 0,
) -> np.ndarray:
    return _run_attack(
        estimator,
        X,
        y,
        attack=attack,
        eps=eps,
        norm=norm,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        loss=loss,
        clip=clip,
        batch_size=batch_size,
        random_state=random_state,
        verbose=verbose,
    )[0]


generate_adversarial.__doc__ = (
    """Adversarial examples of ``X`` for a fitted classifier, by a CleverHans attack.

    The attack runs on the logits of ``estimator.model_`` in inference mode, in
    batches, inside one compiled ``tf.function``.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        A fitted classifier with ``model_`` (Keras, X to logits) and ``classes_``,
        or a fitted :class:`~sklearn.pipeline.Pipeline` ending in one. For a
        pipeline, ``X`` is transformed by the steps before the last one and the
        attack perturbs the *transformed* points: ``eps``, ``norm`` and ``clip``
        are measured in that space, and so are the returned points.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,) or None, default=None
        True labels, from ``classes_`` (strings allowed). ``None`` attacks the
        model's own predictions."""
    + _ATTACK_PARAMS_DOC
    + """

    Returns
    -------
    X_adv : ndarray of float32, shape (n_samples, n_features)
        Inside the ``eps``-ball of ``X`` in ``norm`` and inside ``clip``. With
        ``loss="both"``, per point: the cross-entropy attack's point if it is
        misclassified, otherwise the margin attack's point; so the model
        classifies ``X_adv[i]`` correctly exactly when both attacks failed on
        point ``i``.

    Raises
    ------
    ValueError
        For an unknown or unsupported attack, ``eps < 0``, an unknown norm, or
        ``X`` outside ``clip``.

    See Also
    --------
    robust_accuracy : accuracy on these points.

    Notes
    -----
    The attack searches the scaled perturbation ``z = (x_adv - x) / eps`` in the
    unit ball (clip box mapped accordingly) and feeds the model ``x + eps z`` with
    the input gradient passed through unscaled, so each step is exactly
    CleverHans's step in input space; ``eps`` is then an input of the compiled
    function rather than a constant, and one compilation serves all radii. The
    result is projected once more on the ``eps``-ball and the clip box in input
    space.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> X_adv = generate_adversarial(clf, X[:20], y[:20], eps=0.5, norm=2, steps=5)
    >>> bool(np.all(np.linalg.norm(X_adv - X[:20], axis=1) <= 0.5 + 1e-5))
    True
    >>> X_adv = generate_adversarial(clf, X[:20], y[:20], attack="fgsm", eps=0.1, norm="linf")
    >>> bool(np.abs(X_adv - X[:20]).max() <= 0.1 + 1e-6), X_adv.dtype
    (True, dtype('float32'))

    With ``loss="both"`` a point is misclassified if either attack succeeded:

    >>> def fooled(loss):
    ...     adv = generate_adversarial(clf, X[:50], y[:50], eps=1.0, steps=5, loss=loss)
    ...     return clf.predict(adv) != y[:50]
    >>> bool(np.array_equal(fooled("both"), fooled("crossentropy") | fooled("margin")))
    True
    """
)


def robust_accuracy(
    estimator,
    X,
    y,
    *,
    attack: str = "pgd",
    eps: float,
    norm: float | str = 2,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = False,
    loss: str = "crossentropy",
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 512,
    random_state=None,
    verbose: int = 0,
    sample_weight=None,
) -> float:
    _, clean, adv, y_idx = _run_attack(
        estimator,
        X,
        y,
        attack=attack,
        eps=eps,
        norm=norm,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        loss=loss,
        clip=clip,
        batch_size=batch_size,
        random_state=random_state,
        verbose=verbose,
    )
    return _weighted_mean((clean == y_idx) & (adv == y_idx), sample_weight)


robust_accuracy.__doc__ = (
    """Accuracy under attack: the fraction of points classified correctly both
    as they are and after the attack.

    The clean point is itself in the ball, so a point counts as robust only when
    the attack found no misclassified point among the two (the usual empirical
    robust accuracy, never above the clean accuracy). ``eps=0`` returns the clean
    accuracy without attacking.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        A fitted classifier, or a fitted pipeline ending in one; for a pipeline
        the attack perturbs the transformed points and ``eps`` is measured there
        (see :func:`generate_adversarial`).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        True labels, from ``classes_``."""
    + _ATTACK_PARAMS_DOC
    + """
    sample_weight : array-like of shape (n_samples,), optional
        Weights of the points in the mean.

    Returns
    -------
    float
        The robust accuracy in [0, 1].

    See Also
    --------
    certified_accuracy : a lower bound that no attack can beat.
    make_robustness_scorer : the same number as a scikit-learn scorer.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> robust_accuracy(clf, X[300:400], y[300:400], eps=0) == clf.score(X[300:400], y[300:400])
    True
    >>> robust = robust_accuracy(clf, X[300:400], y[300:400], eps=1.0, steps=5)
    >>> bool(robust < clf.score(X[300:400], y[300:400]))
    True
    """
)


# ---- scorers -----------------------------------------------------------------------------------
class _RobustnessScorer:
    """``scorer(estimator, X, y)``: :func:`robust_accuracy` with fixed settings (picklable)."""

    def __init__(self, kwargs):
        self._kwargs = dict(kwargs)

    def __call__(self, estimator, X, y, sample_weight=None):
        return robust_accuracy(estimator, X, y, sample_weight=sample_weight, **self._kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"make_robustness_scorer({args})"


class _CertifiedScorer:
    """``scorer(estimator, X, y)``: :func:`certified_accuracy` at a fixed eps (picklable)."""

    def __init__(self, kwargs):
        self._kwargs = dict(kwargs)

    def __call__(self, estimator, X, y, sample_weight=None):
        return certified_accuracy(estimator, X, y, sample_weight=sample_weight, **self._kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"make_certified_scorer({args})"


def make_robustness_scorer(
    *,
    attack: str = "pgd",
    eps: float,
    norm: float | str = 2,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = False,
    loss: str = "crossentropy",
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 512,
    random_state=None,
    verbose: int = 0,
) -> Callable:
    kwargs = dict(
        attack=attack,
        eps=eps,
        norm=norm,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        loss=loss,
        clip=clip,
        batch_size=batch_size,
        random_state=random_state,
        verbose=verbose,
    )
    _check_settings(attack, norm, steps, step_size, random_start, loss, clip, batch_size)
    _check_eps(eps)
    return _RobustnessScorer(kwargs)


make_robustness_scorer.__doc__ = (
    """A scikit-learn scorer of the robust accuracy: ``scorer(estimator, X, y)``.

    Higher is better. It works in ``GridSearchCV`` / ``cross_validate`` (also on
    pipelines, where ``eps`` is measured after the preprocessing) and pickles, so
    it travels to joblib workers. The arguments are checked now.

    Parameters
    ----------"""
    + _ATTACK_PARAMS_DOC
    + """

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None) -> float``.

    See Also
    --------
    robust_accuracy, make_certified_scorer

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import cross_validate
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> scoring = {"accuracy": "accuracy", "robust": make_robustness_scorer(eps=0.5, steps=5)}
    >>> clf = StableClassifier(depth=1, epochs=1, random_state=0)
    >>> cv = cross_validate(clf, X[:300] / 16, y[:300], cv=2, scoring=scoring)
    >>> bool((cv["test_robust"] <= cv["test_accuracy"]).all())
    True
    """
)


# ---- certificates ------------------------------------------------------------------------------
def _lipschitz(est):
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


def _margins(logits):
    """Top minus second logit, in float64 (exact for float32 logits); +inf for one class."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] < 2:
        return np.full(len(logits), np.inf)
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


# ---- the rounding allowance --------------------------------------------------------------
# Unit roundoff (round to nearest) of the floating-point formats a layer may compute in.
_UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
_TF32_UNIT_ROUNDOFF = 2.0**-11  # 10 explicit mantissa bits


def _chain(model) -> list:
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _model_unit_roundoff(layers) -> float:
    """``u`` of the coarsest compute dtype of the layers; TF32 matmuls count on a GPU."""
    dtypes = {str(getattr(layer, "compute_dtype", "float32")) for layer in layers} or {"float32"}
    u = max(_UNIT_ROUNDOFF.get(d, 2.0**-24) for d in dtypes)
    if (
        "float32" in dtypes
        and tf.config.list_logical_devices("GPU")
        and tf.config.experimental.tensor_float_32_execution_enabled()
    ):
        u = max(u, _TF32_UNIT_ROUNDOFF)
    return u


_EXACT_LAYERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.MaxPooling2D,
    keras.layers.Dropout,
    keras.layers.Identity,
    IsometricLift,
)


def _rounding_chain_length(layer) -> int:
    """``n_k``: the roundings behind one output coordinate of a layer (see rounding_allowance)."""
    shapes = [
        tuple(int(d) for d in w.shape)
        for w in layer.weights
        if len(w.shape) >= 2 and "float" in str(w.dtype)
    ]
    if not shapes:
        if isinstance(layer, _EXACT_LAYERS):
            return 0  # copies, reshapes, comparisons and zeros: no rounding
        pool = getattr(layer, "pool_size", None)
        if pool is not None:  # a sum over each window (average or norm pooling)
            return math.prod(np.broadcast_to(pool, (2,)).tolist()) + 1
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return math.prod(layer.input.shape[1:3]) + 1
        return 4  # an elementwise function (rescaling, activation): a few roundings
    # A (fan-in: all but the output axis) and A^T (fan-out) of every kernel, plus the
    # elementwise operations (bias, activation, step size, sum, Runge-Kutta weights).
    n = sum(math.prod(sh[:-1]) + math.prod(sh[:-2]) * sh[-1] for sh in shapes) + 8
    integrator = getattr(layer, "integrator", None)
    stages = int(getattr(integrator, "stages", 1))
    steps = layer.substep_schedule().substeps if hasattr(layer, "substep_schedule") else 1
    return n * stages * steps


def _rounding_terms(model, n_features, unit_roundoff):
    """``(gamma_N, Lambda, rho_0 + beta)`` of the allowance, for a chain of layers."""
    from stablekeras.bounds import layer_bound  # the bounds `lipschitz_bound` multiplies

    layers = _chain(model)
    u = _model_unit_roundoff(layers) if unit_roundoff is None else float(unit_roundoff)
    if not (u >= 0 and math.isfinite(u)):
        raise _invalid("unit_roundoff", "None or a finite number >= 0", unit_roundoff)
    n_total = sum(_rounding_chain_length(layer) for layer in layers)
    growth = math.prod(max(1.0, layer_bound(layer)) for layer in layers)
    # rho_0: the largest layer output at x = 0; beta: the largest bias.
    h = tf.zeros((1, n_features), dtype=tf.float32)
    rho0 = 0.0
    for layer in layers:
        h = layer(h, training=False)
        rho0 = max(rho0, float(tf.norm(tf.cast(h, tf.float64))))
    beta = max(
        (
            float(np.linalg.norm(keras.ops.convert_to_numpy(w).astype(np.float64)))
            for layer in layers
            for w in layer.trainable_weights
            if len(w.shape) == 1
        ),
        default=0.0,
    )
    nu = n_total * u
    gamma = nu / (1.0 - nu) if nu < 1 else math.inf
    return gamma, growth, rho0 + beta


def _allowance(est, X, margin, L, unit_roundoff) -> np.ndarray:
    """The allowance of every point, given its computed margin (see rounding_allowance)."""
    if unit_roundoff is not None and float(unit_roundoff) == 0.0:
        return np.zeros(len(X))
    gamma, growth, offset = _rounding_terms(est.model_, X.shape[1], unit_roundoff)
    if gamma == 0.0:
        return np.zeros(len(X))
    finite = np.isfinite(margin)  # one class: nothing to change, nothing to allow
    reach = np.where(finite, margin, 0.0) / (math.sqrt(2.0) * L)  # r_0, the largest radius
    norms = np.linalg.norm(np.asarray(X, dtype=np.float64), axis=1)
    delta = gamma * growth * (offset + growth * (norms + reach))
    return np.where(finite, 2.0 * math.sqrt(2.0) * delta, 0.0)


def rounding_allowance(
    estimator, X, *, unit_roundoff: float | None = None, batch_size: int = 1024
) -> np.ndarray:
    r"""The allowance for floating-point rounding that a certificate adds to ``sqrt(2) L eps``.

    A point is certified at ``eps`` only when its computed logit margin exceeds
    ``sqrt(2) L eps + allowance``; :func:`certified_accuracy`,
    :func:`certified_radius` and :func:`make_certified_scorer` use this number.
    It is tiny for the float32 networks of the package (about ``1e-3`` with
    constrained blocks) but not zero: without it, a point whose margin sits
    within rounding of the threshold could be certified wrongly.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        A fitted classifier with ``lipschitz_bound_`` whose ``model_`` is a chain
        of layers (as :func:`~stablekeras.models.lipschitz_bound` needs), or a
        pipeline ending in one (``X`` is then transformed first).
    X : array-like of shape (n_samples, n_features)
    unit_roundoff : float or None, default=None
        ``u`` of the arithmetic. ``None``: from the layers' compute dtype
        (``2**-24`` for float32, ``2**-11`` for float16, ``2**-8`` for bfloat16),
        and ``2**-11`` for float32 on a GPU with TensorFloat-32 matmuls enabled
        (TensorFlow's default on Ampere and later GPUs). ``0`` gives no allowance
        (exact arithmetic, the certificate of the chapter).
    batch_size : int, default=1024
        Points per forward pass (for the margins).

    Returns
    -------
    ndarray of shape (n_samples,)
        ``2 sqrt(2) delta(x)``, with ``delta`` the bound below; ``inf`` if
        ``N u >= 1``; 0 for a one-class model.

    See Also
    --------
    certified_accuracy, certified_radius

    Notes
    -----
    Notation: ``z(x)`` are the logits in exact arithmetic with the stored weights
    (the network that ``L`` bounds), ``ẑ(x)`` those computed in floating point,
    ``m`` the margin (top minus second logit), ``m̂ = m(ẑ(x))``, ``L`` the sound
    l2 Lipschitz bound of ``z`` and ``u`` the unit roundoff.

    *Proven.*

    1. The margin is ``sqrt(2)``-Lipschitz in l2: ``m(z) = max_i min_{j != i}
       (z_i - z_j)`` and each ``z_i - z_j`` is. So ``|m(ẑ) - m(z)| <= sqrt(2)
       ||ẑ - z||``. The margin of float32 logits is formed in float64, where the
       difference of two float32 numbers is exact.
    2. Let ``||ẑ(x') - z(x')|| <= delta`` for every ``x'`` within ``r_0`` of
       ``x``, and ``m̂(x) > sqrt(2) L eps + 2 sqrt(2) delta`` with ``eps <= r_0``.
       For the computed top class ``t`` and any ``j``, ``z_t(x) - z_j(x) >=
       ẑ_t - ẑ_j - sqrt(2) delta > sqrt(2) L eps + sqrt(2) delta``; over
       ``||x' - x|| < eps`` the difference loses at most ``sqrt(2) L eps``, so
       ``z_t(x') - z_j(x') > sqrt(2) delta`` and ``ẑ_t(x') - ẑ_j(x') > 0``. Both
       the exact network and its floating-point evaluation keep the label on
       the ball: hence the allowance ``2 sqrt(2) delta``, one ``sqrt(2) delta``
       for the rounding at ``x`` and one at ``x'``. We take ``r_0 = m̂ / (sqrt(2)
       L)``, beyond which nothing is ever certified, so one allowance per point
       serves every ``eps`` and the radius ``max(0, (m̂ - allowance) /
       (sqrt(2) L))`` agrees with the accuracy at every ``eps``.
    3. Propagation through the chain of layers ``g_K o ... o g_1`` with sound
       bounds ``L_k``: if layer ``k``, evaluated in floating point at its
       computed input ``v``, errs by ``e_k = ||ĝ_k(v) - g_k(v)||``, then by
       induction ``||ẑ - z|| <= sum_k (prod_{j > k} L_j) e_k <= Lambda sum_k
       e_k`` with ``Lambda = prod_k max(1, L_k)``.
    4. In the standard model ``fl(a op b) = (a op b)(1 + theta)``, ``|theta| <=
       u``, a dot product of length ``n`` summed in any order satisfies
       ``|fl(w^T v) - w^T v| <= gamma_n |w|^T |v|``, ``gamma_n = n u / (1 - n
       u)``, and ``gamma_a + gamma_b <= gamma_{a+b}`` (Higham, *Accuracy and
       Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, sections 3.1 and
       3.4). Chaining the operations of a layer (``Av + b``, the activation,
       ``A^T``, the step, the sum; ``S`` sub-steps of an ``s``-stage method)
       gives ``e_k <= gamma_{n_k}`` times the l2 norm of the same computation
       done on absolute values, with ``n_k = S s (sum over kernels of fan-in +
       fan-out, + 8)``; for layers without kernels, a window's size + 1 for
       average (or norm) pooling, 0 for exact ones (max pooling, reshapes, the
       isometric lift) and 4 for other elementwise functions.

    *Engineering bound (not proven).*

    5. We take ``e_k <= gamma_{n_k} R(x)`` with ``R(x) = rho_0 + beta + Lambda
       (||x|| + r_0)``: a bound on the l2 norm of every layer's output at every
       point of the ball (``rho_0`` the largest layer output at ``x = 0``,
       ``beta`` the largest bias norm; the outputs are ``Lambda``-Lipschitz in
       the input). This replaces the absolute values ``|W||v|`` of step 4 by
       the norm ``||v||``, which can be too small by the alignment factor
       ``|| |W| || / ||W||`` (up to ``(fan_in fan_out)^(1/4)``) and by the
       constant factors of a gradient step, whose inner vector ``Av + b`` is
       larger than ``v`` when ``||A|| > 1`` (``h L_s ||A||^2 <= 2`` scales it
       back). In exchange it keeps the worst-case growth ``gamma_N ~ N u``
       where rounding errors of independent signs grow like ``sqrt(N) u``
       (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019): a factor
       ``sqrt(N)``, 30 to 300 here, of room. The tests check the result on
       trained networks against a float64 evaluation of the same weights.

    So ``delta(x) = gamma_N Lambda R(x)`` with ``N = sum_k n_k``, and the
    allowance is ``2 sqrt(2) delta(x)``. The count assumes dot-product kernels
    (TensorFlow's CPU matrix products and direct or im2col convolutions); FFT
    or Winograd convolutions, which some GPU libraries pick, have other error
    constants and are not covered.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = StableClassifier(epochs=1, random_state=0)
    >>> clf = clf.fit(X[:200] / 16, y[:200])
    >>> allowance = rounding_allowance(clf, X[:5] / 16)
    >>> bool(np.all((allowance > 0) & (allowance < 1e-2)))
    True
    >>> bool(np.all(rounding_allowance(clf, X[:5] / 16, unit_roundoff=0) == 0))
    True
    """
    est, X = _resolve(estimator, X)
    L = _lipschitz(est)
    margin = _margins(_logits(est, X, batch_size))
    return _allowance(est, X, margin, L, unit_roundoff)


_RULES = ("global", "pairwise")


def _check_rule(rule) -> str:
    if rule not in _RULES:
        raise _invalid("rule", f"one of {_RULES}", rule)
    return rule


def _last_linear_kernel(layer):
    """The kernel ``W`` (``d x n_classes``) with which a linear last layer computes ``h W + b``."""
    from stablekeras.layers import OrthogonalDense, SpectralDense

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
    from stablekeras.bounds import layer_bound  # the bounds `lipschitz_bound` multiplies

    layers = _chain(est.model_)
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
    allowance = _allowance(est, X, exact * math.sqrt(2) * L, L, unit_roundoff)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrunk = np.where(dist > 0, (gaps - allowance[:, None]) / (dist * L_body), np.inf)
    shrunk[np.arange(len(logits)), top] = np.inf
    return np.maximum(shrunk.min(axis=1), 0.0)


def _radii(est, X, logits, L, unit_roundoff, rule) -> np.ndarray:
    """Each point's certified radius under ``rule`` (the allowance subtracted)."""
    margin = _margins(logits)
    if rule == "pairwise":
        return _pairwise_radius(est, logits, margin, L, X, unit_roundoff)
    allowance = _allowance(est, X, margin, L, unit_roundoff)
    return np.maximum(margin - allowance, 0.0) / (math.sqrt(2) * L)


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
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0)  # certified: L <= 1
    >>> clf = clf.fit(X[:300] / 16, y[:300])
    >>> r = certified_radius(clf, X[:5] / 16)
    >>> r.shape, bool(np.all(r >= 0))
    ((5,), True)
    >>> bool(np.all(r <= certified_radius(clf, X[:5] / 16, unit_roundoff=0)))
    True
    """
    rule = _check_rule(rule)
    est, X = _resolve(estimator, X)
    L = _lipschitz(est)
    return _radii(est, X, _logits(est, X, batch_size), L, unit_roundoff, rule)


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
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0)  # certified: L <= 1
    >>> clf = clf.fit(X[:300], y[:300])
    >>> acc = certified_accuracy(clf, X[300:400], y[300:400], eps=[0.0, 0.1, 1.0])
    >>> bool(acc[0] >= acc[1] >= acc[2])
    True
    """
    values, scalar = _check_eps_list(eps)
    norm = _check_norm(norm)
    rule = _check_rule(rule)
    est, X = _resolve(estimator, X)
    y_idx = _encode(est, y, len(X))
    L = _lipschitz(est)
    logits = _logits(est, X, batch_size)
    correct = np.argmax(logits, axis=1) == y_idx
    # margin > sqrt(2) L eps + allowance, as the radius computes it (the same rounding)
    radius = _radii(est, X, logits, L, unit_roundoff, rule)
    scale = math.sqrt(X.shape[1]) if norm == np.inf else 1.0
    acc = np.array([_weighted_mean(correct & (radius > scale * e), sample_weight) for e in values])
    return float(acc[0]) if scalar else acc


def make_certified_scorer(
    *,
    eps: float,
    norm: float | str = 2,
    rule: str = "global",
    unit_roundoff: float | None = None,
    batch_size: int = 1024,
) -> Callable:
    """A scikit-learn scorer of the certified accuracy at ``eps``.

    Parameters
    ----------
    eps : float
        Radius, >= 0.
    norm : {2, np.inf, "l2", "linf", "inf"}, default=2
    rule : {"global", "pairwise"}, default="global"
        See :func:`certified_accuracy`.
    unit_roundoff : float or None, default=None
        See :func:`rounding_allowance`.
    batch_size : int, default=1024

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None) -> float``, picklable.

    See Also
    --------
    certified_accuracy, make_robustness_scorer

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = StableClassifier(depth=1, epochs=1, random_state=0)  # certified: L <= 1
    >>> clf = clf.fit(X[:200] / 16, y[:200])
    >>> scorer = make_certified_scorer(eps=0.1)
    >>> 0.0 <= scorer(clf, X[200:300] / 16, y[200:300]) <= 1.0
    True
    """
    _check_eps(eps)
    _check_norm(norm)
    _check_rule(rule)
    if unit_roundoff is not None and not (float(unit_roundoff) >= 0):
        raise _invalid("unit_roundoff", "None or a number >= 0", unit_roundoff)
    kwargs = dict(eps=eps, norm=norm, batch_size=batch_size)
    if rule != "global":
        kwargs["rule"] = rule
    if unit_roundoff is not None:
        kwargs["unit_roundoff"] = unit_roundoff
    return _CertifiedScorer(kwargs)


# ---- curves, tables and plots ------------------------------------------------------------------
def _default_name(estimator):
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    name = type(final).__name__
    constraint = getattr(final, "constraint", None)
    return f"{name}({constraint})" if constraint is not None else name


def robustness_curve(
    estimator,
    X,
    y,
    eps: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 1.0),
    *,
    attack: str = "pgd",
    norm: float | str = 2,
    steps: int = 20,
    step_size: float | None = None,
    relative_step: float | None = None,
    random_start: bool = False,
    loss: str = "both",
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 512,
    random_state=None,
    verbose: int = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """Robust and certified accuracy over a range of radii, as a table.

    By default a point counts as robust only if both a cross-entropy and a
    margin attack fail on it (``loss="both"``), the stronger measure.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        A fitted classifier, or a fitted pipeline ending in one.
    X : array-like of shape (n_samples, n_features)
        The clean points.
    y : array-like of shape (n_samples,)
        True labels, from ``classes_``.
    eps : sequence of float, default=(0, 0.1, 0.3, 0.5, 1)
        The radii.
    attack, norm, steps, step_size, random_start, clip, batch_size, random_state, verbose
        As in :func:`robust_accuracy`. With ``step_size=None`` (and no
        ``relative_step``) each radius uses ``2.5 * eps / steps`` and one
        compiled attack serves all radii.
    relative_step : float or None, default=None
        Step of each iteration as a fraction of each radius, in (0, 1]:
        ``steps=100, relative_step=0.1`` is l2-PGD with 100 steps of 0.1 eps.
        Exclusive with ``step_size``.
    loss : {"both", "crossentropy", "margin"}, default="both"
        The attack's loss. ``"both"`` runs a cross-entropy and a margin attack
        from the same clean points; a point is robust only if it survives both,
        and the result also holds each attack's own accuracies.
    name : str, optional
        Label of the estimator in tables and plots; default: its class and constraint.

    Returns
    -------
    dict
        ``"name"``; ``"eps"``, ``"robust"`` and ``"certified"`` (lists of float, one
        per radius; ``"certified"`` is ``None`` for an estimator without
        ``lipschitz_bound_``); ``"robust_by_loss"`` (``{"crossentropy": [...],
        "margin": [...]}`` with ``loss="both"``, otherwise ``{loss: robust}``);
        ``"clean"`` (float, the accuracy); the settings ``"attack"``, ``"norm"``
        ("l2" or "linf"), ``"steps"``, ``"step_size"``, ``"relative_step"``,
        ``"random_start"``, ``"loss"``, ``"clip"``; ``"n_samples"`` and
        ``"lipschitz_bound"``.

    Raises
    ------
    ValueError
        For the invalid settings :func:`robust_accuracy` refuses, and for a
        ``relative_step`` outside (0, 1] or given together with ``step_size``.

    See Also
    --------
    plot_robustness_curve, format_table

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> curve = robustness_curve(clf, X[300:400], y[300:400], eps=[0, 0.5, 1.0], steps=5)
    >>> curve["eps"], curve["robust"][0] == curve["clean"], curve["loss"]
    ([0.0, 0.5, 1.0], True, 'both')
    >>> by_loss = curve["robust_by_loss"]
    >>> all(r <= min(c, m) for r, c, m in zip(curve["robust"], *by_loss.values()))
    True
    """
    values, _ = _check_eps_list(eps)
    _check_settings(attack, norm, steps, step_size, random_start, loss, clip, batch_size)
    if relative_step is not None:
        if (
            isinstance(relative_step, bool)
            or not isinstance(relative_step, numbers.Real)
            or not 0 < relative_step <= 1
        ):
            raise _invalid("relative_step", "None or a number in (0, 1]", relative_step)
        if step_size is not None:
            raise ValueError(
                "Pass either `step_size` or `relative_step`, not both. Received: "
                f"step_size={step_size!r}, relative_step={relative_step!r}"
            )
    settings = dict(
        attack=attack,
        norm=norm,
        steps=steps,
        random_start=random_start,
        clip=clip,
        batch_size=batch_size,
        random_state=random_state,
        verbose=verbose,
    )
    masks = {}  # eps -> {loss: per-point robust mask}
    for e in values:
        step = step_size if relative_step is None or e == 0 else float(relative_step) * e
        runs = _attack_runs(estimator, X, y, loss=loss, eps=e, step_size=step, **settings)
        masks[e] = {k: _robust_mask(run) for k, run in runs.items()}
    if 0.0 not in masks:  # eps=0 runs no attack: the clean accuracy
        masks[0.0] = {
            k: _robust_mask(run)
            for k, run in _attack_runs(
                estimator, X, y, loss=loss, eps=0.0, step_size=None, **settings
            ).items()
        }
    both = {e: np.logical_and.reduce(list(m.values())) for e, m in masks.items()}
    clean = _weighted_mean(both[0.0], None)
    robust = [_weighted_mean(both[e], None) for e in values]
    by_loss = {k: [_weighted_mean(masks[e][k], None) for e in values] for k in masks[0.0]}
    est, _ = _resolve(estimator, X)
    L = getattr(est, "lipschitz_bound_", None)
    certified = None
    if L is not None:
        certified = [float(v) for v in certified_accuracy(estimator, X, y, eps=values, norm=norm)]
    norm_v = _check_norm(norm)
    return {
        "name": name if name is not None else _default_name(estimator),
        "eps": values,
        "clean": clean,
        "robust": robust,
        "robust_by_loss": by_loss,
        "certified": certified,
        "attack": _check_attack(attack),
        "norm": "l2" if norm_v == 2 else "linf",
        "steps": int(steps),
        "step_size": step_size,
        "relative_step": None if relative_step is None else float(relative_step),
        "random_start": bool(random_start),
        "loss": loss,
        "clip": None if clip is None else list(_check_clip(clip)),
        "n_samples": len(np.asarray(y)),
        "lipschitz_bound": None if L is None else float(L),
    }


def _as_curves(results) -> list[dict]:
    if isinstance(results, Mapping) and "robust" in results:
        return [dict(results)]
    if isinstance(results, Mapping):
        return [{**dict(r), "name": str(k)} for k, r in results.items()]
    return [dict(r) for r in results]


def _measure(curve: Mapping, *, loss: str | None = None) -> str:
    """How a curve's robust accuracy was measured, e.g. ``"pgd, l2, 100 steps of 0.1 eps,
    cross-entropy and margin"``."""
    attack = curve.get("attack", "attack")
    parts = [attack, curve.get("norm", "l2")]
    if attack != "fgsm" and "steps" in curve:
        steps = f"{curve['steps']} steps"
        if curve.get("relative_step") is not None:
            steps += f" of {curve['relative_step']:g} eps"
        parts.append(steps)
    loss = loss if loss is not None else curve.get("loss")
    if loss is not None:
        parts.append(_LOSS_LABELS.get(loss, str(loss)))
    return ", ".join(parts)


def format_table(curves, *, percent: bool = True, by_loss: bool = False) -> str:
    """A Markdown table of one or several :func:`robustness_curve` results.

    One row per estimator and metric (robust, certified), one column per radius.
    The robust row names how it was measured: the attack, norm, steps and loss
    (``cross-entropy and margin`` when a point counts as robust only if both
    attacks fail on it). Radii may differ between curves: the columns are their
    union, ``-`` marks a missing value.

    Parameters
    ----------
    curves : dict, list of dict, or dict name -> dict
        :func:`robustness_curve` results.
    percent : bool, default=True
        Accuracies in percent with one decimal; otherwise fractions.
    by_loss : bool, default=False
        Also a row for each single attack of a ``loss="both"`` curve.

    Returns
    -------
    str
        The table, one line per row.

    See Also
    --------
    robustness_curve, plot_robustness_curve

    Examples
    --------
    >>> curve = {"name": "net", "eps": [0.0, 0.5], "clean": 0.9, "robust": [0.9, 0.5],
    ...          "certified": [0.8, 0.2], "attack": "pgd", "steps": 20, "norm": "l2",
    ...          "loss": "both", "robust_by_loss": {"crossentropy": [0.9, 0.7],
    ...                                             "margin": [0.9, 0.5]}}
    >>> print(format_table(curve))
    | estimator | accuracy (%) | eps=0 | eps=0.5 |
    |---|---|---|---|
    | net | robust (pgd, l2, 20 steps, cross-entropy and margin) | 90.0 | 50.0 |
    | net | certified | 80.0 | 20.0 |
    >>> print(format_table(curve, by_loss=True).splitlines()[3])
    | net | robust (pgd, l2, 20 steps, cross-entropy only) | 90.0 | 70.0 |
    """
    curves = _as_curves(curves)
    radii = sorted({float(e) for c in curves for e in c["eps"]})

    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{100 * v:.1f}" if percent else f"{v:.3f}"

    head = ["estimator", "accuracy (%)" if percent else "accuracy"] + [f"eps={e:g}" for e in radii]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in curves:
        rows = [(f"robust ({_measure(c)})", c["robust"])]
        if by_loss and c.get("loss") == _BOTH:
            for loss, vals in c.get("robust_by_loss", {}).items():
                rows.append((f"robust ({_measure(c, loss=loss)})", vals))
        if c.get("certified") is not None:
            rows.append(("certified", c["certified"]))
        for label, vals in rows:
            by_eps = {float(e): v for e, v in zip(c["eps"], vals)}
            cells = [c.get("name", ""), label] + [fmt(by_eps.get(e)) for e in radii]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_robustness_curve(results, ax=None, *, certified: bool = True):
    """Plot accuracy against ``eps`` for one or several estimators.

    Each estimator gets one colour: its robust accuracy (attack) as a solid line
    with markers, its certified accuracy as a dashed line, as in the chapter's
    figure. The robust line's label names the attack and its loss
    (``"cross-entropy and margin"``: robust only if both attacks fail, the
    default of :func:`robustness_curve`).

    Parameters
    ----------
    results : dict, list of dict, or dict name -> dict
        :func:`robustness_curve` results.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure is made otherwise (``plt.show`` is not called).
    certified : bool, default=True
        Also draw the certified accuracy where the result has one.

    Returns
    -------
    ax : matplotlib Axes
        The axes drawn on.

    See Also
    --------
    robustness_curve, format_table

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> curve = {"name": "net", "eps": [0.0, 0.5], "clean": 0.9, "robust": [0.9, 0.5],
    ...          "certified": [0.8, 0.2], "attack": "pgd", "loss": "both"}
    >>> ax = plot_robustness_curve([curve, {**curve, "name": "other", "certified": None}])
    >>> for line in ax.lines:
    ...     print(line.get_label())
    net (pgd, cross-entropy and margin)
    net (certified)
    other (pgd, cross-entropy and margin)
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4))
    curves = _as_curves(results)
    norms = set()
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        name = c.get("name") or f"estimator {i}"
        norms.add(c.get("norm", "l2"))
        measure = c.get("attack", "attack")
        if c.get("loss") is not None:
            measure += f", {_LOSS_LABELS.get(c['loss'], c['loss'])}"
        ax.plot(c["eps"], c["robust"], "-o", color=color, label=f"{name} ({measure})")
        if certified and c.get("certified") is not None:
            ax.plot(
                c["eps"],
                c["certified"],
                "--",
                marker="s",
                markersize=4,
                color=color,
                label=f"{name} (certified)",
            )
    norm = norms.pop() if len(norms) == 1 else "norm"
    ax.set_xlabel(f"eps ({'l2' if norm == 'l2' else 'l-inf' if norm == 'linf' else norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax
