"""Operator norms of dense and 2-D convolution operators.

Three kinds of numbers live here, and they must not be confused:

* :func:`power_iteration` (warm-started) converges to ``||A||`` **from below**:
  cheap, accurate once converged, but never a certificate.
* :func:`dense_norm` and :func:`conv2d_norm_bound` are **sound upper bounds**
  computed in float64 on the host: the exact SVD for a dense kernel; for a
  convolution, the norm of the circular convolution on a grid of at most
  ``n + k - 1`` (rounded up to a multiple of the stride) that embeds the
  zero-padded one (Sedghi, Gupta and Long, ICLR 2019). Stride ``s`` is handled
  exactly by the polyphase decomposition: a stride-``s`` circular convolution on
  an ``N x N`` grid is a stride-1 convolution on an ``N/s x N/s`` grid with
  ``s^2`` times the input channels. A small operator gets the exact SVD of its
  explicit matrix instead.
* :func:`dense_gram_bound` and :func:`conv2d_gram_bound` are sound upper bounds
  computed in-graph (TensorFlow ops, XLA friendly, about a millisecond) by Gram
  iteration (Delattre, Barthelemy, Araujo and Allauzen, ICML 2023): for any
  matrix ``W``, ``||W||_2^(2^t) <= ||G_t||_F`` with ``G_0 = W`` and
  ``G_{t+1} = G_t^H G_t``. The kernel constraints use them, so the guarantee
  holds after every optimizer step without a host round trip.

The convolution ``A`` is ``tf.nn.conv2d`` without bias and its exact adjoint
``A^T`` the transposed convolution with the same kernel, strides and padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from stablekeras import _checks

__all__ = [
    "bjorck_orthonormalize",
    "conv2d",
    "conv2d_adjoint",
    "conv2d_output_shape",
    "power_iteration",
    "dense_power_iteration",
    "conv2d_power_iteration",
    "dense_norm",
    "conv2d_norm_bound",
    "dense_gram_bound",
    "conv2d_gram_bound",
    "dense_aol_scales",
    "conv2d_aol_scales",
]


def conv2d_output_shape(
    input_hw: Sequence[int], kernel_size, strides=1, padding: str = "same"
) -> tuple[int, int]:
    """Spatial output shape of ``conv2d`` on an input of spatial shape ``input_hw``."""
    kh, kw = _checks.pair(kernel_size, "kernel_size")
    sh, sw = _checks.pair(strides, "strides")
    h, w = (int(v) for v in input_hw)
    if _checks.padding(padding) == "SAME":
        return (-(-h // sh), -(-w // sw))
    return ((h - kh) // sh + 1, (w - kw) // sw + 1)


def conv2d(x, kernel, strides=1, padding: str = "same"):
    """The convolution operator ``A x`` (NHWC, no bias).

    ``kernel`` has shape ``(kh, kw, c_in, c_out)``.
    """
    return tf.nn.conv2d(
        x, kernel, strides=_checks.pair(strides, "strides"), padding=_checks.padding(padding)
    )


def conv2d_adjoint(z, kernel, input_shape, strides=1, padding: str = "same"):
    """The exact adjoint ``A^T z`` of :func:`conv2d`: the transposed convolution.

    ``input_shape`` is the shape of the input of ``A`` (its batch entry is taken
    from ``z``); it fixes the output padding that stride > 1 needs.
    """
    z = tf.convert_to_tensor(z)
    h, w, c = (int(v) for v in tuple(input_shape)[-3:])
    out_shape = tf.stack([tf.shape(z)[0], h, w, c])
    return tf.nn.conv2d_transpose(
        z,
        kernel,
        output_shape=out_shape,
        strides=_checks.pair(strides, "strides"),
        padding=_checks.padding(padding),
    )


def power_iteration(apply: Callable, adjoint: Callable, u, iterations: int = 1, eps: float = 1e-12):
    """Warm-started power iteration on ``A^T A``.

    Parameters
    ----------
    apply, adjoint : callables
        ``u -> A u`` and ``v -> A^T v``.
    u : tensor
        The previous iterate (any non-zero start the first time).
    iterations : int
        Iterations to run; one per training step suffices once converged.

    Returns
    -------
    sigma : scalar tensor
        ``||A u|| / ||u||`` for the new iterate: a lower bound of ``||A||``.
    u : tensor
        The new unit-norm iterate, to pass back next time.
    """
    u = u / (tf.norm(u) + eps)
    for _ in range(int(iterations)):
        v = adjoint(apply(u))
        u = v / (tf.norm(v) + eps)
    return tf.norm(apply(u)), u


def dense_power_iteration(kernel, u, iterations: int = 1):
    """:func:`power_iteration` for ``A x = x @ kernel`` (``u`` has shape ``(d_in,)``)."""
    kernel = tf.convert_to_tensor(kernel)
    return power_iteration(
        lambda v: tf.linalg.matvec(kernel, v, transpose_a=True),
        lambda v: tf.linalg.matvec(kernel, v),
        u,
        iterations,
    )


def conv2d_power_iteration(kernel, u, strides=1, padding: str = "same", iterations: int = 1):
    """:func:`power_iteration` for :func:`conv2d` (``u`` has shape ``(1, h, w, c_in)``)."""
    shape = tuple(u.shape)
    return power_iteration(
        lambda v: conv2d(v, kernel, strides, padding),
        lambda v: conv2d_adjoint(v, kernel, shape, strides, padding),
        u,
        iterations,
    )


def dense_norm(kernel) -> float:
    """The exact spectral norm of a dense kernel (float64 SVD): a sound bound."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"Expected a 2-D dense kernel. Received a kernel of shape {k.shape}")
    return float(np.linalg.svd(k, compute_uv=False)[0]) if k.size else 0.0


