"""Keras layers implementing stable dynamics, grouped by role.

* :mod:`~stablekeras.layers.linear`: linear maps with a sound norm bound, the lift
  into the flow and the projection out of it (spectral, isometric, orthogonal);
* :mod:`~stablekeras.layers.gradient_steps`: the gradient steps on convex
  potentials (non-expansive, contractive, orthogonal);
* :mod:`~stablekeras.layers.conservative`: conservative dynamics (antisymmetric,
  Hamiltonian);
* :mod:`~stablekeras.layers.baseline`: the unconstrained residual baseline.
"""

from stablekeras.layers.baseline import ResidualConv2D, ResidualDense
from stablekeras.layers.conservative import AntisymmetricDense, HamiltonianDense
from stablekeras.layers.gradient_steps import (
    ContractiveConv2D,
    ContractiveDense,
    NonExpansiveConv2D,
    NonExpansiveDense,
    OrthogonalNonExpansiveDense,
    SubstepCapWarning,
    SubstepSchedule,
)
from stablekeras.layers.linear import (
    IsometricLift,
    OrthogonalDense,
    SpectralConv2D,
    SpectralDense,
)

__all__ = [
    "NonExpansiveDense",
    "NonExpansiveConv2D",
    "ContractiveDense",
    "ContractiveConv2D",
    "SpectralDense",
    "SpectralConv2D",
    "ResidualDense",
    "ResidualConv2D",
    "AntisymmetricDense",
    "HamiltonianDense",
    "IsometricLift",
    "OrthogonalDense",
    "OrthogonalNonExpansiveDense",
    "SubstepSchedule",
    "SubstepCapWarning",
]
