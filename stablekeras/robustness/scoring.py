"""scikit-learn scorers of the robust and the certified accuracy (picklable, so they
travel to joblib workers)."""

from __future__ import annotations

from collections.abc import Callable

from stablekeras import _checks
from stablekeras.robustness._settings import AttackSettings, check_eps, check_norm, check_rule
from stablekeras.robustness.attacks import robust_accuracy
from stablekeras.robustness.certify import certified_accuracy

__all__ = ["make_robustness_scorer", "make_certified_scorer"]


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
    """A scikit-learn scorer of the robust accuracy: ``scorer(estimator, X, y)``.

    Higher is better. It works in ``GridSearchCV`` / ``cross_validate`` (also on
    pipelines, where ``eps`` is measured after the preprocessing) and pickles, so
    it travels to joblib workers. The arguments are checked now.

    Parameters
    ----------
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
    AttackSettings(**{k: v for k, v in kwargs.items() if k != "eps"})  # checks them now
    check_eps(eps)
    return _RobustnessScorer(kwargs)


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
    check_eps(eps)
    check_norm(norm)
    check_rule(rule)
    if unit_roundoff is not None and not (float(unit_roundoff) >= 0):
        raise _checks.invalid("unit_roundoff", "None or a number >= 0", unit_roundoff)
    kwargs = dict(eps=eps, norm=norm, batch_size=batch_size)
    if rule != "global":
        kwargs["rule"] = rule
    if unit_roundoff is not None:
        kwargs["unit_roundoff"] = unit_roundoff
    return _CertifiedScorer(kwargs)
