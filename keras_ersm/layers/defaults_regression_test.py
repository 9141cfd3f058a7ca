"""Regression test: the defaults must not bring back the collapse.

Trained from scratch with the paper's settings, the mask can collapse (keep
near 0, accuracy at chance; `docs/concepts.md`, "Defaults", and
benchmarks/results/defaults_round1.jsonl). This test trains a small CNN with
the default `EnergyMask()` on the bundled benchmark (4 classes, seeded) and
fails if the accuracy falls to chance or the mean keep goes near 0 or near 1.
Measured on JAX: accuracy 0.63 (chance 0.25), mean keep 0.14.
"""

import keras
import pytest

import keras_ersm
from keras_ersm.datasets import make_cluttered

NUM_CLASSES = 4
CHANCE = 1.0 / NUM_CLASSES


def _train(mask_layer, data, seed=0, epochs=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters, strides in ((16, 1), (32, 2), (32, 2)):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
    x = mask_layer(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=keras.backend.backend() != "torch",
    )
    (xtr, ytr, _), (xte, yte, _) = data
    model.fit(xtr, ytr, batch_size=16, epochs=epochs, verbose=0)
    accuracy = model.evaluate(xte, yte, verbose=0)[1]
    features = keras.Model(model.input, mask_layer.input).predict(xte, verbose=0)
    keep = keras.ops.convert_to_numpy(mask_layer.energy_terms(features)["keep"])
    return accuracy, keep


@pytest.fixture(scope="module")
def data():
    kwargs = dict(
        num_classes=NUM_CLASSES,
        clutter=0.3,
        distractors=2,
        object_scale=(0.6, 0.9),
        seed=0,
    )
    return (
        make_cluttered(1600, split="train", **kwargs),
        make_cluttered(400, split="test", **kwargs),
    )


@pytest.mark.slow
def test_defaults_do_not_collapse(data):
    accuracy, keep = _train(keras_ersm.EnergyMask(), data)
    assert accuracy > CHANCE + 0.2, f"accuracy {accuracy:.3f} near chance"
    assert 0.01 < keep.mean() < 0.9, f"mean keep {keep.mean():.4f}"
    assert keep.mean(axis=(1, 2)).std() > 0, "keep does not vary across images"
