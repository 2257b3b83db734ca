"""What runs under a mixed-precision policy, and the room its rounding needs.

Under ``keras.mixed_precision.set_global_policy("mixed_float16")`` (or
``"mixed_bfloat16"``) a layer keeps its variables in float32 and computes in
float16: Keras casts each variable to float16 when ``call`` reads it, and a
Python float such as the step size ``h`` becomes a float16 constant. The
stable layers keep their guarantee under such a policy as follows.

* The kernel and its normalisation stay in float32: constraints run on the
  float32 variables, the Björck iterations of the orthogonal layers on the
  float32 kernel.
* The map that runs is the layer's map with the *rounded* parameters (kernel,
  bias, step size, strong convexity), evaluated in float16 arithmetic. Every
  ``lipschitz_bound()`` is computed from the rounded parameters (float64 on the
  host), so it is sound for the map with the parameters that run.
* Where a layer promises a norm (a constrained kernel, an orthonormal one), the
  float32 kernel is shrunk just enough that its rounding keeps the promise:
  :func:`fit_for_rounding`. So a non-expansive layer still reports 1.
* What no parameter can absorb is the rounding of the activations themselves:
  ``fl(f(x))`` differs from ``f(x)`` by a few units of float16 roundoff times
  the size of the values, an additive error that a Lipschitz constant cannot
  describe. tests/layers/test_mixed_precision.py bounds it per layer.

:func:`fit_for_rounding`. Rounding each entry of ``w`` to a format with unit
roundoff ``u`` changes it by at most ``u |w_ij|`` (or by half the subnormal
spacing ``tau`` in the subnormal range), so the change ``E`` has
``||E||_F <= u ||w||_F + tau sqrt(N)`` (``N`` entries). The operator of a
dense kernel has norm at most its Frobenius norm; that of a convolution kernel
with ``T`` taps at most ``sqrt(T)`` times it (one shift per tap, each of norm at
most 1, Cauchy-Schwarz over the taps). So ``||op(fl(s w))|| <= s B + c (u s
||w||_F + tau sqrt(N))`` for ``B >= ||op(w)||`` and ``c = sqrt(T)``, which is at
most ``target`` for ``s = (target - c tau sqrt(N)) / (B + c u ||w||_F)``. The
product ``s w`` is itself rounded to float32 first, which ``u`` absorbs by
adding ``2^-23``.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import tensorflow as tf

__all__ = [
    "LOW_PRECISION",
    "is_low_precision",
    "unit_roundoff",
    "as_run",
    "fit_for_rounding",
]

#: Compute dtypes whose rounding the layers account for.
LOW_PRECISION = ("float16", "bfloat16")

_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}
_NUMPY = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
#: Half the spacing of the subnormal numbers: the largest rounding error near zero.
_SUBNORMAL = {"float16": 2.0**-25, "bfloat16": 2.0**-134, "float32": 2.0**-150}


def _name(dtype) -> str:
    return tf.as_dtype(dtype).name


def is_low_precision(dtype) -> bool:
    """Whether ``dtype`` is float16 or bfloat16."""
    return dtype is not None and _name(dtype) in LOW_PRECISION


def unit_roundoff(dtype) -> float:
    """Unit roundoff ``u`` (half the machine epsilon) of a floating dtype."""
    return _ROUNDOFF[_name(dtype)]


def as_run(value: float, dtype) -> float:
    """``value`` as the constant ``dtype`` arithmetic uses (rounded to nearest, as TensorFlow
    converts a Python float to a float16 or bfloat16 tensor). Plain NumPy: usable while tracing.
    """
    if not is_low_precision(dtype):
        return float(value)
    return float(np.asarray(float(value), dtype=_NUMPY[_name(dtype)]))


def fit_for_rounding(w, norm_bound, target: float, dtype, taps: int = 1):
    """``w * s`` (``s <= 1``) whose rounding to ``dtype`` has operator norm at most ``target``.

    Parameters
    ----------
    w : float32 tensor
        A dense (2-D) or convolution (4-D) kernel.
    norm_bound : float or scalar tensor
        A sound bound ``B >= ||op(w)||``, at most ``target``.
    target : float
    dtype : the compute dtype (float16 or bfloat16; other dtypes return ``w``).
    taps : int
        Spatial taps of a convolution kernel (``kh * kw``); 1 for dense.
    """
    if not is_low_precision(dtype):
        return w
    name = _name(dtype)
    u = _ROUNDOFF[name] + 2.0**-23
    c = math.sqrt(taps)
    n = float(math.prod(int(v) for v in w.shape))
    fro = tf.norm(tf.reshape(tf.cast(w, tf.float32), [-1]))
    scale = (target - c * _SUBNORMAL[name] * math.sqrt(n)) / (
        tf.cast(norm_bound, tf.float32) + c * u * fro
    )
    return w * tf.cast(tf.minimum(1.0, scale), w.dtype)
