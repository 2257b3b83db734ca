"""Runge-Kutta steps: Butcher tableaux, stability polynomials, and the radius r = 1.

The layers rely on: a step of size h of x' = -grad V (V convex, grad V nu-Lipschitz)
is non-expansive when h nu <= 2 r. For the layer's vector field
-A^T s(Ax + b) the step's Jacobian is built from the stage Jacobians
-A^T D_i A (D_i diagonal, 0 <= D_i <= L_s), and the checks below search those.
"""

import itertools
import math

import numpy as np
import pytest

from stablekeras import integrators

METHODS = [integrators.EULER, integrators.HEUN, integrators.RK4]


def _step_matrix(method, stage_jacobians, h):
    """Jacobian of one step when stage i sees the (constant) Jacobian stage_jacobians[i]."""
    d = stage_jacobians[0].shape[0]
    eye = np.eye(d)
    dks = []
    for i in range(method.stages):
        dxi = eye.copy()
        for j, aij in enumerate(method.a[i]):
            if aij:
                dxi = dxi + h * aij * dks[j]
        dks.append(stage_jacobians[i] @ dxi)
    return eye + h * sum(bi * dk for bi, dk in zip(method.b, dks))


def test_lookup():
    assert integrators.get("RK4") is integrators.RK4
    assert integrators.get(integrators.HEUN) is integrators.HEUN
    assert [m.stages for m in METHODS] == [1, 2, 4]
    assert all(m.radius == 1.0 for m in METHODS)


@pytest.mark.parametrize("bad", ["rk45", "", None, 3])
def test_unknown_integrator_is_rejected(bad):
    with pytest.raises(ValueError, match=f"integrator={bad!r}"):
        integrators.get(bad)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_linear_step_is_the_stability_polynomial(method):
    z = np.linspace(-3, 1, 9)
    got = np.array([method.step(lambda x, z=zi: z * x, 1.0, 1.0) for zi in z])
    expected = sum(z**k / math.factorial(k) for k in range(method.stages + 1))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "method, order",
    [(integrators.EULER, 1), (integrators.HEUN, 2), (integrators.RK4, 4)],
    ids=["euler", "heun", "rk4"],
)
def test_convergence_order(method, order):
    """x' = cos(x) from x(0) = 0.3 to t = 1: the error falls like h^order."""

    def solve(n):
        x = 0.3
        for _ in range(n):
            x = method.step(np.cos, x, 1.0 / n)
        return x

    exact = solve(4096) if order == 1 else solve(2048)
    errors = [abs(solve(n) - exact) for n in (8, 16)]
    assert math.log2(errors[0] / errors[1]) == pytest.approx(order, abs=0.35)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_lipschitz_growth_bounds_any_linear_field(method):
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.normal(size=(4, 4))
        h = rng.uniform(0.05, 2.0)
        z = h * np.linalg.norm(m, 2)
        step = _step_matrix(method, [m] * method.stages, h)
        assert np.linalg.norm(step, 2) <= method.lipschitz_growth(z) * (1 + 1e-12)
    assert method.lipschitz_growth(0.0) == 1.0
    # for a single linear field the absolute-coefficient polynomial is the Taylor one
    z = 0.7
    expected = sum(z**k / math.factorial(k) for k in range(method.stages + 1))
    assert method.lipschitz_growth(z) == pytest.approx(expected)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_radius_one_is_non_expansive_for_gradient_fields(method):
    """h nu <= 2 r: every stage Jacobian -A^T D_i A with 0 <= D_i <= 1 and h ||A||^2 = 2.

    The step Jacobian is affine in each D_i, so its norm is largest at a vertex
    D_i in {0, 1}^m: search all vertex patterns for random A.
    """
    rng = np.random.default_rng(1)
    m, d = 3, 3
    patterns = [np.diag(p) for p in itertools.product([0.0, 1.0], repeat=m)]
    worst = 0.0
    for _ in range(3 if method.stages == 4 else 12):
        a = rng.normal(size=(m, d))
        a *= math.sqrt(2.0 * method.radius) / np.linalg.norm(a, 2)  # h = 1, L_s = 1
        stages = [-a.T @ p @ a for p in patterns]
        for idx in itertools.product(range(len(stages)), repeat=method.stages):
            jac = _step_matrix(method, [stages[i] for i in idx], 1.0)
            worst = max(worst, np.linalg.norm(jac, 2))
    assert worst <= 1.0 + 1e-9


@pytest.mark.parametrize("method", [integrators.EULER, integrators.HEUN], ids=lambda m: m.name)
def test_radius_is_not_slack(method):
    """Past h nu = 2 r a linear gradient field x' = -nu x already expands."""
    z = -2.4 * method.radius
    assert abs(method.step(lambda x: z * x, 1.0, 1.0)) > 1.0
