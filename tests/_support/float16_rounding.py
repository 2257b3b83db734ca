"""How far a float16 evaluation of a stable layer can be from the exact map that runs.

Under a ``mixed_float16`` policy a layer computes ``f(x)`` with float16
parameters (the kernels and constants rounded as Keras casts them) in float16
arithmetic. Call ``f`` the layer's map with those rounded parameters, evaluated
exactly; its ``lipschitz_bound()`` bounds ``f``. What runs is ``fl(f)(x)``,
within ``delta(x)`` of ``f(x)``, so for two float16 inputs

    ||fl(f)(x) - fl(f)(y)|| <= L ||x - y|| + delta(x) + delta(y).

``delta`` is the allowance; this module computes it by running-error analysis
(Wilkinson; Higham, "Accuracy and Stability of Numerical Algorithms", ch. 3),
alongside a float64 evaluation of ``f`` that follows the layer's ``call`` op by
op. Each :class:`Tracked` value carries, per sample, a bound on the l2 distance
between its float16 evaluation and its exact value. With unit roundoff
``u = 2^-11`` and half the subnormal spacing ``tau = 2^-25``:

* a float16 rounding of a vector ``v`` adds ``u ||v|| + tau sqrt(n)``
  (``n`` entries per sample): elementwise ``|fl(v_i) - v_i| <= u |v_i|``, or
  ``<= tau`` in the subnormal range;
* a matrix product or convolution ``W v`` with float16 inputs accumulates in
  float32 and rounds once (as TensorFlow does on CPU, and on GPU with its default
  ``TF_FP16_MATMUL_USE_FP32_COMPUTE`` / ``TF_FP16_CONV_USE_FP32_COMPUTE``):
  ``|computed - W v| <= u |W v| + (1 + u) gamma_m |W| |v|`` elementwise, with
  ``gamma_m = m 2^-24 / (1 - m 2^-24)`` for ``m`` products per output; an error
  ``e`` already in ``v`` reaches the output as at most ``||W|| e``;
* ``relu`` is exact; other activations are evaluated to within ``2u`` relative
  (one float16 rounding of a float32 result), and pass an input error ``e`` on as
  at most ``L_s e``;
* ``a + b``, ``c a`` (``c`` a float16 constant): one rounding, input errors added
  (times ``|c|``); negation, concatenation, slicing, space-to-depth and zero
  padding are exact.

These are first-order bounds (products of two rounding errors, relatively
``O(u)`` smaller, are left out); :data:`SAFETY` (1.05) covers them. Between
layers, a layer passes its input's error on as at most its Lipschitz bound times
it (``f(x~) - f(x)``) and adds the error of its own evaluation, computed at the
exact input (the same first-order argument).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from stablekeras import spectral
from stablekeras._precision import as_run
from stablekeras.layers import (
    AntisymmetricDense,
    ContractiveConv2D,
    ContractiveDense,
    HamiltonianDense,
    IsometricLift,
    NonExpansiveConv2D,
    NonExpansiveDense,
    OrthogonalDense,
    OrthogonalNonExpansiveDense,
    ResidualConv2D,
    ResidualDense,
    SpectralConv2D,
    SpectralDense,
)

U = 2.0**-11
TAU = 2.0**-25
#: Covers the second-order terms the analysis leaves out.
SAFETY = 1.05
F16 = "float16"


def gamma32(m: int) -> float:
    return m * 2.0**-24 / (1.0 - m * 2.0**-24)


def norms(v):
    """Per-sample l2 norms (float64 tensor)."""
    v = tf.cast(v, tf.float64)
    return tf.norm(tf.reshape(v, (tf.shape(v)[0], -1)), axis=1)


def _per_sample(v) -> int:
    return int(np.prod(v.shape[1:]))


class Tracked:
    """A float64 value and a per-sample bound on its float16 evaluation's error."""

    def __init__(self, value, err):
        self.value = tf.convert_to_tensor(value, tf.float64)
        self.err = tf.cast(err, tf.float64) + tf.zeros(tf.shape(self.value)[:1], tf.float64)


def rounded(value, err) -> Tracked:
    value = tf.convert_to_tensor(value, tf.float64)
    return Tracked(value, err + U * norms(value) + TAU * math.sqrt(_per_sample(value)))


def linear(t: Tracked, apply, kernel, op_norm: float, products: int) -> Tracked:
    """``apply(v, kernel)`` (a product or convolution), float32 accumulation, one rounding."""
    value = apply(t.value, kernel)
    accumulation = (1 + U) * gamma32(products) * norms(apply(tf.abs(t.value), tf.abs(kernel)))
    return rounded(value, op_norm * t.err + accumulation)


def add(a: Tracked, b: Tracked) -> Tracked:
    return rounded(a.value + b.value, a.err + b.err)


def add_const(a: Tracked, c) -> Tracked:
    return rounded(a.value + c, a.err)


def scale(c: float, a: Tracked) -> Tracked:
    return rounded(c * a.value, abs(c) * a.err)


