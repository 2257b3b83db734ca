"""Image-classification data sets as arrays ready for scikit-learn estimators.

:func:`load_dataset` returns ``float32`` pixels scaled to ``[0, 1]`` and ``int64``
labels, either as NumPy arrays (flattened to ``(n, h * w * c)`` or as images
``(n, h, w, c)``) or as a batched :class:`tf.data.Dataset` for streaming.

Two sources are supported:

* ``"digits"`` -- scikit-learn's bundled 8x8 hand-written digits (1,797 images,
  10 classes). It ships with scikit-learn, so it works without any network and
  is the default.
* any `TensorFlow Datasets <https://www.tensorflow.org/datasets>`_ (TFDS)
  image-classification set with fixed-size images, an ``"image"`` feature and a
  ``ClassLabel`` ``"label"`` feature: ``"mnist"``, ``"fashion_mnist"``,
  ``"cifar10"``, ``"cifar100"``, ``"kmnist"``, ``"emnist"``, ``"svhn_cropped"``, ...

Nothing is downloaded unless ``download=True`` is passed. A TFDS set that is not
already prepared in ``data_dir`` raises :class:`DatasetNotAvailableError`, whose
message explains how to prepare it on a connected machine (``tfds build <name>
--data_dir <dir>``) and copy it over, so loading never hangs on a machine without
internet access.
"""

from __future__ import annotations

import difflib
import os
import shlex
import types
from typing import Any

import numpy as np

__all__ = ["DatasetNotAvailableError", "load_dataset"]

#: Name of the embedded, offline data set (scikit-learn's 8x8 digits).
_DIGITS = "digits"
#: Grey levels of scikit-learn's digits run from 0 to 16.
_DIGITS_MAX = 16.0
#: Batch size used internally when materialising a TFDS split into arrays.
_MATERIALISE_BATCH = 4096
_SPLITS_HELP = "https://www.tensorflow.org/datasets/splits"


class DatasetNotAvailableError(RuntimeError):
    """A TFDS data set is not prepared locally and could not (or may not) be downloaded.

    Raised by :func:`load_dataset` when the data set is missing from ``data_dir``
    and ``download=False`` (the default), or when ``download=True`` was passed and
    downloading or preparing it failed (for instance without network access). The
    message says how to prepare the data set on a machine with internet access.

    Attributes
    ----------
    name : str
        The TFDS name that was requested.
    data_dir : str
        The TFDS data directory that was searched.
    """

    def __init__(self, message: str, *, name: str, data_dir: str) -> None:
        super().__init__(message)
        self.name = name
        self.data_dir = data_dir


