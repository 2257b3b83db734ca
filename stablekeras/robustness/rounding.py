"""The allowance for floating-point rounding that every certificate adds.

:func:`rounding_allowance` states and proves the bound; :func:`allowance` computes
it from margins already at hand (the certificates call it after their one
forward pass).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from stablekeras import _checks
from stablekeras.bounds import layer_bound
from stablekeras.layers import IsometricLift
from stablekeras.robustness._inputs import (
    fitted_classifier,
    layer_chain,
    lipschitz_of,
    margins,
    predict_logits,
)

__all__ = ["rounding_allowance"]

# Unit roundoff (round to nearest) of the floating-point formats a layer may compute in.
_UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
_TF32_UNIT_ROUNDOFF = 2.0**-11  # 10 explicit mantissa bits


def _model_unit_roundoff(layers) -> float:
    """``u`` of the coarsest compute dtype of the layers; TF32 matmuls count on a GPU."""
    dtypes = {str(getattr(layer, "compute_dtype", "float32")) for layer in layers} or {"float32"}
    u = max(_UNIT_ROUNDOFF.get(d, 2.0**-24) for d in dtypes)
    if (
        "float32" in dtypes
        and tf.config.list_logical_devices("GPU")
        and tf.config.experimental.tensor_float_32_execution_enabled()
    ):
        u = max(u, _TF32_UNIT_ROUNDOFF)
    return u


_EXACT_LAYERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.MaxPooling2D,
    keras.layers.Dropout,
    keras.layers.Identity,
    IsometricLift,
)


def _rounding_chain_length(layer) -> int:
    """``n_k``: the roundings behind one output coordinate of a layer (see rounding_allowance)."""
    shapes = [
        tuple(int(d) for d in w.shape)
        for w in layer.weights
        if len(w.shape) >= 2 and "float" in str(w.dtype)
    ]
    if not shapes:
        if isinstance(layer, _EXACT_LAYERS):
            return 0  # copies, reshapes, comparisons and zeros: no rounding
        pool = getattr(layer, "pool_size", None)
        if pool is not None:  # a sum over each window (average or norm pooling)
            return math.prod(np.broadcast_to(pool, (2,)).tolist()) + 1
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return math.prod(layer.input.shape[1:3]) + 1
        return 4  # an elementwise function (rescaling, activation): a few roundings
    # A (fan-in: all but the output axis) and A^T (fan-out) of every kernel, plus the
    # elementwise operations (bias, activation, step size, sum, Runge-Kutta weights).
    n = sum(math.prod(sh[:-1]) + math.prod(sh[:-2]) * sh[-1] for sh in shapes) + 8
    integrator = getattr(layer, "integrator", None)
    stages = int(getattr(integrator, "stages", 1))
    steps = layer.substep_schedule().substeps if hasattr(layer, "substep_schedule") else 1
    return n * stages * steps


def _rounding_terms(model, n_features, unit_roundoff):
    """``(gamma_N, Lambda, rho_0 + beta)`` of the allowance, for a chain of layers."""
    layers = layer_chain(model)
    u = _model_unit_roundoff(layers) if unit_roundoff is None else float(unit_roundoff)
    if not (u >= 0 and math.isfinite(u)):
        raise _checks.invalid("unit_roundoff", "None or a finite number >= 0", unit_roundoff)
    n_total = sum(_rounding_chain_length(layer) for layer in layers)
    growth = math.prod(max(1.0, layer_bound(layer)) for layer in layers)
    # rho_0: the largest layer output at x = 0; beta: the largest bias.
    h = tf.zeros((1, n_features), dtype=tf.float32)
    rho0 = 0.0
    for layer in layers:
        h = layer(h, training=False)
        rho0 = max(rho0, float(tf.norm(tf.cast(h, tf.float64))))
    beta = max(
        (
            float(np.linalg.norm(keras.ops.convert_to_numpy(w).astype(np.float64)))
            for layer in layers
            for w in layer.trainable_weights
            if len(w.shape) == 1
        ),
        default=0.0,
    )
    nu = n_total * u
    gamma = nu / (1.0 - nu) if nu < 1 else math.inf
    return gamma, growth, rho0 + beta


def allowance(est, X, margin, L, unit_roundoff) -> np.ndarray:
    """The allowance of every point, given its computed margin (see rounding_allowance)."""
    if unit_roundoff is not None and float(unit_roundoff) == 0.0:
        return np.zeros(len(X))
    gamma, growth, offset = _rounding_terms(est.model_, X.shape[1], unit_roundoff)
    if gamma == 0.0:
        return np.zeros(len(X))
    finite = np.isfinite(margin)  # one class: nothing to change, nothing to allow
    reach = np.where(finite, margin, 0.0) / (math.sqrt(2.0) * L)  # r_0, the largest radius
    norms = np.linalg.norm(np.asarray(X, dtype=np.float64), axis=1)
    delta = gamma * growth * (offset + growth * (norms + reach))
    return np.where(finite, 2.0 * math.sqrt(2.0) * delta, 0.0)


def rounding_allowance(
    estimator, X, *, unit_roundoff: float | None = None, batch_size: int = 1024
) -> np.ndarray:
    r"""The allowance for floating-point rounding that a certificate adds to ``sqrt(2) L eps``.

    A point is certified at ``eps`` only when its computed logit margin exceeds
    ``sqrt(2) L eps + allowance``; :func:`certified_accuracy`,
    :func:`certified_radius` and :func:`make_certified_scorer` use this number.
    It is tiny for the float32 networks of the package (about ``1e-3`` with
    constrained blocks) but not zero: without it, a point whose margin sits
    within rounding of the threshold could be certified wrongly.

    Parameters
    ----------
    estimator : StableClassifier or Pipeline
        A fitted classifier with ``lipschitz_bound_`` whose ``model_`` is a chain
        of layers (as :func:`~stablekeras.models.lipschitz_bound` needs), or a
        pipeline ending in one (``X`` is then transformed first).
    X : array-like of shape (n_samples, n_features)
    unit_roundoff : float or None, default=None
        ``u`` of the arithmetic. ``None``: from the layers' compute dtype
        (``2**-24`` for float32, ``2**-11`` for float16, ``2**-8`` for bfloat16),
        and ``2**-11`` for float32 on a GPU with TensorFloat-32 matmuls enabled
        (TensorFlow's default on Ampere and later GPUs). ``0`` gives no allowance
        (exact arithmetic, the certificate of the chapter).
    batch_size : int, default=1024
        Points per forward pass (for the margins).

    Returns
    -------
    ndarray of shape (n_samples,)
        ``2 sqrt(2) delta(x)``, with ``delta`` the bound below; ``inf`` if
        ``N u >= 1``; 0 for a one-class model.

    See Also
    --------
    certified_accuracy, certified_radius

    Notes
    -----
    Notation: ``z(x)`` are the logits in exact arithmetic with the stored weights
    (the network that ``L`` bounds), ``ẑ(x)`` those computed in floating point,
    ``m`` the margin (top minus second logit), ``m̂ = m(ẑ(x))``, ``L`` the sound
    l2 Lipschitz bound of ``z`` and ``u`` the unit roundoff.

    *Proven.*

    1. The margin is ``sqrt(2)``-Lipschitz in l2: ``m(z) = max_i min_{j != i}
       (z_i - z_j)`` and each ``z_i - z_j`` is. So ``|m(ẑ) - m(z)| <= sqrt(2)
       ||ẑ - z||``. The margin of float32 logits is formed in float64, where the
       difference of two float32 numbers is exact.
    2. Let ``||ẑ(x') - z(x')|| <= delta`` for every ``x'`` within ``r_0`` of
       ``x``, and ``m̂(x) > sqrt(2) L eps + 2 sqrt(2) delta`` with ``eps <= r_0``.
       For the computed top class ``t`` and any ``j``, ``z_t(x) - z_j(x) >=
       ẑ_t - ẑ_j - sqrt(2) delta > sqrt(2) L eps + sqrt(2) delta``; over
       ``||x' - x|| < eps`` the difference loses at most ``sqrt(2) L eps``, so
       ``z_t(x') - z_j(x') > sqrt(2) delta`` and ``ẑ_t(x') - ẑ_j(x') > 0``. Both
       the exact network and its floating-point evaluation keep the label on
       the ball: hence the allowance ``2 sqrt(2) delta``, one ``sqrt(2) delta``
       for the rounding at ``x`` and one at ``x'``. We take ``r_0 = m̂ / (sqrt(2)
       L)``, beyond which nothing is ever certified, so one allowance per point
       serves every ``eps`` and the radius ``max(0, (m̂ - allowance) /
       (sqrt(2) L))`` agrees with the accuracy at every ``eps``.
    3. Propagation through the chain of layers ``g_K o ... o g_1`` with sound
       bounds ``L_k``: if layer ``k``, evaluated in floating point at its
       computed input ``v``, errs by ``e_k = ||ĝ_k(v) - g_k(v)||``, then by
       induction ``||ẑ - z|| <= sum_k (prod_{j > k} L_j) e_k <= Lambda sum_k
       e_k`` with ``Lambda = prod_k max(1, L_k)``.
    4. In the standard model ``fl(a op b) = (a op b)(1 + theta)``, ``|theta| <=
       u``, a dot product of length ``n`` summed in any order satisfies
       ``|fl(w^T v) - w^T v| <= gamma_n |w|^T |v|``, ``gamma_n = n u / (1 - n
       u)``, and ``gamma_a + gamma_b <= gamma_{a+b}`` (Higham, *Accuracy and
       Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, sections 3.1 and
       3.4). Chaining the operations of a layer (``Av + b``, the activation,
       ``A^T``, the step, the sum; ``S`` sub-steps of an ``s``-stage method)
       gives ``e_k <= gamma_{n_k}`` times the l2 norm of the same computation
       done on absolute values, with ``n_k = S s (sum over kernels of fan-in +
       fan-out, + 8)``; for layers without kernels, a window's size + 1 for
       average (or norm) pooling, 0 for exact ones (max pooling, reshapes, the
       isometric lift) and 4 for other elementwise functions.

    *Engineering bound (not proven).*

    5. We take ``e_k <= gamma_{n_k} R(x)`` with ``R(x) = rho_0 + beta + Lambda
       (||x|| + r_0)``: a bound on the l2 norm of every layer's output at every
       point of the ball (``rho_0`` the largest layer output at ``x = 0``,
       ``beta`` the largest bias norm; the outputs are ``Lambda``-Lipschitz in
       the input). This replaces the absolute values ``|W||v|`` of step 4 by
       the norm ``||v||``, which can be too small by the alignment factor
       ``|| |W| || / ||W||`` (up to ``(fan_in fan_out)^(1/4)``) and by the
       constant factors of a gradient step, whose inner vector ``Av + b`` is
       larger than ``v`` when ``||A|| > 1`` (``h L_s ||A||^2 <= 2`` scales it
       back). In exchange it keeps the worst-case growth ``gamma_N ~ N u``
       where rounding errors of independent signs grow like ``sqrt(N) u``
       (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019): a factor
       ``sqrt(N)``, 30 to 300 here, of room. The tests check the result on
       trained networks against a float64 evaluation of the same weights.

    So ``delta(x) = gamma_N Lambda R(x)`` with ``N = sum_k n_k``, and the
    allowance is ``2 sqrt(2) delta(x)``. The count assumes dot-product kernels
    (TensorFlow's CPU matrix products and direct or im2col convolutions); FFT
    or Winograd convolutions, which some GPU libraries pick, have other error
    constants and are not covered.

    Examples
    --------
    >>> from stablekeras import StableClassifier, datasets
    >>> X, y = datasets.load_dataset("digits")  # pixels in [0, 1]
    >>> clf = StableClassifier(epochs=1, random_state=0).fit(X[:200], y[:200])
    >>> allowance = rounding_allowance(clf, X[:5])
    >>> bool(((allowance > 0) & (allowance < 1e-2)).all())
    True
    >>> bool((rounding_allowance(clf, X[:5], unit_roundoff=0) == 0).all())
    True
    """
    est, X = fitted_classifier(estimator, X)
    L = lipschitz_of(est)
    margin = margins(predict_logits(est, X, batch_size))
    return allowance(est, X, margin, L, unit_roundoff)
