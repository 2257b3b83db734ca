"""Explicit Runge-Kutta steps and their circle-contractivity radius.

A step ``x -> x + h sum_i b_i k_i`` of an explicit Runge-Kutta method applied to
``x' = F(x)``, with ``F = -grad V`` for a convex, ``nu``-smooth potential V, is
non-expansive when ``h * nu <= 2 * r``, where ``r`` is the method's
circle-contractivity radius (Dahlquist and Jeltsch). Explicit Euler has r = 1;
following the predecessor paper (Sherry et al., Physica D 2024) Heun and the
classical RK4 are used with r = 1 as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Integrator", "EULER", "HEUN", "RK4", "get"]


@dataclass(frozen=True)
class Integrator:
    """An explicit Runge-Kutta method in Butcher form.

    Attributes
    ----------
    name : str
        ``"euler"``, ``"heun"`` or ``"rk4"``.
    radius : float
        The circle-contractivity radius r used in the condition ``h nu <= 2 r``.
    a : tuple of tuples
        The strictly lower-triangular Butcher matrix.
    b : tuple
        The weights.
    """

    name: str
    radius: float
    a: tuple
    b: tuple

    @property
    def stages(self) -> int:
        return len(self.b)

    def step(self, f: Callable, x, h):
        """One step ``x_{n+1}`` of size ``h`` for ``x' = f(x)``."""
        ks = []
        for i in range(self.stages):
            xi = x
            for j, aij in enumerate(self.a[i]):
                if aij:
                    xi = xi + (h * aij) * ks[j]
            ks.append(f(xi))
        out = x
        for bi, k in zip(self.b, ks):
            out = out + (h * bi) * k
        return out

    def lipschitz_growth(self, z: float) -> float:
        """A sound bound on the Lipschitz constant of one step when ``h Lip(f) = z``.

        Each stage is Lipschitz with at most ``1 + z sum_j |a_ij| * stage_j``; the
        result is the polynomial with absolute coefficients, a bound that holds for
        any ``f``, not only gradient fields.
        """
        stage = []
        for i in range(self.stages):
            stage.append(1.0 + z * sum(abs(aij) * stage[j] for j, aij in enumerate(self.a[i])))
        return 1.0 + z * sum(abs(bi) * s for bi, s in zip(self.b, stage))


EULER = Integrator("euler", 1.0, ((),), (1.0,))
HEUN = Integrator("heun", 1.0, ((), (1.0,)), (0.5, 0.5))
RK4 = Integrator(
    "rk4",
    1.0,
    ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    (1 / 6, 1 / 3, 1 / 3, 1 / 6),
)
_BY_NAME = {m.name: m for m in (EULER, HEUN, RK4)}


def get(identifier) -> Integrator:
    """Return the integrator named ``identifier`` (``"euler"``, ``"heun"``, ``"rk4"``).

    Examples
    --------
    >>> get("rk4").radius
    1.0
    """
    if isinstance(identifier, Integrator):
        return identifier
    key = str(identifier).lower()
    if key not in _BY_NAME:
        raise ValueError(
            f"Received an invalid value for `integrator`, expected one of "
            f"{sorted(_BY_NAME)}. Received: integrator={identifier!r}"
        )
    return _BY_NAME[key]
