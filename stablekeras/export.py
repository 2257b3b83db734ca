"""SavedModel export for TensorFlow Serving.

:func:`export_saved_model` writes a fitted :class:`~stablekeras.StableClassifier`
or :class:`~stablekeras.StableRegressor` (alone, or at the end of a
:class:`~sklearn.pipeline.Pipeline` of scalers) as a SavedModel in the layout
TensorFlow Serving polls::

    base_dir/
      1/  saved_model.pb  variables/  ...
      2/  ...

The SavedModel holds the inference path only (``training=False``) as a
``tf.function`` with a fixed input signature, so serving needs no Python and no
stablekeras. Its ``serving_default`` signature is

========================  ==============  ======================  ====================
name                      dtype           shape                   meaning
========================  ==============  ======================  ====================
input ``inputs``          ``float32``     ``[None, n_features]``  rows of ``X``
``logits``                ``float32``     ``[None, n_classes]``   the network's output
``probabilities``         ``float32``     ``[None, n_classes]``   ``predict_proba``
``class_ids``             ``int64``       ``[None]``              index in ``classes_``
``classes``               see below       ``[None]``              ``predict``
``predictions`` (regr.)   ``float32``     ``[None]`` or           ``predict``
                                          ``[None, n_outputs]``
========================  ==============  ======================  ====================

``classes`` is ``string`` when the labels are strings, ``int64`` when they are
integers (or booleans) and ``float64`` when they are floats, so a client always
reads the label itself, whatever ``classes_`` is. :func:`serving_request` builds
the body of TF Serving's REST ``predict`` call for rows of ``X``::

    docker run -p 8501:8501 -v "$PWD/base_dir:/models/digits" -e MODEL_NAME=digits \
        tensorflow/serving
    curl -d '{"signature_name": "serving_default", "instances": [[0.0, 0.3125, ...]]}' \
        http://localhost:8501/v1/models/digits:predict
    # {"predictions": [{"probabilities": [...], "logits": [...], "class_ids": 3,
    #                   "classes": "three"}]}
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from numbers import Integral

import numpy as np
import tensorflow as tf
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted

from stablekeras.estimators import StableClassifier, StableRegressor

__all__ = ["INPUT_NAME", "SIGNATURE_NAME", "export_saved_model", "serving_request"]

#: Name of the single input of the exported signature.
INPUT_NAME = "inputs"
#: Name of the exported signature (TF Serving's default).
SIGNATURE_NAME = "serving_default"
_TMP_PREFIX = ".tmp-export-"


def _is_identity(transformer):
    return (
        transformer is None
        or (isinstance(transformer, str) and transformer == "passthrough")
        or (type(transformer) is FunctionTransformer and transformer.func is None)
    )


def _check_foldable(name, transformer):
    # exact types: a subclass may transform differently
    if not (_is_identity(transformer) or type(transformer) in (StandardScaler, MinMaxScaler)):
        raise ValueError(
            f"Cannot export the pipeline step {name!r} ({transformer!r}): only MinMaxScaler, "
            "StandardScaler and the identity FunctionTransformer() can be folded into the "
            "exported graph. Apply the other transformers before the pipeline, or export "
            "the final estimator alone."
        )


def _fitted_map(transformer):
    """The fitted map of a scaler as a function of a float64 tensor; None for the identity."""
    if _is_identity(transformer):
        return None
    check_is_fitted(transformer)
    if isinstance(transformer, StandardScaler):
        mean = transformer.mean_ if transformer.with_mean else None
        scale = transformer.scale_ if transformer.with_std else None

        def standard(x):
            if mean is not None:
                x = x - tf.constant(mean, tf.float64)
            if scale is not None:
                x = x / tf.constant(scale, tf.float64)
            return x

        return standard
    scale, offset, clip = transformer.scale_, transformer.min_, transformer.clip
    low, high = (float(v) for v in transformer.feature_range)

    def minmax(x):
        x = x * tf.constant(scale, tf.float64) + tf.constant(offset, tf.float64)
        return tf.clip_by_value(x, low, high) if clip else x

    return minmax


def _unwrap(estimator):
    """Split ``estimator`` into (preprocessing functions, fitted stable estimator)."""
    steps, final = [], estimator
    if isinstance(estimator, Pipeline):
        *steps, (_, final) = estimator.steps
    if not isinstance(final, StableClassifier | StableRegressor):
        within = " a Pipeline ending in" if isinstance(estimator, Pipeline) else ""
        raise TypeError(
            "export_saved_model exports a StableClassifier or StableRegressor, or a Pipeline "
            f"ending in one. Received:{within} {type(final).__name__}"
        )
    for name, transformer in steps:  # refused before anything is fitted or written
        _check_foldable(name, transformer)
    maps = [f for _, t in steps if (f := _fitted_map(t)) is not None]
    check_is_fitted(final)
    return maps, final


def _classes_constant(classes):
    """``classes_`` as a constant tensor: strings, int64 or float64."""
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        if all(isinstance(c, Integral) for c in classes):
            classes = classes.astype(np.int64)
        else:
            classes = classes.astype(str)
    if classes.dtype.kind in "US":
        return tf.constant([str(c) for c in classes], dtype=tf.string)
    if classes.dtype.kind in "iub":
        return tf.constant(classes.astype(np.int64), dtype=tf.int64)
    return tf.constant(classes.astype(np.float64), dtype=tf.float64)


class _ServingModule(tf.Module):
    """The inference path of a fitted estimator: preprocessing, network, output heads."""

    def __init__(self, maps, estimator, n_features):
        super().__init__(name="stablekeras_serving")
        model = estimator.model_
        # Track the raw tf.Variables (not the Keras model) so the SavedModel holds
        # only the weights the forward pass reads, like keras' ExportArchive.
        self.weights = [v.value for v in model.variables]
        is_classifier = isinstance(estimator, StableClassifier)
        classes = _classes_constant(estimator.classes_) if is_classifier else None
        flat = not is_classifier and estimator.y_ndim_ == 1
        spec = tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)

        @tf.function(input_signature=[spec])
        def serve(inputs):
            x = inputs
            if maps:  # sklearn scales in float64; do the same, then feed float32 as it does
                x = tf.cast(x, tf.float64)
                for f in maps:
                    x = f(x)
                x = tf.cast(x, tf.float32)
            # float32 logits whatever the policy (a mixed-precision model computes float16)
            z = tf.cast(model(x, training=False), tf.float32)
            if not is_classifier:
                return {"predictions": tf.reshape(z, [-1]) if flat else z}
            class_ids = tf.argmax(z, axis=1, output_type=tf.int64)
            return {
                "logits": z,
                # predict_proba takes the softmax in float64
                "probabilities": tf.cast(tf.nn.softmax(tf.cast(z, tf.float64)), tf.float32),
                "class_ids": class_ids,
                "classes": tf.gather(classes, class_ids),
            }

        self.serve = serve


def _next_version(base_dir):
    versions = [int(d) for d in os.listdir(base_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(
    estimator, base_dir: str | os.PathLike, *, version: int | None = None
) -> str | None:
    """Export a fitted stable estimator as ``base_dir/<version>/``, for TF Serving.

    The export is atomic: the SavedModel is written to a hidden temporary
    directory inside ``base_dir`` (TF Serving only loads all-digit names) and
    renamed to ``<version>`` once complete. A failed or interrupted export
    removes its temporary directory and leaves no version directory; existing
    versions are never overwritten.

    Parameters
    ----------
    estimator : StableClassifier, StableRegressor or Pipeline
        Fitted. A Pipeline may precede the estimator with ``StandardScaler``,
        ``MinMaxScaler``, ``FunctionTransformer()`` (identity) or
        ``"passthrough"`` steps; their fitted maps are folded into the graph.
    base_dir : str or path-like
        The model's base directory (created if missing), as given to TF
        Serving's ``--model_base_path``.
    version : int or None, default=None
        The version to write. ``None`` takes the largest existing integer
        version plus one (1 in an empty directory).

    Returns
    -------
    str or None
        The path of the new version directory; None, with nothing written, on a
        worker other than the chief of a multi-worker fit
        (``distribute="multi_worker"``), so that the same program can run on
        every worker and only the chief exports.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The estimator (or a scaler of the pipeline) is not fitted.
    TypeError
        The estimator is not a stable estimator nor a Pipeline ending in one.
    ValueError
        A pipeline step that cannot be folded into the graph (named in the
        message), or an invalid ``version``.
    FileExistsError
        ``base_dir/<version>`` already exists.

    See Also
    --------
    serving_request : The body of a TF Serving REST ``predict`` request.

    Notes
    -----
    The signature ``serving_default`` takes ``inputs`` (``float32``,
    ``[None, n_features]``) and returns ``logits``, ``probabilities``,
    ``class_ids`` and ``classes`` for a classifier, ``predictions`` for a
    regressor (``[None]`` when ``y`` was 1-D). Check an export with
    ``saved_model_cli show --dir base_dir/1 --all``.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.datasets import load_digits
    >>> from stablekeras import StableClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = StableClassifier(epochs=1, random_state=0).fit(X[:100] / 16, y[:100])
    >>> base = tempfile.mkdtemp()
    >>> path = export_saved_model(clf, base)
    >>> os.path.basename(path)
    '1'
    """
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, Integral) or version < 0
    ):
        raise ValueError(
            f"Received an invalid value for `version`, expected a non-negative integer or "
            f"None. Received: version={version!r}"
        )
    maps, final = _unwrap(estimator)
    if not getattr(final, "chief_", True):  # a non-chief worker of a multi-worker fit
        return None
    n_features = int(final.n_features_in_)  # the foldable steps keep the number of features
    base_dir = os.fspath(base_dir)
    os.makedirs(base_dir, exist_ok=True)
    auto = version is None
    if not auto and os.path.exists(os.path.join(base_dir, str(int(version)))):
        raise FileExistsError(
            f"Version {int(version)} already exists: {os.path.join(base_dir, str(int(version)))}"
        )

    # os.mkdir honours the umask (mkdtemp's 0700 would hide the model from a server
    # running as another user); the name is hidden from TF Serving.
    tmp = os.path.join(base_dir, f"{_TMP_PREFIX}{uuid.uuid4().hex}")
    os.mkdir(tmp)
    try:
        module = _ServingModule(maps, final, n_features)
        tf.saved_model.save(
            module, tmp, signatures={SIGNATURE_NAME: module.serve.get_concrete_function()}
        )
        while True:
            v = _next_version(base_dir) if auto else int(version)
            path = os.path.join(base_dir, str(v))
            if os.path.exists(path):
                if auto:
                    continue
                raise FileExistsError(f"Version {v} already exists: {path}")
            try:
                os.rename(tmp, path)
            except OSError as err:  # another export took this version meanwhile
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not auto:
                    raise FileExistsError(f"Version {v} already exists: {path}") from err
                continue
            return path
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def serving_request(X, *, signature_name: str = SIGNATURE_NAME) -> dict:
    """The JSON body of a TF Serving REST ``predict`` request for rows of ``X``.

    ``POST http://HOST:8501/v1/models/<name>:predict`` (or
    ``.../versions/<v>:predict``) with this body, in TF Serving's row format:
    ``{"signature_name": "serving_default", "instances": [[x11, x12, ...], ...]}``.
    The values are ``X`` as ``float32`` (the dtype of the ``inputs`` tensor),
    written as exact decimal floats.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    signature_name : str, default="serving_default"

    Returns
    -------
    dict
        ``json.dumps`` it to send.

    Examples
    --------
    >>> serving_request([[0.0, 0.5]])
    {'signature_name': 'serving_default', 'instances': [[0.0, 0.5]]}
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or not np.isfinite(X).all():
        raise ValueError(
            f"serving_request expects a finite 2-D array (n_samples, n_features). "
            f"Received an array of shape {X.shape}"
        )
    return {"signature_name": signature_name, "instances": X.tolist()}
