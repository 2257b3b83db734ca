"""The machinery the two estimators share: ``fit`` in named steps, inference, pickling.

The pieces that are options of a fit live beside it, one concern per module:
:mod:`._parameters` (what the hyperparameters accept), :mod:`._fit_options`
(callbacks, the user's own network), :mod:`._warm_start`, :mod:`._distribution`
(strategies, several workers, backups) and :mod:`._dataset` (fitting from a
``tf.data.Dataset``).
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
import types
from numbers import Integral

import keras
import numpy as np
import tensorflow as tf
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from stablekeras import _multiworker
from stablekeras._threads import fit_threads
from stablekeras.estimators import _optimizers
from stablekeras.estimators._dataset import DatasetFitMixin
from stablekeras.estimators._distribution import DistributionMixin
from stablekeras.estimators._fit_options import FitOptionsMixin
from stablekeras.estimators._parameters import (
    PARAMETER_CONSTRAINTS,
    RENAMED_PARAMETERS,
    TRAINING_PARAMS,
    renamed_error,
)
from stablekeras.estimators._warm_start import WarmStartMixin
from stablekeras.models import build_network, lipschitz_bound

#: Fits of at most this many optimizer steps run eagerly (see ``_compile``).
_EAGER_STEPS = 16
#: Rows per forward pass at inference.
_PREDICT_BATCH = 4096


class StableEstimator(
    FitOptionsMixin, WarmStartMixin, DistributionMixin, DatasetFitMixin, BaseEstimator
):
    """Shared fit/predict machinery of :class:`StableClassifier` and :class:`StableRegressor`."""

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS
    #: Parameters a warm-started fit may change (see ``TRAINING_PARAMS``).
    _TRAINING_PARAMS = TRAINING_PARAMS

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
                raise renamed_error(old, params[old])
        return super().set_params(**params)

    # ---- hooks for subclasses -------------------------------------------------
    def _prepare_targets(self, y):
        raise NotImplementedError

    def _keras_loss(self):
        raise NotImplementedError

    def _sample_weights(self, sample_weight, y_fit):
        """The per-sample weights of the loss (the classifier multiplies in class weights)."""
        return sample_weight

    def _class_weight_vector(self, y_fit=None, sample_weight=None):
        """Weights per encoded class, or None (classifier only)."""
        return None

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
        model = build_network((n_features,), n_outputs, **self._network_params(), seed=seed)
        return self._output_layer(model)

    def _network_params(self) -> dict:
        """The keyword arguments of :func:`~stablekeras.models.build_network`, as plain types."""
        return dict(
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
        )

    def _output_layer(self, model):
        return model

    def _optimizer(self, n_batches):
        steps = max(1, n_batches) * self.epochs
        schedule = keras.optimizers.schedules.CosineDecay(
            float(self.learning_rate), decay_steps=steps, alpha=0.01
        )
        if self.weight_decay:
            return _optimizers.AdamW(schedule, weight_decay=float(self.weight_decay))
        return _optimizers.Adam(schedule)

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
        self._check_fit_parameters()
        with fit_threads(self.n_threads):
            return self._fit(X, y, sample_weight, classes, callbacks)

    def _fit(self, X, y, sample_weight, classes, callbacks):
        """:meth:`fit` after the hyperparameters were checked and the threads sized."""
        user_callbacks = self._fit_callbacks(callbacks)
        previous = self._warm_start_snapshot()
        if isinstance(X, tf.data.Dataset):
            return self._fit_dataset(X, y, sample_weight, classes, user_callbacks, previous)
        if classes is not None:
            raise ValueError("`classes` is only used when X is a tf.data.Dataset")
        with self._warm_start_guard(previous):
            X, y_fit, n_outputs = self._validate_arrays(X, y)
        sw = (
            None
            if sample_weight is None
            else _check_sample_weight(sample_weight, X, dtype=np.float32)
        )
        sw = self._sample_weights(sw, y_fit)
        self._check_callback_monitors(user_callbacks, validation=self.early_stopping)
        seed = self._agree_seed(self._seed())
        fit_X, fit_y, fit_sw, validation_data, callbacks = self._hold_out(X, y_fit, sw, seed)
        n_batches = math.ceil(len(fit_X) / self.batch_size)
        with self._fit_scope(previous is not None):
            self._compile(
                X.shape[1], n_outputs, n_batches, previous is not None, seed, user_callbacks
            )
            backup = self._backup_callback(X.shape[1], len(X))
            history = self._keras_fit(
                fit_X,
                fit_y,
                sample_weight=fit_sw,
                epochs=self.epochs,
                batch_size=self.batch_size,
                validation_data=validation_data,
                callbacks=callbacks + ([] if backup is None else [backup]) + user_callbacks,
                verbose=int(self.verbose),
                shuffle_seed=seed,
                backup=backup,
                steps_per_epoch=n_batches,
            )
        return self._record_fit(history, user_callbacks, warm=previous is not None, backup=backup)

    def _check_fit_parameters(self):
        """The hyperparameters, each and together, before anything else happens."""
        self._validate_params()
        if self.constraint == "contractive" and self.integrator != "euler":
            raise ValueError(
                "constraint='contractive' is analysed for explicit Euler steps only. "
                f"Received: integrator={self.integrator!r}"
            )
        if self.random_shift and self.image_shape is None:
            raise ValueError(
                f"random_shift={self.random_shift} shifts training images: it needs "
                "image_shape=(height, width, channels). Received: image_shape=None"
            )
        if self.random_shift and self.random_shift >= min(tuple(self.image_shape)[:2]):
            raise ValueError(
                f"random_shift={self.random_shift} would shift whole images out of view: "
                f"expected fewer pixels than the height and width of image_shape="
                f"{tuple(self.image_shape)}"
            )
        if self.model_params is not None and self.model is None:
            raise ValueError(
                "`model_params` are the keyword arguments of `model`, which is None. "
                f"Received: model_params={self.model_params!r}"
            )

    def _validate_arrays(self, X, y):
        """``(X, encoded y, n_outputs)``: scikit-learn's checks, ``image_shape``, the targets."""
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
        return X, y_fit, n_outputs

    def _hold_out(self, X, y_fit, sw, seed):
        """``(X, y, sample_weight, validation_data, callbacks)`` to train on: with
        ``early_stopping``, ``validation_fraction`` held out (stratified when it can be)
        and the stopping callback; otherwise everything."""
        if not self.early_stopping:
            return X, y_fit, sw, None, []
        idx = np.arange(len(X))
        stratify = y_fit if isinstance(self, ClassifierMixin) else None
        try:
            tr, va = train_test_split(
                idx, test_size=self.validation_fraction, random_state=seed, stratify=stratify
            )
        except ValueError:
            tr, va = train_test_split(idx, test_size=self.validation_fraction, random_state=seed)
        validation_data = (X[va], y_fit[va]) if sw is None else (X[va], y_fit[va], sw[va])
        stop = keras.callbacks.EarlyStopping(
            patience=self.n_iter_no_change, restore_best_weights=True
        )
        return X[tr], y_fit[tr], None if sw is None else sw[tr], validation_data, [stop]

    def _compile(self, n_features, n_outputs, n_batches, warm=False, seed=None, callbacks=()):
        if not warm:  # a warm start recompiles the fitted network: fresh optimizer, same weights
            self.model_ = self._build_model(n_features, n_outputs, seed)
            self._architecture = self._architecture_params()
        # Tracing the train step costs about as much as a few hundred eager steps
        # on small inputs: a fit of few steps (tiny data, grid-search folds, the
        # scikit-learn checks) runs eagerly; anything longer is compiled once.
        eager = n_batches * self.epochs <= _EAGER_STEPS and self.distribute is None
        self.model_.compile(
            optimizer=self._optimizer(n_batches),
            loss=self._keras_loss(),
            run_eagerly=eager,
            steps_per_execution=self._batches_per_call(n_batches, eager, callbacks),
        )
        # Keras builds the optimizer's slots only when a strategy was set explicitly;
        # otherwise the first trace of the train step creates them, and tf.function
        # then traces the whole step a second time without variable creation.
        optimizer = self.model_.optimizer
        if not optimizer.built:
            with self.model_.distribute_strategy.scope():
                optimizer.build(self.model_.trainable_variables)

    def _batches_per_call(self, n_batches, eager, callbacks):
        """Batches per call into TensorFlow: a whole epoch, unless something must see each batch.

        Every call hands the work from the Python thread to TensorFlow's and back;
        two fits side by side (a grid search with ``n_jobs=2``) wait for a core at
        each handoff. User callbacks and the progress bar (``verbose``) see every
        batch; eager fits and fits under a distribution strategy keep one batch a call.
        """
        if eager or self.distribute is not None or self.verbose or callbacks:
            return 1
        return int(n_batches)  # at least 1: a fit has rows

    def _record_fit(self, history, user_callbacks=(), warm=False, backup=None):
        """The fitted state after training: history, callbacks, the local network, the bound."""
        if backup is not None:  # a resumed fit: the epochs before the restart too
            history = types.SimpleNamespace(history=backup.history)
        self._record_history(history, warm)
        self.callbacks_ = list(user_callbacks)
        self.chief_ = _multiworker.is_chief(self.model_.distribute_strategy)
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
        if "_y_ndim" in state:  # pickled by stablekeras before y_ndim_ was public
            state["y_ndim_"] = state.pop("_y_ndim")
        if "_chief" in state:  # pickled by stablekeras before chief_ was public
            state["chief_"] = state.pop("_chief")
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if param.default is not param.empty and name not in state:
                state[name] = param.default  # a parameter added since it was pickled
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
