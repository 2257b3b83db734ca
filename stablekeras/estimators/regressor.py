"""The regressor: the same stable networks with a linear output on standardised targets."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from sklearn.base import RegressorMixin

from stablekeras.estimators._base import StableEstimator
from stablekeras.estimators._dataset import scan_targets
from stablekeras.estimators._parameters import refuse_renamed

__all__ = ["StableRegressor"]


class StableRegressor(RegressorMixin, StableEstimator):
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
warm_start, model, model_params, checkpoint_dir, n_threads, random_shift :
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
    y_ndim_ : int
        The number of dimensions of the ``y`` it was fitted on, 1 or 2:
        ``predict`` returns predictions of the same shape.
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
    chief_ : bool
        False only in a non-chief worker of a multi-worker fit, whose
        :func:`~stablekeras.export.export_saved_model` returns None (the chief
        exports).

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
        **StableEstimator._parameter_constraints,
    }

    @refuse_renamed
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
        random_shift=0,
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
        self.random_shift = random_shift

    def _prepare_targets(self, y):
        y = np.asarray(y, dtype=np.float32)
        self.y_ndim_ = y.ndim
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
        ndim, mean, std, n_batches = scan_targets(dataset)
        self.y_ndim_ = ndim
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
        return z.ravel() if self.y_ndim_ == 1 else z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
