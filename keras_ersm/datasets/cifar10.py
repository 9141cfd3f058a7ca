"""CIFAR-10 through tensorflow-datasets, ready for `model.fit` on any backend."""

import logging
import re
import socket

import numpy as np

from keras_ersm import _validation
from keras_ersm._quiet import import_tensorflow_quietly

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""The CIFAR-10 class names, in label order."""

_PART = r"(train|test)(\[[-0-9:%]*\])?"
_SPLIT = re.compile(rf"{_PART}(\+{_PART})*")
_SPLIT_EXPECTED = '"train", "test" or a slice such as "train[:10%]"'
_DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)  # where tfds fetches CIFAR-10


class DatasetUnavailableError(RuntimeError):
    """Raised when a dataset is neither prepared locally nor downloadable.

    Its message is one line that says where the data was looked for and how
    to make it available.
    """


_invalid = _validation.invalid


class _QuietMissingVariant(logging.Filter):
    """Drops tfds' "Variant folder ... has no dataset_info.json" warning.

    tfds logs it while looking for a dataset that is not prepared, a case
    `load_cifar10` reports itself (`DatasetUnavailableError`).
    """

    def filter(self, record):
        return "has no dataset_info.json" not in record.getMessage()


def _import_tfds():
    try:
        import_tensorflow_quietly()
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "load_cifar10 needs tensorflow-datasets. Install it with "
            "`pip install keras-ersm[cv]` (or `pip install tensorflow-datasets`)."
        ) from error
    return tfds


def _check_reachable(host, timeout):
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as error:
        return f"{host[0]} is unreachable ({error})"
    return None


def _unavailable(data_dir, reason):
    where = data_dir if data_dir is not None else "the default TFDS data_dir"
    return DatasetUnavailableError(
        f"CIFAR-10 is not prepared in {where} and cannot be downloaded: "
        f"{reason}. Prepare it on a machine with a network "
        "(`tfds build cifar10 --data_dir DIR`) and pass `data_dir=DIR`, or "
        "use keras_ersm.datasets.make_cluttered offline."
    )


def load_cifar10(
    split="train",
    data_dir=None,
    batch_size=None,
    shuffle=None,
    download=True,
    seed=0,
    download_timeout=5.0,
):
    """Loads CIFAR-10 with tensorflow-datasets, scaled to `[0, 1]`.

    The data is first looked for in `data_dir`. When it is not prepared
    there and `download=True`, tensorflow-datasets downloads and prepares it
    (about 160 MB), after a quick check that the download host can be
    reached. When neither works, a `DatasetUnavailableError` with a
    one-line message is raised, so callers can fall back to
    `make_cluttered`.

    `tensorflow-datasets` (and so TensorFlow) is imported when this function
    runs; the arrays it returns by default work with `model.fit` on every
    backend. A `tf.data.Dataset` (with `batch_size`) also works with
    `model.fit` on JAX and PyTorch, since Keras 3 iterates it as NumPy.

    Args:
        split: a tensorflow-datasets split of CIFAR-10: `"train"`, `"test"`,
            or a slice such as `"train[:10%]"` or `"test[:500]"`. Defaults
            to `"train"`.
        data_dir: directory where tensorflow-datasets keeps (or will
            prepare) the data. Defaults to `None` (TFDS' default,
            `~/tensorflow_datasets` or `$TFDS_DATA_DIR`).
        batch_size: `None` to return NumPy arrays, or an int >= 1 to return
            a batched, prefetched `tf.data.Dataset` of `(images, labels)`.
            Defaults to `None`.
        shuffle: whether the dataset is shuffled (only with `batch_size`).
            `None` shuffles the training split only. Defaults to `None`.
        download: whether to download and prepare the data when it is not
            found in `data_dir`. Defaults to `True`.
        seed: int, shuffle seed. Defaults to `0`.
        download_timeout: seconds to wait for the download host before
            giving up. Defaults to `5.0`.

    Returns:
        With `batch_size=None`, a tuple `(images, labels)`: float32 array of
        shape `(N, 32, 32, 3)` in `[0, 1]` and int32 array of shape `(N,)`.
        Otherwise a `tf.data.Dataset` yielding such batches.

    Raises:
        DatasetUnavailableError: CIFAR-10 is not prepared in `data_dir` and
            cannot be downloaded.
        ImportError: tensorflow-datasets is not installed.

    Examples:

    ```python
    import keras_ersm

    try:
        x_test, y_test = keras_ersm.datasets.load_cifar10("test[:256]")
    except keras_ersm.datasets.DatasetUnavailableError as error:
        print(error)  # e.g. offline without a prepared data_dir
    ```
    """
    if not isinstance(split, str) or not _SPLIT.fullmatch(split):
        raise _invalid("split", _SPLIT_EXPECTED, split)
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise _invalid("batch_size", "None or an integer >= 1", batch_size)
    if shuffle is not None and not isinstance(shuffle, bool):
        raise _invalid("shuffle", "None or a bool", shuffle)
    tfds = _import_tfds()

    def load(download_now):
        quiet = _QuietMissingVariant()
        logging.getLogger("absl").addFilter(quiet)
        try:
            return tfds.load(
                "cifar10",
                split=split,
                data_dir=data_dir,
                as_supervised=True,
                download=download_now,
            )
        finally:
            logging.getLogger("absl").removeFilter(quiet)

    try:
        ds = load(False)
    except (AssertionError, tfds.core.DatasetNotFoundError) as error:
        if not download:
            raise _unavailable(data_dir, "download=False") from error
        reason = _check_reachable(_DOWNLOAD_HOST, download_timeout)
        if reason is not None:
            raise _unavailable(data_dir, reason) from error
        try:
            ds = load(True)
        except Exception as download_error:  # any download or prepare failure
            lines = str(download_error).strip().splitlines()
            reason = lines[0] if lines else type(download_error).__name__
            raise _unavailable(data_dir, reason) from download_error
    except ValueError as error:  # e.g. an unknown split name
        raise _invalid("split", _SPLIT_EXPECTED, split) from error

    import tensorflow as tf

    def convert(images, labels):
        return tf.cast(images, "float32") / 255.0, tf.cast(labels, "int32")

    if batch_size is None:
        images, labels = [], []
        for x, y in tfds.as_numpy(ds.batch(1024)):
            images.append(x)
            labels.append(y)
        if not images:
            return (
                np.zeros((0, 32, 32, 3), np.float32),
                np.zeros((0,), np.int32),
            )
        images = np.concatenate(images).astype(np.float32) / np.float32(255.0)
        return images, np.concatenate(labels).astype(np.int32)

    if shuffle is None:
        shuffle = split.startswith("train")
    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
