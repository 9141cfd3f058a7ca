"""Datasets: CIFAR-10 (tensorflow-datasets) and the bundled cluttered benchmark."""

from keras_ersm.datasets.cluttered import GLYPHS, make_cluttered

__all__ = ["GLYPHS", "make_cluttered"]
