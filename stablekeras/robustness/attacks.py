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
        1 shows a progress bar over batches.

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
    settings = AttackSettings(
        attack=attack, norm=norm, steps=steps, step_size=step_size,
        random_start=random_start, loss=loss, clip=clip, batch_size=batch_size,
        random_state=random_state, verbose=verbose,
    )  # fmt: skip
    return run_attack(estimator, X, y, eps, settings)[0]


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
    attack, eps, norm, steps, step_size, random_start, loss, clip, batch_size, \
random_state, verbose :
        The attack, as in :func:`generate_adversarial` (same defaults).
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
    settings = AttackSettings(
        attack=attack, norm=norm, steps=steps, step_size=step_size,
        random_start=random_start, loss=loss, clip=clip, batch_size=batch_size,
        random_state=random_state, verbose=verbose,
    )  # fmt: skip
    _, clean, adv, y_idx = run_attack(estimator, X, y, eps, settings)
    return weighted_mean((clean == y_idx) & (adv == y_idx), sample_weight)
