import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

import keras  # noqa: E402

from keras_ersm import datasets  # noqa: E402
from keras_ersm.datasets import DatasetUnavailableError, load_cifar10  # noqa: E402


def _fit_one_step(data, **kwargs):
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(2, 3, strides=4),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data, epochs=1, verbose=0, **kwargs)
    assert np.isfinite(history.history["loss"][0])


def test_exported():
    assert datasets.load_cifar10 is load_cifar10
    assert issubclass(DatasetUnavailableError, RuntimeError)
    assert len(datasets.CIFAR10_CLASSES) == 10


def test_numpy_arrays_from_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=7):
        x, y = load_cifar10("test", data_dir=str(tmp_path))
    assert x.shape == (7, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (7,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(y.tolist()) <= set(range(10))
    _fit_one_step(x, y=y, batch_size=4)


def test_batched_dataset_from_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        ds = load_cifar10("train[:10]", data_dir=str(tmp_path), batch_size=4)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    assert y.dtype == np.int32 and x.max() <= 1.0
    # Ready for model.fit on the current backend.
    _fit_one_step(ds, shuffle=False)


def test_unavailable_offline_says_so_in_one_line(tmp_path):
    # The suite blocks the network, so the download host is unreachable.
    with pytest.raises(DatasetUnavailableError) as info:
        load_cifar10("test", data_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert "CIFAR-10 is not prepared in" in message and str(tmp_path) in message
    assert "unreachable" in message


def test_unavailable_without_download(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_cifar10("test", data_dir=str(tmp_path), download=False)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(split="validation"), "split"),
        (dict(split="train[:10%"), "split"),
        (dict(split=3), "split"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.0), "batch_size"),
        (dict(shuffle="yes"), "shuffle"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"argument `{name}`.*Received: {name}="):
        load_cifar10(**kwargs)
