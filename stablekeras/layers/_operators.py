"""The linear operators ``A`` the stable layers are made of: dense and 2-D convolution.

Each mixin creates its kernel in ``_build_operator`` and provides ``_apply``
(``A x``), ``_adjoint`` (``A^T z``), ``_graph_norm`` (a sound in-graph bound of
``||A||``, used during training) and ``_exact_norm`` (a sound float64 bound on
the host, used for certificates).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import _checks, spectral
from stablekeras._checks import positive_int
from stablekeras._precision import is_low_precision
from stablekeras.constraints import SpectralNorm


class _RunKernel:
    """The kernel as the layer computes with it: cast to its compute dtype.

    Inside ``call`` Keras has already cast it (a no-op here); outside (bounds,
    certificates) the same cast gives the same rounded values, so a bound
    computed from :meth:`_run_kernel` is the bound of the operator that runs.
    """

    def _run_kernel(self):
        return tf.cast(self.kernel, self.compute_dtype)

    def _rounding_dtype(self):
        """The compute dtype the constraint must leave room for (None in float32)."""
        return self.compute_dtype if is_low_precision(self.compute_dtype) else None


class DenseOperator(_RunKernel):
    """``A x = x @ kernel`` with ``kernel`` of shape ``(d, units)``.

    Its ``__init__`` takes the operator's arguments and passes the rest on to the
    layer family next in the method resolution order (``GradientStep``, ...).
    """

    def __init__(self, units: int, *, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = positive_int(units, "units")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _build_operator(self, input_shape, constraint_max=None, autocast=True):
        d = int(input_shape[-1])
        self._in_dim = d
        self.kernel_constraint_ = (
            None
            if constraint_max is None
            else SpectralNorm(constraint_max, compute_dtype=self._rounding_dtype())
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(d, self.units),
            initializer=self.kernel_initializer,
            constraint=self.kernel_constraint_,
            autocast=autocast,
        )
        return (self.units,)

    def _apply(self, x, kernel=None):
        return tf.matmul(x, self.kernel if kernel is None else kernel)

    def _adjoint(self, z, kernel=None):
        return tf.matmul(z, self.kernel if kernel is None else kernel, transpose_b=True)

    def _gram_norm(self, kernel):
        """Sound in-graph bound of ``||A||`` for a kernel of this operator's shape."""
        return spectral.dense_gram_bound(kernel)

    def _aol_scales(self, kernel):
        """AOL scales ``d`` of the rows of ``A`` (``spectral.dense_aol_scales``)."""
        return spectral.dense_aol_scales(kernel)

    def _graph_norm(self):
        if self.kernel_constraint_ is not None:
            return self.kernel_constraint_.norm_bound(self._run_kernel())
        return self._gram_norm(self._run_kernel())

    def _exact_norm(self, kernel=None) -> float:
        kernel = self._run_kernel() if kernel is None else kernel
        return spectral.dense_norm(keras.ops.convert_to_numpy(kernel))

    def _operator_config(self):
        return {
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


class ConvOperator(_RunKernel):
    """``A x = conv2d(x, kernel)`` (no bias), ``A^T`` the transposed convolution.

    Its ``__init__`` takes the operator's arguments and passes the rest on to the
    layer family next in the method resolution order.
    """

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        *,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = positive_int(filters, "filters")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size")
        self.strides = _checks.pair(strides, "strides")
        _checks.padding(padding)
        self.padding = str(padding).lower()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _build_operator(self, input_shape, constraint_max=None, autocast=True):
        if len(input_shape) != 4 or any(v is None for v in input_shape[1:]):
            raise ValueError(
                f"{type(self).__name__} needs inputs of shape (batch, height, width, "
                f"channels) with known sizes. Received input_shape={tuple(input_shape)}"
            )
        h, w, c = (int(v) for v in input_shape[1:])
        self._in_shape = (h, w, c)
        self.kernel_constraint_ = (
            None
            if constraint_max is None
            else SpectralNorm(
                constraint_max,
                (h, w),
                self.strides,
                self.padding,
                compute_dtype=self._rounding_dtype(),
            )
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, c, self.filters),
            initializer=self.kernel_initializer,
            constraint=self.kernel_constraint_,
            autocast=autocast,
        )
        return (
            *spectral.conv2d_output_shape((h, w), self.kernel_size, self.strides, self.padding),
            self.filters,
        )

    def _apply(self, x, kernel=None):
        kernel = self.kernel if kernel is None else kernel
        return spectral.conv2d(x, kernel, self.strides, self.padding)

    #: How ``A^T`` is computed: ``"transpose"`` (``tf.nn.conv2d_transpose``) or, for
    #: stride 1, "same" padding and odd kernels, ``"flipped"``: a convolution with
    #: the spatially flipped kernel with its channels swapped (the same operator).
    adjoint_method = "flipped"

    def _adjoint(self, z, kernel=None):
        kernel = self.kernel if kernel is None else kernel
        if (
            self.adjoint_method == "flipped"
            and self.strides == (1, 1)
            and self.padding == "same"
            and all(k % 2 for k in self.kernel_size)
        ):
            flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1]), (0, 1, 3, 2))
            return spectral.conv2d(z, flipped)
        return spectral.conv2d_adjoint(z, kernel, self._in_shape, self.strides, self.padding)

    def _graph_norm(self):
        if self.kernel_constraint_ is not None:
            return self.kernel_constraint_.norm_bound(self._run_kernel())
        return self._gram_norm(self._run_kernel())

    def _gram_norm(self, kernel):
        """Sound in-graph bound of ``||A||`` on the layer's grid for a kernel of this shape."""
        return spectral.conv2d_gram_bound(kernel, self._in_shape[:2], self.strides, self.padding)

    def _aol_scales(self, kernel):
        """AOL scales ``d`` per output channel of ``A`` (``spectral.conv2d_aol_scales``)."""
        return spectral.conv2d_aol_scales(kernel, self.strides)

    def _exact_norm(self, kernel=None) -> float:
        kernel = self._run_kernel() if kernel is None else kernel
        return spectral.conv2d_norm_bound(
            keras.ops.convert_to_numpy(kernel), self._in_shape[:2], self.strides, self.padding
        )

    def _operator_config(self):
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
