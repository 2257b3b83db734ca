"""Linear maps with a sound norm bound: the lift into the flow and the projection out of it.

* :class:`SpectralDense`, :class:`SpectralConv2D`: ``x W + b`` (or a convolution)
  with the spectral norm of ``W`` capped at ``max_norm``.
* :class:`IsometricLift`: space-to-depth rearrangement followed by zero channels,
  an exact isometry ``||lift(x)|| = ||x||`` from an image to the state space of
  the convolutional blocks (no pooling, no information lost).
* :class:`OrthogonalDense`: ``x W + b`` with ``W`` orthonormalised by Björck
  iterations in the forward pass (:func:`stablekeras.spectral.bjorck_orthonormalize`):
  all singular values of ``W`` are 1, so the map wastes none of the
  1-Lipschitz budget of a certified network (Anil, Lucas and Grosse, ICML 2019).
  Certificates (``lipschitz_bound``) never rely on the iteration's analysis: they
  take the float64 SVD of the kernel actually used.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import activations as _activations
from stablekeras._checks import positive_float, positive_int
from stablekeras.layers._operators import ConvOperator, DenseOperator
from stablekeras.layers._orthonormal import OrthonormalKernel

__all__ = ["SpectralDense", "SpectralConv2D", "IsometricLift", "OrthogonalDense"]


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

    def __init__(self, units: int, *, kernel_initializer="orthogonal", **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer, **kwargs)


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

    def __init__(self, filters: int, kernel_size=1, *args, **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)


@keras.saving.register_keras_serializable(package="stablekeras")
class IsometricLift(keras.layers.Layer):
    """Space-to-depth by ``block_size``, then zero channels up to ``channels``: an isometry.

    ``(h, w, c) -> (h / b, w / b, channels)``: each ``b x b`` patch becomes
    ``b^2 c`` channels of one pixel (a permutation of the entries), and
    ``channels - b^2 c`` zero channels are appended. Both steps preserve the
    Euclidean norm, so ``||lift(x) - lift(y)|| = ||x - y||``: Lipschitz constant
    exactly 1, with no pooling and no trainable weights. The zero channels give
    the non-expansive blocks that follow room to build features in.

    Parameters
    ----------
    channels : int
        Channels of the output, at least ``block_size**2`` times the input's.
    block_size : int, default 2
        Side of the patches; height and width must be multiples of it.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.rand(2, 28, 28, 1).astype("float32")
    >>> y = IsometricLift(32, block_size=4)(x)
    >>> tuple(y.shape), bool(np.allclose(np.linalg.norm(y), np.linalg.norm(x)))
    ((2, 7, 7, 32), True)
    """

    def __init__(self, channels: int, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.channels = positive_int(channels, "channels")
        self.block_size = positive_int(block_size, "block_size")

    def build(self, input_shape):
        if len(input_shape) != 4 or any(v is None for v in input_shape[1:]):
            raise ValueError(
                "IsometricLift needs inputs of shape (batch, height, width, channels) with "
                f"known sizes. Received input_shape={tuple(input_shape)}"
            )
        h, w, c = (int(v) for v in input_shape[1:])
        b = self.block_size
        if h % b or w % b:
            raise ValueError(
                f"IsometricLift(block_size={b}) needs height and width divisible by {b}. "
                f"Received input_shape={tuple(input_shape)}"
            )
        if self.channels < b * b * c:
            raise ValueError(
                f"Received an invalid value for `channels`, expected at least "
                f"block_size**2 * input channels = {b * b * c}. Received: channels={self.channels}"
            )
        self._out_shape = (h // b, w // b, self.channels)
        self._pad = self.channels - b * b * c

    def call(self, inputs):
        y = tf.convert_to_tensor(inputs)
        if self.block_size > 1:
            y = tf.nn.space_to_depth(y, self.block_size)
        if self._pad:
            y = tf.pad(y, [[0, 0], [0, 0], [0, 0], [0, self._pad]])
        return y

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._out_shape)

    def lipschitz_bound(self) -> float:
        """1: the layer is an isometry."""
        return 1.0

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="stablekeras")
class OrthogonalDense(OrthonormalKernel):
    """Dense layer ``x -> x Q + b`` with ``Q`` the Björck orthonormalisation of its kernel.

    All singular values of ``Q`` tend to 1 (orthonormal columns when
    ``units <= d``: an isometry onto its range is composed with a projection;
    orthonormal rows otherwise: an isometric embedding), and every Björck iterate
    has norm at most 1 (module docstring), so the layer is 1-Lipschitz. Unlike a
    spectral-norm cap, which only bounds the largest singular value and lets the
    others decay during training, it keeps every direction at gain 1: as the
    projection to logits it lets all class margins grow.

    Parameters
    ----------
    units : int
    use_bias : bool, default True
    bjorck_iterations : int, default 6
        Iterations per forward pass; more gives singular values closer to 1
        (never above 1 beyond float32 rounding, which ``lipschitz_bound`` reports).
    kernel_initializer, bias_initializer : Keras initializers

    Examples
    --------
    >>> import numpy as np
    >>> layer = OrthogonalDense(10)
    >>> _ = layer(np.zeros((1, 64), "float32"))
    >>> s = np.linalg.svd(layer.orthonormal_kernel().numpy(), compute_uv=False)
    >>> bool(np.allclose(s, 1.0, atol=1e-3)), layer.lipschitz_bound() <= 1 + 1e-5
    (True, True)
    """

    def build(self, input_shape):
        self._build_kernel(input_shape, self.units)

    def call(self, inputs):
        y = tf.matmul(tf.convert_to_tensor(inputs), self.orthonormal_kernel())
        return y if self.bias is None else y + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def lipschitz_bound(self) -> float:
        """A sound bound: the float64 spectral norm of the kernel used."""
        return self.operator_norm()
