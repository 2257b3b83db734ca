"""Keras layers implementing stable dynamics, one family per module."""

from stablekeras.layers.dynamics import AntisymmetricDense, HamiltonianDense
from stablekeras.layers.lipschitz import SpectralConv2D, SpectralDense
from stablekeras.layers.nonexpansive import (
    ContractiveConv2D,
    ContractiveDense,
    NonExpansiveConv2D,
    NonExpansiveDense,
    SubstepCapWarning,
    SubstepSchedule,
)
from stablekeras.layers.orthogonal import (
    IsometricLift,
    OrthogonalDense,
    OrthogonalNonExpansiveDense,
)
from stablekeras.layers.residual import ResidualConv2D, ResidualDense

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
