"""A tiny CNN patched with an EnergyMask, and its data, for the integration tests.

Small on purpose: 8x8 images, 4 filters, 4 classes, 32 samples. Not a test
module (pytest collects only `test_*.py` and `*_test.py`).
"""

import keras
import numpy as np

import keras_ersm

IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 4


def data(num_samples=32, seed=0):
    """Returns seeded `(images, labels)` numpy arrays."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_samples, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=(num_samples,)).astype("int32")
    return images, labels


def build_backbone():
    """A tiny Functional CNN classifier without a mask: conv -> pool -> dense."""
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(
        inputs
    )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="dense")(x)
    return keras.Model(inputs, outputs, name="tiny_backbone")


def build_model(seed=0, learning_rate=0.1, jit_compile="auto"):
    """The tiny backbone patched with an EnergyMask (named "mask"), compiled.

    Uses `keras_ersm.models.insert_energy_masks` after the convolution. The
    energy weights are large (0.1) so that the energy loss moves the mask
    weights within a few steps and a mismatch would show.
    """
    keras.utils.set_random_seed(seed)
    model = keras_ersm.models.insert_energy_masks(
        build_backbone(),
        at={"conv": {"name": "mask"}},
        patch_size=2,
        energy_regularizer=keras_ersm.EnergyRegularizer(unary=0.1, pairwise=0.1),
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


class BatchLosses(keras.callbacks.Callback):
    """Records `logs["loss"]` after every training batch."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def mask_state(model, images):
    """Mask weights, keep map and energy loss of `model` on `images`.

    Returns:
        Dict of numpy arrays / floats: `"kernel"`, `"bias"`, `"keep"`
        `(B, gh, gw)` and `"energy_loss"` (the sum of `model.losses` after
        an inference call).
    """
    mask = model.get_layer("mask")
    features = model.get_layer("conv")(images)
    keep = mask.energy_terms(features)["keep"]
    model(images)
    energy_loss = sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses)
    return {
        "kernel": keras.ops.convert_to_numpy(mask.kernel),
        "bias": keras.ops.convert_to_numpy(mask.bias),
        "keep": keras.ops.convert_to_numpy(keep),
        "energy_loss": energy_loss,
    }
