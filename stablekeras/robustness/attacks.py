"""The public attacks: adversarial examples and the accuracy under attack.

Every attack runs in inference mode (``model_(x, training=False)``), in batches,
inside one compiled ``tf.function`` (see :mod:`stablekeras.robustness._compiled`)
that serves every batch and every radius of one setting.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from sklearn.pipeline import Pipeline

from stablekeras.robustness._compiled import attack_fn
from stablekeras.robustness._inputs import (
    check_in_clip,
    fitted_classifier,
    label_indices,
    predict_logits,
    weighted_mean,
)
from stablekeras.robustness._settings import AttackSettings, check_eps

__all__ = ["generate_adversarial", "robust_accuracy"]


def _progbar(n_batches, verbose):
    if not verbose or n_batches <= 1:
        return None
    return keras.utils.Progbar(
        n_batches, verbose=1 if verbose is True else int(verbose), unit_name="batch"
    )


def _relative_step(settings: AttackSettings, eps: float) -> float:
    """The step of each iteration as a fraction of ``eps``."""
    if settings.attack == "fgsm":
        return 1.0
    if settings.step_size is None:
        return min(1.0, 2.5 / settings.steps)
    if settings.step_size > eps:
        raise ValueError(
            f"step_size={settings.step_size!r} is larger than eps={eps!r}; CleverHans requires "
            "step_size <= eps (leave step_size=None for 2.5 * eps / steps)"
        )
    return float(settings.step_size) / eps


def run_one_attack(estimator, X, y, eps, settings: AttackSettings, loss: str):
    """Return (X_adv, clean predictions, adversarial predictions, encoded y) of one loss."""
    pipeline = isinstance(estimator, Pipeline)
    eps = check_eps(eps)
    est, X = fitted_classifier(estimator, X)
    check_in_clip(X, settings.clip, pipeline)
    n, n_features = X.shape
    batch_size = settings.batch_size
    if y is None:
        y_idx = np.argmax(predict_logits(est, X, batch_size), axis=1).astype(np.int64)
    else:
        y_idx = label_indices(est, y, n)
    if eps == 0 or n == 0:
        pred = np.argmax(predict_logits(est, X, batch_size), axis=1) if n else np.zeros(0, np.int64)
        return X.copy(), pred, pred, y_idx
    rel_step = _relative_step(settings, eps)
    fn = attack_fn(est.model_, n_features, settings, loss, settings.draw_seed())
    scalars = (
        tf.constant(eps, tf.float32),
        tf.constant(rel_step, tf.float32),
        tf.constant(settings.steps, tf.int32),
    )
    bar = _progbar(-(-n // batch_size), settings.verbose)
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


def attack_runs(estimator, X, y, eps, settings: AttackSettings) -> dict:
    """``{loss: run_one_attack(...)}`` for each attack loss that ``settings.loss`` names."""
    return {loss: run_one_attack(estimator, X, y, eps, settings, loss) for loss in settings.losses}


def robust_mask(run) -> np.ndarray:
    """Per point: classified correctly as it is and after the attack of ``run``."""
    _, clean, adv, y_idx = run
    return (clean == y_idx) & (adv == y_idx)


def combine_attacks(runs: dict):
    """One ``run_one_attack`` result from several attacks on the same points.

    Per point, the adversarial point (and its prediction) of the first attack,
    in the order of ``LOSSES``, whose point is misclassified; the last attack's
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


def run_attack(estimator, X, y, eps, settings: AttackSettings):
    """Return (X_adv, clean predictions, adversarial predictions, encoded y).

    With ``loss="both"`` the points of the two attacks are combined per point
    (see :func:`combine_attacks`).
    """
    return combine_attacks(attack_runs(estimator, X, y, eps, settings))


def generate_adversarial(estimator, X, y=None, *, eps: float, **settings) -> np.ndarray:
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
        model's own predictions.
    eps : float
        Radius of the perturbation ball, >= 0. ``eps=0`` runs no attack.
    **settings
        How to attack, the fields of :class:`AttackSettings` (checked there):
        ``attack="pgd"``, ``norm=2``, ``steps=20``, ``step_size=None``,
        ``random_start=False``, ``loss="crossentropy"``, ``clip=(0.0, 1.0)``,
        ``batch_size=512``, ``random_state=None``, ``verbose=0``. ``X`` must lie
        in ``clip``.

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
    TypeError
        For a keyword that is not one of the settings.

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
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> X_adv = generate_adversarial(clf, X[:20], y[:20], eps=0.5, norm=2, steps=5)
    >>> import numpy as np
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
    settings = AttackSettings.from_keywords("generate_adversarial", settings)
    return run_attack(estimator, X, y, eps, settings)[0]


def robust_accuracy(estimator, X, y, *, eps: float, sample_weight=None, **settings) -> float:
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
        True labels, from ``classes_``.
    eps : float
        Radius of the perturbation ball, >= 0.
    sample_weight : array-like of shape (n_samples,), optional
        Weights of the points in the mean.
    **settings
        How to attack, the fields of :class:`AttackSettings` with their defaults
        (``attack="pgd"``, ``steps=20``, ``loss="crossentropy"``, ...).

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
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> robust_accuracy(clf, X[300:400], y[300:400], eps=0) == clf.score(X[300:400], y[300:400])
    True
    >>> robust = robust_accuracy(clf, X[300:400], y[300:400], eps=1.0, steps=5)
    >>> bool(robust < clf.score(X[300:400], y[300:400]))
    True
    """
    settings = AttackSettings.from_keywords("robust_accuracy", settings)
    _, clean, adv, y_idx = run_attack(estimator, X, y, eps, settings)
    return weighted_mean((clean == y_idx) & (adv == y_idx), sample_weight)
