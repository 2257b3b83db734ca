"""scikit-learn scorers of the robust and the certified accuracy (picklable, so they
travel to joblib workers)."""

from __future__ import annotations

from collections.abc import Callable

from stablekeras import _checks
from stablekeras.robustness._settings import AttackSettings, check_eps, check_norm, check_rule
from stablekeras.robustness.attacks import robust_accuracy
from stablekeras.robustness.certify import certified_accuracy

__all__ = ["make_robustness_scorer", "make_certified_scorer"]


class _Scorer:
    """``scorer(estimator, X, y)``: ``measure`` with fixed settings (picklable: the
    measure is a module-level function, pickled by reference)."""

    def __init__(self, measure, factory: str, kwargs):
        self._measure = measure
        self._factory = factory
        self._kwargs = dict(kwargs)

    def __call__(self, estimator, X, y, sample_weight=None):
        return self._measure(estimator, X, y, sample_weight=sample_weight, **self._kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{self._factory}({args})"


def make_robustness_scorer(*, eps: float, **settings) -> Callable:
    """A scikit-learn scorer of the robust accuracy: ``scorer(estimator, X, y)``.

    Higher is better. It works in ``GridSearchCV`` / ``cross_validate`` (also on
    pipelines, where ``eps`` is measured after the preprocessing) and pickles, so
    it travels to joblib workers. The arguments are checked now.

    Parameters
    ----------
    eps : float
        Radius of the perturbation ball, >= 0.
    **settings
        How to attack, the fields of :class:`~stablekeras.robustness.AttackSettings`
        with their defaults (``attack="pgd"``, ``steps=20``, ``loss="crossentropy"``, ...).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, sample_weight=None) -> float``.

    See Also
    --------
    robust_accuracy, make_certified_scorer

    Examples
    --------
    >>> from sklearn.model_selection import cross_validate
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> scoring = {"accuracy": "accuracy", "robust": make_robustness_scorer(eps=0.5, steps=5)}
    >>> clf = StableClassifier(depth=1, epochs=1, random_state=0)
    >>> cv = cross_validate(clf, X[:300], y[:300], cv=2, scoring=scoring)
    >>> bool((cv["test_robust"] <= cv["test_accuracy"]).all())
    True
    """
    AttackSettings.from_keywords("make_robustness_scorer", settings)  # checks them now
    check_eps(eps)
    kwargs = {"eps": eps, **settings}
    return _Scorer(robust_accuracy, "make_robustness_scorer", kwargs)


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
    >>> scorer = make_certified_scorer(eps=0.1)
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(depth=1, epochs=1, random_state=0).fit(X[:200], y[:200])
    >>> 0.0 <= scorer(clf, X[200:300], y[200:300]) <= 1.0
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
    return _Scorer(certified_accuracy, "make_certified_scorer", kwargs)