def load_dataset(
    name: str = _DIGITS,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    as_images: bool = False,
    as_dataset: bool = False,
    batch_size: int = 256,
    download: bool = False,
) -> Any:
    """Load an image-classification data set as ``float32`` pixels in ``[0, 1]``.

    Parameters
    ----------
    name : str, default="digits"
        ``"digits"`` for scikit-learn's bundled 8x8 digits (offline, 1,797
        images), or the name of a TensorFlow Datasets image-classification set
        such as ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"`` (a config or
        version may be given the TFDS way, e.g. ``"mnist:3.0.1"``). The TFDS set
        must have fixed-size images in an ``Image`` feature and integer classes in
        a ``ClassLabel`` feature (found through its supervised keys, else the
        features named ``"image"`` and ``"label"``).
    split : str or None, default=None
        A TFDS split string: a split name (``"train"``, ``"test"``, ...), a slice
        (``"test[:10%]"``, ``"train[1000:]"``, ``"train[-5%:]"``), a sum of those
        (``"train+test"``, ``"train[:10%]+test[:10%]"``) or ``"all"``. See
        https://www.tensorflow.org/datasets/splits. ``None`` means ``"train"``
        for TFDS sets. ``"digits"`` has a single split, ``"train"`` (all 1,797
        images, in scikit-learn's order); ``None``, ``"train"`` and ``"all"``
        select all of it, and the same slice syntax works on it, e.g.
        ``"train[:80%]"`` and ``"train[80%:]"`` for a deterministic hold-out.
    data_dir : str or path-like or None, default=None
        Directory holding prepared TFDS data sets (``<data_dir>/<name>/<version>``).
        ``None`` uses the TFDS default (``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``). Ignored for ``"digits"``.
    as_images : bool, default=False
        If False, flatten each image to a vector of ``h * w * c`` features. If
        True, keep the image shape ``(h, w, c)`` (``(8, 8, 1)`` for digits),
        e.g. for convolutional models.
    as_dataset : bool, default=False
        If True, return a batched :class:`tf.data.Dataset` of ``(x, y)`` pairs
        with the same preprocessing instead of arrays, to stream data that does
        not fit in memory. Batches are in split order; shuffle as needed.
    batch_size : int, default=256
        Batch size of the returned :class:`tf.data.Dataset`. Only used when
        ``as_dataset=True``.
    download : bool, default=False
        If True and the TFDS set is not prepared in ``data_dir``, download and
        prepare it there (needs network access; failures are raised as
        :class:`DatasetNotAvailableError`). Without network, TFDS's downloader
        retries with back-off for minutes before giving up, so keep the default
        on offline machines. If False, a missing set raises
        :class:`DatasetNotAvailableError` at once and no network is touched.

    Returns
    -------
    X : numpy.ndarray of shape (n_samples, n_features) or (n_samples, h, w, c)
        ``float32`` pixels in ``[0, 1]``: integer images are divided by the
        largest value of their type (255 for ``uint8``), digits by 16.
    y : numpy.ndarray of shape (n_samples,)
        ``int64`` class indices.
    dataset : tf.data.Dataset
        Returned instead of ``(X, y)`` when ``as_dataset=True``: batches
        ``(x, y)`` with ``x`` ``float32`` of shape ``(batch, n_features)`` or
        ``(batch, h, w, c)`` and ``y`` ``int64`` of shape ``(batch,)``.

    Raises
    ------
    DatasetNotAvailableError
        The TFDS set is not prepared in ``data_dir`` and ``download=False``, or
        downloading it failed.
    ValueError
        Unknown data set name, a data set that is not image classification (or
        has variable-size images), an invalid split, or a bad ``batch_size``.
    TypeError
        An argument of the wrong type.

    See Also
    --------
    tensorflow_datasets.load : The TFDS loader used underneath.
    sklearn.datasets.load_digits : The source of ``"digits"``.

    Examples
    --------
    >>> from stablekeras.datasets import load_dataset
    >>> X, y = load_dataset("digits")
    >>> X.shape, X.dtype, y.dtype
    ((1797, 64), dtype('float32'), dtype('int64'))
    >>> bool(X.min() >= 0.0 and X.max() <= 1.0), len(set(y.tolist()))
    (True, 10)
    >>> load_dataset("digits", as_images=True)[0].shape
    (1797, 8, 8, 1)
    >>> X_train, y_train = load_dataset("digits", split="train[:80%]")
    >>> X_test, y_test = load_dataset("digits", split="train[80%:]")
    >>> len(X_train), len(X_test)
    (1438, 359)

    Streaming batches:

    >>> ds = load_dataset("digits", as_dataset=True, batch_size=500)
    >>> [tuple(x.shape) for x, _ in ds]
    [(500, 64), (500, 64), (500, 64), (297, 64)]

    A TFDS set works the same way once prepared, e.g. on a connected machine
    ``tfds build mnist --data_dir /data/tfds``, then
    ``load_dataset("mnist", split="test", data_dir="/data/tfds")``.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(
            f"name must be a non-empty string ('digits' or a TFDS data set name such as "
            f"'mnist'), got {name!r}"
        )
    if split is not None and not isinstance(split, str):
        raise TypeError(
            f"split must be a string such as 'train' or 'test[:10%]', or None; got {split!r}"
        )
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise TypeError(f"data_dir must be a path (str or os.PathLike) or None, got {data_dir!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for flag, value in (
        ("as_images", as_images),
        ("as_dataset", as_dataset),
        ("download", download),
    ):
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    batch_size = int(batch_size)

    if name.strip().lower() == _DIGITS:
        return _load_digits(
            split=split,
            as_images=bool(as_images),
            as_dataset=bool(as_dataset),
            batch_size=batch_size,
        )
    return _load_tfds(
        name.strip(),
        split="train" if split is None else split,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        as_images=bool(as_images),
        as_dataset=bool(as_dataset),
        batch_size=batch_size,
        download=bool(download),
    )


# --------------------------------------------------------------------------- digits


def _digits_indices(split: str | None, n: int) -> np.ndarray:
    """Row indices of ``digits`` selected by a TFDS-style split string."""
    if split is None:
        return np.arange(n)
    import tensorflow_datasets as tfds

    infos = {"train": types.SimpleNamespace(num_examples=n, shard_lengths=[n])}
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    except Exception as err:  # TFDS raises ValueError / NotImplementedError / KeyError
        raise ValueError(
            f"Invalid split {split!r} for 'digits': it has a single split 'train' "
            f"({n} images). Expected None, 'train', 'all', or a slice of 'train' such as "
            f"'train[:80%]', 'train[80%:]', 'train[100:200]' or 'train[:10%]+train[-10%:]' "
            f"(see {_SPLITS_HELP}). TFDS said: {err}"
        ) from None
    parts = [
        np.arange(0 if ins.from_ is None else ins.from_, n if ins.to is None else ins.to)
        for ins in instructions
    ]
    return np.concatenate(parts) if parts else np.arange(0)


def _load_digits(*, split: str | None, as_images: bool, as_dataset: bool, batch_size: int) -> Any:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(_DIGITS_MAX)
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx = _digits_indices(split, len(labels))
    X = images[idx]
    X = X[..., np.newaxis] if as_images else X.reshape(len(idx), -1)
    y = labels[idx]
    if as_dataset:
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((X, y)).batch(batch_size)
    return X, y


# --------------------------------------------------------------------------- TFDS


def _make_builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(name.split(":")[0].split("/")[0].lower(), known, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown data set {name!r}: expected 'digits' (scikit-learn's 8x8 digits, "
            f"available offline) or the name of a TensorFlow Datasets image-classification "
            f"set such as 'mnist', 'fashion_mnist' or 'cifar10' (see "
            f"tensorflow_datasets.list_builders()).{hint}"
        ) from None
    except Exception as err:
        raise ValueError(
            f"Could not create the TFDS builder for {name!r} (data_dir={data_dir!r}): "
            f"{type(err).__name__}: {err}"
        ) from err


def _image_label_keys(builder: Any, name: str) -> tuple[str, str]:
    """The (image, label) feature keys of an image-classification builder."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = list(features.keys()) if hasattr(features, "keys") else []

    def ok(image_key: Any, label_key: Any) -> bool:
        return (
            image_key in keys
            and label_key in keys
            and isinstance(features[image_key], tfds.features.Image)
            and isinstance(features[label_key], tfds.features.ClassLabel)
        )

    supervised = builder.info.supervised_keys
    if (
        isinstance(supervised, tuple | list)
        and len(supervised) == 2
        and all(isinstance(k, str) for k in supervised)
        and ok(*supervised)
    ):
        return supervised[0], supervised[1]
    if ok("image", "label"):
        return "image", "label"
    described = ", ".join(f"{k!r}: {type(features[k]).__name__}" for k in keys) or repr(features)
    raise ValueError(
        f"TFDS data set {name!r} is not an image-classification set: expected an Image "
        f"feature 'image' and a ClassLabel feature 'label', found features {{{described}}}."
    )