def neg(a: Tracked) -> Tracked:
    return Tracked(-a.value, a.err)


def activate(activation, a: Tracked) -> Tracked:
    value = activation(a.value)
    err = activation.slope * a.err
    if activation.name != "relu":
        err = err + 2 * U * norms(value) + TAU * math.sqrt(_per_sample(value))
    return Tracked(value, err)


def _f64(v):
    """A float16 parameter as float64 (exact)."""
    return tf.cast(tf.cast(v, F16), tf.float64)


# ---- the layers' maps, op by op as in their ``call`` --------------------------------------------


def _matmul(v, k):
    return tf.matmul(v, k)


def _matmul_t(v, k):
    return tf.matmul(v, k, transpose_b=True)


def _operator(layer):
    """``(A v, A^T z, kernel, ||A||, products of A, products of A^T)``, dense or conv."""
    normalized = getattr(layer, "enforcement", None) == "normalize"
    k = _f64(layer.used_kernel() if normalized else layer._run_kernel())
    if k.shape.rank == 2:
        norm = spectral.dense_norm(k.numpy())
        return _matmul, _matmul_t, k, norm, int(k.shape[0]), int(k.shape[1])
    hw, strides, padding = layer._in_shape[:2], layer.strides, layer.padding
    in_shape = layer._in_shape

    def conv(v, kernel):
        return spectral.conv2d(v, kernel, strides, padding)

    def adjoint(z, kernel):
        return spectral.conv2d_adjoint(z, kernel, in_shape, strides, padding)

    norm = spectral.conv2d_norm_bound(k.numpy(), hw, strides, padding)
    taps = int(k.shape[0]) * int(k.shape[1])
    return conv, adjoint, k, norm, taps * int(k.shape[2]), taps * int(k.shape[3])


def _bias(layer, name="bias"):
    b = getattr(layer, name, None)
    return None if b is None else _f64(b)


# Each takes a built layer (read eagerly: its float16 parameters and their norms) and
# returns its map on Tracked values, made of TensorFlow ops only (so it can be traced).


def _gradient_step(layer):
    apply, adjoint, k, norm, m_a, m_at = _operator(layer)
    b, s = _bias(layer), layer.activation
    mu = as_run(layer.strong_convexity, F16)
    if layer.enforcement != "substeps":  # "constraint" or "normalized": one step of size h
        steps, h = 1, as_run(layer.step_size, F16)
    else:
        steps, h = layer._schedule(layer._graph_norm())
        steps, h = int(steps), float(layer._run_step(h))
    per_step = layer.lipschitz_bound() ** (1.0 / steps)

    def field(y):
        z = linear(y, apply, k, norm, m_a)
        if b is not None:
            z = add_const(z, b)
        g = neg(linear(activate(s, z), adjoint, k, norm, m_at))
        return add(g, neg(scale(mu, y))) if mu else g

    def forward(x):
        for _ in range(
            steps
        ):  # each step: its own rounding, and the incoming error times its bound
            fresh = add(Tracked(x.value, 0.0), scale(h, field(Tracked(x.value, 0.0))))
            x = Tracked(fresh.value, per_step * x.err + fresh.err)
        return x

    return forward


def _bounded(layer):
    apply, _, k, norm, m_a, _ = _operator(layer)
    b = _bias(layer)

    def forward(x):
        out = linear(x, apply, k, norm, m_a)
        if b is not None:
            out = add_const(out, b)
        return out if layer.activation is None else activate(layer.activation, out)

    return forward


def _residual(layer):
    a, b = (tf.convert_to_tensor(v, tf.float64) for v in layer._run_kernels())
    if a.shape.rank == 2:
        apply, norm_a, norm_b = _matmul, *(spectral.dense_norm(v.numpy()) for v in (a, b))
        m_a, m_b = int(a.shape[0]), int(b.shape[0])
    else:

        def apply(v, kernel):
            return spectral.conv2d(v, kernel)

        norm_a, norm_b = (spectral.conv2d_norm_bound(v.numpy(), layer._hw) for v in (a, b))
        taps = int(a.shape[0]) * int(a.shape[1])
        m_a, m_b = taps * int(a.shape[2]), taps * int(b.shape[2])
    bias, h = _bias(layer), as_run(layer.step_size, F16)

    def forward(x):
        z = add_const(linear(x, apply, a, norm_a, m_a), bias)
        g = linear(activate(layer.activation, z), apply, b, norm_b, m_b)
        return add(x, scale(h, g))

    return forward


def _antisymmetric(layer):
    m = _f64(layer.matrix())
    norm, b, h = spectral.dense_norm(m.numpy()), _bias(layer), as_run(layer.step_size, F16)

    def forward(x):
        z = linear(x, _matmul_t, m, norm, int(m.shape[1]))
        if b is not None:
            z = add_const(z, b)
        return add(x, scale(h, activate(layer.activation, z)))

    return forward


