"""Datasets: CIFAR-10 (tensorflow-datasets) and the bundled cluttered benchmark."""

from keras_ersm.datasets.cifar10 import (
    CIFAR10_CLASSES,
    DatasetUnavailableError,
    load_cifar10,
)
from keras_ersm.datasets.cluttered import GLYPHS, make_cluttered

__all__ = [
    "CIFAR10_CLASSES",
    "DatasetUnavailableError",
    "GLYPHS",
    "load_cifar10",
    "make_cluttered",
]
