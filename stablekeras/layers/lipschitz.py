"""Lipschitz-bounded linear layers: the lift into and the projection out of the flow."""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import activations as _activations
from stablekeras._checks import positive_float
from stablekeras.layers._operators import ConvOperator, DenseOperator

__all__ = ["SpectralDense", "SpectralConv2D"]


class _Bounded(keras.layers.Layer):
    def __init__(
        self, *, max_norm=1.0, activation=None, use_bias=True, bias_initializer="zeros", **kwargs
    ):
        super().__init__(**kwargs)
        self.max_norm = None if max_norm is None else positive_float(max_norm, "max_norm")
        self.activation = None if activation is None else _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        shape = self._build_operator(tuple(input_shape), self.max_norm)
        self.bias = (
            self.add_weight(name="bias", shape=(shape[-1],), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        if self.kernel_constraint_ is not None:
            self.kernel.assign(self.kernel_constraint_(self.kernel))
        self._out_shape = shape

    def call(self, inputs):
        y = self._apply(tf.convert_to_tensor(inputs))
        if self.bias is not None:
            y = y + self.bias
        return y if self.activation is None else self.activation(y)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._out_shape)

    def operator_norm(self) -> float:
        """A sound float64 upper bound of the norm of the linear part."""
        return self._exact_norm()

    def lipschitz_bound(self) -> float:
        """A sound bound: operator norm times the activation's slope bound."""
        slope = 1.0 if self.activation is None else self.activation.slope
        return self.operator_norm() * slope

    def get_config(self):
        return {
            **super().get_config(),
            **self._operator_config(),
            "max_norm": self.max_norm,
            "activation": None
            if self.activation is None
            else _activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="stablekeras")
class SpectralDense(DenseOperator, _Bounded):
    """Dense layer ``x -> s(x W + b)`` with ``||W||_2 <= max_norm`` after every step.

    The constraint is :class:`~stablekeras.constraints.SpectralNorm` (a sound
    bound). ``max_norm=None`` leaves the kernel free; ``lipschitz_bound()`` is
    then its exact spectral norm.

    Parameters
    ----------
    units : int
    max_norm : float or None, default 1.0
    activation : None or a slope-restricted activation, default None
    use_bias : bool, default True
    kernel_initializer, bias_initializer : Keras initializers

    Examples
    --------
    >>> import numpy as np
    >>> layer = SpectralDense(3, max_norm=1.0)
    >>> _ = layer(np.ones((1, 5), "float32"))
    >>> layer.lipschitz_bound() <= 1.0
    True
    """

    def __init__(
        self,
        units: int,
        max_norm: float | None = 1.0,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            max_norm=max_norm,
            activation=activation,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            **kwargs,
        )
        self._init_operator(units=units, kernel_initializer=kernel_initializer)


@keras.saving.register_keras_serializable(package="stablekeras")
class SpectralConv2D(ConvOperator, _Bounded):
    """2-D convolution whose operator norm (on its input grid) is at most ``max_norm``.

    The norm is that of the convolution operator, bounded soundly by the
    circular embedding (see :func:`stablekeras.spectral.conv2d_gram_bound`),
    not that of the reshaped kernel matrix.

    Parameters
    ----------
    filters : int
    kernel_size : int or pair, default 1
    strides : int or pair, default 1
    padding : {"same", "valid"}, default "same"
    max_norm, activation, use_bias, kernel_initializer, bias_initializer :
        As in :class:`SpectralDense`.

    Examples
    --------
    >>> import numpy as np
    >>> layer = SpectralConv2D(4, 3, max_norm=1.0)
    >>> tuple(layer(np.zeros((1, 6, 6, 2), "float32")).shape)
    (1, 6, 6, 4)
    """

    def __init__(
        self,
        filters: int,
        kernel_size=1,
        strides=1,
        padding: str = "same",
        max_norm: float | None = 1.0,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            max_norm=max_norm,
            activation=activation,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            **kwargs,
        )
        self._init_operator(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            kernel_initializer=kernel_initializer,
        )
