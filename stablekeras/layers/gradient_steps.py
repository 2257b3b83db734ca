"""Gradient steps on convex potentials: non-expansive, contractive and orthogonal layers.

The layer is one (or S) explicit Runge-Kutta step(s) of the gradient flow
``x' = -grad V(x) - mu x`` with ``V(x) = 1^T gamma(Ax + b)`` and ``gamma' = s``
monotone with slope at most ``L_s``. ``grad V(x) = A^T s(Ax + b)`` is
``nu``-Lipschitz with ``nu = L_s ||A||^2``. For ``mu = 0`` a step of size ``h``
is non-expansive when ``h nu <= 2 r`` (r the integrator's circle-contractivity
radius); for ``mu > 0`` (explicit Euler) a step is a contraction with constant
``1 - h mu`` when ``h (nu + 2 mu) <= 2``.

Three ways to keep the condition (``enforcement``):

* ``enforcement="project"``: the kernel carries a
  :class:`~stablekeras.constraints.SpectralNorm` constraint that rescales ``A``
  back into the set after each optimizer step (a projection), so that one step
  of size ``step_size`` satisfies it. Fixed cost.
* ``enforcement="normalize"``: the kernel is rescaled in every forward pass, by
  AOL scales or by its Gram-iteration bound, onto ``||A|| = min(1, a_max)``
  (:meth:`~NonExpansiveConv2D.used_kernel`): the step is a reparametrisation
  that holds for any weights, and on the boundary of its condition for
  ``h = 2 r / L_s``. Fixed cost.
* ``enforcement="substeps"``: the weights are free and the block integrates a time
  ``T = step_size`` in ``S = ceil(T nu / (2 r))`` steps of ``T / S`` (the
  chapter's notebook), with ``S`` recomputed from the current weights at every
  call. ``S`` is capped at ``max_substeps``; past the cap the step shrinks to
  ``2 r / nu`` so the guarantee still holds, and the block then integrates the
  time ``S h < T``: a different model from the one configured. The layer does
  not hide this. :meth:`~NonExpansiveDense.substep_schedule` returns the ``S``,
  the ``h`` and the time ``S h`` actually used with the current weights, and the
  layer warns once (a :class:`SubstepCapWarning` with these numbers and the cap
  that would keep ``T``) the first time the cap binds where Python sees the
  numbers: an eager call, ``substep_schedule()`` or ``lipschitz_bound()`` (the
  estimators call the latter at the end of every fit). Inside a compiled
  training or prediction step the schedule is a graph tensor and cannot warn;
  ``substep_schedule()`` after the fit says what was used. The cap stays a cap
  (the cost of a block is bounded by ``max_substeps`` evaluations), instead of
  being raised silently or stopping a fit midway.

:class:`OrthogonalNonExpansiveDense` is the same step with ``A`` a scaled
orthonormal matrix on the boundary ``h L_s ||A||^2 = 2`` (with ReLU its Jacobian
is a reflection wherever it exists).

References
----------
M. J. Ehrhardt, D. Murari, F. Sherry, "Stable neural networks and connections to
continuous dynamical systems", arXiv:2510.22299, 2025.
F. Sherry et al., "Designing stable neural networks using convex analysis and
ODEs", Physica D, 2024.
C. Anil, J. Lucas, R. Grosse, "Sorting out Lipschitz function approximation",
ICML 2019.
L. Meunier, B. Delattre, A. Araujo, A. Allauzen, "A dynamical system perspective
for Lipschitz neural networks", ICML 2022 (convex potential layers).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from stablekeras import activations as _activations
from stablekeras._checks import positive_float
from stablekeras._precision import as_run
from stablekeras.layers._gradient_step import GradientStep, SubstepCapWarning, SubstepSchedule
from stablekeras.layers._operators import ConvOperator, DenseOperator
from stablekeras.layers._orthonormal import OrthonormalKernel

__all__ = [
    "NonExpansiveDense",
    "NonExpansiveConv2D",
    "ContractiveDense",
    "ContractiveConv2D",
    "OrthogonalNonExpansiveDense",
    "SubstepSchedule",
    "SubstepCapWarning",
]


@keras.saving.register_keras_serializable(package="stablekeras")
class NonExpansiveDense(DenseOperator, GradientStep):
    """Non-expansive dense layer ``x -> x - h W^T s(W x + b)`` on ``R^d``.

    One explicit step of the gradient flow of the convex potential
    ``V(x) = 1^T gamma(W x + b)``. It is 1-Lipschitz in l2 whenever
    ``h L_s ||W||_2^2 <= 2 r``, which the layer keeps after every optimizer step
    (see ``enforcement``). Output shape = input shape.

    Parameters
    ----------
    units : int
        Rows of ``W`` (the width of the potential), ``W`` has shape ``units x d``.
    step_size : float, default 1.0
        ``h`` of the step; the time ``T`` of the block with ``enforcement="substeps"``.
    activation : str or SlopeRestrictedActivation, default "relu"
        Monotone, slope-restricted ``s``; see :mod:`stablekeras.activations`.
    integrator : {"euler", "heun", "rk4"}, default "euler"
    enforcement : {"project", "normalize", "substeps"}, default "project"
        How the condition is kept (module docstring): the kernel projected back
        after each optimizer step, normalised in the forward pass, or adaptive
        sub-steps. (Called ``mode`` in stablekeras 0.1, with the values
        ``"constraint"`` and ``"substeps"``.)
    normalization : {"aol", "gram"}, default "aol"
        The rescaling of ``enforcement="normalize"`` (:meth:`used_kernel`).
    use_bias : bool, default True
    kernel_initializer, bias_initializer : Keras initializers
    max_substeps : int, default 32
        Cap on ``S`` in sub-step mode. Where the cap binds, the block integrates
        less time than ``T`` and warns once (:class:`SubstepCapWarning`); see
        :meth:`substep_schedule`.

    Attributes
    ----------
    kernel : the ``(d, units)`` matrix ``W^T`` (Keras' layout).
    substeps : non-trainable int weight, the last ``S`` used in training.

    See Also
    --------
    substep_schedule : the ``S``, ``h`` and flow time used with the current weights.

    Examples
    --------
    >>> import numpy as np
    >>> layer = NonExpansiveDense(16, step_size=1.0)
    >>> y = layer(np.zeros((2, 4), "float32"))
    >>> tuple(y.shape), layer.lipschitz_bound()
    ((2, 4), 1.0)
    """


@keras.saving.register_keras_serializable(package="stablekeras")
class NonExpansiveConv2D(ConvOperator, GradientStep):
    """Non-expansive convolutional layer ``x -> x - h A^T s(A x + b)``.

    ``A`` is a 2-D convolution (no bias) with ``filters`` output channels and
    ``A^T`` its exact adjoint, the transposed convolution with the same kernel,
    strides and padding. Output shape = input shape. 1-Lipschitz in l2 whenever
    ``h L_s ||A||^2 <= 2 r`` with ``||A||`` the operator norm of the
    convolution on the layer's input grid.

    Parameters
    ----------
    filters : int
        Output channels of ``A`` (channels of the potential).
    kernel_size : int or pair, default 3
    strides : int or pair, default 1
    padding : {"same", "valid"}, default "same"
    step_size, activation, integrator, enforcement, normalization, use_bias, \
kernel_initializer,
    bias_initializer, max_substeps :
        As in :class:`NonExpansiveDense`.

    Examples
    --------
    >>> import numpy as np
    >>> layer = NonExpansiveConv2D(8, 3)
    >>> tuple(layer(np.zeros((1, 6, 6, 4), "float32")).shape)
    (1, 6, 6, 4)
    """


class _Contractive:
    """The contractive variant: ``strong_convexity`` must be > 0 (default 0.1)."""

    _strongly_convex = True

    def __init__(self, *args, strong_convexity: float = 0.1, **kwargs):
        super().__init__(*args, strong_convexity=strong_convexity, **kwargs)

    def get_config(self):
        return {**super().get_config(), "strong_convexity": self.strong_convexity}


@keras.saving.register_keras_serializable(package="stablekeras")
class ContractiveDense(_Contractive, DenseOperator, GradientStep):
    """Contractive dense layer ``x -> (1 - h mu) x - h W^T s(W x + b)``.

    An explicit Euler step of the gradient flow of the ``mu``-strongly convex
    potential ``1^T gamma(W x + b) + mu/2 ||x||^2``. With
    ``h (L_s ||W||^2 + 2 mu) <= 2`` its Lipschitz constant is at most
    ``1 - h mu < 1``: distances shrink at every layer and the flow has a unique
    attracting equilibrium.

    Parameters
    ----------
    units : int
    step_size : float, default 1.0
    strong_convexity : float, default 0.1
        ``mu > 0``; one step (``enforcement`` other than ``"substeps"``) needs
        ``step_size * mu < 1``.
    activation, enforcement, normalization, use_bias, kernel_initializer, \
bias_initializer, max_substeps :
        As in :class:`NonExpansiveDense` (the integrator is explicit Euler).

    Examples
    --------
    >>> import numpy as np
    >>> layer = ContractiveDense(8, step_size=1.0, strong_convexity=0.1)
    >>> _ = layer(np.zeros((1, 3), "float32"))
    >>> round(layer.lipschitz_bound(), 6)
    0.9
    """


@keras.saving.register_keras_serializable(package="stablekeras")
class ContractiveConv2D(_Contractive, ConvOperator, GradientStep):
    """Contractive convolutional layer ``x -> (1 - h mu) x - h A^T s(A x + b)``.

    The convolutional analogue of :class:`ContractiveDense`: Lipschitz constant
    at most ``1 - h mu`` when ``h (L_s ||A||^2 + 2 mu) <= 2``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = ContractiveConv2D(4, 3, strong_convexity=0.2)
    >>> y = layer(np.zeros((1, 5, 5, 2), "float32"))
    >>> tuple(y.shape), round(layer.lipschitz_bound(), 6)
    ((1, 5, 5, 2), 0.8)
    """


@keras.saving.register_keras_serializable(package="stablekeras")
class OrthogonalNonExpansiveDense(OrthonormalKernel):
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
