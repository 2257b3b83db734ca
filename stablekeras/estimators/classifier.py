"""The classifier: stable networks with logits, trained for certified margins."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets

from stablekeras.estimators._base import StableEstimator
from stablekeras.estimators._dataset import label_encoder, scan_labels
from stablekeras.estimators._parameters import class_weights, refuse_renamed
from stablekeras.losses import CLASSIFICATION_LOSSES, get_classification_loss

__all__ = ["StableClassifier"]


class StableClassifier(ClassifierMixin, StableEstimator):
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
        callbacks (module-level classes and functions, not lambdas). With
        callbacks (here or given to ``fit``) or ``verbose``, every batch is a
        call into TensorFlow, so that their batch hooks see each batch; without,
        a whole epoch runs in one call (fewer handoffs between Python and
        TensorFlow; the same weights).
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
        them, and warns (``RuntimeWarning``) if ``n_threads`` was given. The
        same number caps NumPy's and SciPy's BLAS threads during the fit (the
        exact SVDs of ``lipschitz_bound_``): larger pools are lowered to it and
        restored afterwards, smaller ones are left alone.
    random_shift : int, default=0
        Translation augmentation for images: every training batch shifts each
        image by its own random offset of up to ``random_shift`` pixels along
        height and width (zero-filled), drawn afresh each epoch. Needs
        ``image_shape``; 0 turns it off. It changes what the network is trained
        on, not the network: the bound and the certificates are unaffected.

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
    chief_ : bool
        False only in a non-chief worker of a multi-worker fit, whose
        :func:`~stablekeras.export.export_saved_model` returns None (the chief
        exports).

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
        **StableEstimator._parameter_constraints,
        "loss": [StrOptions(set(CLASSIFICATION_LOSSES))],
        "margin": [Interval(Real, 0, None, closed="neither")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [None, StrOptions({"balanced"}), dict],
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
        self.random_shift = random_shift

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
        """``class_weight`` as weights of the encoded classes (see ``class_weights``)."""
        return class_weights(self.class_weight, self.classes_, y_fit, sample_weight)

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
        y_classes, n_batches = scan_labels(dataset, classes)
        self._prepare_targets(y_classes)
        encode = label_encoder(self.classes_, dataset.element_spec[1].dtype)
        return len(self.classes_), n_batches, encode

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
