"""stablekeras: neural networks that are stable by construction.

Keras 3 layers that implement non-expansive gradient-flow dynamics
(``x -> x - h A^T s(Ax + b)``, 1-Lipschitz when ``h L ||A||^2 <= 2``), wrapped in
scikit-learn estimators.

The headline names below are imported on first use (PEP 562): ``import
stablekeras`` and ``stablekeras.__version__`` do not import TensorFlow, so the
command line answers ``--help`` at once; ``from stablekeras import
StableClassifier`` and ``stablekeras.layers`` import what they need.
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
from typing import TYPE_CHECKING

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"

#: Submodules reachable as attributes of the package (``stablekeras.layers``, ...), each
#: imported on first access; the first seven are also in ``__all__``.
_SUBMODULES = (
    "activations",
    "constraints",
    "integrators",
    "layers",
    "losses",
    "models",
    "spectral",
    "bounds",
    "estimators",
    "presets",
    "robustness",
    "datasets",
    "export",
    "demo",
    "cli",
)

#: Headline names -> the module that defines them.
_HEADLINES = {
    "StableClassifier": "stablekeras.estimators",
    "StableRegressor": "stablekeras.estimators",
    "SpectralNorm": "stablekeras.constraints",
    "NonExpansiveDense": "stablekeras.layers",
    "NonExpansiveConv2D": "stablekeras.layers",
    "ContractiveDense": "stablekeras.layers",
    "ContractiveConv2D": "stablekeras.layers",
    "SpectralDense": "stablekeras.layers",
    "SpectralConv2D": "stablekeras.layers",
    "ResidualDense": "stablekeras.layers",
    "ResidualConv2D": "stablekeras.layers",
    "AntisymmetricDense": "stablekeras.layers",
    "HamiltonianDense": "stablekeras.layers",
    "MulticlassHinge": "stablekeras.losses",
    "build_nonexpansive_classifier": "stablekeras.models",
    "build_resnet_classifier": "stablekeras.models",
    "lipschitz_bound": "stablekeras.models",
}

#: The submodules named in ``__all__`` and the headline names.
__all__ = ["StableClassifier", "StableRegressor", *_SUBMODULES[:7]] + [
    name for name in _HEADLINES if not name.startswith("Stable")
]


def __getattr__(name: str):
    """Import a headline name or a submodule on first access (PEP 562)."""
    if name in _SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    module = _HEADLINES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static readers and type checkers see
    from stablekeras import (  # noqa: F401
        activations,
        constraints,
        integrators,
        layers,
        losses,
        models,
        spectral,
    )
    from stablekeras.constraints import SpectralNorm  # noqa: F401
    from stablekeras.estimators import StableClassifier, StableRegressor  # noqa: F401
    from stablekeras.layers import (  # noqa: F401
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
    from stablekeras.losses import MulticlassHinge  # noqa: F401
    from stablekeras.models import (  # noqa: F401
        build_nonexpansive_classifier,
        build_resnet_classifier,
        lipschitz_bound,
    )
