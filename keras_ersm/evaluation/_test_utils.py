"""Shared fixtures of the evaluation tests (internal): a tiny trained model."""

import functools

import keras
import numpy as np

from keras_ersm.layers.energy_mask import EnergyMask


def synthetic_data(num=96, size=16, seed=0):
    """Images with one bright 6x6 square whose colour gives the class.

    Returns:
        `(images, labels, object_masks)`.
    """
    rng = np.random.default_rng(seed)
    images = 0.1 * rng.random((num, size, size, 3)).astype("float32")
    labels = rng.integers(0, 2, num)
    objects = np.zeros((num, size, size), dtype=bool)
    for i in range(num):
        top, left = rng.integers(0, size - 6, 2)
        objects[i, top : top + 6, left : left + 6] = True
        images[i, top : top + 6, left : left + 6, labels[i]] = 1.0
    return images, labels, objects


def tiny_model(patch_size=2, name="mask"):
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            EnergyMask(patch_size=patch_size, name=name),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(2, name="dense"),
        ]
    )


@functools.cache
def trained_model():
    """A tiny classifier trained for a few epochs on `synthetic_data`."""
    keras.utils.set_random_seed(0)
    x, y, _ = synthetic_data()
    model = tiny_model()
    model.compile(
        keras.optimizers.Adam(0.02),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    return model
