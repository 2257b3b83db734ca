"""Keras kernel constraints that bound the operator norm of a layer.

Keras applies a variable's constraint after every optimizer step
(``variable.assign(constraint(variable))``), so whatever the optimizer did, the
kernel leaves the step with ``||A|| <= max_value``. The norm used is a sound
upper bound computed in-graph (:func:`stablekeras.spectral.dense_gram_bound`,
:func:`stablekeras.spectral.conv2d_gram_bound`): for convolutions it is the
norm of the convolution operator on the layer's input grid, not the norm of
the reshaped kernel matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from stablekeras import spectral

__all__ = ["SpectralNorm"]

#: Relative room left below ``max_value`` so that float32 rounding of the
#: rescaled kernel cannot push its norm above the bound.
SAFETY = 1e-5


@keras.saving.register_keras_serializable(package="stablekeras")
class SpectralNorm(keras.constraints.Constraint):
    """Rescale a kernel so that its operator norm is at most ``max_value``.

    ``W <- W * min(1, max_value / B(W))`` with ``B(W) >= ||W||_2`` a sound bound,
    so the constrained kernel satisfies ``||W||_2 <= max_value`` exactly (up to a
    relative ``1e-5`` kept free for rounding).

    Parameters
    ----------
    max_value : float
        The largest operator norm allowed, > 0.
    input_shape : pair of int, optional
        Spatial input shape ``(h, w)`` of a convolution. Needed for a 4-D kernel
        larger than 1x1 (the operator norm depends on the grid); ignored for
        dense kernels.
    strides : int or pair, default 1
        Strides of the convolution.
    padding : {"same", "valid"}, default "same"
    iterations : int, default 6
        Gram iterations; more makes the bound tighter (never unsound).

    Examples
    --------
    >>> import numpy as np
    >>> w = SpectralNorm(1.0)(np.diag([3.0, 0.5]).astype("float32"))
    >>> round(float(np.linalg.norm(w, 2)), 4)
    1.0
    """

    def __init__(
        self,
        max_value: float = 1.0,
        input_shape: Sequence[int] | None = None,
        strides=1,
        padding: str = "same",
        iterations: int = 6,
    ):
        max_value = float(max_value)
        if not max_value > 0:
            raise ValueError(
                "Received an invalid value for `max_value`, expected a positive number. "
                f"Received: max_value={max_value}"
            )
        self.max_value = max_value
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self.strides = spectral._pair(strides, "strides")
        self.padding = str(padding).lower()
        spectral._padding(padding)
        self.iterations = int(iterations)

    def norm_bound(self, w):
        """The sound in-graph bound of the operator norm of ``w`` this constraint uses."""
        w = tf.convert_to_tensor(w)
        if w.shape.rank == 2:
            return spectral.dense_gram_bound(w, self.iterations)
        if w.shape.rank != 4:
            raise ValueError(
                "SpectralNorm expects a 2-D dense or 4-D convolution kernel. "
                f"Received shape {w.shape}"
            )
        if tuple(w.shape[:2]) == (1, 1) and self.strides == (1, 1):
            return spectral.dense_gram_bound(tf.reshape(w, w.shape[2:]), self.iterations)
        if self.input_shape is None:
            raise ValueError(
                "SpectralNorm of a convolution kernel larger than 1x1 needs the spatial "
                f"`input_shape` of the layer (the operator norm depends on it). Received a "
                f"kernel of shape {tuple(w.shape)} and input_shape=None"
            )
        return spectral.conv2d_gram_bound(
            w, self.input_shape, self.strides, self.padding, self.iterations
        )

    def __call__(self, w):
        w = tf.convert_to_tensor(w)
        bound = self.norm_bound(w)
        target = self.max_value * (1.0 - SAFETY)
        scale = tf.minimum(1.0, target / tf.maximum(bound, 1e-30))
        return w * tf.cast(scale, w.dtype)

    def get_config(self):
        return {
            "max_value": self.max_value,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "strides": list(self.strides),
            "padding": self.padding,
            "iterations": self.iterations,
        }
