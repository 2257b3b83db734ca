"""The other stable dynamics of the survey: antisymmetric and Hamiltonian layers.

Neither is non-expansive by itself; each keeps a different property, stated in
its docstring and tested, and each reports a sound (larger than 1) Lipschitz
bound so that it can sit in a certified model.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import activations as _activations
from stablekeras import spectral
from stablekeras._checks import positive_float, positive_int
from stablekeras._precision import as_run

__all__ = ["AntisymmetricDense", "HamiltonianDense"]


@keras.saving.register_keras_serializable(package="stablekeras")
class AntisymmetricDense(keras.layers.Layer):
    """Antisymmetric layer ``x -> x + h s((W - W^T - gamma I) x + b)``.

    The matrix ``M = W - W^T - gamma I`` satisfies ``M + M^T = -2 gamma I``:
    every eigenvalue of ``M`` has real part ``-gamma``, so the linearised flow
    neither explodes nor (for small gamma) vanishes over depth (Haber and
    Ruthotto, 2017; Chang et al., 2019). Its Lipschitz bound is
    ``1 + h L_s ||M||``.

    Parameters
    ----------
    step_size : float, default 0.1
    gamma : float, default 0.01
        Diffusion, >= 0.
    activation : str, default "tanh"
    use_bias : bool, default True
    kernel_initializer : Keras initializer

    Examples
    --------
    >>> import numpy as np
    >>> tuple(AntisymmetricDense()(np.zeros((2, 3), "float32")).shape)
    (2, 3)
    """

    def __init__(
        self,
        step_size: float = 0.1,
        gamma: float = 0.01,
        activation="tanh",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.step_size = positive_float(step_size, "step_size")
        gamma = float(gamma)
        if not gamma >= 0:
            raise ValueError(
                "Received an invalid value for `gamma`, expected gamma >= 0. "
                f"Received: gamma={gamma}"
            )
        self.gamma = gamma
        self.activation = _activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(d, d), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(d,), initializer="zeros") if self.use_bias else None
        )

    def matrix(self):
        """``M = W - W^T - gamma I``, in the compute dtype (as ``call`` uses it)."""
        w = tf.cast(self.kernel, self.compute_dtype)
        d = tf.shape(w)[0]
        return w - tf.transpose(w) - self.gamma * tf.eye(d, dtype=w.dtype)

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        z = tf.matmul(x, self.matrix(), transpose_b=True)
        if self.bias is not None:
            z = z + self.bias
        return x + self.step_size * self.activation(z)

    def compute_output_shape(self, input_shape):
        return input_shape

    def lipschitz_bound(self) -> float:
        """``1 + h L_s ||M||_2`` (exact SVD), with ``h`` and ``M`` as they run."""
        m = keras.ops.convert_to_numpy(self.matrix())
        h = as_run(self.step_size, self.compute_dtype)
        return 1.0 + h * self.activation.slope * spectral.dense_norm(m)

    def get_config(self):
        return {
            **super().get_config(),
            "step_size": self.step_size,
            "gamma": self.gamma,
            "activation": _activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="stablekeras")
class HamiltonianDense(keras.layers.Layer):
    """Symplectic Euler step of a separable Hamiltonian flow on two half-states.

    The input ``x = (y, z)`` (even dimension) is updated by

        y <- y + h K1^T s(K1 z + b1)
        z <- z - h K2^T s(K2 y + b2)

    the symplectic Euler discretisation of ``y' = dH/dz, z' = -dH/dy`` with
    ``H(y, z) = 1^T gamma(K1 z + b1) + 1^T gamma(K2 y + b2)``. Each half-step is a
    shear, so the layer is symplectic and volume preserving (``det J = 1``) and
    exactly invertible: information is not lost over depth. It is not
    non-expansive; its Lipschitz bound is
    ``(1 + h L_s ||K1||^2)(1 + h L_s ||K2||^2)``.

    Parameters
    ----------
    units : int
        Rows of ``K1`` and ``K2``.
    step_size : float, default 0.1
    activation : str, default "tanh"
    kernel_initializer : Keras initializer

    Examples
    --------
    Volume preserving: the Jacobian's determinant is 1 at every point.

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> layer = HamiltonianDense(4)
    >>> x = tf.constant(np.linspace(-1.0, 1.0, 6, dtype="float32")[None])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = layer(x)
    >>> jacobian = tape.batch_jacobian(y, x)[0].numpy()
    >>> y.shape, round(float(np.linalg.det(jacobian)), 4)
    (TensorShape([1, 6]), 1.0)
    """

    def __init__(
        self,
        units: int,
        step_size: float = 0.1,
        activation="tanh",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
        self.step_size = positive_float(step_size, "step_size")
        self.activation = _activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        d = int(input_shape[-1])
        if d % 2:
            raise ValueError(
                "HamiltonianDense needs an even input dimension to split into two halves. "
                f"Received: {d}"
            )
        m = d // 2
        self._half = m
        self.kernel_1 = self.add_weight(
            name="kernel_1", shape=(m, self.units), initializer=self.kernel_initializer
        )
        self.kernel_2 = self.add_weight(
            name="kernel_2", shape=(m, self.units), initializer=self.kernel_initializer
        )
        self.bias_1 = self.add_weight(name="bias_1", shape=(self.units,), initializer="zeros")
        self.bias_2 = self.add_weight(name="bias_2", shape=(self.units,), initializer="zeros")

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        y, z = x[..., : self._half], x[..., self._half :]
        h, s = self.step_size, self.activation
        y = y + h * tf.matmul(
            s(tf.matmul(z, self.kernel_1) + self.bias_1), self.kernel_1, transpose_b=True
        )
        z = z - h * tf.matmul(
            s(tf.matmul(y, self.kernel_2) + self.bias_2), self.kernel_2, transpose_b=True
        )
        return tf.concat([y, z], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def lipschitz_bound(self) -> float:
        """``(1 + h L_s ||K1||^2)(1 + h L_s ||K2||^2)``: each shear is bounded separately."""
        c = as_run(self.step_size, self.compute_dtype) * self.activation.slope
        n1, n2 = (
            spectral.dense_norm(keras.ops.convert_to_numpy(tf.cast(k, self.compute_dtype)))
            for k in (self.kernel_1, self.kernel_2)
        )
        return (1.0 + c * n1**2) * (1.0 + c * n2**2)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "step_size": self.step_size,
            "activation": _activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
