"""Norm-preserving layers: an isometric lift, orthogonal dense maps, an orthogonal gradient step.

A network whose layers are 1-Lipschitz certifies a radius ``m / sqrt(2)`` for a
logit margin ``m``, but only if the layers do not waste that budget: a layer
whose singular values are well below 1 shrinks the differences between inputs,
and with them the margins it can produce. The layers here keep the guarantee
(Lipschitz constant at most 1, bounded soundly) and are as close to norm
preserving as the mathematics allows (Anil, Lucas and Grosse 2019: gradient-norm
preserving networks).

* :class:`IsometricLift`: space-to-depth rearrangement followed by zero channels,
  an exact isometry ``||lift(x)|| = ||x||`` from an image to the state space of
  the convolutional blocks (no pooling, no information lost).
* :class:`OrthogonalDense`: ``x W + b`` with ``W`` orthonormalised by Björck
  iterations in the forward pass: all singular values of ``W`` are 1.
* :class:`OrthogonalNonExpansiveDense`: the non-expansive gradient step of the
  package, ``x - h A^T s(A x + b)``, with ``A`` a scaled orthonormal matrix on
  the boundary ``h L_s ||A||^2 = 2`` of the Euler condition; with ReLU its
  Jacobian is a reflection (orthogonal) wherever it exists.

Björck orthonormalisation (Björck and Bowie 1971): with ``W_0 = V / c`` for a
``c >= ||V||_2``, ``W_{k+1} = W_k (3 I - W_k^T W_k) / 2`` maps every singular
value ``sigma`` of ``W_k`` to ``sigma (3 - sigma^2) / 2``, which is increasing on
``[0, 1]``, maps ``[0, 1]`` into ``[0, 1]`` and has the attracting fixed point 1.
So every iterate has norm at most 1 (in exact arithmetic) and converges to the
orthogonal polar factor of ``V``. ``c^2`` here is the Gram-iteration bound of
``||V^T V||_2 = ||V||_2^2`` (:func:`stablekeras.spectral.dense_gram_bound`, sound
and within a few percent), so the largest singular value starts close to 1 and
a few iterations suffice. The iterations are differentiated through (``c`` is
held constant in the gradient), so training sees the orthonormal kernel. Certificates
(``lipschitz_bound``) never rely on this analysis: they take the float64 SVD of
the kernel actually used.

References
----------
C. Anil, J. Lucas, R. Grosse, "Sorting out Lipschitz function approximation",
ICML 2019.
A. Björck, C. Bowie, "An iterative algorithm for computing the best estimate of an
orthogonal matrix", SIAM J. Numer. Anal., 1971.
L. Meunier, B. Delattre, A. Araujo, A. Allauzen, "A dynamical system perspective
for Lipschitz neural networks", ICML 2022 (convex potential layers).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from stablekeras import activations as _activations
from stablekeras import spectral
from stablekeras._checks import positive_float, positive_int
from stablekeras._precision import as_run, fit_for_rounding, is_low_precision
from stablekeras.constraints import SAFETY

__all__ = ["IsometricLift", "OrthogonalDense", "OrthogonalNonExpansiveDense"]


def bjorck_orthonormalize(kernel, iterations: int):
    """Björck iterations on ``kernel / c`` (``c >= ||kernel||_2``), in-graph and differentiable.

    Works on the smaller Gram matrix: the result has orthonormal columns when
    ``kernel`` has at most as many columns as rows, orthonormal rows otherwise
    (in the limit; every iterate has spectral norm at most 1).

    For a tall ``W_0`` (``m x n``, ``m > 3 n / 2``) the iterates are carried as
    ``W_k = W_0 P_k`` with ``P_k`` a polynomial in ``G = W_0^T W_0``:
    ``P_{k+1} = P_k (3 I - P_k G P_k) / 2`` costs ``3 n^3`` per iteration instead of
    the ``2 m n^2`` of ``W_{k+1} = W_k (3 I - W_k^T W_k) / 2``, and gives the same
    iterate (to float32 rounding).
    """
    w = tf.convert_to_tensor(kernel)
    tall = w.shape[0] >= w.shape[1]
    if not tall:
        w = tf.transpose(w)
    # c^2 >= ||w^T w||_2 = ||w||_2^2 by Gram iteration (sound, within a few percent):
    # the iterations then start with the largest singular value close to 1.
    gram = tf.matmul(w, w, transpose_a=True)
    scale = tf.stop_gradient(spectral.dense_gram_bound(gram))
    inv_c = tf.math.rsqrt(tf.maximum(scale, 1e-30))
    m, n = int(w.shape[0]), int(w.shape[1])
    if iterations and 2 * m > 3 * n:
        g = gram * (inv_c * inv_c)
        eye = tf.eye(n, dtype=w.dtype)
        p = 1.5 * eye - 0.5 * g  # P_1 = (3 I - G) / 2
        for _ in range(int(iterations) - 1):
            p = 0.5 * tf.matmul(p, 3.0 * eye - tf.matmul(tf.matmul(p, g), p))
        w = tf.matmul(w * inv_c, p)
    else:
        w = w * inv_c
        for _ in range(int(iterations)):
            w = 1.5 * w - 0.5 * tf.matmul(w, tf.matmul(w, w, transpose_a=True))
    return w if tall else tf.transpose(w)


def _iterations(value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(
            "Received an invalid value for `bjorck_iterations`, expected an integer >= 0. "
            f"Received: bjorck_iterations={value!r}"
        )
    return int(value)


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


class _Orthonormal(keras.layers.Layer):
    """A dense kernel ``V`` used through its Björck orthonormalisation. Not public."""

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
        self.bjorck_iterations = _iterations(bjorck_iterations)
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
        q = bjorck_orthonormalize(tf.cast(self.kernel, tf.float32), self.bjorck_iterations)
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


@keras.saving.register_keras_serializable(package="stablekeras")
class OrthogonalDense(_Orthonormal):
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


@keras.saving.register_keras_serializable(package="stablekeras")
class OrthogonalNonExpansiveDense(_Orthonormal):
    """Gradient step ``x -> x - h A^T s(A x + b)`` with ``A = Q^T`` orthonormal, ``h = 2 / L_s``.

    ``Q`` (``d x units``) is the Björck orthonormalisation of the kernel and
    ``L_s`` the slope bound of the monotone activation ``s``. The layer is one
    explicit Euler step of the gradient flow of the convex potential
    ``V(x) = 1^T gamma(Q^T x + b)`` (``gamma' = s``), exactly as
    :class:`~stablekeras.layers.NonExpansiveDense`, on the boundary of its
    condition: ``h L_s ||A||^2 = 2 ||Q||^2 <= 2``, so the step is non-expansive.

    Proof and what the boundary buys. The Jacobian is ``J = I - (2 / L_s) Q D Q^T``
    with ``D = diag(s'(Q^T x + b))``, ``0 <= D <= L_s``. For ``||Q|| <= 1`` the
    symmetric matrix ``(2 / L_s) Q D Q^T`` has eigenvalues in ``[0, 2]``, so those
    of ``J`` lie in ``[-1, 1]``: ``||J|| <= 1`` everywhere, hence (the layer being
    piecewise smooth and the segment between two points crossing finitely many
    kinks) ``||f(x) - f(y)|| <= ||x - y||``. With ReLU and orthonormal columns
    (``units <= d``), ``D`` is a 0/1 selection ``S`` and ``J = I - 2 Q_S Q_S^T`` is a
    Householder reflection: orthogonal, so the layer preserves the norm of
    gradients (like GroupSort, Anil et al. 2019), where a step with a smaller ``A``
    would shrink every direction in the range of ``A``. Along one column ``q`` the
    map is ``t -> -|t + b| - b`` for ``t = q^T x``: a fold, the non-linearity that
    1-Lipschitz classifiers need.

    Other step sizes. With ``step_size=h`` the layer is
    ``x -> x - h (A^T s(A x + b) + mu x)`` with ``A = c Q^T``,
    ``c = min(1, a_max)`` and ``a_max^2 = (2 - 2 h mu) / (h L_s)``: a gradient step of
    size ``h`` on the potential of an orthonormal ``A``, which is shrunk only where
    ``h`` would break the Euler condition ``h (L_s ||A||^2 + 2 mu) <= 2``. The
    default ``h = 2 / L_s`` (``mu = 0``) is the reflection above; ``h = 1 / L_s``
    with ReLU makes the Jacobian an orthogonal projection (``t -> min(t, -b)``
    along each column: a clip); ``mu > 0`` (strong convexity) makes the step a
    contraction with constant ``1 - h mu`` (MATH.md section 1).

    ``lipschitz_bound()`` is the explicit Euler bound of the library,
    ``max(|1 - h mu|, |1 - h mu - h L_s sigma^2|)`` with ``sigma`` the float64
    spectral norm of the ``A`` actually used: ``1 - h mu`` unless float32 rounding
    pushed ``sigma`` above its target, and then that slight excess, soundly.

    Parameters
    ----------
    units : int
        Columns of ``Q`` (the width of the potential); at most ``d`` for the
        reflection property (wider still gives a non-expansive step).
    activation : str or SlopeRestrictedActivation, default "relu"
        Monotone and slope-restricted (see :mod:`stablekeras.activations`).
    step_size : float or None, default None
        ``h``; None means ``2 / L_s``, the boundary of the condition.
    strong_convexity : float, default 0.0
        ``mu >= 0``, with ``h mu < 1``.
    use_bias, bjorck_iterations, kernel_initializer, bias_initializer :
        As in :class:`OrthogonalDense`.

    Examples
    --------
    >>> import numpy as np
    >>> layer = OrthogonalNonExpansiveDense(8)
    >>> x = np.random.rand(4, 16).astype("float32")
    >>> tuple(layer(x).shape), layer.lipschitz_bound() <= 1 + 1e-5
    ((4, 16), True)
    """

    def __init__(
        self,
        units: int,
        activation="relu",
        step_size: float | None = None,
        strong_convexity: float = 0.0,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        self.activation = _activations.get(activation)
        self.step_size = None if step_size is None else positive_float(step_size, "step_size")
        mu = float(strong_convexity)
        if not mu >= 0:
            raise ValueError(
                "Received an invalid value for `strong_convexity`, expected a number >= 0. "
                f"Received: strong_convexity={strong_convexity!r}"
            )
        if not self._step() * mu < 1:
            raise ValueError(
                "A contractive step needs step_size * strong_convexity < 1. Received: "
                f"step_size={self._step()}, strong_convexity={mu}"
            )
        self.strong_convexity = mu

    def _step(self) -> float:
        """``h``: ``step_size``, or ``2 / L_s`` when it is None."""
        return 2.0 / self.activation.slope if self.step_size is None else self.step_size

    def _scale(self) -> float:
        """``c = min(1, a_max)``: ``A = c Q^T`` keeps ``h (L_s ||A||^2 + 2 mu) <= 2``."""
        h, mu = self._step(), getattr(self, "strong_convexity", 0.0)
        a_max_sq = (2.0 - 2.0 * h * mu) / (h * self.activation.slope)
        return min(1.0, a_max_sq**0.5)

    def build(self, input_shape):
        self._build_kernel(input_shape, self.units)

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        q = self.orthonormal_kernel()
        h, c = self._step(), self._scale()
        z = tf.matmul(x, q)
        if c != 1.0:
            z = c * z
        if self.bias is not None:
            z = z + self.bias
        y = x - (h * c) * tf.matmul(self.activation(z), q, transpose_b=True)
        if self.strong_convexity:
            y = y - (h * self.strong_convexity) * x
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def _run_coefficients(self):
        """``(c, h c, h mu)`` as ``call`` multiplies by them (rounded to the compute dtype)."""
        h, c, mu = self._step(), self._scale(), self.strong_convexity
        run = lambda v: as_run(v, self.compute_dtype)  # noqa: E731
        return (1.0 if c == 1.0 else run(c)), run(h * c), run(h * mu)

    def _norm_target(self) -> float:
        """``||Q||`` at which ``(h c) c L_s ||Q||^2 = 2 - 2 h mu`` with the coefficients as run."""
        c, hc, hmu = self._run_coefficients()
        return min(1.0, ((2.0 - 2.0 * hmu) / (hc * c * self.activation.slope)) ** 0.5)

    def lipschitz_bound(self) -> float:
        """``max(|1 - h mu|, |1 - h mu - h L_s sigma^2|)``, ``sigma`` the float64 norm of ``A``.

        With ``A = c Q^T`` and ``h c``, ``h mu``, ``c`` as ``call`` uses them
        (rounded to the compute dtype under a mixed-precision policy):
        ``h L_s sigma^2 = (h c) c L_s ||Q||^2``.
        """
        c, hc, hmu = self._run_coefficients()
        h_nu = hc * c * self.activation.slope * self.operator_norm() ** 2
        return float(max(abs(1.0 - hmu), abs(1.0 - hmu - h_nu)))

    def get_config(self):
        return {
            **super().get_config(),
            "activation": _activations.serialize(self.activation),
            "step_size": self.step_size,
            "strong_convexity": self.strong_convexity,
        }
