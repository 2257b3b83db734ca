"""Explicit matrices of linear operators, for checks against an SVD.

The matrix of a linear map ``A`` on inputs of shape ``input_shape`` is built by
applying ``A`` to the identity basis (one basis tensor per batch entry), in
float64.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from stablekeras import spectral


def operator_matrix(apply, input_shape) -> np.ndarray:
    """The float64 matrix ``M`` (``out_dim x in_dim``) with ``M x = apply(x)``."""
    n = math.prod(input_shape)
    basis = tf.constant(np.eye(n).reshape((n, *input_shape)))
    out = np.asarray(apply(basis), dtype=np.float64)
    return out.reshape(n, -1).T


def conv_matrix(kernel, input_hw, strides=1, padding="same") -> np.ndarray:
    """The matrix of :func:`stablekeras.spectral.conv2d` on a ``(h, w, c_in)`` input."""
    kernel = tf.constant(np.asarray(kernel, dtype=np.float64))
    shape = (*input_hw, int(kernel.shape[2]))
    return operator_matrix(lambda x: spectral.conv2d(x, kernel, strides, padding), shape)


def spectral_norm(matrix) -> float:
    """Largest singular value, float64 SVD."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return float(np.linalg.svd(matrix, compute_uv=False)[0]) if matrix.size else 0.0