#: Convolutions whose explicit matrix has at most this many rows or columns are
#: bounded through that matrix instead (exactly on the host, by Gram iteration
#: in-graph). The circular embedding is loose when the output grid is small
#: compared with the kernel ("valid" padding, large strides); the matrix is not.
EXPLICIT_MAX_DIM = 256


def _axis_grid(n: int, k: int, s: int, padding: str) -> int:
    """Smallest circular grid (polyphase units) that embeds one axis of :func:`conv2d`.

    In polyphase form output ``i`` reads phase ``r`` at ``m = i + q`` for the taps
    ``q < ceil(k / s)``: ``R = n_out + ceil(k / s) - 1`` read positions, of which
    phase ``r`` holds real inputs on ``[lo_r, hi_r]`` and zero padding elsewhere.
    On a grid of ``M`` the circular convolution agrees with the zero-padded one if no
    real position aliases another read position: ``R - M <= lo_r`` and ``hi_r < M``.
    The operator is then a restriction of the circular one, so its norm is smaller.
    """
    if padding == "SAME":
        n_out = -(-n // s)
        pad = max((n_out - 1) * s + k - n, 0) // 2
    else:
        n_out, pad = (n - k) // s + 1, 0
    q = -(-k // s)
    reads = n_out + q - 1
    grid = max(n_out, q, 1)
    for r in range(s):
        lo = max(-(-(pad - r) // s), 0)
        hi = min((n - 1 + pad - r) // s, reads - 1)
        if lo <= hi:
            grid = max(grid, hi + 1, reads - lo)
    return grid


def _circular_grid(input_hw, kernel_hw, strides, padding) -> tuple[int, int]:
    """Grid (in polyphase units) on which the circular convolution embeds the linear one."""
    padding = _checks.padding(padding)
    return tuple(
        _axis_grid(int(n), int(k), s, padding) for n, k, s in zip(input_hw, kernel_hw, strides)
    )


def _explicit_dims(kernel_shape, input_hw, strides, padding) -> tuple[int, int]:
    """Input and output dimensions of :func:`conv2d` as a matrix."""
    kh, kw, cin, cout = (int(v) for v in kernel_shape)
    oh, ow = conv2d_output_shape(input_hw, (kh, kw), strides, padding)
    return int(input_hw[0]) * int(input_hw[1]) * cin, max(oh, 0) * max(ow, 0) * cout


def _explicit_matrix(kernel, input_hw, strides, padding):
    """The matrix of :func:`conv2d` on ``input_hw``, with its shorter side first.

    Made by applying the operator (or its adjoint, whichever has the smaller
    domain) to the identity basis.
    """
    kh, kw, cin, cout = (int(v) for v in kernel.shape)
    h, w = (int(v) for v in input_hw)
    oh, ow = conv2d_output_shape((h, w), (kh, kw), strides, padding)
    d_in, d_out = _explicit_dims(kernel.shape, (h, w), strides, padding)
    if d_out <= d_in:
        basis = tf.reshape(tf.eye(d_out, dtype=kernel.dtype), (d_out, oh, ow, cout))
        rows = conv2d_adjoint(basis, kernel, (h, w, cin), strides, padding)
        return tf.reshape(rows, (d_out, d_in))
    basis = tf.reshape(tf.eye(d_in, dtype=kernel.dtype), (d_in, h, w, cin))
    return tf.reshape(conv2d(basis, kernel, strides, padding), (d_in, d_out))


def _explicit_is_small(kernel_shape, input_hw, strides, padding) -> bool:
    d_in, d_out = _explicit_dims(kernel_shape, input_hw, strides, padding)
    return 0 < min(d_in, d_out) <= EXPLICIT_MAX_DIM


def _polyphase(kernel, strides, xp):
    """Rewrite a stride-``s`` kernel as a stride-1 kernel on ``s^2`` times the channels."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    qh, qw = -(-kh // sh), -(-kw // sw)
    if (sh, sw) == (1, 1):
        return kernel
    pad = [[0, qh * sh - kh], [0, qw * sw - kw], [0, 0], [0, 0]]
    k = xp.pad(kernel, pad)
    k = xp.reshape(k, (qh, sh, qw, sw, cin, cout))
    k = xp.transpose(k, (0, 2, 1, 3, 4, 5))
    return xp.reshape(k, (qh, qw, sh * sw * cin, cout))


def conv2d_norm_bound(kernel, input_hw: Sequence[int], strides=1, padding: str = "same") -> float:
    """A sound upper bound of the norm of :func:`conv2d` on inputs of shape ``input_hw``.

    The zero-padded convolution is a restriction (input embedding, output
    cropping and subsampling) of the circular one on the grid of
    :func:`_axis_grid` (at most ``n + k - 1``, rounded up to the stride), whose norm
    is computed exactly (float64) as the largest singular value of its frequency
    response. Valid for both paddings. A small operator (at most
    ``EXPLICIT_MAX_DIM`` rows or columns) gets the exact norm of its explicit
    matrix (float64 SVD) instead.
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 4:
        raise ValueError(f"Expected a 4-D convolution kernel. Received a kernel of shape {k.shape}")
    strides = _checks.pair(strides, "strides")
    _checks.padding(padding)
    if min(_explicit_dims(k.shape, input_hw, strides, padding)) == 0:
        return 0.0
    if _explicit_is_small(k.shape, input_hw, strides, padding):
        with tf.device("/CPU:0"):
            m = _explicit_matrix(tf.constant(k), input_hw, strides, padding).numpy()
        return float(np.linalg.svd(m, compute_uv=False)[0])
    p = _polyphase(k, strides, np)
    grid = _circular_grid(input_hw, k.shape[:2], strides, padding)
    resp = np.fft.fft2(p, s=grid, axes=(0, 1))  # (M1, M2, c_in', c_out)
    return float(np.linalg.svd(resp, compute_uv=False).max())


def _frobenius(g):
    """Frobenius norms of a batch of (real or complex) matrices."""
    sq = tf.math.real(g * tf.math.conj(g)) if g.dtype.is_complex else tf.square(g)
    return tf.maximum(tf.sqrt(tf.reduce_sum(sq, axis=(-2, -1))), 1e-30)


def _gram_bound(m, iterations: int):
    """Batched Gram iteration: a sound bound of the largest ``||m_i||_2`` over the batch."""
    if m.shape[-1] > m.shape[-2]:
        g = tf.matmul(m, m, adjoint_b=True)
    else:
        g = tf.matmul(m, m, adjoint_a=True)
    log_scale = tf.zeros(tf.shape(g)[:-2], dtype=tf.float32)
    for _ in range(int(iterations)):
        fro = _frobenius(g)
        g = g / tf.cast(fro[..., None, None], g.dtype)
        log_scale = 2.0 * (log_scale + tf.math.log(fro))
        g = tf.matmul(g, g, adjoint_a=True)
    # ||m||^2 <= (||G_t||_F scale) ** (1 / 2^t)
    log_sq = (log_scale + tf.math.log(_frobenius(g))) / (2.0**iterations)
    return tf.exp(0.5 * tf.reduce_max(log_sq))


def dense_gram_bound(kernel, iterations: int = 6):
    """In-graph sound upper bound of ``||kernel||_2`` by Gram iteration (float32).

    The bound exceeds the norm by at most a factor ``rank ** (1 / 2^(t+1))``
    with ``t = iterations + 1`` (1.6% for rank 64 and the default 6).
    """
    k = tf.cast(tf.convert_to_tensor(kernel), tf.float32)
    return _gram_bound(k, iterations)


def conv2d_gram_bound(kernel, input_hw, strides=1, padding: str = "same", iterations: int = 6):
    """In-graph sound upper bound of the norm of :func:`conv2d` (see :func:`conv2d_norm_bound`).

    The frequency response of the circular embedding is computed with an FFT,
    and the largest singular value over the frequencies is bounded by batched
    Gram iteration. A small operator (at most ``EXPLICIT_MAX_DIM`` rows or
    columns) is bounded instead by Gram iteration on its explicit matrix, which
    is within ``gram_overestimate_factor`` of its norm.
    """
    strides = _checks.pair(strides, "strides")
    _checks.padding(padding)
    k = tf.cast(tf.convert_to_tensor(kernel), tf.float32)
    if min(_explicit_dims(k.shape, input_hw, strides, padding)) == 0:
        return tf.constant(0.0)
    if _explicit_is_small(k.shape, input_hw, strides, padding):
        return _gram_bound(_explicit_matrix(k, input_hw, strides, padding), iterations)
    p = _polyphase(k, strides, _TFNumpy)
    qh, qw = int(p.shape[0]), int(p.shape[1])
    m1, m2 = _circular_grid(input_hw, tuple(k.shape[:2]), strides, padding)
    p = tf.transpose(p, (3, 2, 0, 1))  # (c_out, c_in', qh, qw)
    p = tf.pad(p, [[0, 0], [0, 0], [0, m1 - qh], [0, m2 - qw]])
    resp = tf.signal.fft2d(tf.cast(p, tf.complex64))  # (c_out, c_in', M1, M2)
    resp = tf.transpose(resp, (2, 3, 0, 1))
    return _gram_bound(resp, iterations)


def dense_aol_scales(kernel, eps: float = 1e-12):
    """In-graph AOL scales ``d`` with ``||diag(d) A||_2 <= 1`` for ``A x = x @ kernel``.

    ``A`` maps ``R^d`` to ``R^units`` (``kernel`` has shape ``(d, units)``), and
    ``M = A A^T = kernel^T kernel`` is its ``units x units`` Gram matrix. With
    ``d_i = (sum_j |M_ij|)^(-1/2)`` the Schur test gives
    ``||D M D||_2 <= max_i sum_j d_i |M_ij| d_j <= 1`` (the symmetric Schur test
    with weights ``1/d``), so ``||D A||_2 <= 1`` with no iteration: a sound bound
    (Prach and Lampert, "Almost-orthogonal layers for efficient general-purpose
    Lipschitz networks", ECCV 2022), exact (``D A`` orthonormal rows) when the
    rows of ``A`` are orthogonal.
    """
    k = tf.convert_to_tensor(kernel)
    m = tf.abs(tf.matmul(k, k, transpose_a=True))
    return tf.math.rsqrt(tf.maximum(tf.reduce_sum(m, axis=1), eps))


def conv2d_aol_scales(kernel, strides=1, eps: float = 1e-12):
    """In-graph AOL scales ``d`` (one per output channel) with ``||diag(d) A||_2 <= 1``.

    ``A`` is :func:`conv2d` with ``kernel`` of shape ``(kh, kw, c_in, c_out)``,
    any strides and either padding. Whatever the padding and stride, ``A`` is a
    compression ``S R C P`` of the stride-1 convolution ``C`` of the whole plane
    (``P`` embeds the input with zeros, ``R`` keeps the computed outputs, ``S``
    subsamples), and ``diag(d)`` commutes with ``R`` and ``S``, so
    ``||diag(d) A|| <= ||diag(d) C||``. ``C C^T`` is the convolution whose
    ``c_out x c_out`` kernel is the cross-correlation of ``kernel`` with itself
    (``(2 kh - 1) x (2 kw - 1)`` offsets); its absolute row sums are the same at
    every position, and with ``d_i = (sum_{j, offsets} |(C C^T)_{ij}|)^(-1/2)``
    the Schur test bounds ``||D C C^T D||_2`` by 1 (Prach and Lampert, ECCV 2022,
    for convolutions; SLL, Araujo et al., ICLR 2023, with the weights ``q = 1``).
    Sound with no power iteration, and cheap: one small convolution of the
    kernel with itself.
    """
    _checks.pair(strides, "strides")  # any stride: see above
    k = tf.convert_to_tensor(kernel)
    kh, kw = int(k.shape[0]), int(k.shape[1])
    # the c_out filters as a batch of (kh, kw, c_in) images, padded to the full correlation
    images = tf.pad(
        tf.transpose(k, (3, 0, 1, 2)), [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]]
    )
    gram = tf.nn.conv2d(images, k, strides=1, padding="VALID")  # (c_out, 2kh-1, 2kw-1, c_out)
    return tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.abs(gram), axis=(1, 2, 3)), eps))


class _TFNumpy:
    """The few numpy functions :func:`_polyphase` needs, in TensorFlow."""

    pad = staticmethod(tf.pad)
    reshape = staticmethod(tf.reshape)
    transpose = staticmethod(tf.transpose)


def gram_overestimate_factor(rank: int, iterations: int = 6) -> float:
    """The worst-case ratio of the Gram bound to the true norm: ``rank ** 2^-(t+1)``."""
    return float(rank) ** (1.0 / 2 ** (iterations + 2)) if rank > 0 else 1.0


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

    Björck and Bowie (1971): with ``W_0 = V / c`` for a ``c >= ||V||_2``,
    ``W_{k+1} = W_k (3 I - W_k^T W_k) / 2`` maps every singular value ``sigma`` of
    ``W_k`` to ``sigma (3 - sigma^2) / 2``, which is increasing on ``[0, 1]``, maps
    ``[0, 1]`` into ``[0, 1]`` and has the attracting fixed point 1. So every
    iterate has norm at most 1 (in exact arithmetic) and converges to the
    orthogonal polar factor of ``V``. ``c^2`` is the Gram-iteration bound of
    ``||V^T V||_2`` (:func:`dense_gram_bound`), so the largest singular value
    starts close to 1 and a few iterations suffice.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    >>> q = bjorck_orthonormalize(v, 20)
    >>> bool(np.allclose(np.linalg.svd(q.numpy(), compute_uv=False), 1.0, atol=1e-4))
    True
    """
    w = tf.convert_to_tensor(kernel)
    tall = w.shape[0] >= w.shape[1]
    if not tall:
        w = tf.transpose(w)
    # c^2 >= ||w^T w||_2 = ||w||_2^2 by Gram iteration (sound, within a few percent):
    # the iterations then start with the largest singular value close to 1.
    gram = tf.matmul(w, w, transpose_a=True)
    scale = tf.stop_gradient(dense_gram_bound(gram))
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
