"""Margin-aware classification losses on logits."""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "MulticlassHinge",
    "MulticlassHKR",
    "OffsetCrossentropy",
    "CLASSIFICATION_LOSSES",
    "get_classification_loss",
]


def _positive(value, name):
    value = float(value)
    if not value > 0:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive number. "
            f"Received: {name}={value}"
        )
    return value


class _MarginLoss(keras.losses.Loss):
    """A loss on logits with a target ``margin`` > 0; Keras names it after its class."""

    def __init__(self, margin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = _positive(margin, "margin")

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="stablekeras")
class MulticlassHinge(_MarginLoss):
    """Multi-class margin (hinge) loss on logits, the loss the chapter trains with.

    ``loss(f, y) = mean_{j != y} max(0, margin - (f_y - f_j))``, the multi-class
    hinge of Weston and Watkins (PyTorch's ``MultiMarginLoss``, averaged over the
    ``C - 1`` wrong classes). It pushes the logit margin above ``margin``; with a
    network of Lipschitz bound L, a margin m certifies an l2 radius
    ``m / (sqrt(2) L)``.

    Parameters
    ----------
    margin : float, default 1.0
        The target margin, > 0.

    Examples
    --------
    >>> import numpy as np
    >>> loss = MulticlassHinge(margin=1.0)
    >>> float(loss(np.array([0]), np.array([[2.0, 0.0, 0.5]], "float32")))
    0.0
    """

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        n_classes = ops.shape(y_pred)[-1]
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        onehot = ops.one_hot(y_true, n_classes, dtype=y_pred.dtype)
        true_logit = ops.sum(y_pred * onehot, axis=-1, keepdims=True)
        hinge = ops.relu(self.margin - true_logit + y_pred) * (1.0 - onehot)
        return ops.sum(hinge, axis=-1) / ops.cast(n_classes - 1, y_pred.dtype)


