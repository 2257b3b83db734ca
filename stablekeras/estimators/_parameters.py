"""The hyperparameters of the estimators: what each accepts, and the names that were renamed.

scikit-learn checks them in ``fit`` against :data:`PARAMETER_CONSTRAINTS`
(``_parameter_constraints`` of the estimators); ``__init__`` only stores them.
"""

from __future__ import annotations

import functools
import math
import os
from numbers import Integral, Real

import keras
import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight

from stablekeras import activations as _activations
from stablekeras.models import CONSTRAINTS, ENFORCEMENTS, NETWORKS, NORMALIZATIONS


class ActivationOption(Options):
    """A ``_parameter_constraints`` entry accepting the slope-restricted activations."""

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, value):
        try:
            _activations.get(value)  # raises ValueError naming it
            return True
        except ValueError:
            return False

    def __str__(self):
        return (
            "a monotone, slope-restricted activation "
            "(relu, leaky_relu, elu, tanh, sigmoid, softplus)"
        )


class ImageShapeOption(Options):
    """A ``_parameter_constraints`` entry accepting ``(height, width, channels)``."""

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, value):
        return (
            isinstance(value, tuple | list)
            and len(value) == 3
            and all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in value)
        )

    def __str__(self):
        return "a tuple (height, width, channels) of positive integers"


class ModelBuilderOption(Options):
    """A ``_parameter_constraints`` entry accepting a function that builds a Keras model."""

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, value):
        # a built model is callable too: it must be wrapped in a function that builds it
        return callable(value) and not isinstance(value, keras.layers.Layer | type)

    def __str__(self):
        return (
            "a callable (input_shape, n_outputs, **model_params) -> keras.Model "
            "(a function that builds the model, not a built model)"
        )


_NETWORK_HINT = (
    "network='certified' (the default) has an isometric lift and an orthogonal "
    "projection, network='chapter' the chapter's 1x1 convolution lift and dense "
    "projection (capped by `max_norm`)"
)

#: Parameters of stablekeras 0.1 and what replaced them, with how to translate.
RENAMED_PARAMETERS = {
    "lift": ("network", _NETWORK_HINT),
    "projection": ("network", _NETWORK_HINT),
    "mode": (
        "enforcement",
        "its values: 'constraint' -> 'project', 'normalized' -> 'normalize', 'substeps'",
    ),
}


def renamed_error(old, value=None):
    """The error for a parameter of stablekeras 0.1 that was renamed, naming its successor."""
    new, hint = RENAMED_PARAMETERS[old]
    return TypeError(
        f"The parameter `{old}` was replaced by `{new}`: {hint}. Received: {old}={value!r}"
    )


def refuse_renamed(init):
    """Make ``__init__`` refuse a renamed parameter with an error naming its successor.

    ``functools.wraps`` keeps the signature that scikit-learn's ``get_params`` reads.
    """

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        for old in RENAMED_PARAMETERS:
            if old in kwargs:
                raise renamed_error(old, kwargs[old])
        init(self, *args, **kwargs)

    return wrapper


#: What every estimator's parameters accept (the classifier adds its loss's).
PARAMETER_CONSTRAINTS: dict = {
    "constraint": [StrOptions(set(CONSTRAINTS))],
    "step_size": [Interval(Real, 0, None, closed="neither")],
    "depth": [Interval(Integral, 0, None, closed="left")],
    "width": [Interval(Integral, 1, None, closed="left")],
    "activation": [ActivationOption()],
    "integrator": [StrOptions({"euler", "heun", "rk4"})],
    "enforcement": [StrOptions(set(ENFORCEMENTS))],
    "normalization": [StrOptions(set(NORMALIZATIONS))],
    "image_shape": [None, ImageShapeOption()],
    "kernel_size": [Interval(Integral, 1, None, closed="left")],
    "max_norm": [None, Interval(Real, 0, None, closed="neither")],
    "strong_convexity": [Interval(Real, 0, None, closed="neither")],
    "epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "early_stopping": ["boolean"],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
    "verbose": [Interval(Integral, 0, 2, closed="both"), "boolean"],
    "distribute": [None, StrOptions({"mirrored", "multi_worker"}), HasMethods(["scope"])],
    "network": [StrOptions(set(NETWORKS))],
    "lift_block_size": [None, Interval(Integral, 1, None, closed="left")],
    "dense_width": [None, Interval(Integral, 2, None, closed="left")],
    "dense_depth": [Interval(Integral, 0, None, closed="left")],
    "callbacks": [None, list],
    "warm_start": ["boolean"],
    "model": [None, ModelBuilderOption()],
    "model_params": [None, dict],
    "checkpoint_dir": [None, str, os.PathLike],
    "n_threads": [None, Interval(Integral, 1, None, closed="left")],
    "random_shift": [Interval(Integral, 0, None, closed="left")],
}

#: Parameters a warm-started fit may change: they shape the training (and the
#: loss), not the network. Any other parameter must keep its value.
TRAINING_PARAMS = frozenset(
    {
        "epochs",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "validation_fraction",
        "early_stopping",
        "n_iter_no_change",
        "random_state",
        "verbose",
        "distribute",  # a warm start trains in the network's own strategy (_fit_scope)
        "callbacks",
        "warm_start",
        "class_weight",
        "loss",
        "margin",
        "temperature",
        "alpha",
        "checkpoint_dir",
        "n_threads",
        "random_shift",
    }
)


def class_weights(class_weight, classes, y_fit=None, sample_weight=None):
    """``class_weight`` as weights of the encoded classes ``0 .. n_classes - 1``, or None.

    A dict key that is not a class is refused by name; classes it leaves out
    weigh 1. ``"balanced"`` is scikit-learn's ``n_samples / (n_classes *
    count)``, with counts weighted by ``sample_weight``.
    """
    if class_weight is None:
        return None
    n_classes = len(classes)
    if isinstance(class_weight, str):
        return compute_class_weight(
            "balanced", classes=np.arange(n_classes), y=y_fit, sample_weight=sample_weight
        ).astype(np.float32)
    index = {c: i for i, c in enumerate(classes.tolist())}
    unknown = [k for k in class_weight if k not in index]
    if unknown:
        raise ValueError(
            f"Received an invalid value for `class_weight`: the keys {unknown} are not "
            f"classes; expected keys among classes_={classes.tolist()}"
        )
    weights = np.ones(n_classes, np.float32)
    for key, value in class_weight.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not (math.isfinite(value) and value >= 0)
        ):
            raise ValueError(
                "Received an invalid value for `class_weight`, expected finite weights "
                f">= 0. Received: class_weight[{key!r}]={value!r}"
            )
        weights[index[key]] = value
    return weights
