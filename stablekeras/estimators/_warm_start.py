"""``warm_start=True``: a second fit continues the fitted network, or refuses by name."""

from __future__ import annotations

import contextlib
import copy

import joblib
import numpy as np

#: Fitted attributes that a warm-started fit keeps (and restores if it refuses).
WARM_ATTRIBUTES = (
    "n_features_in_",
    "feature_names_in_",
    "classes_",
    "n_outputs_",
    "y_ndim_",
    "_y_offset",
    "_y_scale",
)


def _same_value(a, b) -> bool:
    """Whether a parameter kept its value (also for arrays and unpickled partials)."""
    if a is b:
        return True
    try:
        if bool(a == b):
            return True
    except Exception:  # arrays, objects whose == is not a truth value
        pass
    try:
        return joblib.hash(a) == joblib.hash(b)
    except Exception:  # unpicklable (a lambda): only identity counts
        return False


class WarmStartMixin:
    """The warm start of the estimators: what it keeps, what it checks, how it restores."""

    def _architecture_params(self):
        """The parameters that shape the network, as the fit that built it saw them."""
        return {
            k: copy.deepcopy(v) if isinstance(v, dict | list) else v
            for k, v in self.get_params(deep=False).items()
            if k not in self._TRAINING_PARAMS
        }

    def _warm_start_snapshot(self):
        """The fitted state a warm start keeps, or None when this fit builds a new network.

        Refuses (before anything is changed) a warm start whose network
        parameters differ from those the fitted network was built with.
        """
        if not (self.warm_start and hasattr(self, "model_")):
            return None
        built = getattr(self, "_architecture", {})
        changed = [
            f"{k}={built[k]!r} -> {getattr(self, k)!r}"
            for k in built
            if not _same_value(built[k], getattr(self, k))
        ]
        if changed:
            raise ValueError(
                "warm_start=True continues the fitted network, but parameters that shape it "
                f"changed: {', '.join(changed)}. Restore them, or set warm_start=False to "
                "build a new network"
            )
        return {k: getattr(self, k) for k in WARM_ATTRIBUTES if hasattr(self, k)}

    @contextlib.contextmanager
    def _warm_start_guard(self, previous):
        """Around reading the data of a warm start: they must have the fitted features and
        classes (outputs). On a refusal, or any error, the fitted state is restored, so a
        failed fit leaves the estimator as it was.
        """
        if previous is None:
            yield
            return
        try:
            yield
            self._check_warm_start(previous)
        except BaseException:
            self._restore(previous)
            raise

    def _restore(self, previous):
        for k in WARM_ATTRIBUTES:
            if k in previous:
                setattr(self, k, previous[k])
            elif hasattr(self, k):
                delattr(self, k)

    def _check_warm_start(self, previous):
        """The data of a warm start must have the fitted features and classes (outputs)."""
        changed = []
        if self.n_features_in_ != previous["n_features_in_"]:
            changed.append(
                f"the number of features changed: fitted on n_features_in_="
                f"{previous['n_features_in_']}, X has {self.n_features_in_}"
            )
        if "classes_" in previous and not (
            len(self.classes_) == len(previous["classes_"])
            and np.array_equal(self.classes_, previous["classes_"])
        ):
            changed.append(
                f"the classes changed: fitted on {previous['classes_'].tolist()}, "
                f"y has {self.classes_.tolist()}"
            )
        if "n_outputs_" in previous and self.n_outputs_ != previous["n_outputs_"]:
            changed.append(
                f"the number of outputs changed: fitted on n_outputs_={previous['n_outputs_']}, "
                f"y has {self.n_outputs_}"
            )
        # the target standardisation is part of the fitted network (the regressor's
        # output layer): it stays; so do feature names unless refused below
        for k in ("_y_offset", "_y_scale"):
            if k in previous:
                setattr(self, k, previous[k])
        if changed:
            raise ValueError(
                f"warm_start=True continues the fitted network, but {'; '.join(changed)}. "
                "Set warm_start=False to build a new network"
            )
