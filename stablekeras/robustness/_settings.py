"""The settings of an attack, checked once, and the checks of the other arguments.

:class:`AttackSettings` gathers what the public functions of
:mod:`stablekeras.robustness` take as keyword arguments (attack, norm, steps,
step size, random start, loss, clip box, batch size, seed, verbosity): they
forward their ``**settings`` to it, which checks and normalises them, and pass
it on.
The radius ``eps`` is not part of it: a robustness curve runs one setting at
several radii.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from stablekeras import _checks

#: The attacks that run: CleverHans's fast gradient method, projected gradient
#: descent, the basic iterative method (PGD without random start) and the
#: momentum iterative method.
ATTACKS = ("fgsm", "pgd", "bim", "mim")

#: The losses one compiled attack increases.
LOSSES = ("crossentropy", "margin")

#: ``loss="both"``: run the attack with each of ``LOSSES``; a point is robust only
#: if it survives all of them.
BOTH = "both"

#: How tables and plots name each measure.
LOSS_LABELS = {
    "crossentropy": "cross-entropy only",
    "margin": "margin only",
    BOTH: "cross-entropy and margin",
}

#: The certificates: the margin against ``sqrt(2) L eps``, or GloRo's pairwise gaps.
RULES = ("global", "pairwise")

# CleverHans 4.0.0 attacks that do not run with Keras 3 / NumPy 2: name -> why and what instead.
_CW_WHY = (
    "CleverHans 4.0.0's carlini_wagner_l2 calls `optimizer.variables()`, which is a list "
    "property in Keras 3, so it fails on this stack"
)
_CW_INSTEAD = (
    "For the Carlini-Wagner objective use attack='pgd' with loss='margin' "
    "(PGD on max_{j != y} z_j - z_y), e.g. robust_accuracy(est, X, y, eps=..., "
    "attack='pgd', loss='margin')"
)
_REJECTED = {
    "cw": (_CW_WHY, _CW_INSTEAD),
    "carlini_wagner": (_CW_WHY, _CW_INSTEAD),
    "carlini_wagner_l2": (_CW_WHY, _CW_INSTEAD),
    "spsa": (
        "CleverHans 4.0.0's spsa builds its optimizer with `lr=`, which Keras 3 optimizers "
        "reject, so it fails on this stack",
        "SPSA is a gradient-free attack; these networks are differentiable, so use "
        "attack='pgd' (optionally random_start=True, loss='margin')",
    ),
}

_NORMS = {"2": 2, "l2": 2, "inf": np.inf, "linf": np.inf}


def check_norm(norm) -> float:
    """``2`` or ``np.inf`` from any of the spellings the functions accept."""
    if isinstance(norm, str):
        key = norm.lower()
        if key in _NORMS:
            return _NORMS[key]
    elif _checks.is_real(norm):
        if norm == 2:
            return 2
        if norm == np.inf:
            return np.inf
    raise ValueError(
        "Received an invalid value for `norm`, expected one of 2, np.inf, 'inf', 'l2', "
        f"'linf'. Received: norm={norm!r}"
    )


def check_eps(eps) -> float:
    """A radius: a finite number >= 0."""
    return _checks.finite_at_least_zero(eps, "eps")


def check_eps_list(eps) -> tuple[list[float], bool]:
    """Return (list of eps, whether a scalar was given)."""
    if isinstance(eps, str) or not isinstance(eps, Iterable):
        return [check_eps(eps)], True
    values = [check_eps(e) for e in np.asarray(eps, dtype=object).ravel()]
    if not values:
        raise ValueError(
            "Received an invalid value for `eps`, expected at least one value. Received: eps=[]"
        )
    return values, False


def check_attack(attack) -> str:
    """The attack's name in lower case; the broken CleverHans attacks name what to use."""
    if not isinstance(attack, str):
        raise _checks.invalid("attack", f"one of {ATTACKS}", attack)
    name = attack.lower()
    if name in _REJECTED:
        why, instead = _REJECTED[name]
        raise ValueError(f"attack={attack!r} is not supported: {why}. {instead}.")
    if name not in ATTACKS:
        raise _checks.invalid("attack", f"one of {ATTACKS}", attack)
    return name


def check_clip(clip) -> tuple[float, float] | None:
    """``None`` or a box ``(lo, hi)`` with ``lo < hi``."""
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise _checks.invalid("clip", "None or a pair (min, max)", clip) from None
    if not lo < hi:
        raise _checks.invalid("clip", "min < max", clip)
    return lo, hi


def check_rule(rule) -> str:
    """One of :data:`RULES`."""
    return _checks.option(rule, RULES, "rule")


