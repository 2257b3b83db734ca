"""The machinery of the gradient-step layers (the mathematics is in
:mod:`stablekeras.layers.gradient_steps`): enforcement of the step condition,
the sub-step schedule and its cap, the bound."""

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

__all__ = ["GradientStep", "SubstepSchedule", "SubstepCapWarning"]

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


class GradientStep(keras.layers.Layer):
    """Shared machinery of the gradient-step layers; the mathematics is in the docstring of
    :mod:`stablekeras.layers.gradient_steps`."""

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
        >>> from stablekeras.layers import NonExpansiveDense
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