def _hamiltonian(layer):
    half, h, s = layer._half, as_run(layer.step_size, F16), layer.activation
    k1, k2 = _f64(layer.kernel_1), _f64(layer.kernel_2)
    n1, n2 = spectral.dense_norm(k1.numpy()), spectral.dense_norm(k2.numpy())
    b1, b2 = _bias(layer, "bias_1"), _bias(layer, "bias_2")

    def shear(v, k, norm, b):
        t = activate(s, add_const(linear(v, _matmul, k, norm, int(k.shape[0])), b))
        return scale(h, linear(t, _matmul_t, k, norm, int(k.shape[1])))

    def forward(x):
        y, z = Tracked(x.value[:, :half], x.err), Tracked(x.value[:, half:], x.err)
        y = add(y, shear(z, k1, n1, b1))
        z = add(z, neg(shear(y, k2, n2, b2)))
        return Tracked(tf.concat([y.value, z.value], axis=-1), y.err + z.err)

    return forward


def _orthogonal(layer):
    q = _f64(layer.orthonormal_kernel())
    norm, b = spectral.dense_norm(q.numpy()), _bias(layer)

    def forward(x):
        out = linear(x, _matmul, q, norm, int(q.shape[0]))
        return out if b is None else add_const(out, b)

    return forward


def _orthogonal_step(layer):
    q = _f64(layer.orthonormal_kernel())
    norm, b = spectral.dense_norm(q.numpy()), _bias(layer)
    c, hc, hmu = layer._run_coefficients()

    def forward(x):
        z = linear(x, _matmul, q, norm, int(q.shape[0]))
        if c != 1.0:
            z = scale(c, z)
        if b is not None:
            z = add_const(z, b)
        g = linear(activate(layer.activation, z), _matmul_t, q, norm, int(q.shape[1]))
        y = add(x, neg(scale(hc, g)))
        return add(y, neg(scale(hmu, x))) if layer.strong_convexity else y

    return forward


def _lift(layer):
    def forward(x):
        return Tracked(layer.call(x.value), x.err)  # a permutation and zeros: exact

    return forward


REFERENCES = (
    ((NonExpansiveDense, NonExpansiveConv2D, ContractiveDense, ContractiveConv2D), _gradient_step),
    ((SpectralDense, SpectralConv2D), _bounded),
    ((ResidualDense, ResidualConv2D), _residual),
    ((AntisymmetricDense,), _antisymmetric),
    ((HamiltonianDense,), _hamiltonian),
    ((OrthogonalNonExpansiveDense,), _orthogonal_step),
    ((OrthogonalDense,), _orthogonal),
    ((IsometricLift,), _lift),
)


def exact_map(layer):
    """The map that runs (float16 parameters) evaluated in float64, with its allowance.

    Returns ``forward(x) -> Tracked``: ``x`` exactly representable in float16 (no
    error on entry); ``.value`` the exact map, ``.err`` the allowance ``delta(x)``
    (with :data:`SAFETY`). TensorFlow ops only: it can be traced and differentiated.
    """
    for classes, make in REFERENCES:
        if isinstance(layer, classes):
            forward = make(layer)

            def run(x, forward=forward):
                out = forward(Tracked(tf.cast(x, tf.float64), 0.0))
                return Tracked(out.value, SAFETY * out.err)

            return run
    raise TypeError(f"no float16 reference for {type(layer).__name__}")


def _exact_layer(fn):
    def make(layer):
        def forward(x):
            return Tracked(fn(layer, x.value), x.err)

        return forward

    return make


_EXACT_OPS = {
    # ops that float16 computes exactly (a rearrangement, or the largest of some values)
    "Reshape": lambda layer, v: tf.reshape(v, (-1, *layer.target_shape)),
    "Flatten": lambda layer, v: tf.reshape(v, (tf.shape(v)[0], -1)),
    "MaxPooling2D": lambda layer, v: tf.nn.max_pool2d(
        v, layer.pool_size, layer.strides, layer.padding.upper()
    ),
}


def network_exact_map(model):
    """:func:`exact_map` for a sequential model: every layer's map of what runs, chained.

    The input (float32 data) is first rounded to float16, as the model does: an error
    ``||fl(x) - x||``. A layer passes the error of its input on times its Lipschitz
    bound and adds the allowance of its own evaluation (computed at the exact input).
    """
    from stablekeras.bounds import layer_bound

    steps = []
    for layer in model.layers:
        name = type(layer).__name__
        if name in _EXACT_OPS:
            steps.append((_exact_layer(_EXACT_OPS[name])(layer), layer_bound(layer)))
            continue
        for classes, make in REFERENCES:
            if isinstance(layer, classes):
                steps.append((make(layer), layer.lipschitz_bound()))
                break
        else:
            raise TypeError(f"no float16 reference for {name}")

    def run(x):
        x = tf.cast(x, tf.float64)
        x16 = tf.cast(tf.cast(x, F16), tf.float64)
        value, err = x16, norms(x16 - x)
        for forward, bound in steps:
            out = forward(Tracked(value, 0.0))
            value, err = out.value, bound * err + SAFETY * out.err
        return Tracked(value, err)

    return run