@dataclass(frozen=True)
class AttackSettings:
    """How to attack: everything but the radius, checked and normalised on creation.

    The public functions of :mod:`stablekeras.robustness` that attack
    (:func:`~stablekeras.robustness.generate_adversarial`,
    :func:`~stablekeras.robustness.robust_accuracy`,
    :func:`~stablekeras.robustness.make_robustness_scorer`,
    :func:`~stablekeras.robustness.robustness_curve`) take these fields as
    keyword arguments (``**settings``) and build one from them, so the settings
    are written out and checked in this one place.

    Parameters
    ----------
    attack : {"fgsm", "pgd", "bim", "mim"}, default="pgd"
        The fast gradient (sign) method, projected gradient descent (``"bim"``:
        without random start, the basic iterative method) or the momentum
        iterative method, as in CleverHans. ``"cw"`` / ``"carlini_wagner_l2"`` and
        ``"spsa"`` raise ``ValueError`` (broken in CleverHans 4.0.0 with Keras 3;
        use ``loss="margin"`` for the Carlini-Wagner objective).
    norm : {2, np.inf, "l2", "linf", "inf"}, default=2
        Norm of the ball; becomes ``2`` or ``np.inf``.
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
        clip. The clean points must lie in the box. Becomes a pair of floats.
    batch_size : int, default=512
        Points attacked per call of the compiled attack.
    random_state : int, RandomState or None, default=None
        Seeds the random start, so that two calls give the same points.
    verbose : int, default=0
        1 shows a progress bar over batches.

    Frozen: :func:`dataclasses.replace` makes a changed copy, checked again.

    Examples
    --------
    >>> AttackSettings(attack="PGD", norm="linf", clip=(0, 1))
    AttackSettings(attack='pgd', norm=inf, steps=20, step_size=None, random_start=False, \
loss='crossentropy', clip=(0.0, 1.0), batch_size=512, random_state=None, verbose=0)
    >>> AttackSettings(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: Received an invalid value for `steps`, expected an integer >= 1. Received: steps=0
    >>> AttackSettings.from_keywords("robust_accuracy", {"stpes": 5})
    Traceback (most recent call last):
    ...
    TypeError: robust_accuracy() got an unexpected keyword argument 'stpes'; the attack \
settings are attack, norm, steps, step_size, random_start, loss, clip, batch_size, \
random_state, verbose (see stablekeras.robustness.AttackSettings)
    """

    attack: str = "pgd"
    norm: float | str = 2
    steps: int = 20
    step_size: float | None = None
    random_start: bool = False
    loss: str = "crossentropy"
    clip: tuple[float, float] | None = (0.0, 1.0)
    batch_size: int = 512
    random_state: Any = None
    verbose: int = 0

    def __post_init__(self):
        attack = check_attack(self.attack)
        norm = check_norm(self.norm)
        steps = _checks.int_at_least(self.steps, 1, "steps")
        step_size = self.step_size
        if step_size is not None and not (_checks.is_real(step_size) and step_size > 0):
            raise _checks.invalid("step_size", "None or a number > 0", step_size)
        _checks.option(self.loss, (*LOSSES, BOTH), "loss")
        if self.random_start and attack != "pgd":
            raise ValueError(
                f"attack={attack!r} has no random start (random_start=True); use attack='pgd' "
                "for projected gradient descent from a random point of the eps-ball"
            )
        batch_size = _checks.int_at_least(self.batch_size, 1, "batch_size")
        for name, value in (
            ("attack", attack),
            ("norm", norm),
            ("steps", steps),
            ("random_start", bool(self.random_start)),
            ("clip", check_clip(self.clip)),
            ("batch_size", batch_size),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_keywords(cls, where: str, keywords: dict, **defaults) -> AttackSettings:
        """The settings a public function received as ``**settings``, over ``defaults``.

        An unknown keyword raises ``TypeError`` naming the function, the keyword
        and the settings there are.
        """
        names = [f.name for f in fields(cls)]
        for key in keywords:
            if key not in names:
                raise TypeError(
                    f"{where}() got an unexpected keyword argument {key!r}; the attack "
                    f"settings are {', '.join(names)} (see stablekeras.robustness.AttackSettings)"
                )
        return cls(**{**defaults, **keywords})

    @property
    def losses(self) -> tuple[str, ...]:
        """The losses of the attacks to run: both of :data:`LOSSES` for ``loss="both"``."""
        return LOSSES if self.loss == BOTH else (self.loss,)

    def draw_seed(self) -> int | None:
        """The graph seed of a random start (None without one, or without ``random_state``).

        An integer ``random_state`` is the seed; a ``RandomState`` draws one (so each
        call draws the next).
        """
        if not self.random_start or self.random_state is None:
            return None
        if isinstance(self.random_state, numbers.Integral) and not isinstance(
            self.random_state, bool
        ):
            return int(self.random_state)
        from sklearn.utils import check_random_state

        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))
