"""The two ways a convolutional layer computes A^T give the same exact adjoint."""

import numpy as np
import pytest

from stablekeras.layers import NonExpansiveConv2D
from stablekeras.layers._operators import ConvOperator


@pytest.mark.parametrize(
    "kernel_size, strides, padding",
    [(3, 1, "same"), (5, 1, "same"), (3, 2, "same"), (4, 1, "same"), (3, 1, "valid")],
)
def test_flipped_and_transposed_adjoints_agree(kernel_size, strides, padding, monkeypatch):
    rng = np.random.default_rng(0)
    layer = NonExpansiveConv2D(6, kernel_size, strides=strides, padding=padding)
    x = rng.normal(size=(2, 9, 9, 4)).astype(np.float32)
    layer(x)
    z = rng.normal(size=layer._apply(x).shape).astype(np.float32)
    adjoints = {}
    for method in ("transpose", "flipped"):
        monkeypatch.setattr(ConvOperator, "adjoint_method", method)
        adjoints[method] = layer._adjoint(z).numpy().astype(np.float64)
    np.testing.assert_allclose(adjoints["flipped"], adjoints["transpose"], rtol=1e-5, atol=1e-5)
    lhs = np.sum(layer._apply(x).numpy().astype(np.float64) * z)
    rhs = np.sum(x.astype(np.float64) * adjoints["flipped"])
    assert abs(lhs - rhs) <= 1e-5 * max(abs(lhs), 1.0)
