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

from stablekeras import _checks, spectral
from stablekeras._precision import fit_for_rounding, is_low_precision

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
    compute_dtype : None, "float16" or "bfloat16", default None
        The dtype the layer computes in (a mixed-precision policy). The kernel
        is then also shrunk just enough that its rounding to that dtype, the
        kernel that runs, keeps the bound (see :mod:`stablekeras._precision`).

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
        compute_dtype: str | None = None,
    ):
        max_value = float(max_value)
        if not max_value > 0:
            raise ValueError(
                "Received an invalid value for `max_value`, expected a positive number. "
                f"Received: max_value={max_value}"
            )
        self.max_value = max_value
        self.input_shape = None if input_shape is None else tuple(int(v) for v in input_shape)
        self.strides = _checks.pair(strides, "strides")
        self.padding = str(padding).lower()
        _checks.padding(padding)
        self.iterations = int(iterations)
        if compute_dtype is not None and not is_low_precision(compute_dtype):
            raise ValueError(
                "Received an invalid value for `compute_dtype`, expected None, 'float16' or "
                f"'bfloat16'. Received: compute_dtype={compute_dtype!r}"
            )
        self.compute_dtype = None if compute_dtype is None else str(compute_dtype)

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
        w = w * tf.cast(scale, w.dtype)
        if self.compute_dtype is not None:
            taps = 1 if w.shape.rank == 2 else int(w.shape[0]) * int(w.shape[1])
            w = fit_for_rounding(w, bound * scale, target, self.compute_dtype, taps)
        return w

    def get_config(self):
        return {
            "max_value": self.max_value,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "strides": list(self.strides),
            "padding": self.padding,
            "iterations": self.iterations,
            "compute_dtype": self.compute_dtype,
        }
