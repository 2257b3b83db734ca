"""Tests for stablekeras.datasets (offline: digits, mocked and locally built TFDS sets)."""

from __future__ import annotations

import contextlib
import doctest
import functools
import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from stablekeras import datasets
from stablekeras.datasets import DatasetNotAvailableError, load_dataset

# Split sizes written into the fake metadata of the mocked TFDS sets.
SIZES = {"train": 60, "test": 30}
# name -> (image shape, flattened width)
IMAGE_SETS = {
    "mnist": ((28, 28, 1), 784),
    "fashion_mnist": ((28, 28, 1), 784),
    "cifar10": ((32, 32, 3), 3072),
}


def _check_arrays(X, y, n, width=None, image_shape=None):
    assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
    assert X.dtype == np.float32
    assert y.dtype == np.int64
    if image_shape is not None:
        assert X.shape == (n, *image_shape)
    else:
        assert X.shape == (n, width)
    assert y.shape == (n,)
    if n:
        assert 0.0 <= X.min() and X.max() <= 1.0


# --------------------------------------------------------------------------- digits


def test_digits_default():
    X, y = load_dataset()
    _check_arrays(X, y, 1797, width=64)
    assert X.max() == 1.0 and X.min() == 0.0
    assert np.array_equal(np.unique(y), np.arange(10))
    X2, y2 = load_dataset("digits", split="all")
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X3, _ = load_dataset("DIGITS", split="train")
    assert np.array_equal(X, X3)


def test_digits_as_images_matches_flat():
    X, _ = load_dataset("digits")
    Xi, yi = load_dataset("digits", as_images=True)
    _check_arrays(Xi, yi, 1797, image_shape=(8, 8, 1))
    assert np.array_equal(Xi.reshape(1797, 64), X)


def test_digits_slicing():
    X, y = load_dataset("digits")
    Xa, ya = load_dataset("digits", split="train[:80%]")
    Xb, yb = load_dataset("digits", split="train[80%:]")
    assert len(Xa) == 1438 and len(Xb) == 359
    assert np.array_equal(np.concatenate([Xa, Xb]), X)
    assert np.array_equal(np.concatenate([ya, yb]), y)
    Xc, _ = load_dataset("digits", split="train[100:110]+train[-5:]")
    assert np.array_equal(Xc, np.concatenate([X[100:110], X[-5:]]))


def test_digits_as_dataset():
    ds = load_dataset("digits", as_dataset=True, batch_size=700)
    assert isinstance(ds, tf.data.Dataset)
    batches = list(ds.as_numpy_iterator())
    assert [x.shape for x, _ in batches] == [(700, 64), (700, 64), (397, 64)]
    assert all(x.dtype == np.float32 and y.dtype == np.int64 for x, y in batches)
    ds_img = load_dataset("digits", as_dataset=True, as_images=True, batch_size=2000)
    (x, y), *rest = list(ds_img.as_numpy_iterator())
    assert not rest and x.shape == (1797, 8, 8, 1) and y.shape == (1797,)


