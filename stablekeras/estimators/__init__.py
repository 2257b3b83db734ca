"""scikit-learn estimators wrapping the stable networks.

:class:`StableClassifier` and :class:`StableRegressor` follow scikit-learn's
conventions: ``__init__`` only stores flat hyperparameters, ``fit`` validates
them (``_parameter_constraints``) and the data before any training, learned
state ends in an underscore, and pickling saves the Keras model as ``.keras``
bytes. They work in pipelines, ``clone``, ``GridSearchCV(n_jobs=2)`` and
``cross_validate``.

The package holds one module per part: :mod:`~stablekeras.estimators.classifier`
and :mod:`~stablekeras.estimators.regressor` (the two estimators), over a shared
base (``_base``) and its fit options (``_parameters``, ``_fit_options``,
``_warm_start``, ``_distribution``, ``_dataset``).
"""

from stablekeras.estimators._parameters import RENAMED_PARAMETERS  # noqa: F401  (kept importable)
from stablekeras.estimators.classifier import StableClassifier
from stablekeras.estimators.regressor import StableRegressor

__all__ = ["StableClassifier", "StableRegressor"]
