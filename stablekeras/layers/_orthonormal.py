"""The base of the layers that compute with the Björck orthonormalisation of their kernel
(:func:`stablekeras.spectral.bjorck_orthonormalize`): :class:`~stablekeras.layers.OrthogonalDense`
and :class:`~stablekeras.layers.OrthogonalNonExpansiveDense`."""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import _checks, spectral
from stablekeras._checks import positive_int
from stablekeras._precision import fit_for_rounding, is_low_precision
from stablekeras.constraints import SAFETY


class OrthonormalKernel(keras.layers.Layer):
    """A dense kernel ``V`` used through its Björck orthonormalisation (a base class)."""

    def __init__(
        self,
        units: int,
        use_bias: bool = True,
        bjorck_iterations: int = 6,
        kernel_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
        self.use_bias = bool(use_bias)
        self.bjorck_iterations = _checks.int_at_least(bjorck_iterations, 0, "bjorck_iterations")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _build_kernel(self, input_shape, bias_size):
        # autocast=False: the Björck iterations run on the float32 kernel under a
        # mixed-precision policy too; only their result is cast (orthonormal_kernel)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer,
            autocast=False,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(bias_size,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )

    def orthonormal_kernel(self):
        """The kernel the layer computes with: the Björck iterate of ``kernel`` (compute dtype).

        Computed in float32 (the variable's dtype) and scaled by ``1 - SAFETY``
        (1e-5) so that float32 rounding of the iterate does not push its norm
        above 1. Under a mixed-precision policy it is then shrunk just enough
        that its rounding to float16 (or bfloat16), and that of the layer's
        coefficients, keep the layer's bound (:meth:`_norm_target`;
        :func:`stablekeras._precision.fit_for_rounding`; about ``u sqrt(units)``
        relative, 0.4% for 64 units in float16), and cast.
        """
        q = spectral.bjorck_orthonormalize(tf.cast(self.kernel, tf.float32), self.bjorck_iterations)
        q = q * (1.0 - SAFETY)
        if is_low_precision(self.compute_dtype):
            target = self._norm_target() * (1.0 - SAFETY)
            q = fit_for_rounding(q, 1.0 - SAFETY, target, self.compute_dtype)
        return tf.cast(q, self.compute_dtype)

    def _norm_target(self) -> float:
        """The largest ``||Q||`` the layer's bound allows (1; less for rounded coefficients)."""
        return 1.0

    def operator_norm(self) -> float:
        """The exact spectral norm (float64 SVD) of :meth:`orthonormal_kernel`: a sound bound."""
        return spectral.dense_norm(keras.ops.convert_to_numpy(self.orthonormal_kernel()))

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "bjorck_iterations": self.bjorck_iterations,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