@pytest.mark.parametrize("split", ["test", "validation", "train[", "all[:10%]", "train[:200%]"])
def test_digits_bad_split(split):
    with pytest.raises(ValueError, match=r"Invalid split .* for 'digits'") as err:
        load_dataset("digits", split=split)
    assert repr(split) in str(err.value)


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"name": ""}, TypeError, "name must be a non-empty string"),
        ({"name": 3}, TypeError, "name must be a non-empty string"),
        ({"split": 5}, TypeError, "split must be a string"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be a positive integer"),
        ({"batch_size": True}, TypeError, "batch_size must be a positive integer"),
        ({"as_images": "yes"}, TypeError, "as_images must be True or False"),
        ({"download": 1}, TypeError, "download must be True or False"),
        ({"data_dir": 3}, TypeError, "data_dir must be a path"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load_dataset(**kwargs)


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="Unknown data set 'mnsit'") as err:
        load_dataset("mnsit", data_dir=str(tmp_path))
    msg = str(err.value)
    assert "'digits'" in msg and "'mnist'" in msg  # what is accepted + a close match


def test_not_image_classification(tmp_path):
    with pytest.raises(ValueError, match="not an image-classification set"):
        load_dataset("imdb_reviews", data_dir=str(tmp_path))


def test_variable_size_images_rejected(tmp_path):
    with pytest.raises(ValueError, match="variable size"):
        load_dataset("cats_vs_dogs", data_dir=str(tmp_path))


def test_bad_tfds_split_syntax(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid split 'test\[:10' for 'mnist'"):
        load_dataset("mnist", split="test[:10", data_dir=str(tmp_path))


# --------------------------------------------------------------------------- offline miss


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_dataset_fails_without_touching_the_network(tmp_path, name, monkeypatch):
    """A missing set is an error at once: no download is attempted (no socket connects)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] or kwargs)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(DatasetNotAvailableError) as err:
        load_dataset(name, split="test", data_dir=tmp_path)  # a pathlib.Path works too
    assert attempts == [], f"load_dataset tried to connect: {attempts}"
    assert not any(tmp_path.iterdir()), "something was written for a missing set"
    msg = str(err.value)
    assert f"tfds build {name} --data_dir {tmp_path}" in msg
    assert "data_dir" in msg and "download=True" in msg
    assert err.value.name == name and err.value.data_dir == str(tmp_path)
    assert isinstance(err.value, RuntimeError)
    assert not list(tmp_path.iterdir()), "nothing may be written when download=False"


def test_download_failure_is_wrapped(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DatasetNotAvailableError, match="Network is unreachable") as err:
        load_dataset("mnist", data_dir=str(tmp_path), download=True)
    assert "tfds build mnist" in str(err.value)
    assert isinstance(err.value.__cause__, ConnectionError)


# --------------------------------------------------------------------------- mocked TFDS sets


def _write_metadata(name, data_dir, sizes):
    """Write real TFDS metadata (features, fake split sizes) so the set looks prepared."""
    builder = tfds.builder(name, data_dir=data_dir)
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in sizes.items()]
        )
    )
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    assert tfds.builder(name, data_dir=data_dir).is_prepared()


def _split_aware_as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    """Like mock_data's default generator, but with as many examples as `split` selects.

    (The default mock yields `num_examples` for every split, ignoring slices.)
    """
    assert decoders is None
    n = self.info.splits[split].num_examples
    specs = self.info.features.get_tensor_info()
    return tf.data.Dataset.from_generator(
        functools.partial(mocking.RandomFakeGenerator, features=self.info.features, num_examples=n),
        output_types=tf.nest.map_structure(lambda t: t.dtype, specs),
        output_shapes=tf.nest.map_structure(lambda t: t.shape, specs),
    )


@contextlib.contextmanager
def mocked(name, data_dir, **mock_kwargs):
    _write_metadata(name, str(data_dir), SIZES)
    mock_kwargs.setdefault("as_dataset_fn", _split_aware_as_dataset)
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(data_dir), **mock_kwargs
    ):
        yield


@pytest.mark.parametrize("name", sorted(IMAGE_SETS))
def test_mocked_tfds_arrays(tmp_path, name):
    shape, width = IMAGE_SETS[name]
    with mocked(name, tmp_path):
        X, y = load_dataset(name, data_dir=str(tmp_path))  # default split: train
        _check_arrays(X, y, SIZES["train"], width=width)
        assert X.max() > 0.5  # really scaled from uint8, not all zeros
        assert np.all((y >= 0) & (y < 10))
        Xi, yi = load_dataset(name, split="test", data_dir=str(tmp_path), as_images=True)
        _check_arrays(Xi, yi, SIZES["test"], image_shape=shape)
        # Pixels are exact multiples of 1/255.
        np.testing.assert_allclose(Xi * 255, np.round(Xi * 255), atol=1e-4)
        X10, y10 = load_dataset(name, split="test[:10%]", data_dir=str(tmp_path))
        _check_arrays(X10, y10, 3, width=width)
        Xs, _ = load_dataset(name, split="train[:5]+test[-20%:]", data_dir=str(tmp_path))
        assert len(Xs) == 5 + 6


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_mocked_tfds_as_dataset(tmp_path, name):
    shape, width = IMAGE_SETS[name]
    with mocked(name, tmp_path):
        ds = load_dataset(name, split="test", data_dir=str(tmp_path), as_dataset=True, batch_size=8)
        assert isinstance(ds, tf.data.Dataset)
        batches = list(ds.as_numpy_iterator())
        assert [x.shape for x, _ in batches] == [(8, width)] * 3 + [(6, width)]
        for x, y in batches:
            assert x.dtype == np.float32 and y.dtype == np.int64 and y.shape == (len(x),)
            assert 0.0 <= x.min() and x.max() <= 1.0
        ds = load_dataset(
            name, split="test[:50%]", data_dir=str(tmp_path), as_dataset=True, as_images=True
        )
        ((x, y),) = list(ds.as_numpy_iterator())
        assert x.shape == (15, *shape) and y.shape == (15,)


def test_mocked_tfds_default_mock(tmp_path):
    """tfds.testing.mock_data's own generator: `num_examples` examples per split."""
    with mocked("fashion_mnist", tmp_path, num_examples=7, as_dataset_fn=None):
        X, y = load_dataset("fashion_mnist", split="test", data_dir=str(tmp_path))
    _check_arrays(X, y, 7, width=784)


def test_mocked_tfds_unknown_split(tmp_path):
    with mocked("mnist", tmp_path):
        with pytest.raises(ValueError, match=r"Invalid split 'validation' for 'mnist'") as err:
            load_dataset("mnist", split="validation", data_dir=str(tmp_path))
    assert "['test', 'train']" in str(err.value)


# --------------------------------------------------------------------------- real TFDS files


def test_real_tfds_build_and_read(tmp_path, monkeypatch):
    """End to end without mocks of the read path: TFDS's DummyMnist is generated locally
    (no network) into real record files, then read back with real slicing."""
    real_builder = tfds.builder

    def builder(name, **kwargs):
        if name == "dummy_mnist":
            return tfds.testing.DummyMnist(data_dir=kwargs.get("data_dir"))
        return real_builder(name, **kwargs)

    monkeypatch.setattr(tfds, "builder", builder)
    data_dir = str(tmp_path)
    with pytest.raises(DatasetNotAvailableError, match="tfds build dummy_mnist"):
        load_dataset("dummy_mnist", data_dir=data_dir)
    X, y = load_dataset("dummy_mnist", data_dir=data_dir, download=True)
    _check_arrays(X, y, 20, width=784)
    np.testing.assert_allclose(X, 1.0 / 255.0)  # DummyMnist images are all ones
    assert sorted(y.tolist()) == sorted([i % 10 for i in range(20)])
    # Now prepared: works with download=False, and slices are honoured.
    X10, y10 = load_dataset("dummy_mnist", split="test[:10%]", data_dir=data_dir, as_images=True)
    _check_arrays(X10, y10, 2, image_shape=(28, 28, 1))
    ds = load_dataset("dummy_mnist", split="train+test", data_dir=data_dir, as_dataset=True)
    assert sum(len(x) for x, _ in ds.as_numpy_iterator()) == 40


# --------------------------------------------------------------------------- docs


def test_module_doctests():
    result = doctest.testmod(datasets, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_api():
    assert set(datasets.__all__) == {"DatasetNotAvailableError", "load_dataset"}
    assert issubclass(DatasetNotAvailableError, RuntimeError)
