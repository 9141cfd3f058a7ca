"""`.keras` files written by earlier keras_ersm versions still load.

`fixtures/*.keras` were saved with the code of commit 51ab256 (Keras 3.15.1,
JAX backend; `fixtures/make_fixtures_51ab256.py`): a tiny Functional model
with an `EnergyMask` holding a custom `EnergyRegularizer` and a frozen
layer, and a `build_classifier` model on a frozen backbone. Each `.npz`
beside it holds an input batch, the outputs and energy loss the old code
computed on it, and every layer's `trainable` flag.
"""

import os

import keras
import numpy as np
import pytest

import keras_ersm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("loader", ["keras", "keras_ersm"])
@pytest.mark.parametrize("name", ["tiny_masked", "classifier"])
def test_old_keras_file_loads_with_the_same_outputs(name, loader):
    saved = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    load = (
        keras.saving.load_model if loader == "keras" else keras_ersm.saving.load_model
    )
    model = load(os.path.join(FIXTURES, f"{name}.keras"), safe_mode=True)
    assert [layer.name for layer in model.layers] == list(saved["layer_names"])
    # Keras does not restore an `InputLayer`'s flag (it has no weights and
    # comes back trainable): compare the layers that hold weights.
    flags = [
        (layer.trainable, bool(old))
        for layer, old in zip(model.layers, saved["trainable"], strict=True)
        if layer.weights
    ]
    assert flags and all(new == old for new, old in flags), flags
    masks = keras_ersm.models.energy_mask_layers(model)
    assert len(masks) == 1
    assert isinstance(masks[0].energy_regularizer, keras_ersm.EnergyRegularizer)

    outputs = keras.ops.convert_to_numpy(model(saved["x"], training=False))
    np.testing.assert_allclose(outputs, saved["y"], rtol=1e-4, atol=1e-5)
    loss = sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses)
    np.testing.assert_allclose(loss, saved["energy_loss"], rtol=1e-4, atol=1e-7)


def test_old_regularizer_config_is_unchanged():
    model = keras.saving.load_model(
        os.path.join(FIXTURES, "tiny_masked.keras"), safe_mode=True
    )
    reg = model.get_layer("mask").energy_regularizer
    assert reg.get_config() == {"unary": 0.5, "pairwise": 0.25, "weight": 2.0}
