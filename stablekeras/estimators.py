"""scikit-learn estimators wrapping the stable networks.

:class:`StableClassifier` and :class:`StableRegressor` follow scikit-learn's
conventions: ``__init__`` only stores flat hyperparameters, ``fit`` validates
them (``_parameter_constraints``) and the data before any training, learned
state ends in an underscore, and pickling saves the Keras model as ``.keras``
bytes. They work in pipelines, ``clone``, ``GridSearchCV(n_jobs=2)`` and
``cross_validate``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import re
import tempfile
import types
from numbers import Integral, Real

import joblib
import keras
import numpy as np
import tensorflow as tf
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from stablekeras import _multiworker
from stablekeras import activations as _activations
from stablekeras import integrators as _integrators
from stablekeras._backup import AtomicBackupAndRestore
from stablekeras._threads import limit_threads
from stablekeras.losses import CLASSIFICATION_LOSSES, get_classification_loss
from stablekeras.models import (
    CONSTRAINTS,
    ENFORCEMENTS,
    NETWORKS,
    NORMALIZATIONS,
    build_network,
    lipschitz_bound,
)

__all__ = ["StableClassifier", "StableRegressor"]

#: Fits of at most this many optimizer steps run eagerly (see ``fit``).
_EAGER_STEPS = 16
#: Rows per forward pass at inference.
_PREDICT_BATCH = 4096


def _check_activation(value):
    _activations.get(value)  # raises ValueError naming it
    return True


def _check_integrator(value):
    _integrators.get(value)
    return True


class _ActivationOption(Options):
    """A ``_parameter_constraints`` entry accepting the slope-restricted activations."""

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, value):
        try:
            return _check_activation(value)
        except ValueError:
            return False

    def __str__(self):
        return (
            "a monotone, slope-restricted activation "
            "(relu, leaky_relu, elu, tanh, sigmoid, softplus)"
        )


class _ImageShapeOption(Options):
    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, value):
        return (
            isinstance(value, tuple | list)
            and len(value) == 3
            and all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in value)
        )

    def __str__(self):
        return "a tuple (height, width, channels) of positive integers"


_NETWORK_HINT = (
    "network='certified' (the default) has an isometric lift and an orthogonal "
    "projection, network='chapter' the chapter's 1x1 convolution lift and dense "
    "projection (capped by `max_norm`)"
)

#: Parameters of stablekeras 0.1 and what replaced them, with how to translate.
RENAMED_PARAMETERS = {
    "lift": ("network", _NETWORK_HINT),
    "projection": ("network", _NETWORK_HINT),
    "mode": (
        "enforcement",
        "its values: 'constraint' -> 'project', 'normalized' -> 'normalize', 'substeps'",
    ),
}


def _renamed_error(old, value=None):
    new, hint = RENAMED_PARAMETERS[old]
    return TypeError(
        f"The parameter `{old}` was replaced by `{new}`: {hint}. Received: {old}={value!r}"
    )


def _renamed_parameters(init):
    """Make ``__init__`` refuse a renamed parameter with an error naming its successor.

    ``functools.wraps`` keeps the signature that scikit-learn's ``get_params`` reads.
    """

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        for old in RENAMED_PARAMETERS:
            if old in kwargs:
                raise _renamed_error(old, kwargs[old])
        init(self, *args, **kwargs)

    return wrapper


class _ModelBuilderOption(Options):
    """A ``_parameter_constraints`` entry accepting a function that builds a Keras model."""

    def __init__(self):
        super().__init__(object, set())

    def is_satisfied_by(self, value):
        # a built model is callable too: it must be wrapped in a function that builds it
        return callable(value) and not isinstance(value, keras.layers.Layer | type)

    def __str__(self):
        return (
            "a callable (input_shape, n_outputs, **model_params) -> keras.Model "
            "(a function that builds the model, not a built model)"
        )


def _instantiate_callback(entry, name):
    """A fresh callback for one fit: a deep copy of an instance, or the product of a factory."""
    if isinstance(entry, keras.callbacks.Callback):
        try:
            return copy.deepcopy(entry)
        except Exception as err:  # locks, open files, ...: the user needs a factory
            raise TypeError(
                f"`{name}` ({type(entry).__name__}) cannot be deep-copied for this fit ({err}); "
                f"pass a factory that makes it instead, e.g. "
                f"functools.partial({type(entry).__name__}, ...)"
            ) from err
    if callable(entry) and not isinstance(entry, keras.layers.Layer):
        made = entry()
        if isinstance(made, keras.callbacks.Callback):
            return made
        raise TypeError(
            f"Received an invalid value for `{name}`: a factory must return a "
            f"keras.callbacks.Callback. Calling it returned: {made!r}"
        )
    raise TypeError(
        f"Received an invalid value for `{name}`, expected a keras.callbacks.Callback or a "
        f"zero-argument callable that makes one. Received: {name}={entry!r}"
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


def _array_batches(x, y, sample_weight):
    """Unbatched ``(x, y)`` or ``(x, y, sample_weight)`` rows as a tf.data.Dataset."""
    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    return tf.data.Dataset.from_tensor_slices(arrays)


def _check_finite_batch(x, index, what="x"):
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"Input {what} contains NaN or infinity (batch {index} of the dataset)")


class _StableEstimator(BaseEstimator):
    """Shared fit/predict machinery. Not public."""

    _parameter_constraints: dict = {
        "constraint": [StrOptions(set(CONSTRAINTS))],
        "step_size": [Interval(Real, 0, None, closed="neither")],
        "depth": [Interval(Integral, 0, None, closed="left")],
        "width": [Interval(Integral, 1, None, closed="left")],
        "activation": [_ActivationOption()],
        "integrator": [StrOptions({"euler", "heun", "rk4"})],
        "enforcement": [StrOptions(set(ENFORCEMENTS))],
        "normalization": [StrOptions(set(NORMALIZATIONS))],
        "image_shape": [None, _ImageShapeOption()],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "max_norm": [None, Interval(Real, 0, None, closed="neither")],
        "strong_convexity": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": [Interval(Integral, 0, 2, closed="both"), "boolean"],
        "distribute": [None, StrOptions({"mirrored", "multi_worker"}), HasMethods(["scope"])],
        "network": [StrOptions(set(NETWORKS))],
        "lift_block_size": [None, Interval(Integral, 1, None, closed="left")],
        "dense_width": [None, Interval(Integral, 2, None, closed="left")],
        "dense_depth": [Interval(Integral, 0, None, closed="left")],
        "callbacks": [None, list],
        "warm_start": ["boolean"],
        "model": [None, _ModelBuilderOption()],
        "model_params": [None, dict],
        "checkpoint_dir": [None, str, os.PathLike],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
    }

    #: Parameters a warm-started fit may change: they shape the training (and the
    #: loss), not the network. Any other parameter must keep its value.
    _TRAINING_PARAMS = frozenset(
        {
            "epochs",
            "batch_size",
            "learning_rate",
            "weight_decay",
            "validation_fraction",
            "early_stopping",
            "n_iter_no_change",
            "random_state",
            "verbose",
            "distribute",  # a warm start trains in the network's own strategy (_fit_scope)
            "callbacks",
            "warm_start",
            "class_weight",
            "loss",
            "margin",
            "temperature",
            "alpha",
            "checkpoint_dir",
            "n_threads",
        }
    )
    #: Fitted attributes that a warm-started fit keeps (and restores if it refuses).
    _WARM_ATTRIBUTES = (
        "n_features_in_",
        "feature_names_in_",
        "classes_",
        "n_outputs_",
        "_y_ndim",
        "_y_offset",
        "_y_scale",
    )

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """An estimator with the parameters of a named preset, updated by ``overrides``.

        The result is an ordinary estimator whose parameters are the preset's
        (see :mod:`stablekeras.presets`; ``list_presets()`` names them); the
        classifier-only ones (``loss``, ``margin``, ...) are left out for a
        regressor.

        Examples
        --------
        >>> from stablekeras import StableClassifier
        >>> StableClassifier.from_preset("chapter", epochs=2).get_params()["enforcement"]
        'substeps'
        """
        from stablekeras.presets import get_preset

        params = get_preset(name, for_regressor=issubclass(cls, RegressorMixin))
        params.update(overrides)
        return cls(**params)

    def set_params(self, **params):
        """Set parameters; a renamed parameter fails with the name that replaced it."""
        for old in RENAMED_PARAMETERS:
            if old in params:
                raise _renamed_error(old, params[old])
        return super().set_params(**params)

    # ---- hooks for subclasses -------------------------------------------------
    def _prepare_targets(self, y):
        raise NotImplementedError

    def _keras_loss(self):
        raise NotImplementedError

    # ---- fitting ------------------------------------------------------------------
    def _check_image_shape(self, n_features):
        if self.image_shape is not None and math.prod(self.image_shape) != n_features:
            raise ValueError(
                f"image_shape={tuple(self.image_shape)} holds {math.prod(self.image_shape)} "
                f"values but X has n_features={n_features}: expected "
                "height * width * channels == n_features"
            )

    def _seed(self):
        if self.random_state is None:
            return None
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        if isinstance(self.random_state, Integral):
            seed = int(self.random_state)
        keras.utils.set_random_seed(seed)
        return seed

    def _build_model(self, n_features, n_outputs, seed=None):
        if self.model is not None:
            return self._output_layer(self._build_user_model(n_features, n_outputs))
        model = build_network(
            (n_features,),
            n_outputs,
            network=self.network,
            constraint=self.constraint,
            image_shape=None if self.image_shape is None else tuple(self.image_shape),
            width=int(self.width),
            depth=int(self.depth),
            step_size=float(self.step_size),
            activation=self.activation,
            integrator=self.integrator,
            enforcement=self.enforcement,
            normalization=self.normalization,
            kernel_size=int(self.kernel_size),
            max_norm=self.max_norm,
            strong_convexity=float(self.strong_convexity),
            lift_block_size=None if self.lift_block_size is None else int(self.lift_block_size),
            dense_width=None if self.dense_width is None else int(self.dense_width),
            dense_depth=int(self.dense_depth),
            seed=seed,
        )
        return self._output_layer(model)

    def _output_layer(self, model):
        return model

    def _optimizer(self, n_batches):
        steps = max(1, n_batches) * self.epochs
        schedule = keras.optimizers.schedules.CosineDecay(
            float(self.learning_rate), decay_steps=steps, alpha=0.01
        )
        if self.weight_decay:
            return keras.optimizers.AdamW(schedule, weight_decay=float(self.weight_decay))
        return keras.optimizers.Adam(schedule)

    def fit(self, X, y=None, sample_weight=None, *, classes=None, callbacks=None):
        """Fit the network.

        Everything is validated before any training: hyperparameters, NaN or
        infinite values, shapes, the number of classes and ``image_shape``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a ``tf.data.Dataset``
            A dataset yields batches ``(x, y)`` or ``(x, y, sample_weight)``
            with ``x`` of shape ``(batch, n_features)``; ``y`` and
            ``sample_weight`` must then be None. See Notes.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), optional
        classes : array-like, optional
            Classifier with a dataset only: the labels, which saves the
            streaming pass that finds them.
        callbacks : list of keras.callbacks.Callback or of callables, optional
            Extra callbacks for this fit only, after those of the ``callbacks``
            parameter and treated the same way (instances deep-copied, factories
            called). A fit-time option that metadata routing can pass through
            ``Pipeline`` and ``GridSearchCV`` (``set_fit_request(callbacks=True)``).

        Returns
        -------
        self

        Notes
        -----
        Fitting from a ``tf.data.Dataset`` (for data that do not fit in memory,
        e.g. ``load_dataset(..., as_dataset=True)``) is outside strict
        scikit-learn conventions: ``n_features_in_`` comes from the dataset's
        element spec, and the classes (or the target mean and scale of a
        regressor) and the finiteness of the inputs are found in one streaming
        pass before training, skipped for a classifier given ``classes`` and a
        dataset of known cardinality (a label not in ``classes`` then stops
        training with ``tf.errors.InvalidArgumentError``). Early stopping needs
        arrays.
        """
        self._validate_params()
        limit_threads(self.n_threads)  # before any TensorFlow work in a fresh process
        if self.constraint == "contractive" and self.integrator != "euler":
            raise ValueError(
                "constraint='contractive' is analysed for explicit Euler steps only. "
                f"Received: integrator={self.integrator!r}"
            )
        if self.model_params is not None and self.model is None:
            raise ValueError(
                "`model_params` are the keyword arguments of `model`, which is None. "
                f"Received: model_params={self.model_params!r}"
            )
        user_callbacks = self._fit_callbacks(callbacks)
        previous = self._warm_start_snapshot()
        if isinstance(X, tf.data.Dataset):
            return self._fit_dataset(X, y, sample_weight, classes, user_callbacks, previous)
        if classes is not None:
            raise ValueError("`classes` is only used when X is a tf.data.Dataset")
        with self._warm_start_guard(previous):
            X, y = validate_data(
                self,
                X,
                y,
                dtype=np.float32,
                ensure_all_finite=True,
                multi_output=isinstance(self, RegressorMixin),
                y_numeric=isinstance(self, RegressorMixin),
            )
            self._check_image_shape(X.shape[1])
            y_fit, n_outputs = self._prepare_targets(y)
        sw = (
            None
            if sample_weight is None
            else _check_sample_weight(sample_weight, X, dtype=np.float32)
        )
        sw = self._sample_weights(sw, y_fit)
        self._check_callback_monitors(user_callbacks, validation=self.early_stopping)
        seed = self._agree_seed(self._seed())
        callbacks, validation_data, fit_X, fit_y, fit_sw = [], None, X, y_fit, sw
        if self.early_stopping:
            idx = np.arange(len(X))
            stratify = y_fit if isinstance(self, ClassifierMixin) else None
            try:
                tr, va = train_test_split(
                    idx, test_size=self.validation_fraction, random_state=seed, stratify=stratify
                )
            except ValueError:
                tr, va = train_test_split(
                    idx, test_size=self.validation_fraction, random_state=seed
                )
            fit_X, fit_y = X[tr], y_fit[tr]
            fit_sw = None if sw is None else sw[tr]
            validation_data = (X[va], y_fit[va]) if sw is None else (X[va], y_fit[va], sw[va])
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    patience=self.n_iter_no_change, restore_best_weights=True
                )
            )
        n_batches = math.ceil(len(fit_X) / self.batch_size)
        with self._fit_scope(previous is not None):
            self._compile(X.shape[1], n_outputs, n_batches, warm=previous is not None, seed=seed)
            backup = self._backup_callback(X.shape[1], len(X))
            history = self._keras_fit(
                fit_X,
                fit_y,
                sample_weight=fit_sw,
                epochs=self.epochs,
                batch_size=self.batch_size,
                validation_data=validation_data,
                callbacks=callbacks + ([] if backup is None else [backup]) + user_callbacks,
                shuffle=True,
                verbose=int(self.verbose),
                shuffle_seed=seed,
                backup=backup,
                steps_per_epoch=n_batches,
            )
        return self._finish(history, user_callbacks, warm=previous is not None, backup=backup)

    def _scope(self):
        """The distribution strategy's scope (a null context without one)."""
        strategy = self._strategy()
        return contextlib.nullcontext() if strategy is None else strategy.scope()

    def _fit_scope(self, warm):
        """Where this fit builds and trains; a warm start trains in the network's own strategy."""
        if not warm:
            return self._scope()
        strategy = self.model_.distribute_strategy
        if self.distribute is not None and strategy is tf.distribute.get_strategy():
            raise ValueError(
                f"warm_start=True with distribute={self.distribute!r}: the fitted network was "
                "not built in a distribution strategy (an unpickled estimator's network never "
                "is), so it cannot continue in one. Set warm_start=False to build a new network"
            )
        return strategy.scope()

    def _strategy(self):
        if self.distribute is None:
            return None
        if self.distribute == "multi_worker":
            return _multiworker.multi_worker_strategy()
        if isinstance(self.distribute, str):
            return tf.distribute.MirroredStrategy()
        return self.distribute

    def _multi_worker_strategy(self):
        """The strategy when the fit is multi-worker (several workers), else None."""
        if self.distribute == "multi_worker" or isinstance(
            self.distribute, tf.distribute.MultiWorkerMirroredStrategy
        ):
            strategy = self._strategy()
            return strategy if _multiworker.is_multi_worker(strategy) else None
        return None

    def _agree_seed(self, seed):
        """Multi-worker with random_state=None: one seed, drawn on the chief, on every worker.

        The workers must shuffle (and split off validation data) alike.
        """
        strategy = self._multi_worker_strategy()
        if strategy is not None and seed is None:
            seed = _multiworker.shared_seed(strategy)
            keras.utils.set_random_seed(seed)
        return seed

    # ---- resumable fits -----------------------------------------------------------
    def _backup_fingerprint(self, n_features, n_samples):
        """What a backup must match to be resumed: hyperparameters and the data's shape."""
        skip = {"verbose", "checkpoint_dir", "n_threads", "distribute", "callbacks"}
        # repr without memory addresses ("RandomState(MT19937) at 0x7f..."): stable across runs
        params = {
            k: re.sub(r" at 0x[0-9a-fA-F]+", "", repr(v))
            for k, v in self.get_params(deep=False).items()
            if k not in skip
        }
        data = {"n_features": int(n_features), "n_samples": int(n_samples)}
        if hasattr(self, "classes_"):
            data["classes"] = [str(c) for c in self.classes_]
        kind = "classifier" if isinstance(self, ClassifierMixin) else "regressor"
        return {"estimator": kind, **params, **data}

    def _backup_callback(self, n_features, n_samples):
        """The fit's :class:`AtomicBackupAndRestore` (None without ``checkpoint_dir``)."""
        if self.checkpoint_dir is None:
            return None
        return AtomicBackupAndRestore(
            self.checkpoint_dir,
            fingerprint=self._backup_fingerprint(n_features, n_samples),
            writer=_multiworker.is_chief(self.model_.distribute_strategy),
        )

    def _keras_fit(
        self, x, y=None, *, shuffle_seed=None, backup=None, steps_per_epoch=None, **fit_kwargs
    ):
        """``model_.fit(x, y, **fit_kwargs)``, or the multi-worker loop under that strategy."""
        strategy = self._multi_worker_strategy()
        if strategy is None:
            return self.model_.fit(x, y, **fit_kwargs)
        if isinstance(x, tf.data.Dataset):
            data, validation = x, None
        else:
            data = _array_batches(x, y, fit_kwargs.get("sample_weight"))
            data = data.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
            data = data.batch(fit_kwargs["batch_size"])
            validation = fit_kwargs.get("validation_data")
            if validation is not None:  # (x, y) or (x, y, sample_weight)
                x_val, y_val, *w_val = validation
                validation = _array_batches(x_val, y_val, w_val[0] if w_val else None)
                validation = validation.batch(fit_kwargs["batch_size"])
        return _multiworker.fit_multi_worker(
            self.model_,
            strategy,
            data,
            loss_fn=self.model_.loss,
            epochs=fit_kwargs["epochs"],
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            callbacks=fit_kwargs.get("callbacks", ()),
            backup=backup,
            verbose=fit_kwargs.get("verbose", 0),
        )

    def _compile(self, n_features, n_outputs, n_batches, warm=False, seed=None):
        if not warm:  # a warm start recompiles the fitted network: fresh optimizer, same weights
            self.model_ = self._build_model(n_features, n_outputs, seed)
            self._architecture = self._architecture_params()
        # Tracing the train step costs about as much as a few hundred eager steps
        # on small inputs: a fit of few steps (tiny data, grid-search folds, the
        # scikit-learn checks) runs eagerly; anything longer is compiled once.
        n_steps = n_batches * self.epochs
        self.model_.compile(
            optimizer=self._optimizer(n_batches),
            loss=self._keras_loss(),
            run_eagerly=n_steps <= _EAGER_STEPS and self.distribute is None,
        )

    def _finish(self, history, user_callbacks=(), warm=False, backup=None):
        if backup is not None:  # a resumed fit: the epochs before the restart too
            history = types.SimpleNamespace(history=backup.history)
        self._record_history(history, warm)
        self.callbacks_ = list(user_callbacks)
        self._chief = _multiworker.is_chief(self.model_.distribute_strategy)
        if self._multi_worker_strategy() is not None:
            self.model_ = _multiworker.local_copy(self.model_)
        self.lipschitz_bound_, self.lipschitz_bound_error_ = self._certify()
        return self

    def _record_history(self, history, warm):
        """``history_`` and ``n_iter_`` of this fit, appended to the previous ones if warm."""
        new = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        epochs = len(next(iter(new.values()), []))
        if warm:
            old = self.history_
            self.history_ = {k: old.get(k, []) + new.get(k, []) for k in {**old, **new}}
            self.n_iter_ += epochs
        else:
            self.history_, self.n_iter_ = new, epochs

    # ---- fit-time options: callbacks, sample weights, warm start, the user's model ------------
    def _fit_callbacks(self, fit_callbacks=None):
        """This fit's callbacks: the ``callbacks`` parameter, then those given to ``fit``.

        Instances are deep-copied and factories called for every fit, so no two
        fits (folds of a grid search, clones, refits) share a callback's state;
        the user's own objects are never handed to Keras.
        """
        made = []
        for where, entries in (("callbacks", self.callbacks), ("fit(callbacks)", fit_callbacks)):
            if entries is not None and not isinstance(entries, list | tuple):
                raise TypeError(
                    f"Received an invalid value for `{where}`, expected a list of callbacks. "
                    f"Received: {entries!r}"
                )
            made += [_instantiate_callback(e, f"{where}[{i}]") for i, e in enumerate(entries or ())]
        return made

    @staticmethod
    def _check_callback_monitors(callbacks, validation):
        """A callback that monitors a validation metric needs this fit's validation split."""
        if validation:
            return
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("val_"):
                raise ValueError(
                    f"The callback {type(cb).__name__} monitors {monitor!r}, but this fit has no "
                    "validation data: set early_stopping=True, which holds out "
                    "validation_fraction of each fit's training data (make n_iter_no_change "
                    "at least epochs to keep only your own stopping rule)"
                )

    def _sample_weights(self, sample_weight, y_fit):
        """The per-sample weights of the loss (the classifier multiplies in class weights)."""
        return sample_weight

    def _class_weight_vector(self, y_fit=None, sample_weight=None):
        """Weights per encoded class, or None (classifier only)."""
        return None

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
        return {k: getattr(self, k) for k in self._WARM_ATTRIBUTES if hasattr(self, k)}

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
        for k in self._WARM_ATTRIBUTES:
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

    def _build_user_model(self, n_features, n_outputs):
        """Call ``model`` and check what it built before any training."""
        what = f"model(({n_features},), {n_outputs}, **model_params)"
        net = self.model((n_features,), n_outputs, **(self.model_params or {}))
        if not isinstance(net, keras.Model):
            raise TypeError(
                f"`model` must build a keras.Model; {what} returned {type(net).__name__}: "
                f"{net!r:.200}"
            )
        try:
            inputs = net.inputs
        except AttributeError:  # a subclassed model that has not been called yet
            inputs = None
        if inputs is not None and (len(inputs) != 1 or tuple(inputs[0].shape[1:]) != (n_features,)):
            shapes = [tuple(t.shape) for t in inputs]
            raise ValueError(
                f"{what} built a model with inputs of shape {shapes}; expected one input of "
                f"shape (None, {n_features}): a row of X has n_features={n_features}"
            )
        probe = np.zeros((2, n_features), np.float32)
        try:
            out = net(probe, training=False)
        except Exception as err:
            raise ValueError(
                f"{what} built a model that fails on a batch of shape {probe.shape}: {err}"
            ) from err
        if not hasattr(out, "shape") or tuple(out.shape) != (2, n_outputs):
            shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ValueError(
                f"{what} built a model whose output for a batch of 2 rows is {shape}; "
                f"expected shape (2, {n_outputs}): one {self._output_name()} per column"
            )
        return net

    def _output_name(self):
        return "output"

    def _certify(self):
        """(``lipschitz_bound_``, why it is None): a sound bound, or None and the reason."""
        try:
            bound = lipschitz_bound(self.model_)
        except ValueError as err:
            return None, str(err)
        if math.isfinite(bound):
            return bound, None
        layers = [
            f"{layer.name!r} ({type(layer).__name__}) reports lipschitz_bound()={b}"
            for layer in self.model_.layers
            if hasattr(layer, "lipschitz_bound") and not math.isfinite(b := layer.lipschitz_bound())
        ]
        return None, "no finite bound: " + ("; ".join(layers) or f"the product is {bound}")

    def _fit_dataset(self, dataset, y, sample_weight, classes, user_callbacks=(), previous=None):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "When X is a tf.data.Dataset it must yield (x, y) or (x, y, sample_weight) "
                "batches; y and sample_weight must be None"
            )
        if self.early_stopping:
            raise ValueError("early_stopping=True needs arrays, not a tf.data.Dataset")
        if isinstance(getattr(self, "class_weight", None), str):
            raise ValueError(
                "class_weight='balanced' needs the class counts, which a tf.data.Dataset does "
                "not give before training: pass a dict (e.g. from "
                "sklearn.utils.class_weight.compute_class_weight)"
            )
        self._check_callback_monitors(user_callbacks, validation=False)
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(
                "Expected a tf.data.Dataset of (x, y) or (x, y, sample_weight) batches. "
                f"Received element_spec={spec}"
            )
        x_shape = spec[0].shape
        if x_shape.rank != 2 or x_shape[-1] is None:
            raise ValueError(
                "Expected batches x of shape (batch, n_features) with a known n_features. "
                f"Received x of shape {x_shape}"
            )
        if not spec[0].dtype.is_floating and not spec[0].dtype.is_integer:
            raise ValueError(f"Expected numeric x batches. Received dtype {spec[0].dtype.name}")
        n_features = int(x_shape[-1])
        with self._warm_start_guard(previous):
            self._check_image_shape(n_features)
            n_outputs, n_batches, encode = self._scan_dataset(dataset, classes)
            self.n_features_in_ = n_features
        per_class = self._class_weight_vector()
        seed = self._agree_seed(self._seed())

        def prepare(x, y, *w):
            target = encode(y)
            if per_class is not None:  # a classifier's class weights times the sample weights
                cw = tf.gather(tf.constant(per_class, tf.float32), target)
                w = (cw if not w else cw * tf.reshape(tf.cast(w[0], tf.float32), (-1,)),)
            return (tf.cast(x, tf.float32), target, *w)

        data = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
        with self._fit_scope(previous is not None):
            self._compile(n_features, n_outputs, n_batches, warm=previous is not None, seed=seed)
            backup = self._backup_callback(n_features, -n_batches)  # batches, not samples
            history = self._keras_fit(
                data,
                epochs=self.epochs,
                shuffle=False,
                verbose=int(self.verbose),
                callbacks=([] if backup is None else [backup]) + list(user_callbacks),
                backup=backup,
                steps_per_epoch=n_batches,
            )
        return self._finish(history, user_callbacks, warm=previous is not None, backup=backup)

    def _scan_dataset(self, dataset, classes):
        """One streaming pass: finiteness, batch count and targets (see subclasses)."""
        raise NotImplementedError

    # ---- inference ------------------------------------------------------------
    def _forward(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32, ensure_all_finite=True)
        out = [
            keras.ops.convert_to_numpy(self.model_(X[i : i + _PREDICT_BATCH], training=False))
            for i in range(0, len(X), _PREDICT_BATCH)
        ]
        return np.concatenate(out).astype(np.float64)

    # ---- pickling -------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        if not (state.get("distribute") is None or isinstance(state["distribute"], str)):
            strategy = state["distribute"]
            state["distribute"] = (
                "mirrored"
                if isinstance(strategy, tf.distribute.MirroredStrategy)
                else "multi_worker"
                if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                else None
            )
        # the callbacks of the last fit hold the Keras model: they are not pickled
        state.pop("callbacks_", None)
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                model.save(path)
                with open(path, "rb") as fh:
                    state["_model_keras_bytes"] = fh.read()
        return state

    def __setstate__(self, state):
        state = dict(state)
        blob = state.pop("_model_keras_bytes", None)
        self.__dict__.update(state)
        if blob is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.keras")
                with open(path, "wb") as fh:
                    fh.write(blob)
                self.model_ = keras.models.load_model(path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class StableClassifier(ClassifierMixin, _StableEstimator):
    """A classifier that is stable by construction, with certified robustness at its defaults.

    At its defaults the network is certified: every layer has a sound Lipschitz
    bound of 1, so ``lipschitz_bound_`` is about 1 and a logit margin ``m(x)``
    certifies every l2 perturbation smaller than ``m(x) / (sqrt(2) L)``
    (:func:`stablekeras.robustness.certified_accuracy`). For images
    (``image_shape``): an isometric lift (space-to-depth and zero channels) ->
    ``depth`` convolutional gradient steps ``x - h A^T s(Ax + b)`` whose ``A`` is
    normalised in every forward pass onto the boundary ``h L ||A||^2 = 2`` ->
    flatten -> an orthogonal map to ``dense_width`` units and ``dense_depth``
    orthogonal gradient steps -> an orthogonal projection to the logits, trained
    with the offset cross-entropy (margin 3). For flat features, the dense stage
    and the projection. ``network="chapter"`` gives the chapter's network
    instead (free lift and projection: not certified); ``constraint="none"`` the
    unconstrained residual network of the same shape, the baseline of every
    comparison. Named configurations: :meth:`from_preset` and
    :mod:`stablekeras.presets`.

    Parameters
    ----------
    constraint : {"nonexpansive", "contractive", "none"}, default="nonexpansive"
        The blocks: non-expansive gradient steps (Lipschitz 1), contractive ones
        on a ``strong_convexity``-strongly convex potential (Lipschitz
        ``1 - h mu`` each), or the unconstrained residual baseline
        ``x + h B s(Ax + b)`` with free dense layers in place of the orthogonal
        ones.
    step_size : float, default=2.0
        ``h`` of each gradient step (the time ``T`` per block with
        ``enforcement="substeps"``). Normalised and orthogonal steps use ``||A|| = 1``
        shrunk only where ``h`` would break ``h L ||A||^2 <= 2``: with ReLU,
        ``h = 2`` is the boundary (the step's Jacobian is a reflection) and
        ``h = 1`` makes it a projection (a clip).
    depth : int, default=2
        Convolutional blocks (images); in ``network="chapter"`` also the dense
        blocks of flat features.
    width : int, default=16
        Channels of the lifted image and of each convolutional block
        (``network="chapter"``: also the units of its dense lift and blocks).
    activation : str, default="relu"
        A monotone, slope-restricted activation (see :mod:`stablekeras.activations`).
    integrator : {"euler", "heun", "rk4"}, default="euler"
        The Runge-Kutta step of the non-expansive convolutional blocks.
    enforcement : {"normalize", "project", "substeps"}, default="normalize"
        How the convolutional (and the chapter's dense) blocks keep their
        condition: the kernel normalised in the forward pass
        (:meth:`~stablekeras.layers.NonExpansiveConv2D.used_kernel`), projected
        back by a kernel constraint after every optimizer step, or adaptive
        sub-steps. (``mode`` in stablekeras 0.1, with the values
        ``"normalized"``, ``"constraint"`` and ``"substeps"``.)
    image_shape : tuple (h, w, c) or None, default=None
        Reshape each row of X to this image and use convolutional blocks.
    kernel_size : int, default=3
        Kernel size of the convolutional blocks.
    max_norm : float or None, default=None
        ``network="chapter"`` only: spectral-norm cap of its lift and projection
        (None: free, the chapter's setting, whose bound is then their norms'
        product).
    strong_convexity : float, default=0.1
        ``mu`` of the contractive blocks.
    loss : {"offset_crossentropy", "crossentropy", "hinge", "hkr"}, default="offset_crossentropy"
        Cross-entropy of offset, scaled logits
        (:class:`~stablekeras.losses.OffsetCrossentropy`, margin-aware: it asks
        for a logit margin of ``margin``), plain cross-entropy on the logits,
        the multi-class margin loss (:class:`~stablekeras.losses.MulticlassHinge`)
        the chapter trains with, or hinge plus Kantorovich-Rubinstein
        (:class:`~stablekeras.losses.MulticlassHKR`).
    margin : float, default=3.0
        Target logit margin of the offset cross-entropy, hinge and HKR losses.
        With ``L = 1`` a margin ``m`` certifies the radius ``m / sqrt(2)``.
    epochs : int, default=60
    batch_size : int, default=256
    learning_rate : float, default=1e-2
        Peak learning rate of Adam(W), decayed by a cosine schedule to 1% of it.
    weight_decay : float, default=0.0
        Decoupled weight decay (AdamW); 0 uses Adam.
    validation_fraction : float, default=0.1
        Held-out fraction for early stopping (used only when ``early_stopping``).
    early_stopping : bool, default=False
        Stop when the validation loss has not improved for ``n_iter_no_change``
        epochs, and restore the best weights.
    n_iter_no_change : int, default=5
    random_state : int, RandomState or None, default=None
        Seeds Keras, TensorFlow, NumPy and Python (``keras.utils.set_random_seed``)
        and every layer's initializer explicitly (``build_network(seed=...)``),
        so that two fits on the same data give the same predictions, in this
        process or on a dask or Ray worker.
    verbose : int, default=0
        1 shows Keras' progress bar for each epoch; 0 is silent.
    distribute : None, "mirrored", "multi_worker" or tf.distribute.Strategy, default=None
        Data-parallel training: the model is built and compiled inside the
        strategy's scope (``"mirrored"``: ``tf.distribute.MirroredStrategy()``
        over all local devices; ``"multi_worker"``:
        ``tf.distribute.MultiWorkerMirroredStrategy()`` over the machines that
        the ``TF_CONFIG`` environment variable names, see Notes). Constraints
        run on the aggregated update, so the guarantee is the same on every
        replica and every worker. A strategy object does not pickle: a pickled
        estimator keeps ``"mirrored"`` for a ``MirroredStrategy``,
        ``"multi_worker"`` for a ``MultiWorkerMirroredStrategy`` and None
        otherwise.
    network : {"certified", "chapter"}, default="certified"
        The architecture (:func:`stablekeras.models.build_network`): every layer
        bounded by 1, or the chapter's 1x1 convolution lift with max pooling and
        dense projection, free unless ``max_norm`` caps them. The chapter's
        network is **not certified**: its bound is the product of the free lift
        and projection norms, which grow in training (87 on MNIST at the old
        defaults), so its margins certify nothing.
    lift_block_size : int or None, default=None
        Patch side of the certified network's isometric lift (``width`` must be
        at least ``lift_block_size**2 * channels``); None picks 4 for 28x28
        images, 2 for 8x8 (:func:`stablekeras.models.default_block_size`).
    dense_width : int or None, default=256
        Units of the dense stage before the projection: an orthogonal map
        (:class:`~stablekeras.layers.OrthogonalDense`) and ``dense_depth``
        orthogonal gradient steps
        (:class:`~stablekeras.layers.OrthogonalNonExpansiveDense`). None: no stage.
    dense_depth : int, default=4
        Gradient steps of the dense stage.
    normalization : {"aol", "gram"}, default="aol"
        The rescaling of ``enforcement="normalize"``: AOL scales (Prach and Lampert
        2022; a Schur-test bound with no iteration, the cheapest) or the
        Gram-iteration bound (the step on the boundary ``h L ||A||^2 = 2`` up to
        a few percent). Equal accuracy on MNIST (``benchmarks/RESULTS.md``).
    temperature : float, default=8.0
        Logit scale ``t`` of ``"offset_crossentropy"`` (unused otherwise).
    alpha : float, default=10.0
        Weight of the hinge term of ``"hkr"`` (unused otherwise).
    callbacks : list of keras.callbacks.Callback or of callables, default=None
        Keras callbacks for every fit, after the estimator's own early stopping.
        An instance is deep-copied for each fit and a callable (a zero-argument
        factory: a callback class, ``functools.partial``) is called for each
        fit, so no two fits (the folds of a grid search, a refit, clones) share
        a callback's state and the objects given here never reach Keras; the
        callbacks a fit used are ``callbacks_``. Give a factory for a callback
        that cannot be deep-copied (one holding a file or a lock). A callback
        that monitors a validation metric (``monitor="val_loss"``) needs
        ``early_stopping=True``: each fit then holds out ``validation_fraction``
        of its own training data (in a grid search, of the fold's training
        part: nothing leaks from the test fold); ``n_iter_no_change >= epochs``
        leaves the stopping to your callback. Pickling needs picklable
        callbacks (module-level classes and functions, not lambdas).
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss, as in scikit-learn's classifiers: a
        dict ``{label: weight}`` (a key that is not a class of ``y`` is an
        error; classes left out weigh 1) or ``"balanced"``, ``n_samples /
        (n_classes * count)`` with counts weighted by ``sample_weight``
        (:func:`sklearn.utils.class_weight.compute_class_weight`). A sample's
        weight is its class weight times its ``sample_weight``. A fit from a
        ``tf.data.Dataset`` takes a dict only.
    warm_start : bool, default=False
        If True and the estimator is fitted, ``fit`` continues training the
        fitted network: its weights (and the stable layers' state) are kept and
        the optimizer is new (fresh Adam moments and a cosine schedule over this
        fit's ``epochs``: a warm restart); ``n_iter_`` adds this fit's epochs,
        ``history_`` appends them and ``lipschitz_bound_`` is recomputed. The
        data must have the fitted number of features and classes (a
        regressor's: outputs), and the parameters that shape the network (all
        but ``epochs``, ``batch_size``, ``learning_rate``, ``weight_decay``,
        the early-stopping ones, the loss ones, ``callbacks``,
        ``class_weight``, ``random_state``, ``verbose`` and ``distribute``)
        must keep their values; otherwise ``fit`` raises an error saying what
        changed and leaves the fitted estimator as it was. A regressor keeps
        its first fit's target scaling. Training continues in the distribution
        strategy the network was built in; ``distribute`` set for a network
        built without one (such as an unpickled estimator's) is an error.
    model : callable or None, default=None
        Your own network instead of the built-in one: ``model(input_shape,
        n_outputs, **model_params)`` returns a ``keras.Model`` from rows of
        ``input_shape = (n_features,)`` to ``n_outputs`` logits (classifier) or
        outputs (regressor). Each fit that builds a network calls it, checks
        its result before training (a Keras model, one input of shape ``(None,
        n_features)``, outputs of shape ``(batch, n_outputs)``) and compiles it
        with the estimator's loss and optimizer (a compile inside ``model`` is
        replaced); the architecture parameters (``network``, ``constraint``,
        ``depth``, ``width``, ...) are then unused. The certificate is
        :func:`~stablekeras.models.lipschitz_bound` of the network: build it as
        a chain of stablekeras layers, or of layers with a
        ``lipschitz_bound()`` method. If a layer cannot be bounded,
        ``lipschitz_bound_`` is None, ``lipschitz_bound_error_`` names the
        layer and the reason, and the certified scores raise an error that says
        so. Pickling needs a module-level function (or ``functools.partial``)
        and Keras-serializable layers.
    model_params : dict or None, default=None
        Keyword arguments of ``model`` (only with ``model``). One parameter for
        ``get_params``, ``clone`` and grid searches:
        ``{"model_params": [{"width": 8}, {"width": 16}]}``.
    checkpoint_dir : str, path-like or None, default=None
        Make the fit resumable: the training state (weights, optimizer state,
        epoch, history) is backed up there after every epoch, atomically
        (Keras' ``BackupAndRestore``, written so that a process killed
        mid-save leaves the previous epoch's backup whole). A fit started again
        with the same arguments and data after its process was killed resumes
        after the last backed-up epoch; a completed fit removes the directory.
        A backup of a different fit (other hyperparameters or data shape) is
        refused with a ``ValueError``. Not to be shared by concurrent fits (one
        directory per candidate of a grid search). See Notes.
    n_threads : int or None, default=None
        Threads of each of TensorFlow's pools (intra-op and inter-op) for the
        fit. None: the process's share, i.e. a dask worker's ``nthreads``,
        else ``OMP_NUM_THREADS`` when set (joblib's workers get
        ``cpu_count() // n_jobs``, so ``GridSearchCV(n_jobs=2)`` does not
        oversubscribe the cores), else TensorFlow's default (all cores).
        TensorFlow fixes its pools when its runtime starts in a process: the
        limit takes effect in a fresh process (joblib, dask and Ray workers
        are); when the runtime already runs with other sizes the fit uses
        them, and warns (``RuntimeWarning``) if ``n_threads`` was given.

    Attributes
    ----------
    model_ : keras.Model
        The fitted network, from ``n_features_in_`` floats to logits.
    classes_ : ndarray of shape (n_classes,)
        The labels, of any type (strings, non-contiguous integers).
    n_features_in_ : int
    feature_names_in_ : ndarray of str, when X had feature names
    history_ : dict
        Keras' per-epoch ``loss`` (and ``val_loss`` with early stopping), over
        all the fits of a warm start; after a resumed fit, of every epoch,
        those before the restart included (see Notes).
    n_iter_ : int
        Epochs run (summed over the fits of a warm start; before and after a
        restart, see Notes).
    lipschitz_bound_ : float or None
        A sound upper bound of the l2 Lipschitz constant of the logits; None
        for a ``model`` with a layer that cannot be bounded.
    lipschitz_bound_error_ : str or None
        Why ``lipschitz_bound_`` is None (the layer that cannot be bounded, and
        why); None when there is a bound.
    callbacks_ : list of keras.callbacks.Callback
        The callbacks of the last fit (copies of ``callbacks``, then of those
        given to ``fit``) with their state after training. Not pickled: they
        hold the Keras model.

    See Also
    --------
    StableRegressor, stablekeras.presets, stablekeras.robustness.certified_accuracy

    Notes
    -----
    ``decision_function`` returns the logits (for two classes, the logit of the
    second class minus that of the first, as scikit-learn expects).

    ``fit`` takes ``sample_weight``, ``classes`` and ``callbacks`` as metadata.
    With scikit-learn's metadata routing on
    (``sklearn.set_config(enable_metadata_routing=True)``),
    ``set_fit_request(sample_weight=True, callbacks=True)`` lets a ``Pipeline``
    or ``GridSearchCV`` pass them to the estimator: sample weights are split
    with the folds, and fit-time callbacks are copied for each fit like
    ``callbacks``.

    Before version 0.2 the defaults built the chapter's network (free lift and
    projection, cross-entropy); ``StableClassifier.from_preset("chapter")`` or
    ``network="chapter"`` builds it now. ``lift=`` and ``projection=`` were
    replaced by ``network=``.

    Resuming (``checkpoint_dir``). After a resumed fit ``n_iter_`` counts every
    epoch, those run before the restart included, and ``history_`` holds the
    logs of all of them (saved with the backup). Early stopping's patience
    counter and best weights are not part of the backup: they restart with the
    process. The shuffling order of the epochs after a restart differs from an
    uninterrupted fit's, so the two end close, not bitwise equal.

    Multi-worker training (``distribute="multi_worker"``). Start the same
    program on every machine with ``TF_CONFIG`` naming the cluster and the
    machine's place in it, e.g. on the first of two
    ``TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
    "task": {"type": "worker", "index": 0}}'`` and ``"index": 1`` on the
    second. Every worker must see the same data in the same order; each
    trains on its part of every global batch of ``batch_size`` rows; with
    ``random_state=None`` the chief draws the shuffling seed and sends it to
    the others. Every worker ends with the same weights and the same
    ``lipschitz_bound_``, and ``model_`` is then an ordinary (local) model.
    Worker 0 (or the ``"chief"`` task) is the chief: it alone writes the
    ``checkpoint_dir`` backups (which every worker restores from, so the
    directory must be on a shared file system) and exports
    (:func:`~stablekeras.export.export_saved_model` writes nothing and returns
    None on the other workers). If a worker dies the others stop with an
    error; start them all again with the same arguments and, with
    ``checkpoint_dir``, the job resumes after the last backed-up epoch.
    TensorFlow allows the strategy to be made only before any other
    TensorFlow work in the process, so fit first or make the strategy at the
    start of the program and pass it as ``distribute``.

    References
    ----------
    M. J. Ehrhardt, D. Murari, F. Sherry, "Stable neural networks and connections
    to continuous dynamical systems", arXiv:2510.22299, 2025.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = StableClassifier(epochs=2, random_state=0).fit(X[:200] / 16, y[:200])
    >>> clf.predict(X[:3] / 16).shape
    (3,)
    >>> bool(clf.lipschitz_bound_ <= 1.0 + 1e-4)
    True

    A certified network built by hand from stablekeras layers (a 1-Lipschitz
    lift and projection around non-expansive steps), with the full API:

    >>> import keras
    >>> from stablekeras.layers import NonExpansiveDense, SpectralDense
    >>> def small_network(input_shape, n_outputs, width=16, depth=2):
    ...     layers = [keras.Input(input_shape), SpectralDense(width, max_norm=1.0)]
    ...     layers += [NonExpansiveDense(width) for _ in range(depth)]
    ...     return keras.Sequential([*layers, SpectralDense(n_outputs, max_norm=1.0)])
    >>> clf = StableClassifier(model=small_network, model_params={"depth": 1},
    ...                        epochs=2, random_state=0).fit(X[:200] / 16, y[:200])
    >>> bool(clf.lipschitz_bound_ <= 1.0 + 1e-5)
    True

    ``warm_start=True`` continues it for two more epochs:

    >>> clf = clf.set_params(warm_start=True).fit(X[:200] / 16, y[:200])
    >>> clf.n_iter_, len(clf.history_["loss"])
    (4, 4)
    """

    _parameter_constraints = {
        **_StableEstimator._parameter_constraints,
        "loss": [StrOptions(set(CLASSIFICATION_LOSSES))],
        "margin": [Interval(Real, 0, None, closed="neither")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [None, StrOptions({"balanced"}), dict],
    }

    @_renamed_parameters
    def __init__(
        self,
        constraint="nonexpansive",
        step_size=2.0,
        depth=2,
        width=16,
        activation="relu",
        integrator="euler",
        enforcement="normalize",
        image_shape=None,
        kernel_size=3,
        max_norm=None,
        strong_convexity=0.1,
        loss="offset_crossentropy",
        margin=3.0,
        epochs=60,
        batch_size=256,
        learning_rate=1e-2,
        weight_decay=0.0,
        validation_fraction=0.1,
        early_stopping=False,
        n_iter_no_change=5,
        random_state=None,
        verbose=0,
        distribute=None,
        network="certified",
        lift_block_size=None,
        dense_width=256,
        dense_depth=4,
        normalization="aol",
        temperature=8.0,
        alpha=10.0,
        callbacks=None,
        class_weight=None,
        warm_start=False,
        model=None,
        model_params=None,
        checkpoint_dir=None,
        n_threads=None,
    ):
        self.constraint = constraint
        self.step_size = step_size
        self.depth = depth
        self.width = width
        self.activation = activation
        self.integrator = integrator
        self.enforcement = enforcement
        self.image_shape = image_shape
        self.kernel_size = kernel_size
        self.max_norm = max_norm
        self.strong_convexity = strong_convexity
        self.loss = loss
        self.margin = margin
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.verbose = verbose
        self.distribute = distribute
        self.network = network
        self.lift_block_size = lift_block_size
        self.dense_width = dense_width
        self.dense_depth = dense_depth
        self.normalization = normalization
        self.temperature = temperature
        self.alpha = alpha
        self.callbacks = callbacks
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.model = model
        self.model_params = model_params
        self.checkpoint_dir = checkpoint_dir
        self.n_threads = n_threads

    def _prepare_targets(self, y):
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has only one class ({classes[0]!r}); a classifier needs at least 2 classes"
            )
        self.classes_ = classes
        return encoded.astype(np.int32), len(classes)

    def _output_name(self):
        return "logit"

    def _class_weight_vector(self, y_fit=None, sample_weight=None):
        """``class_weight`` as weights of the encoded classes ``0 .. n_classes - 1``, or None.

        A dict key that is not a class is refused by name; classes it leaves out
        weigh 1. ``"balanced"`` is scikit-learn's ``n_samples / (n_classes *
        count)``, with counts weighted by ``sample_weight``.
        """
        if self.class_weight is None:
            return None
        n_classes = len(self.classes_)
        if isinstance(self.class_weight, str):
            return compute_class_weight(
                "balanced", classes=np.arange(n_classes), y=y_fit, sample_weight=sample_weight
            ).astype(np.float32)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = [k for k in self.class_weight if k not in index]
        if unknown:
            raise ValueError(
                f"Received an invalid value for `class_weight`: the keys {unknown} are not "
                f"classes; expected keys among classes_={self.classes_.tolist()}"
            )
        weights = np.ones(n_classes, np.float32)
        for key, value in self.class_weight.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, Real)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ValueError(
                    "Received an invalid value for `class_weight`, expected finite weights "
                    f">= 0. Received: class_weight[{key!r}]={value!r}"
                )
            weights[index[key]] = value
        return weights

    def _sample_weights(self, sample_weight, y_fit):
        """``sample_weight`` times the weight of each sample's class (``class_weight``)."""
        per_class = self._class_weight_vector(y_fit, sample_weight)
        if per_class is None:
            return sample_weight
        weights = per_class[y_fit]
        return weights if sample_weight is None else sample_weight * weights

    def _keras_loss(self):
        params = {
            "hkr": {"alpha": float(self.alpha)},
            "offset_crossentropy": {"temperature": float(self.temperature)},
        }.get(self.loss, {})
        return get_classification_loss(self.loss, self.margin, **params)

    def _scan_dataset(self, dataset, classes):
        found, n_batches = set(), 0
        cardinality = int(dataset.cardinality())
        if classes is None or cardinality < 0:
            for n_batches, batch in enumerate(dataset, start=1):  # noqa: B007
                _check_finite_batch(batch[0], n_batches)
                labels = np.unique(batch[1].numpy())
                if labels.dtype.kind in "SO":  # tf.string arrives as bytes
                    labels = np.char.decode(labels.astype(bytes), "utf-8")
                found.update(labels.tolist())
        else:
            n_batches = cardinality
        if classes is None:
            if not found:
                raise ValueError("The dataset is empty")
            classes = found
        else:
            missing = found - set(np.asarray(classes).tolist())
            if missing:
                raise ValueError(f"The dataset has labels {sorted(missing)} not in `classes`")
        y_classes = np.unique(np.asarray(sorted(classes)))
        self._prepare_targets(y_classes)
        keys = tf.constant(self.classes_)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(keys), dtype=tf.int32)), -1
        )
        label_dtype = dataset.element_spec[1].dtype

        def encode(y):
            ids = table.lookup(tf.cast(tf.reshape(y, (-1,)), keys.dtype))
            # without the scan (`classes` given) an unknown label is found only here
            tf.debugging.assert_non_negative(ids, message="The dataset has labels not in `classes`")
            return ids

        if label_dtype.is_floating or label_dtype.is_integer:
            if keys.dtype == tf.string:
                raise ValueError("`classes` are strings but the dataset's labels are numeric")
        elif label_dtype == tf.string and keys.dtype != tf.string:
            raise ValueError("`classes` are numeric but the dataset's labels are strings")
        return len(self.classes_), max(n_batches, 1), encode

    def logits(self, X):
        """The network's logits, shape (n_samples, n_classes)."""
        return self._forward(X)

    def decision_function(self, X):
        """Logits of shape (n_samples, n_classes); for 2 classes, shape (n_samples,)."""
        z = self._forward(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """Softmax of the logits, shape (n_samples, n_classes)."""
        z = self._forward(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The label of the largest logit, from ``classes_``."""
        z = self._forward(X)
        return self.classes_[np.argmax(z, axis=1)]


class StableRegressor(RegressorMixin, _StableEstimator):
    """A regressor that is stable by construction: the networks of :class:`StableClassifier`.

    The same networks with a linear output of ``n_outputs`` values, trained with
    the mean squared error on standardised targets (a fixed rescaling maps them
    back, and counts in ``lipschitz_bound_``). Several outputs are supported
    (2-D ``y``).

    Parameters
    ----------
    constraint, step_size, depth, width, activation, integrator, enforcement, \
image_shape, kernel_size, max_norm, strong_convexity, epochs, batch_size, \
learning_rate, weight_decay, validation_fraction, early_stopping, \
n_iter_no_change, random_state, verbose, distribute, network, \
lift_block_size, dense_width, dense_depth, normalization, callbacks, \
warm_start, model, model_params, checkpoint_dir, n_threads :
        As in :class:`StableClassifier` (with the same defaults); the regressor
        has no ``loss``, ``margin``, ``temperature``, ``alpha`` or
        ``class_weight``. A ``model`` predicts standardised targets: the
        estimator appends a fixed ``Rescaling`` layer that maps them back, so
        ``model_`` predicts ``y``.

    Attributes
    ----------
    model_ : keras.Model
    n_features_in_ : int
    n_outputs_ : int
    history_ : dict
    n_iter_ : int
    lipschitz_bound_ : float or None
        A sound upper bound of the l2 Lipschitz constant of the prediction
        (the network's bound times the largest target scale); None for a
        ``model`` with a layer that cannot be bounded.
    lipschitz_bound_error_ : str or None
        Why ``lipschitz_bound_`` is None; None when there is a bound.
    callbacks_ : list of keras.callbacks.Callback
        The callbacks of the last fit, with their state (not pickled).

    See Also
    --------
    StableClassifier

    Notes
    -----
    ``fit`` takes ``sample_weight`` and ``callbacks`` as metadata, routed through
    ``Pipeline`` and ``GridSearchCV`` after ``set_fit_request`` as for
    :class:`StableClassifier`. Resuming (``checkpoint_dir``) and multi-worker
    training (``distribute="multi_worker"``) work as described in the Notes of
    :class:`StableClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.RandomState(0).rand(100, 3)
    >>> reg = StableRegressor(epochs=2, random_state=0).fit(X, X.sum(axis=1))
    >>> reg.predict(X[:4]).shape
    (4,)
    """

    _parameter_constraints = {
        **_StableEstimator._parameter_constraints,
    }

    @_renamed_parameters
    def __init__(
        self,
        constraint="nonexpansive",
        step_size=2.0,
        depth=2,
        width=16,
        activation="relu",
        integrator="euler",
        enforcement="normalize",
        image_shape=None,
        kernel_size=3,
        max_norm=None,
        strong_convexity=0.1,
        epochs=60,
        batch_size=256,
        learning_rate=1e-2,
        weight_decay=0.0,
        validation_fraction=0.1,
        early_stopping=False,
        n_iter_no_change=5,
        random_state=None,
        verbose=0,
        distribute=None,
        network="certified",
        lift_block_size=None,
        dense_width=256,
        dense_depth=4,
        normalization="aol",
        callbacks=None,
        warm_start=False,
        model=None,
        model_params=None,
        checkpoint_dir=None,
        n_threads=None,
    ):
        self.constraint = constraint
        self.step_size = step_size
        self.depth = depth
        self.width = width
        self.activation = activation
        self.integrator = integrator
        self.enforcement = enforcement
        self.image_shape = image_shape
        self.kernel_size = kernel_size
        self.max_norm = max_norm
        self.strong_convexity = strong_convexity
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.verbose = verbose
        self.distribute = distribute
        self.network = network
        self.lift_block_size = lift_block_size
        self.dense_width = dense_width
        self.dense_depth = dense_depth
        self.normalization = normalization
        self.callbacks = callbacks
        self.warm_start = warm_start
        self.model = model
        self.model_params = model_params
        self.checkpoint_dir = checkpoint_dir
        self.n_threads = n_threads

    def _prepare_targets(self, y):
        y = np.asarray(y, dtype=np.float32)
        self._y_ndim = y.ndim
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        std = y2.std(axis=0)
        self._y_offset = y2.mean(axis=0).astype(np.float32)
        self._y_scale = np.where(std > 0, std, 1.0).astype(np.float32)
        return y2, self.n_outputs_

    def _keras_loss(self):
        return keras.losses.MeanSquaredError()

    def _scan_dataset(self, dataset, classes):
        if classes is not None:
            raise ValueError("`classes` is for classifiers; StableRegressor does not take it")
        total, total_sq, count, n_batches, ndim = 0.0, 0.0, 0, 0, 1
        for n_batches, batch in enumerate(dataset, start=1):  # noqa: B007
            _check_finite_batch(batch[0], n_batches)
            yb = np.asarray(batch[1].numpy(), dtype=np.float64)
            ndim = yb.ndim
            yb = yb.reshape(len(yb), -1)
            _check_finite_batch(yb, n_batches, "y")
            total, total_sq, count = total + yb.sum(0), total_sq + (yb**2).sum(0), count + len(yb)
        if count == 0:
            raise ValueError("The dataset is empty")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        self._y_ndim = ndim
        self.n_outputs_ = len(mean)
        self._y_offset = mean.astype(np.float32)
        self._y_scale = np.where(std > 0, std, 1.0).astype(np.float32)

        def encode(y):
            return tf.reshape(tf.cast(y, tf.float32), (-1, self.n_outputs_))

        return self.n_outputs_, n_batches, encode

    def _output_layer(self, model):
        # The network predicts standardised targets; a fixed Rescaling layer maps
        # them back, so `model_` (and its export) predicts y itself.
        rescale = keras.layers.Rescaling(self._y_scale, offset=self._y_offset, name="unstandardize")
        if isinstance(model, keras.Sequential):
            model.add(rescale)
            return model
        inputs = getattr(model, "inputs", None)
        if inputs is None:  # a subclassed model: nest it (no certificate for the nested model)
            return keras.Sequential([keras.Input((self.n_features_in_,)), model, rescale])
        return keras.Model(inputs[0], rescale(model.outputs[0]), name=model.name)

    def predict(self, X):
        """Predictions, shape (n_samples,) or (n_samples, n_outputs) as ``y`` was."""
        z = self._forward(X)
        return z.ravel() if self._y_ndim == 1 else z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
