"""Adversarial attacks, robust and certified accuracy, scorers and robustness curves.

Empirical robustness comes from `CleverHans <https://github.com/cleverhans-lab/cleverhans>`_'s
TF2 attacks (FGSM, PGD, BIM, MIM) run on a fitted classifier's logits; certified
robustness comes from the logit margin and the network's Lipschitz bound (section 4
of the chapter): a point whose margin ``m(x)`` (top minus second logit) exceeds
``sqrt(2) L eps`` plus an allowance for floating-point rounding
(:func:`rounding_allowance`) keeps its label for every l2 perturbation of norm
below ``eps``.

The package has one module per concept: :mod:`~stablekeras.robustness.attacks`
(adversarial points and the accuracy under attack), :mod:`~stablekeras.robustness.certify`
(certified radii and accuracy), :mod:`~stablekeras.robustness.rounding` (the
rounding allowance of the certificates), :mod:`~stablekeras.robustness.scoring`
(scikit-learn scorers) and :mod:`~stablekeras.robustness.curves` (curves, tables,
plots). Every public name is importable from ``stablekeras.robustness``.

The attacking functions take the attack's settings as keyword arguments
(``attack="pgd"``, ``steps=100``, ``loss="both"``, ...): the fields of
:class:`AttackSettings`, which checks them and documents each.

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
>>> from stablekeras import StableClassifier, datasets
>>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
>>> from stablekeras.robustness import certified_accuracy, robust_accuracy
>>> clf = StableClassifier(depth=1, epochs=2, random_state=0).fit(X[:300], y[:300])
>>> clean = clf.score(X[300:400], y[300:400])
>>> robust = robust_accuracy(clf, X[300:400], y[300:400], eps=0.5, steps=5)
>>> certified = certified_accuracy(clf, X[300:400], y[300:400], eps=0.5)
>>> bool(certified <= robust <= clean)
True
"""

from stablekeras.robustness import _settings
from stablekeras.robustness._settings import AttackSettings
from stablekeras.robustness.attacks import generate_adversarial, robust_accuracy
from stablekeras.robustness.certify import certified_accuracy, certified_mask, certified_radius
from stablekeras.robustness.curves import format_table, plot_robustness_curve, robustness_curve
from stablekeras.robustness.rounding import rounding_allowance
from stablekeras.robustness.scoring import make_certified_scorer, make_robustness_scorer

#: The attacks that run: CleverHans's fast gradient method, projected gradient
#: descent, the basic iterative method (PGD without random start) and the
#: momentum iterative method.
ATTACKS = _settings.ATTACKS

__all__ = [
    "ATTACKS",
    "AttackSettings",
    "generate_adversarial",
    "robust_accuracy",
    "make_robustness_scorer",
    "certified_accuracy",
    "certified_radius",
    "certified_mask",
    "rounding_allowance",
    "make_certified_scorer",
    "robustness_curve",
    "format_table",
    "plot_robustness_curve",
]
