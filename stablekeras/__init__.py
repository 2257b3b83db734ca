"""stablekeras: neural networks that are stable by construction.

Keras 3 layers that implement non-expansive gradient-flow dynamics
(``x -> x - h A^T s(Ax + b)``, 1-Lipschitz when ``h L ||A||^2 <= 2``), wrapped in
scikit-learn estimators.
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from stablekeras import activations, constraints, integrators, layers, losses, models, spectral  # noqa: E402
from stablekeras.constraints import SpectralNorm  # noqa: E402
from stablekeras.estimators import StableClassifier, StableRegressor  # noqa: E402
from stablekeras.layers import (  # noqa: E402
    AntisymmetricDense,
    ContractiveConv2D,
    ContractiveDense,
    HamiltonianDense,
    NonExpansiveConv2D,
    NonExpansiveDense,
    ResidualConv2D,
    ResidualDense,
    SpectralConv2D,
    SpectralDense,
)
from stablekeras.losses import MulticlassHinge  # noqa: E402
from stablekeras.models import (  # noqa: E402
    build_nonexpansive_classifier,
    build_resnet_classifier,
    lipschitz_bound,
)

__version__ = "0.1.0"

__all__ = [
    "StableClassifier",
    "StableRegressor",
    "activations",
    "constraints",
    "integrators",
    "layers",
    "losses",
    "models",
    "spectral",
    "SpectralNorm",
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
    "MulticlassHinge",
    "build_nonexpansive_classifier",
    "build_resnet_classifier",
    "lipschitz_bound",
]