def _not_available_message(name: str, data_dir: str, data_path: str, reason: str) -> str:
    base = name.split(":")[0]
    return (
        f"TFDS data set {name!r} is not available: {reason}\n"
        f"It was looked for in data_dir {data_dir!r} (expected files under {data_path!r}).\n"
        "To use it without network access, prepare it on a machine with internet access:\n"
        f"    tfds build {shlex.quote(base)} --data_dir {shlex.quote(data_dir)}\n"
        "or\n"
        f'    python -c "import tensorflow_datasets as tfds; '
        f"tfds.load('{name}', data_dir='{data_dir}')\"\n"
        "then copy that data_dir directory to this machine and pass "
        f"load_dataset({name!r}, data_dir=<copied directory>). With network access, "
        "pass download=True to download and prepare it here. "
        "load_dataset('digits') needs no download at all."
    )


def _load_tfds(
    name: str,
    *,
    split: str,
    data_dir: str | None,
    as_images: bool,
    as_dataset: bool,
    batch_size: int,
    download: bool,
) -> Any:
    import tensorflow_datasets as tfds

    # Cheap syntax check of the split before touching any data.
    try:
        tfds.core.ReadInstruction.from_spec(split)
    except Exception as err:
        raise ValueError(
            f"Invalid split {split!r} for {name!r}: expected a TFDS split string such as "
            f"'train', 'test', 'test[:10%]', 'train[1000:]' or 'train+test' "
            f"(see {_SPLITS_HELP}). TFDS said: {err}"
        ) from None

    builder = _make_builder(tfds, name, data_dir)
    image_key, label_key = _image_label_keys(builder, name)
    image_feature = builder.info.features[image_key]
    shape = tuple(image_feature.shape)
    if any(dim is None for dim in shape):
        raise ValueError(
            f"TFDS data set {name!r} has images of variable size {shape}; load_dataset "
            "only supports sets whose images all have the same shape (h, w, c), such as "
            "'mnist', 'fashion_mnist' or 'cifar10'."
        )
    np_dtype = getattr(image_feature, "np_dtype", None)  # TFDS >= 4.9; `.dtype` is deprecated
    dtype = np.dtype(image_feature.dtype if np_dtype is None else np_dtype)
    scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else None
    n_features = int(np.prod(shape))

    root = os.fspath(data_dir if data_dir is not None else builder.data_dir_root)
    if not builder.is_prepared():
        data_path = os.fspath(builder.data_path)
        if not download:
            raise DatasetNotAvailableError(
                _not_available_message(
                    name, root, data_path, "it is not prepared there and download=False."
                ),
                name=name,
                data_dir=root,
            )
        try:
            builder.download_and_prepare()
        except Exception as err:
            raise DatasetNotAvailableError(
                _not_available_message(
                    name,
                    root,
                    data_path,
                    f"downloading and preparing it failed ({type(err).__name__}: {err}).",
                ),
                name=name,
                data_dir=root,
            ) from err

    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except (ValueError, KeyError, NotImplementedError, AssertionError) as err:
        raise ValueError(
            f"Invalid split {split!r} for {name!r}: {err}. Available splits: "
            f"{sorted(builder.info.splits)} (slices like 'test[:10%]' work on each; "
            f"see {_SPLITS_HELP})."
        ) from None

    import tensorflow as tf

    ds = ds.map(
        lambda ex: (ex[image_key], ex[label_key]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )

    if as_dataset:

        def preprocess(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            x = tf.cast(x, tf.float32)
            if scale is not None:
                x = x / scale
            if not as_images:
                x = tf.reshape(x, [-1, n_features])
            return x, tf.cast(y, tf.int64)

        return (
            ds.batch(batch_size)
            .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )

    images, labels = [], []
    for x_batch, y_batch in tfds.as_numpy(ds.batch(_MATERIALISE_BATCH)):
        images.append(x_batch)
        labels.append(y_batch)
    if images:
        X = np.concatenate(images).astype(np.float32)
        y = np.concatenate(labels).astype(np.int64)
    else:
        X = np.empty((0, *shape), dtype=np.float32)
        y = np.empty((0,), dtype=np.int64)
    del images, labels
    if scale is not None:
        X /= np.float32(scale)
    if not as_images:
        X = X.reshape(len(X), n_features)
    return X, y