def _onehot(y_true, y_pred):
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return y_pred, ops.one_hot(y_true, ops.shape(y_pred)[-1], dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="stablekeras")
class MulticlassHKR(_MarginLoss):
    """Hinge plus Kantorovich-Rubinstein (HKR): ``alpha * hinge - KR`` on logits.

    ``loss(f, y) = alpha * mean_{j != y} max(0, margin - (f_y - f_j))
    - mean_{j != y} (f_y - f_j)``: the :class:`MulticlassHinge` term of weight
    ``alpha`` and, subtracted, the mean pairwise logit margin. For a 1-Lipschitz
    network the second term is the Kantorovich-Rubinstein dual objective of the
    Wasserstein-1 distance between each class and the others (Serrurier et al.,
    CVPR 2021, the ``MulticlassHKR(alpha, min_margin)`` of deel-lip): it keeps
    rewarding larger margins after the hinge is satisfied, where the hinge alone
    stops at ``margin``. Large ``alpha`` favours accuracy, small ``alpha``
    favours margins (certified radius ``margin / (sqrt(2) L)``).

    This version is per sample (the KR term of each sample is its mean margin
    over the wrong classes), so it does not depend on the batch's class counts,
    and like the hinge it is invariant to adding a constant to all logits.

    Parameters
    ----------
    alpha : float, default 10.0
        Weight of the hinge term, > 0.
    margin : float, default 1.0
        Target margin of the hinge term, > 0.

    References
    ----------
    M. Serrurier, F. Mamalet, A. Gonzalez-Sanz, T. Boissin, J.-M. Loubes,
    E. del Barrio, "Achieving robustness in classification using optimal
    transport with hinge regularization", CVPR 2021.

    Examples
    --------
    >>> import numpy as np
    >>> loss = MulticlassHKR(alpha=10.0, margin=1.0)
    >>> round(float(loss(np.array([0]), np.array([[2.0, 0.0, 0.5]], "float32"))), 4)
    -1.75
    """

    def __init__(self, alpha: float = 10.0, margin: float = 1.0, **kwargs):
        super().__init__(margin, **kwargs)
        self.alpha = _positive(alpha, "alpha")

    def call(self, y_true, y_pred):
        y_pred, onehot = _onehot(y_true, y_pred)
        wrong = ops.cast(ops.shape(y_pred)[-1] - 1, y_pred.dtype)
        gaps = ops.sum(y_pred * onehot, axis=-1, keepdims=True) - y_pred  # f_y - f_j
        hinge = ops.sum(ops.relu(self.margin - gaps) * (1.0 - onehot), axis=-1) / wrong
        kr = ops.sum(gaps * (1.0 - onehot), axis=-1) / wrong
        return self.alpha * hinge - kr

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="stablekeras")
class OffsetCrossentropy(_MarginLoss):
    """Cross-entropy of offset, scaled logits: ``CE(t (f - margin e_y), y) / t``.

    The true class's logit is lowered by ``margin`` before a softmax at
    temperature ``1 / t``, so the loss only becomes small once the logit margin
    exceeds ``margin`` by a few ``1 / t``. For a 1-Lipschitz network the logits
    live on the scale of input distances (a few units on MNIST), where plain
    cross-entropy is nearly linear and underfits; the temperature ``t`` restores
    its curvature, and the offset asks for a certifiable margin (radius
    ``margin / (sqrt(2) L)``). Dividing by ``t`` keeps the gradient's scale
    independent of ``t``. As ``t`` grows the loss tends to the multi-class hinge
    on the largest wrong logit, ``max(0, margin - (f_y - max_{j != y} f_j))``.

    Parameters
    ----------
    margin : float, default 1.0
        The offset subtracted from the true logit, > 0.
    temperature : float, default 1.0
        The inverse temperature ``t``, > 0.

    References
    ----------
    B. Prach, C. H. Lampert, "Almost-orthogonal layers for efficient
    general-purpose Lipschitz networks", ECCV 2022 (the offset cross-entropy).

    Examples
    --------
    >>> import numpy as np
    >>> loss = OffsetCrossentropy(margin=1.0, temperature=8.0)
    >>> float(loss(np.array([0]), np.array([[4.0, 0.0, 0.5]], "float32"))) < 1e-3
    True
    """

    def __init__(self, margin: float = 1.0, temperature: float = 1.0, **kwargs):
        super().__init__(margin, **kwargs)
        self.temperature = _positive(temperature, "temperature")

    def call(self, y_true, y_pred):
        y_pred, onehot = _onehot(y_true, y_pred)
        z = self.temperature * (y_pred - self.margin * onehot)
        return -ops.sum(onehot * ops.log_softmax(z, axis=-1), axis=-1) / self.temperature

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def _crossentropy(margin):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


#: The names ``StableClassifier(loss=...)`` accepts, each a factory of a Keras
#: loss on (integer labels, logits) given the estimator's ``margin``. The
#: factories of ``"hkr"`` and ``"offset_crossentropy"`` also take their second
#: parameter by keyword (``alpha``, ``temperature``).
CLASSIFICATION_LOSSES = {
    "crossentropy": _crossentropy,
    "hinge": lambda margin: MulticlassHinge(margin=margin),
    "hkr": lambda margin, alpha=10.0: MulticlassHKR(alpha=alpha, margin=margin),
    "offset_crossentropy": lambda margin, temperature=1.0: OffsetCrossentropy(
        margin=margin, temperature=temperature
    ),
}


def get_classification_loss(name: str, margin: float = 1.0, **params) -> keras.losses.Loss:
    """The Keras loss for ``StableClassifier(loss=name, margin=margin)``.

    ``params`` go to the loss's factory: ``alpha`` for ``"hkr"``,
    ``temperature`` for ``"offset_crossentropy"``.

    Examples
    --------
    >>> type(get_classification_loss("hinge", 0.5)).__name__
    'MulticlassHinge'
    >>> get_classification_loss("hkr", 1.0, alpha=50.0).alpha
    50.0
    """
    if name not in CLASSIFICATION_LOSSES:
        raise ValueError(
            f"Received an invalid value for `loss`, expected one of "
            f"{sorted(CLASSIFICATION_LOSSES)}. Received: loss={name!r}"
        )
    try:
        return CLASSIFICATION_LOSSES[name](float(margin), **params)
    except TypeError as err:
        raise ValueError(
            f"Received parameters {sorted(params)} that loss={name!r} does not take"
        ) from err
