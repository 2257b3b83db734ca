"""Robust and certified accuracy over a range of radii, as a table and as a plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from stablekeras import _checks
from stablekeras.robustness._inputs import fitted_classifier, weighted_mean
from stablekeras.robustness._settings import BOTH, LOSS_LABELS, AttackSettings, check_eps_list
from stablekeras.robustness.attacks import attack_runs, robust_mask
from stablekeras.robustness.certify import certified_accuracy

__all__ = ["robustness_curve", "format_table", "plot_robustness_curve"]


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
    relative_step: float | None = None,
    name: str | None = None,
    **settings,
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
    relative_step : float or None, default=None
        Step of each iteration as a fraction of each radius, in (0, 1]:
        ``steps=100, relative_step=0.1`` is l2-PGD with 100 steps of 0.1 eps.
        Exclusive with ``step_size``.
    name : str, optional
        Label of the estimator in tables and plots; default: its class and constraint.
    **settings
        How to attack, the fields of :class:`AttackSettings` with their defaults,
        except ``loss="both"``: a cross-entropy and a margin attack from the same
        clean points, a point robust only if it survives both (the result also
        holds each attack's own accuracies). With ``step_size=None`` (and no
        ``relative_step``) each radius uses ``2.5 * eps / steps`` and one
        compiled attack serves all radii.

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
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
    >>> curve = robustness_curve(clf, X[300:400], y[300:400], eps=[0, 0.5, 1.0], steps=5)
    >>> curve["eps"], curve["robust"][0] == curve["clean"], curve["loss"]
    ([0.0, 0.5, 1.0], True, 'both')
    >>> by_loss = curve["robust_by_loss"]
    >>> all(r <= min(c, m) for r, c, m in zip(curve["robust"], *by_loss.values()))
    True
    """
    values, _ = check_eps_list(eps)
    settings = AttackSettings.from_keywords("robustness_curve", settings, loss=BOTH)
    step_size = settings.step_size
    if relative_step is not None:
        if not (_checks.is_real(relative_step) and 0 < relative_step <= 1):
            raise _checks.invalid("relative_step", "None or a number in (0, 1]", relative_step)
        if step_size is not None:
            raise ValueError(
                "Pass either `step_size` or `relative_step`, not both. Received: "
                f"step_size={step_size!r}, relative_step={relative_step!r}"
            )
    masks = {}  # eps -> {loss: per-point robust mask}
    for e in values:
        step = step_size if relative_step is None or e == 0 else float(relative_step) * e
        runs = attack_runs(estimator, X, y, e, replace(settings, step_size=step))
        masks[e] = {k: robust_mask(run) for k, run in runs.items()}
    if 0.0 not in masks:  # eps=0 runs no attack: the clean accuracy
        runs = attack_runs(estimator, X, y, 0.0, replace(settings, step_size=None))
        masks[0.0] = {k: robust_mask(run) for k, run in runs.items()}
    both = {e: np.logical_and.reduce(list(m.values())) for e, m in masks.items()}
    clean = weighted_mean(both[0.0], None)
    robust = [weighted_mean(both[e], None) for e in values]
    by_loss = {k: [weighted_mean(masks[e][k], None) for e in values] for k in masks[0.0]}
    est, _ = fitted_classifier(estimator, X)
    L = getattr(est, "lipschitz_bound_", None)
    certified = None
    if L is not None:
        values_certified = certified_accuracy(estimator, X, y, eps=values, norm=settings.norm)
        certified = [float(v) for v in values_certified]
    return {
        "name": name if name is not None else _default_name(estimator),
        "eps": values,
        "clean": clean,
        "robust": robust,
        "robust_by_loss": by_loss,
        "certified": certified,
        "attack": settings.attack,
        "norm": "l2" if settings.norm == 2 else "linf",
        "steps": settings.steps,
        "step_size": step_size,
        "relative_step": None if relative_step is None else float(relative_step),
        "random_start": settings.random_start,
        "loss": settings.loss,
        "clip": None if settings.clip is None else list(settings.clip),
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
        parts.append(LOSS_LABELS.get(loss, str(loss)))
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
        if by_loss and c.get("loss") == BOTH:
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
            measure += f", {LOSS_LABELS.get(c['loss'], c['loss'])}"
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
