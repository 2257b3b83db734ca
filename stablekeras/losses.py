"""Margin-aware classification losses on logits."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["MulticlassHinge", "CLASSIFICATION_LOSSES", "get_classification_loss"]


@keras.saving.register_keras_serializable(package="stablekeras")
class MulticlassHinge(keras.losses.Loss):
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

    def __init__(
        self,
        margin: float = 1.0,
        reduction="sum_over_batch_size",
        name="multiclass_hinge",
        **kwargs,
    ):
        super().__init__(reduction=reduction, name=name, **kwargs)
        margin = float(margin)
        if not margin > 0:
            raise ValueError(
                "Received an invalid value for `margin`, expected a positive number. "
                f"Received: margin={margin}"
            )
        self.margin = margin

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        n_classes = ops.shape(y_pred)[-1]
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        onehot = ops.one_hot(y_true, n_classes, dtype=y_pred.dtype)
        true_logit = ops.sum(y_pred * onehot, axis=-1, keepdims=True)
        hinge = ops.relu(self.margin - true_logit + y_pred) * (1.0 - onehot)
        return ops.sum(hinge, axis=-1) / ops.cast(n_classes - 1, y_pred.dtype)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


def _crossentropy(margin):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


#: The names ``StableClassifier(loss=...)`` accepts, each a factory of a Keras
#: loss on (integer labels, logits) given the estimator's ``margin``.
CLASSIFICATION_LOSSES = {
    "crossentropy": _crossentropy,
    "hinge": lambda margin: MulticlassHinge(margin=margin),
}


def get_classification_loss(name: str, margin: float = 1.0) -> keras.losses.Loss:
    """The Keras loss for ``StableClassifier(loss=name, margin=margin)``.

    Examples
    --------
    >>> type(get_classification_loss("hinge", 0.5)).__name__
    'MulticlassHinge'
    """
    if name not in CLASSIFICATION_LOSSES:
        raise ValueError(
            f"Received an invalid value for `loss`, expected one of "
            f"{sorted(CLASSIFICATION_LOSSES)}. Received: loss={name!r}"
        )
    return CLASSIFICATION_LOSSES[name](float(margin))
