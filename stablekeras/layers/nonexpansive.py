"""Gradient steps on convex potentials: non-expansive and contractive layers.

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

References
----------
M. J. Ehrhardt, D. Murari, F. Sherry, "Stable neural networks and connections to
continuous dynamical systems", arXiv:2510.22299, 2025.
F. Sherry et al., "Designing stable neural networks using convex analysis and
ODEs", Physica D, 2024.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import keras
import tensorflow as tf

from stablekeras import activations as _activations
from stablekeras import integrators as _integrators
from stablekeras._checks import positive_float, positive_int
from stablekeras._precision import as_run, fit_for_rounding, is_low_precision, unit_roundoff
from stablekeras.constraints import SAFETY
from stablekeras.layers._operators import ConvOperator, DenseOperator

__all__ = [
    "NonExpansiveDense",
    "NonExpansiveConv2D",
    "ContractiveDense",
    "ContractiveConv2D",
    "SubstepSchedule",
    "SubstepCapWarning",
]

_ENFORCEMENTS = ("project", "normalize", "substeps")

#: What ``mode`` (stablekeras 0.1) was called and the names its values have now.
_MODE_VALUES = {"constraint": "project", "normalized": "normalize", "substeps": "substeps"}
_NORMALIZATIONS = ("aol", "gram")


class SubstepCapWarning(UserWarning):
    """The sub-step cap ``max_substeps`` shortens the flow time of a block.

    Issued once per layer, with the numbers: the ``S`` the condition needs, the
    cap, the step ``h`` used and the time ``S h`` integrated instead of ``T``.
    Filter it like any warning (``warnings.simplefilter("error",
    SubstepCapWarning)`` turns it into an error).
    """


class SubstepSchedule(NamedTuple):
    """The Euler/Runge-Kutta schedule a gradient-step layer uses with its current weights.

    Attributes
    ----------
    substeps : int
        ``S``, the number of steps per call (1 unless ``enforcement="substeps"``).
    step : float
        ``h``, the size of each step.
    time : float
        ``S h``, the flow time integrated per call.
    requested_time : float
        ``T = step_size``, the time configured. ``time < requested_time`` exactly
        when the cap ``max_substeps`` binds.
    required_substeps : int
        The ``S`` that would keep ``T`` (the cap that is needed).
    """

    substeps: int
    step: float
    time: float
    requested_time: float
    required_substeps: int

    @property
    def capped(self) -> bool:
        """Whether the cap shortened the flow time (``time < requested_time``)."""
        return self.required_substeps > self.substeps


def _renamed_mode_message(value) -> str:
    new = _MODE_VALUES.get(value, value) if isinstance(value, str) else value
    return (
        "`mode` was renamed to `enforcement` (its values: 'constraint' -> 'project', "
        f"'normalized' -> 'normalize', 'substeps'). Received: mode={value!r}; "
        f"pass enforcement={new!r}"
    )


class _GradientStep(keras.layers.Layer):
    """Shared machinery; see the module docstring for the mathematics."""

    _strongly_convex = False

    def __init__(
        self,
        *,
        step_size: float = 1.0,
        activation="relu",
        integrator="euler",
        enforcement: str = "project",
        use_bias: bool = True,
        bias_initializer="zeros",
        max_substeps: int = 32,
        strong_convexity: float = 0.0,
        normalization: str = "aol",
        **kwargs,
    ):
        if "mode" in kwargs:
            raise TypeError(_renamed_mode_message(kwargs["mode"]))
        super().__init__(**kwargs)
        self.step_size = positive_float(step_size, "step_size")
        self.activation = _activations.get(activation)
        self.integrator = _integrators.get(integrator)
        if enforcement not in _ENFORCEMENTS:
            raise ValueError(
                f"Received an invalid value for `enforcement`, expected one of "
                f"{_ENFORCEMENTS}. Received: enforcement={enforcement!r}"
            )
        self.enforcement = enforcement
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"Received an invalid value for `normalization`, expected one of "
                f"{_NORMALIZATIONS}. Received: normalization={normalization!r}"
            )
        self.normalization = normalization
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.max_substeps = positive_int(max_substeps, "max_substeps")
        mu = float(strong_convexity)
        if self._strongly_convex:
            if not mu > 0:
                raise ValueError(
                    "Received an invalid value for `strong_convexity`, expected a positive "
                    f"number. Received: strong_convexity={strong_convexity!r}"
                )
            if self.integrator.name != "euler":
                raise ValueError(
                    "Contractive layers are analysed for explicit Euler steps only. "
                    f"Received: integrator={self.integrator.name!r}"
                )
            if enforcement != "substeps" and not self.step_size * mu < 1:
                raise ValueError(
                    "A contractive step needs step_size * strong_convexity < 1. Received: "
                    f"step_size={self.step_size}, strong_convexity={mu}"
                )
        self.strong_convexity = mu

    # --- the condition -----------------------------------------------------
    def _run(self, value: float) -> float:
        """A coefficient as the layer's compute dtype holds it (float16 under mixed precision)."""
        return as_run(value, self.compute_dtype)

    def _run_step(self, h):
        """The sub-step ``h`` (a float32 tensor) in the compute dtype, never rounded up."""
        if is_low_precision(self.compute_dtype):
            h = h * (1.0 - unit_roundoff(self.compute_dtype))  # fl(h (1 - u)) < h
        return tf.cast(h, self.compute_dtype)

    def _boundary_norm(self) -> float:
        """Largest ``||A||`` for which one step of size ``step_size`` keeps the guarantee.

        With the step size and strong convexity as they run (rounded to the
        compute dtype under a mixed-precision policy).
        """
        h, L, r, mu = (
            self._run(self.step_size),
            self.activation.slope,
            self.integrator.radius,
            self._run(self.strong_convexity),
        )
        return math.sqrt((2.0 * r - 2.0 * h * mu) / (h * L))

    def build(self, input_shape):
        constraint_max = self._boundary_norm() if self.enforcement == "project" else None
        # normalized: the normalisation runs on the float32 kernel under a mixed-precision
        # policy too (no autocast); only its result is cast (used_kernel)
        bias_shape = self._build_operator(
            tuple(input_shape), constraint_max, autocast=self.enforcement != "normalize"
        )
        self.bias = (
            self.add_weight(name="bias", shape=(bias_shape[-1],), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.substeps = self.add_weight(
            name="substeps",
            shape=(),
            dtype="int32",
            initializer="ones",
            trainable=False,
            # every replica computes the same S from the same (mirrored) weights
            aggregation="only_first_replica",
        )
        if self.kernel_constraint_ is not None:
            # Keras applies constraints only after optimizer steps: start inside the set.
            self.kernel.assign(self.kernel_constraint_(self.kernel))

    def _schedule(self, sigma):
        """Number of sub-steps ``S`` and step size ``h`` for an operator norm bound ``sigma``."""
        s, h, _ = self._schedule_and_need(sigma)
        return s, h

    def _schedule_and_need(self, sigma):
        """``(S, h, S needed to keep T)`` for an operator norm bound ``sigma``."""
        T, L, r, mu = (
            self.step_size,
            self.activation.slope,
            self.integrator.radius,
            self._run(self.strong_convexity),
        )
        # The same relative room as the constraint: the float32 bound may round below
        # ||A||, and a step exactly on h nu = 2 r (the cap) must not cross it.
        nu = (L * tf.square(tf.cast(sigma, tf.float32)) + 2.0 * mu) * (1.0 + SAFETY)
        need = tf.maximum(tf.math.ceil(T * nu / (2.0 * r)), 1.0)
        s = tf.minimum(need, float(self.max_substeps))
        h = tf.minimum(T / s, 2.0 * r / tf.maximum(nu, 1e-30))
        return tf.cast(s, tf.int32), h, need

    def substep_schedule(self) -> SubstepSchedule:
        """The schedule the layer uses with its current weights: ``S``, ``h`` and ``S h``.

        In sub-step mode, ``S = min(ceil(T nu / (2 r)), max_substeps)`` and
        ``h = min(T / S, 2 r / nu)``, computed from the same in-graph norm bound
        as a call; in the other modes one step of ``step_size``. When the cap
        binds (``capped``), the block integrates ``S h < T`` and this method
        warns once per layer (:class:`SubstepCapWarning`).

        Returns
        -------
        SubstepSchedule

        Examples
        --------
        >>> import numpy as np
        >>> layer = NonExpansiveDense(4, step_size=0.5, enforcement="substeps", max_substeps=2)
        >>> _ = layer(np.zeros((1, 3), "float32"))
        >>> layer.kernel.assign(100.0 * layer.kernel)  # doctest: +ELLIPSIS
        <...>
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     schedule = layer.substep_schedule()
        >>> schedule.substeps, schedule.capped, schedule.time < schedule.requested_time
        (2, True, True)
        >>> [w.category.__name__ for w in caught]
        ['SubstepCapWarning']
        """
        T = float(self.step_size)
        if self.enforcement != "substeps":
            return SubstepSchedule(1, T, T, T, 1)
        s, h, need = self._schedule_and_need(self._graph_norm())
        schedule = SubstepSchedule(int(s), float(h), int(s) * float(h), T, int(need))
        self._warn_if_capped(schedule)
        return schedule

    def _warn_if_capped(self, schedule: SubstepSchedule) -> None:
        if not schedule.capped or getattr(self, "_cap_warned", False):
            return
        self._cap_warned = True
        warnings.warn(
            f"{type(self).__name__} {self.name!r}: the sub-step cap binds. Keeping the flow "
            f"time T={schedule.requested_time:g} with the current weights needs "
            f"S={schedule.required_substeps} steps, above max_substeps={self.max_substeps}; the "
            f"layer takes {schedule.substeps} steps of h={schedule.step:.6g} and integrates "
            f"time {schedule.time:.6g} instead of {schedule.requested_time:g}. Pass "
            f"max_substeps>={schedule.required_substeps} to keep T, or a smaller step_size.",
            SubstepCapWarning,
            stacklevel=3,
        )

    def used_kernel(self):
        """The kernel the layer computes with.

        ``kernel`` itself with ``enforcement="project"`` or ``"substeps"``. With
        ``enforcement="normalize"``, ``kernel`` rescaled in the forward pass to the
        operator norm ``a = min(1, a_max)``, where ``a_max`` is the largest norm
        for which one step of size ``h = step_size`` keeps the guarantee,
        ``a_max^2 = (2 r - 2 h mu) / (h L_s)``. So ``A`` has unit norm and the
        step is a gradient step of size ``h`` on a normalised potential, shrunk
        only where ``h`` would break the condition; for ``h >= (2 r - 2 h mu) / L_s``
        (``h = 2`` for ReLU and Euler) the step sits on the boundary
        ``h L_s ||A||^2 = 2 r``:

        * ``normalization="gram"``: ``kernel * a / B(kernel)`` with ``B`` the
          in-graph Gram-iteration bound of ``||A||`` (sound, and within a few
          percent of the norm): spectral normalisation with a certified bound
          (Miyato et al. 2018; Delattre et al. 2023);
        * ``normalization="aol"``: ``a diag(d) A``, ``d`` the AOL scales of
          :func:`~stablekeras.spectral.conv2d_aol_scales` /
          :func:`~stablekeras.spectral.dense_aol_scales`, which make
          ``||diag(d) A|| <= 1`` provable by the Schur test with no iteration
          (Prach and Lampert 2022); with ``h = 2 / L_s`` this is the SLL layer of
          Araujo et al. (2023) with ``q = 1``.

        Gradients flow through the rescaling, so training sees the kernel used.
        A relative ``1e-5`` is kept free for float32 rounding. Under a
        mixed-precision policy the rescaling runs in float32 and its result is
        shrunk just enough that its rounding to the compute dtype keeps the
        norm (:func:`stablekeras._precision.fit_for_rounding`), then cast.
        """
        if self.enforcement != "normalize":
            return self.kernel
        kernel = tf.cast(self.kernel, tf.float32)
        target = min(1.0, self._boundary_norm()) * (1.0 - SAFETY)
        if self.normalization == "gram":
            kernel = kernel * (target / tf.maximum(self._gram_norm(kernel), 1e-30))
        else:
            kernel = kernel * (target * self._aol_scales(kernel))
        taps = 1 if kernel.shape.rank == 2 else int(kernel.shape[0]) * int(kernel.shape[1])
        kernel = fit_for_rounding(kernel, target, target, self.compute_dtype, taps)
        return tf.cast(kernel, self.compute_dtype)

    def _vector_field(self, x, kernel=None):
        z = self._apply(x, kernel)
        if self.bias is not None:
            z = z + self.bias
        g = -self._adjoint(self.activation(z), kernel)
        if self.strong_convexity:
            g = g - self.strong_convexity * x
        return g

    def call(self, inputs, training=None):
        x = tf.convert_to_tensor(inputs)
        if self.enforcement == "project":
            return self.integrator.step(self._vector_field, x, self.step_size)
        if self.enforcement == "normalize":
            kernel = self.used_kernel()
            return self.integrator.step(lambda y: self._vector_field(y, kernel), x, self.step_size)
        # S and h are a schedule computed from the weights, as after an optimizer
        # step in the chapter's notebook: no gradient flows through the norm bound.
        s, h, need = self._schedule_and_need(tf.stop_gradient(self._graph_norm()))
        if training:
            self.substeps.assign(s)
        if tf.executing_eagerly() and not getattr(self, "_cap_warned", False):
            T = float(self.step_size)
            schedule = SubstepSchedule(int(s), float(h), int(s) * float(h), T, int(need))
            self._warn_if_capped(schedule)
        h = self._run_step(h)
        _, x = tf.while_loop(
            lambda i, _: i < s,
            lambda i, y: (i + 1, self.integrator.step(self._vector_field, y, h)),
            (tf.constant(0, tf.int32), x),
        )
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    # --- certificates --------------------------------------------------------
    def operator_norm(self) -> float:
        """A sound float64 upper bound of ``||A||`` for the kernel used (:meth:`used_kernel`)."""
        return self._exact_norm(self.used_kernel() if self.enforcement == "normalize" else None)

    def lipschitz_bound(self) -> float:
        """A sound upper bound of the layer's current Lipschitz constant (l2).

        1 for a non-expansive layer whose condition holds (``1 - h mu`` for a
        contractive one); otherwise the bound of an explicit step with
        ``h Lip(f)`` beyond the condition, to the power of the sub-steps.
        """
        sigma = self.operator_norm()
        schedule = self.substep_schedule()
        if self.enforcement != "substeps":
            steps, h = 1, self._run(self.step_size)
        else:
            steps, h = schedule.substeps, float(self._run_step(tf.constant(schedule.step)))
        nu = self.activation.slope * sigma**2
        mu = self._run(self.strong_convexity)
        if self.integrator.name == "euler":
            per_step = max(abs(1.0 - h * mu), abs(1.0 - h * mu - h * nu))
        elif h * nu <= 2.0 * self.integrator.radius:
            per_step = 1.0
        else:
            per_step = self.integrator.lipschitz_growth(h * nu)
        return float(per_step**steps)

    @classmethod
    def from_config(cls, config):
        """Also reads the configs of stablekeras 0.1, saved with ``mode`` for ``enforcement``."""
        config = dict(config)
        if "mode" in config:
            config["enforcement"] = _MODE_VALUES[config.pop("mode")]
        return super().from_config(config)

    def get_config(self):
        return {
            **super().get_config(),
            **self._operator_config(),
            "step_size": self.step_size,
            "activation": _activations.serialize(self.activation),
            "integrator": self.integrator.name,
            "enforcement": self.enforcement,
            "normalization": self.normalization,
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "max_substeps": self.max_substeps,
        }


@keras.saving.register_keras_serializable(package="stablekeras")
class NonExpansiveDense(DenseOperator, _GradientStep):
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

    def __init__(
        self,
        units: int,
        step_size: float = 1.0,
        activation="relu",
        integrator="euler",
        enforcement: str = "project",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        max_substeps: int = 32,
        normalization: str = "aol",
        **kwargs,
    ):
        super().__init__(
            step_size=step_size,
            activation=activation,
            integrator=integrator,
            enforcement=enforcement,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            max_substeps=max_substeps,
            normalization=normalization,
            **kwargs,
        )
        self._init_operator(units=units, kernel_initializer=kernel_initializer)


@keras.saving.register_keras_serializable(package="stablekeras")
class NonExpansiveConv2D(ConvOperator, _GradientStep):
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

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        step_size: float = 1.0,
        activation="relu",
        integrator="euler",
        enforcement: str = "project",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        max_substeps: int = 32,
        normalization: str = "aol",
        **kwargs,
    ):
        super().__init__(
            step_size=step_size,
            activation=activation,
            integrator=integrator,
            enforcement=enforcement,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            max_substeps=max_substeps,
            normalization=normalization,
            **kwargs,
        )
        self._init_operator(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            kernel_initializer=kernel_initializer,
        )


class _Contractive:
    _strongly_convex = True

    def get_config(self):
        return {**super().get_config(), "strong_convexity": self.strong_convexity}


@keras.saving.register_keras_serializable(package="stablekeras")
class ContractiveDense(_Contractive, DenseOperator, _GradientStep):
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

    def __init__(
        self,
        units: int,
        step_size: float = 1.0,
        strong_convexity: float = 0.1,
        activation="relu",
        enforcement: str = "project",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        max_substeps: int = 32,
        integrator="euler",
        normalization: str = "aol",
        **kwargs,
    ):
        super().__init__(
            step_size=step_size,
            activation=activation,
            integrator=integrator,
            enforcement=enforcement,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            max_substeps=max_substeps,
            strong_convexity=strong_convexity,
            normalization=normalization,
            **kwargs,
        )
        self._init_operator(units=units, kernel_initializer=kernel_initializer)


@keras.saving.register_keras_serializable(package="stablekeras")
class ContractiveConv2D(_Contractive, ConvOperator, _GradientStep):
    """Contractive convolutional layer ``x -> (1 - h mu) x - h A^T s(A x + b)``.

    The convolutional analogue of :class:`ContractiveDense`: Lipschitz constant
    at most ``1 - h mu`` when ``h (L_s ||A||^2 + 2 mu) <= 2``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = ContractiveConv2D(4, 3, strong_convexity=0.2)
    >>> tuple(layer(np.zeros((1, 5, 5, 2), "float32")).shape)
    (1, 5, 5, 2)
    """

    def __init__(
        self,
        filters: int,
        kernel_size=3,
        strides=1,
        padding: str = "same",
        step_size: float = 1.0,
        strong_convexity: float = 0.1,
        activation="relu",
        enforcement: str = "project",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        max_substeps: int = 32,
        integrator="euler",
        normalization: str = "aol",
        **kwargs,
    ):
        super().__init__(
            step_size=step_size,
            activation=activation,
            integrator=integrator,
            enforcement=enforcement,
            use_bias=use_bias,
            bias_initializer=bias_initializer,
            max_substeps=max_substeps,
            strong_convexity=strong_convexity,
            normalization=normalization,
            **kwargs,
        )
        self._init_operator(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            kernel_initializer=kernel_initializer,
        )
