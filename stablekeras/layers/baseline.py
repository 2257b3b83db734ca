"""The unconstrained residual block, the baseline the stable layers are compared with."""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import _checks, spectral
from stablekeras import activations as _activations
from stablekeras._checks import positive_float, positive_int
from stablekeras._precision import as_run

__all__ = ["ResidualDense", "ResidualConv2D"]


class _Residual(keras.layers.Layer):
    def __init__(
        self, *, step_size=1.0, activation="relu", kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.step_size = positive_float(step_size, "step_size")
        self.activation = _activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        z = self._first(x) + self.bias
        return x + self.step_size * self._second(self.activation(z))

    def compute_output_shape(self, input_shape):
        return input_shape

    def lipschitz_bound(self) -> float:
        """``1 + h L_s ||A|| ||B||``: sound, and grows with the weights.

        With ``h``, ``A`` and ``B`` as they run (rounded to the compute dtype).
        """
        a, b = self._norms()
        h = as_run(self.step_size, self.compute_dtype)
        return 1.0 + h * self.activation.slope * a * b

    def _run_kernels(self):
        """``A`` and ``B`` cast to the compute dtype, as ``call`` uses them (NumPy arrays)."""
        return tuple(
            keras.ops.convert_to_numpy(tf.cast(k, self.compute_dtype))
            for k in (self.kernel_a, self.kernel_b)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "step_size": self.step_size,
            "activation": _activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="stablekeras")
class ResidualDense(_Residual):
    """Plain residual block ``x -> x + h B s(A x + b)`` with free ``A`` and ``B``.

    Its Lipschitz constant can reach ``1 + h L_s ||A|| ||B||``; over depth the
    bound grows exponentially. This is the ResNet baseline of the same shape as
    :class:`~stablekeras.layers.NonExpansiveDense`.

    Parameters
    ----------
    units : int
        Hidden width (rows of ``A``).
    step_size : float, default 1.0
    activation : str, default "relu"
    kernel_initializer : Keras initializer

    Examples
    --------
    >>> import numpy as np
    >>> tuple(ResidualDense(8)(np.zeros((2, 3), "float32")).shape)
    (2, 3)
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.kernel_a = self.add_weight(
            name="kernel_a", shape=(d, self.units), initializer=self.kernel_initializer
        )
        self.kernel_b = self.add_weight(
            name="kernel_b", shape=(self.units, d), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def _first(self, x):
        return tf.matmul(x, self.kernel_a)

    def _second(self, z):
        return tf.matmul(z, self.kernel_b)

    def _norms(self):
        return tuple(spectral.dense_norm(k) for k in self._run_kernels())

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="stablekeras")
class ResidualConv2D(_Residual):
    """Plain convolutional residual block ``x -> x + h B s(A x + b)``.

    ``A`` and ``B`` are two independent "same"-padded convolutions (the
    chapter's ResNet block). The baseline of the same shape as
    :class:`~stablekeras.layers.NonExpansiveConv2D`.

    Parameters
    ----------
    filters : int
        Channels between ``A`` and ``B``.
    kernel_size : int or pair, default 3
    step_size, activation, kernel_initializer : as in :class:`ResidualDense`.

    Examples
    --------
    >>> import numpy as np
    >>> tuple(ResidualConv2D(4)(np.zeros((1, 5, 5, 2), "float32")).shape)
    (1, 5, 5, 2)
    """

    def __init__(self, filters: int, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = positive_int(filters, "filters")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size")

    def build(self, input_shape):
        h, w, c = (int(v) for v in input_shape[1:])
        self._hw = (h, w)
        self.kernel_a = self.add_weight(
            name="kernel_a",
            shape=(*self.kernel_size, c, self.filters),
            initializer=self.kernel_initializer,
        )
        self.kernel_b = self.add_weight(
            name="kernel_b",
            shape=(*self.kernel_size, self.filters, c),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def _first(self, x):
        return spectral.conv2d(x, self.kernel_a)

    def _second(self, z):
        return spectral.conv2d(z, self.kernel_b)

    def _norms(self):
        return tuple(spectral.conv2d_norm_bound(k, self._hw) for k in self._run_kernels())

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
        }
